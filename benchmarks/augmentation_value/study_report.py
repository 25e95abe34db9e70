"""The study's outputs: ``results.json``, ``results.md`` (the manipulation check and each family's paired results)
and ``results.png`` (per family, each arm's primary endpoint and clean accuracy with 95% intervals)."""

import json
from pathlib import Path

from PIL import Image, ImageDraw

from benchmarks.augmentation_value.report import COLOURS, _font

TEST_NAMES = {
    "in_distribution": "in-distribution (texture ⟂ class)",
    "cue_conflict": "cue-conflict",
    "unseen_textures": "unseen textures",
    "in_domain": "in-domain vendors",
    "held_out_vendor": "held-out vendor",
    "held_out_styles": "held-out styles",
}


def write_study_reports(document: dict, output: str) -> dict[str, str]:
    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / "results.json", "markdown": folder / "results.md", "chart": folder / "results.png"}
    paths["markdown"].write_text(markdown(document))
    chart(document).save(paths["chart"])
    written = {kind: str(path) for kind, path in paths.items()}
    paths["json"].write_text(json.dumps({**document, "written": written}, indent=2) + "\n")
    return written


def _interval(cell: dict) -> str:
    return f"{cell['mean']:.3f} [{cell['low']:.3f}, {cell['high']:.3f}]"


def _difference(cell: dict) -> str:
    return f"{cell['mean']:+.3f} [{cell['low']:+.3f}, {cell['high']:+.3f}]"


def manipulation_table(name: str, check: dict) -> list[str]:
    lines = [
        f"**{name}** — rule: {check['rule']}; chosen: "
        + (f"{check['chosen']['size']} px, alpha {check['chosen']['alpha']}" if check["chosen"] else "none passes"),
        "",
        "| stylise size | alpha | class (shape) acc. | nuisance acc. | nuisance chance | passes |",
        "|---|---|---|---|---|---|",
    ]
    for row in check["rows"]:
        size = "unstylised" if row["size"] is None else f"{row['size']} px"
        passed = "–" if row["passed"] is None else ("**yes**" if row["passed"] else "no")
        lines.append(
            f"| {size} | {row['alpha'] or '–'} | {row['shape']:.3f} | {row['nuisance']:.3f} | "
            f"{row['nuisance_chance']:.3f} | {passed} |"
        )
    return lines


