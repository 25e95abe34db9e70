"""The one decoder: every mode to upright RGB, every broken file to a reason."""

import io
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from models.common.errors import ImageRejected
from models.common.pixels import tensor_to_pil
from tests.conftest import encode, make_image
from transforms.images import (
    decode_image,
    encode_image,
    pil_to_tensor,
    resize_short_side,
)


def reason(data, **kwargs):
    with pytest.raises(ImageRejected) as info:
        decode_image(data, **kwargs)
    return info.value.reason


def test_exif_orientation_is_applied():
    image = make_image(60, 40)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    data = encode(image, "JPEG", exif=exif.tobytes())
    decoded = decode_image(data)
    assert decoded.size == (40, 60)


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "CMYK", "P", "1", "I", "F"])
def test_every_mode_becomes_rgb(mode):
    image = make_image(40, 30).convert(mode)
    fmt = {"CMYK": "JPEG", "F": "TIFF", "I": "PNG"}.get(mode, "PNG")
    decoded = decode_image(encode(image, fmt))
    assert decoded.mode == "RGB" and decoded.size == (40, 30)


def test_transparency_is_composited_over_white():
    rgba = Image.new("RGBA", (32, 32), (255, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (0, 0, 16, 32))
    pixels = np.asarray(decode_image(encode(rgba)))
    assert tuple(pixels[5, 5]) == (0, 0, 255) and tuple(pixels[5, 25]) == (255, 255, 255)
    palette = Image.new("P", (32, 32), 1)
    palette.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    data = encode(palette, "PNG", transparency=1)
    assert tuple(np.asarray(decode_image(data))[0, 0]) == (255, 255, 255)


def test_sixteen_bit_greyscale_keeps_its_range():
    array = (np.linspace(0, 65535, 64 * 32).reshape(32, 64)).astype(np.uint16)
    decoded = np.asarray(decode_image(encode(Image.fromarray(array, "I;16"))))
    assert decoded[0, 0, 0] == 0 and decoded[-1, -1, 0] == 255 and decoded[16, 32, 0] > 100


def test_animation_gives_its_first_frame():
    frames = [Image.new("RGB", (32, 32), colour) for colour in [(255, 0, 0), (0, 255, 0)]]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=50)
    pixel = np.asarray(decode_image(buffer.getvalue()))[10, 10]
    assert pixel[0] > 200 and pixel[1] < 50


def test_broken_files_have_reasons():
    good = encode(make_image(64, 64), "JPEG")
    assert reason(b"") == "empty_file"
    assert reason(b"hello, not an image") == "not_an_image"
    assert reason(good[: len(good) // 2]) == "corrupt_image"
    assert reason(encode(make_image(8, 64))) == "too_small"
    assert reason(encode(make_image(64, 64)), max_pixels=1000) == "too_many_pixels"


def test_every_format_cut_short_is_a_reason():
    """Fuzzed: 26 formats Pillow writes, cut at every length; only QOI raised something else (IndexError)."""
    for fmt in ("JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP", "QOI"):
        data = encode(make_image(40, 32), fmt)
        for cut in range(1, min(len(data), 120)):
            assert reason(data[:cut]) in ("empty_file", "not_an_image", "corrupt_image"), (fmt, cut)


def test_pillow_decompression_bomb_is_rejected_not_raised():
    huge = Image.new("1", (20000, 20000))  # 400 MP; PNG of a blank bilevel image is tiny
    assert reason(encode(huge), max_pixels=10**12) == "too_many_pixels"


def test_jpeg_draft_decodes_smaller_but_not_below_target():
    data = encode(make_image(1024, 768), "JPEG")
    drafted = decode_image(data, draft_side=200)
    assert 200 <= min(drafted.size) < 768


def test_encode_is_deterministic_and_round_trips():
    image = make_image(48, 40)
    assert encode_image(image, "png") == encode_image(image, "png")
    assert encode_image(image, "jpeg") == encode_image(image, "jpeg")
    assert np.array_equal(np.asarray(decode_image(encode_image(image, "png"))), np.asarray(image))
    with pytest.raises(ValueError, match="unknown image format"):
        encode_image(image, "gif")


def test_tensor_round_trip_and_resize():
    image = make_image(50, 30)
    tensor = pil_to_tensor(image)
    assert tensor.shape == (3, 30, 50) and tensor.dtype == torch.float32 and 0 <= tensor.min() <= tensor.max() <= 1
    assert np.array_equal(np.asarray(tensor_to_pil(tensor)), np.asarray(image))
    assert resize_short_side(image, 60).size == (100, 60)


@pytest.mark.parametrize("failure", [struct.error("unpack requires a buffer of 4 bytes"), TypeError("bad header")])
def test_any_decoder_failure_is_a_rejection_not_a_crash(monkeypatch, failure):
    """Pillow's plugins raise more than OSError/ValueError on crafted files."""
    from PIL import Image

    real_open = Image.open

    def open_then_fail(*args, **kwargs):
        image = real_open(*args, **kwargs)
        monkeypatch.setattr(image, "load", lambda: (_ for _ in ()).throw(failure))
        return image

    monkeypatch.setattr(Image, "open", open_then_fail)
    with pytest.raises(ImageRejected) as rejected:
        decode_image(encode(make_image(20, 20)))
    assert rejected.value.reason == "corrupt_image" and type(failure).__name__ in rejected.value.detail


def test_resize_long_side_makes_the_long_side_exactly_the_size():
    """stylize --max-size N: 3:2 photos came out N-1 wide (the short side was floored first)."""
    from transforms.images import resize_long_side

    cases = [((385, 256), 64, (64, 43)), ((256, 383), 100, (67, 100)), ((600, 400), 99, (99, 66))]
    for size, target, expected in cases:
        assert resize_long_side(Image.new("RGB", size), target).size == expected
    image = Image.new("RGB", (50, 20))
    assert resize_long_side(image, 50) is image


def png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` × ``height`` (1-bit grey) and whose pixel data is broken: decoding it
    fails at once, so a test sees whether the size was accepted without decoding 100 MP."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"not zlib") + chunk(b"IEND", b"")


def test_a_100_megapixel_image_is_judged_by_max_pixels_alone():
    """--max-pixels 150000000 still rejected a 100 MP image at Pillow's own 89.5 MP warning."""
    data = png_header_claiming(10_000, 10_000)
    assert reason(data) == "too_many_pixels"  # above the default 64 MP
    assert reason(data, max_pixels=150_000_000) == "corrupt_image"  # accepted by size, so decoded (and broken)

    from transforms.images import MAX_PIXELS_CEILING

    assert MAX_PIXELS_CEILING == 2 * Image.MAX_IMAGE_PIXELS  # above it Pillow refuses whatever the limit


def test_pillows_bomb_warning_is_not_a_second_limit(monkeypatch):
    """The same on a small image: Pillow's process-wide limit (lowered here) does not reject what max_pixels
    allows, and is left as it was."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5_000)
    data = encode(make_image(100, 100))  # 10,000 px: over Pillow's warning, not its hard refusal at twice it
    assert decode_image(data, max_pixels=20_000).size == (100, 100)
    assert reason(data, max_pixels=9_999) == "too_many_pixels"
    assert Image.MAX_IMAGE_PIXELS == 5_000


def test_memory_running_out_in_a_decode_is_a_reason(monkeypatch):
    def no_memory(image):
        raise MemoryError

    monkeypatch.setattr("transforms.images.to_rgb", no_memory)
    assert reason(encode(make_image(20, 20))) == "out_of_memory"
