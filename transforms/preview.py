"""``WritePreview``: a contact sheet PNG of a few originals (left column) and their stylised copies.

The sources shown are sampled across labels (``sample_across_labels``: round-robin over the sorted labels, the
smallest ids of each first), so a sheet of a class-folder input shows every class it has room for, and it is the
same on every run. Only those few images are thumbnailed; the rest of the job is untouched.
"""

import io

import apache_beam as beam
import numpy as np
from PIL import Image, ImageDraw

from models.common.files import write_atomically
from transforms.decode import DecodedImage
from transforms.images import decode_image

THUMB = 160
LABEL_HEIGHT = 14
MAX_COLUMNS = 8


def thumbnail(image: Image.Image, size: int = THUMB) -> np.ndarray:
    """Fit inside ``size`` × ``size`` (up or down), aspect kept."""
    scale = size / max(image.size)
    new_size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return np.asarray(image.resize(new_size, Image.Resampling.LANCZOS), np.uint8)


def fit_caption(draw: ImageDraw.ImageDraw, caption: str, width: int) -> str:
    """``caption`` as it fits in ``width`` pixels: cut in the middle (``sun_and_b...alpha 1.00``) so that both the
    start of a style's name and the end of the caption (its alpha) stay readable."""
    if draw.textlength(caption) <= width:
        return caption
    keep = len(caption)
    while keep > 1:
        keep -= 1
        head = (keep + 1) // 2
        cut = f"{caption[:head]}...{caption[len(caption) - (keep - head) :]}"
        if draw.textlength(cut) <= width:
            return cut
    return caption[:1]


def draw_contact_sheet(rows: list[tuple[str, np.ndarray, list[tuple[str, np.ndarray]]]]) -> Image.Image:
    """``[(source_id, original, [(caption, stylised), ...]), ...]`` → one RGB image, a row per source. Each row
    is as tall as its tallest thumbnail, captions right under the pictures."""
    columns = 1 + min(MAX_COLUMNS, max((len(outputs) for _, _, outputs in rows), default=0))
    cell_w = THUMB + 8
    heights = [
        max(pixels.shape[0] for pixels in [original] + [p for _, p in outputs[:MAX_COLUMNS]])
        for _, original, outputs in rows
    ]
    sheet = Image.new("RGB", (columns * cell_w, max(1, sum(h + LABEL_HEIGHT + 8 for h in heights))), (245, 243, 236))
    draw = ImageDraw.Draw(sheet)
    top = 4
    for (source_id, original, outputs), height in zip(rows, heights, strict=True):
        cells = [(source_id, original)] + outputs[:MAX_COLUMNS]
        for c, (caption, pixels) in enumerate(cells):
            x = c * cell_w + 4
            sheet.paste(Image.fromarray(pixels, "RGB"), (x, top))
            draw.text((x, top + height + 1), fit_caption(draw, caption, THUMB), fill=(40, 40, 40))
        top += height + LABEL_HEIGHT + 8
    return sheet


def sample_across_labels(labelled_ids: list[tuple[str, list[str]]], count: int) -> list[str]:
    """``count`` ids taken round-robin over the labels in sorted order, each label's smallest ids first.
    ``labelled_ids``: ``(label, ids)`` pairs (``""`` for no label)."""
    queues = [sorted(ids) for _, ids in sorted(labelled_ids)]
    chosen = []
    for rank in range(max((len(queue) for queue in queues), default=0)):
        chosen += [queue[rank] for queue in queues if rank < len(queue)]
    return chosen[:count]


class WritePreview(beam.PTransform):
    """``(decoded images, augmented rows)`` → writes ``path`` (PNG)."""

    def __init__(self, path: str, num_sources: int = 6):
        super().__init__()
        self.path = path
        self.num_sources = num_sources

    def expand(self, pcolls):
        images, rows = pcolls
        count = self.num_sources
        chosen = (
            images
            | "LabelledIds" >> beam.Map(lambda image: (image.label or "", image.source_id))
            | "SmallestPerLabel" >> beam.combiners.Top.SmallestPerKey(count)
            | "AllLabels" >> beam.combiners.ToList()
            | "AcrossLabels" >> beam.Map(lambda labelled: frozenset(sample_across_labels(labelled, count)))
        )
        chosen_side = beam.pvalue.AsSingleton(chosen)

        def original(image: DecodedImage, keep):
            if image.source_id in keep:
                yield (
                    image.source_id,
                    ("original", "", thumbnail(Image.fromarray(np.ascontiguousarray(image.image), "RGB"))),
                )

        def stylised(row, keep):
            if row["source_id"] in keep:
                caption = f"{row['style']}, alpha {row['alpha']:.2f}"
                thumb = thumbnail(decode_image(row["image"], min_side=1))
                yield row["source_id"], (f"{row['id'].rsplit('#', 1)[1]:>03}", caption, thumb)

        path = self.path

        def write(groups):
            sheet_rows = []
            for source_id, items in sorted(groups):
                items = sorted(items, key=lambda item: item[0])
                originals = [thumb for kind, _, thumb in items if kind == "original"]
                outputs = [(caption, thumb) for kind, caption, thumb in items if kind != "original"]
                if originals:
                    sheet_rows.append((source_id, originals[0], outputs))
            buffer = io.BytesIO()
            draw_contact_sheet(sheet_rows).save(buffer, "PNG")
            write_atomically(path, buffer.getvalue())
            return path

        return (
            (
                images | "Originals" >> beam.FlatMap(original, chosen_side),
                rows | "Stylised" >> beam.FlatMap(stylised, chosen_side),
            )
            | "Together" >> beam.Flatten()
            | "BySource" >> beam.GroupByKey()
            | "AllSources" >> beam.combiners.ToList()
            | "DrawSheet" >> beam.Map(write)
        )