def family_table(name: str, family: dict) -> list[str]:
    if not family.get("went_on"):
        return [f"**{name}**: no setting passed the manipulation check; no arm was trained."]
    tests = [*family["shifted"], family["clean"], "held_out_styles"]
    header = ["arm", "primary (mean of shifted)", *(TEST_NAMES.get(t, t) for t in tests)]
    header += [
        "Δ primary vs none [95% CI]",
        "Holm p",
        "gain?",
        "Δ clean (price)",
        "Δ held-out styles",
        "oracle gap closed",
    ]
    setting = family["setting"]
    forced = " (**failed manipulation check**: the nearest setting to passing)" if setting.get("forced") else ""
    lines = [
        f"**{name}** at {setting['size']} px, alpha {setting['alpha']}{forced}; primary endpoint = mean of "
        f"{', '.join(TEST_NAMES.get(t, t) for t in family['shifted'])}; {len(family['arms']['none']['seeds'])} paired "
        "seeds; mean [95% t-interval]",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for arm, summary in family["arms"].items():
        cells = [arm, _interval(summary["primary"]), *(_interval(summary["tests"][t]) for t in tests)]
        row = family["comparisons"].get(arm)
        if row is None:
            cells += ["–"] * 6
        else:
            holm = f"{row['holm_adjusted_p']:.3f}" if "holm_adjusted_p" in row else "(reference)"
            verdict = "–" if "gain" not in row else ("**gain**" if row["gain"] else ("loss" if row["loss"] else "no"))
            closed = "–" if row.get("gap_closed") is None or arm == "oracle" else f"{row['gap_closed']:+.2f}"
            cells += [_difference(row), holm, verdict, _difference(row["clean"]), _difference(row["held_out_styles"])]
            cells.append(closed)
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(document: dict) -> str:
    lines = ["### Manipulation check", ""]
    for name, family in document["families"].items():
        lines += [*manipulation_table(name, family["manipulation"]), ""]
    lines += ["### Arms", ""]
    for name, family in document["families"].items():
        lines += [*family_table(name, family), ""]
    timing, machine = document.get("timing", {}), document.get("machine", {})
    if timing:
        lines.append(
            f"Wall time {timing['total_s'] / 60:.1f} min ({timing['augment_jobs_s'] / 60:.1f} min in augment jobs), "
            f"{machine.get('cpus')} CPUs, --jobs {machine.get('jobs')}, load average "
            f"{machine.get('load_average_at_start', ['?'])[0]} → {machine.get('load_average_at_end', ['?'])[0]}."
        )
    return "\n".join(lines) + "\n"


def chart(document: dict, height: int = 380) -> Image.Image:
    """One panel per family that went on: per arm, the primary endpoint and the clean accuracy, 95% whiskers."""
    families = [(name, f) for name, f in document["families"].items() if f.get("went_on")]
    font, small, title_font = _font(13), _font(11), _font(15)
    most_arms = max((len(f["arms"]) for _, f in families), default=1)
    panel_w, left, top, bottom = max(470, 64 * most_arms + 40), 50, 70, 72
    title = "Primary endpoint (mean of shifted test sets) and clean accuracy, mean and 95% CI over paired seeds"
    title_w = int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(title, font=title_font))
    width = max(left + panel_w * max(1, len(families)) + 20, left + title_w + 20)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((left, 8), title, fill="black", font=title_font)
    legend = [("primary (shifted)", COLOURS[0]), ("clean", COLOURS[1])]
    x = left
    for text, colour in legend:
        draw.rectangle([x, 36, x + 12, 48], fill=colour)
        draw.text((x + 18, 42), text, fill="black", font=font, anchor="lm")
        x += 30 + int(draw.textlength(text, font=font)) + 20
    draw.text(
        (x, 42),
        "* a gain: Holm's 95% interval of the paired difference to none above 0",
        fill="black",
        font=font,
        anchor="lm",
    )
    plot_h = height - top - bottom

    def y_of(value: float) -> float:
        return top + plot_h * (1 - max(0.0, min(1.0, value)))

    for index, (name, family) in enumerate(families):
        x0 = left + index * panel_w
        for tick in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
            draw.line([(x0, y_of(tick)), (x0 + panel_w - 30, y_of(tick))], fill=(225, 225, 225) if tick else "black")
            draw.text((x0 - 6, y_of(tick)), f"{tick:.1f}", fill="black", font=small, anchor="rm")
        arms = list(family["arms"])
        group = (panel_w - 40) / len(arms)
        for g, arm in enumerate(arms):
            summary = family["arms"][arm]
            cells = [summary["primary"], summary["tests"][family["clean"]]]
            for b, cell in enumerate(cells):
                bx = x0 + 8 + g * group + b * (group / 2 - 4)
                bw = group / 2 - 8
                draw.rectangle([bx, y_of(cell["mean"]), bx + bw, y_of(0)], fill=COLOURS[b])
                centre = bx + bw / 2
                draw.line([(centre, y_of(cell["low"])), (centre, y_of(cell["high"]))], fill="black", width=2)
                for value in (cell["low"], cell["high"]):
                    draw.line([(centre - 4, y_of(value)), (centre + 4, y_of(value))], fill="black", width=2)
            row = family["comparisons"].get(arm, {})
            label = arm.replace("style-", "style-\n") + (" *" if row.get("gain") else "")
            centre = x0 + 8 + g * group + group / 2 - 4
            draw.multiline_text((centre, y_of(0) + 6), label, fill="black", font=small, anchor="ma", align="center")
        caption = name + (" (failed manipulation check)" if family["setting"].get("forced") else "")
        draw.text((x0 + (panel_w - 40) / 2, y_of(0) + 40), caption, fill="black", font=font, anchor="ma")
    if not families:
        draw.text((left, top + 20), "no family passed the manipulation check", fill="black", font=font)
    return image
