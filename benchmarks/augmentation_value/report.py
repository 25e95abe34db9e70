"""The experiment's outputs: ``results.json``, ``results.md`` (a table) and ``results.png`` (a bar chart, drawn with
PIL like the project's other charts)."""

import json
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

COLUMNS = {
    "in_distribution": "in-distribution",
    "cue_conflict": "cue-conflict",
    "unseen_textures": "unseen textures",
    "shape_bias": "shape bias",
}
COLOURS = [(52, 101, 164), (230, 140, 30), (60, 150, 70), (120, 80, 160), (200, 60, 60), (110, 110, 110)]


def write_reports(results: dict, output: str) -> dict[str, str]:
    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / "results.json", "markdown": folder / "results.md", "chart": folder / "results.png"}
    paths["json"].write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    paths["markdown"].write_text(markdown_table(results))
    bar_chart(results).save(paths["chart"])
    return {kind: str(path) for kind, path in paths.items()}


def metric_names(results: dict) -> list[str]:
    names: list[str] = []
    for arm in results["arms"].values():
        names += [name for name in arm["mean"] if name not in names]
    return sorted(names, key=lambda n: list(COLUMNS).index(n) if n in COLUMNS else len(COLUMNS))


def markdown_table(results: dict) -> str:
    """Mean ± std over seeds per arm; the best mean of each column in bold. "mean of test sets" is the sweep's
    criterion for the defaults of ``--ratio`` and ``--alpha``."""
    names = metric_names(results)
    arms = results["arms"]
    best = {name: max((a["mean"].get(name, float("-inf")) for a in arms.values()), default=None) for name in names}
    best_score = max(a["score"]["mean"] for a in arms.values())
    header = ["arm", *(COLUMNS.get(n, n) for n in names), "mean of test sets", "training images (stylised)", "s / run"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, arm in arms.items():
        cells = [label]
        for name in names:
            if name not in arm["mean"]:
                cells.append("–")
                continue
            text = f"{arm['mean'][name]:.3f} ± {arm['std'][name]:.3f}"
            cells.append(f"**{text}**" if arm["mean"][name] == best[name] else text)
        score = f"{arm['score']['mean']:.3f} ± {arm['score']['std']:.3f}"
        cells.append(f"**{score}**" if arm["score"]["mean"] == best_score else score)
        seconds = sum(r["train_s"] for r in arm["runs"]) / len(arm["runs"])
        cells += [f"{arm['training_images']} ({arm['stylised_images']})", f"{seconds:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    settings = results["settings"]
    seeds = len(settings["seeds"])
    styles = f"styles: `{settings['stylizer']}`"
    if any(arm["arm"].startswith("painting") for arm in arms.values()):
        styles += " (painting arms: `magenta_arbitrary` over the painting collection)"
    lines += [
        "",
        f"Mean ± std over {seeds} seeds; {settings['train']['steps']} steps of {settings['train']['batch_size']} "
        f"images at {settings['image_size']} px for every arm, stylised at {settings.get('stylise_size', '?')} px; "
        f"{styles}.",
    ]
    best = recommend(results)
    if best:
        lines.append(
            f"Best setting (the highest mean of test sets, and of those within one std of it the smallest ratio): "
            f"`--ratio {best['ratio']:g} --alpha {best['alpha']}` ({best['label']}, {best['score']:.3f})."
        )
    return "\n".join(lines) + "\n"


def recommend(results: dict) -> dict | None:
    """Of the styled arms, the best ``score`` (mean of test sets); of those within one std of it, the smallest ratio
    (the cheapest job): the sweep's answer for the defaults of ``--ratio`` and ``--alpha``. None unless the arms
    span at least two settings."""
    styled = {label: arm for label, arm in results["arms"].items() if arm["ratio"] is not None}
    if len({(arm["ratio"], arm["alpha"]) for arm in styled.values()}) < 2:
        return None
    top = max(styled.values(), key=lambda arm: arm["score"]["mean"])
    close = [
        (label, arm)
        for label, arm in styled.items()
        if arm["score"]["mean"] >= top["score"]["mean"] - top["score"]["std"]
    ]
    label, arm = min(close, key=lambda item: (item[1]["ratio"], -item[1]["score"]["mean"]))
    return {"label": label, "ratio": arm["ratio"], "alpha": arm["alpha"], "score": arm["score"]["mean"]}


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the bitmap font, one size
        return ImageFont.load_default()


def bar_chart(results: dict, bar: int = 16, height: int = 420) -> Image.Image:
    """One group of bars per arm (each test set's accuracy and the shape bias), whiskers at ± std, y from 0 to 1."""
    names = metric_names(results)
    arms = results["arms"]
    labels = list(arms)
    font, small, title_font = _font(14), _font(12), _font(16)
    group = max(bar * len(names) + 36, 116)  # room for a label like "painting-randomize"
    left, right, top, bottom = 56, 64, 76, 70
    width = max(left + right + group * len(labels), 880)
    group = (width - left - right) // len(labels)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    plot_h = height - top - bottom

    def y_of(value: float) -> float:
        return top + plot_h * (1 - max(0.0, min(1.0, value)))

    for tick in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
        y = y_of(tick)
        draw.line([(left, y), (width - right, y)], fill=(225, 225, 225) if tick else (0, 0, 0))
        draw.text((left - 8, y), f"{tick:.1f}", fill="black", font=small, anchor="rm")
    chance = 1 / len(results["settings"]["data"]["classes"])
    draw.line([(left, y_of(chance)), (width - right, y_of(chance))], fill=(170, 170, 170), width=1)
    draw.text((width - right + 6, y_of(chance)), "chance", fill=(130, 130, 130), font=small, anchor="lm")

    for g, label in enumerate(labels):
        arm = arms[label]
        x0 = left + g * group + (group - bar * len(names)) // 2
        for i, name in enumerate(names):
            if name not in arm["mean"]:
                continue
            mean, std = arm["mean"][name], arm["std"][name]
            x = x0 + i * bar
            draw.rectangle([x, y_of(mean), x + bar - 3, y_of(0)], fill=COLOURS[i % len(COLOURS)])
            centre = x + (bar - 3) / 2
            draw.line([(centre, y_of(mean - std)), (centre, y_of(mean + std))], fill="black", width=1)
            for value in (mean - std, mean + std):
                draw.line([(centre - 3, y_of(value)), (centre + 3, y_of(value))], fill="black")
        for line_no, text in enumerate(_wrap(label, group - 4)):
            centre = left + g * group + group / 2
            draw.text((centre, y_of(0) + 8 + 15 * line_no), text, fill="black", font=small, anchor="ma")

    settings = results["settings"]
    title = (
        f"Style augmentation and a small CNN: mean ± std over {len(settings['seeds'])} seeds, "
        f"{settings['train']['steps']} steps per arm at {settings['image_size']} px"
    )
    draw.text((left, 10), title, fill="black", font=title_font)
    x, y = left, 44
    for i, name in enumerate(names):
        text = COLUMNS.get(name, name) + (" accuracy" if name != "shape_bias" else "")
        span = 18 + draw.textlength(text, font=font) + 22
        if x + span > width - right and x > left:
            x, y = left, y + 20
        draw.rectangle([x, y - 6, x + 12, y + 6], fill=COLOURS[i % len(COLOURS)])
        draw.text((x + 18, y), text, fill="black", font=font, anchor="lm")
        x += span
    return image


def _wrap(label: str, width: int) -> list[str]:
    """The arm's name, then its ratio and its alpha, one per line; long names wrap at spaces."""
    name, _, setting = label.partition(" ratio ")
    if setting:
        ratio, _, alpha = setting.partition(" alpha ")
        return [*_wrap(name, width), f"ratio {ratio}", f"alpha {alpha}"]
    words, lines, line = label.split(" "), [], ""
    for word in words:
        candidate = f"{line} {word}".strip()
        if len(candidate) * 6.5 > width and line:
            lines.append(line)
            line = word
        else:
            line = candidate
    return [*lines, line]


def samples_sheet(rows: list[tuple[str, np.ndarray]], per_row: int = 12, cell: int = 64) -> Image.Image:
    """A contact sheet: one captioned row of ``per_row`` images for each ``(caption, (N, S, S, 3) uint8)``."""
    font = _font(13)
    caption_w, gap = 230, 4
    sheet = Image.new("RGB", (caption_w + per_row * (cell + gap), len(rows) * (cell + gap) + gap), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (caption, pixels) in enumerate(rows):
        y = gap + r * (cell + gap)
        draw.text((6, y + cell / 2), caption, fill="black", font=font, anchor="lm")
        for c, image in enumerate(pixels[:per_row]):
            tile = Image.fromarray(image).resize((cell, cell), Image.Resampling.NEAREST)
            sheet.paste(tile, (caption_w + c * (cell + gap), y))
    return sheet


def machine_facts(jobs: int, load_start: tuple[float, ...]) -> dict:
    """What a results file says of the machine it was measured on (timings on shared machines need the load)."""
    import torch

    return {
        "cpus": os.cpu_count(),
        "jobs": jobs,
        "load_average_at_start": [round(x, 2) for x in load_start],
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "torch": torch.__version__,
        "python": sys.version.split()[0],
    }
