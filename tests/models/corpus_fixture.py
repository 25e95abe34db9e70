"""A generated clean corpus whose captions really describe their images.

Each post shows one coloured shape (red/green/blue/yellow circle/square/triangle), plain, striped or
dotted, on a noisy grey background. Its caption names the colour, usually the shape and the texture, and
adds noise words and hashtags (#art #joanmiro in every post, like a hashtag corpus). Rows follow
``CLEAN_CORPUS``.
"""

import datetime
import hashlib
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image, ImageDraw

from transforms.images import encode_image
from transforms.schemas import CLEAN_CORPUS

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220), "yellow": (235, 220, 30)}
SHAPES = ("circle", "square", "triangle")
TEXTURES = ("plain", "striped", "dotted")
NOISE_WORDS = ("today", "museum", "love", "sunday", "friends", "beautiful", "gallery", "weekend", "photo", "morning")


def draw_post(colour: str, shape: str, texture: str, size: int, rng: np.random.Generator) -> Image.Image:
    grey = int(rng.integers(90, 200))
    background = np.clip(rng.normal(grey, 12, (size, size, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(background, "RGB")
    draw = ImageDraw.Draw(image)
    extent = int(rng.integers(size // 2, size - 4))
    x0, y0 = (int(rng.integers(0, size - extent + 1)) for _ in range(2))
    box = [x0, y0, x0 + extent, y0 + extent]
    fill = COLOURS[colour]
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(x0 + extent / 2, y0), (x0, y0 + extent), (x0 + extent, y0 + extent)], fill=fill)
    if texture != "plain":
        overlay = np.asarray(image).copy()
        shape_mask = np.all(overlay == np.array(fill, dtype=np.uint8), axis=-1)
        yy, xx = np.mgrid[0:size, 0:size]
        pattern = (yy // 3) % 2 == 0 if texture == "striped" else ((yy % 6 < 2) & (xx % 6 < 2))
        overlay[shape_mask & pattern] = (overlay[shape_mask & pattern] * 0.35).astype(np.uint8)
        image = Image.fromarray(overlay, "RGB")
    return image


def corpus_rows(n: int, seed: int = 0, size: int = 48, fmt: str = "png") -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        texture = TEXTURES[int(rng.integers(len(TEXTURES)))]
        words = [colour]
        if rng.random() < 0.8:
            words.append(shape)
        if texture != "plain" and rng.random() < 0.8:
            words.append(texture)
        words += list(rng.choice(NOISE_WORDS, size=int(rng.integers(1, 4)), replace=False))
        rng.shuffle(words)
        hashtags = ["art", "joanmiro"] + ([colour] if rng.random() < 0.3 else [])
        caption = " ".join(words) + " " + " ".join(f"#{tag}" for tag in hashtags)
        data = encode_image(draw_post(colour, shape, texture, size, rng), fmt)
        shortcode = f"P{seed:02d}{i:05d}"
        rows.append(
            {
                "id": f"instagram:{shortcode}:0",
                "source": "test",
                "shortcode": shortcode,
                "index": 0,
                "hashtags_queried": ["joanmiro"],
                "caption": caption,
                "caption_hashtags": hashtags,
                "posted_at": datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
                "owner": f"user{i % 7}",
                "image": data,
                "image_format": fmt,
                "width": size,
                "height": size,
                "sha256": hashlib.sha256(data).hexdigest(),
                "text": " ".join(words + hashtags),
                "phash": i,
            }
        )
    return rows


def write_corpus(directory, rows: list[dict], files: int = 2) -> list[str]:
    """Write ``rows`` as ``clean-SSSSS-of-NNNNN.parquet`` (small row groups, as the corpus jobs write) and the
    ``summary.json`` that marks a finished run."""
    os.makedirs(directory, exist_ok=True)
    paths = []
    for shard in range(files):
        path = os.path.join(str(directory), f"clean-{shard:05d}-of-{files:05d}.parquet")
        table = pa.Table.from_pylist(rows[shard::files], schema=CLEAN_CORPUS)
        pq.write_table(table, path, row_group_size=32)
        paths.append(path)
    with open(os.path.join(str(directory), "summary.json"), "w") as handle:
        handle.write('{"job": "clean"}')
    return paths


def save_untrained_checkpoint(path, rows: list[dict], kind: str = "word2vec", image_size: int = 32, seed: int = 0):
    """A checkpoint with a text model fitted on ``rows`` and an untrained resnet-tiny: quick input for job tests."""
    from models.embedding.net import EmbeddingNet, EmbeddingNetConfig, save_embedding_model
    from models.embedding.text_targets import TextTargetConfig, TextTargets, caption_tokens

    text = TextTargets.fit(
        [caption_tokens(r["text"], r["caption_hashtags"]) for r in rows], TextTargetConfig(kind, 16, seed=seed)
    )
    torch.manual_seed(seed)
    model = EmbeddingNet(EmbeddingNetConfig("resnet-tiny", text.dim, "sigmoid" if kind == "lda" else "linear"))
    training = {"train": {"image_size": image_size, "heldout_fraction": 0.25}, "loss": "cosine"}
    save_embedding_model(str(path), model.eval(), text, training)
    return model.eval(), text
