"""models.common.pixels: the one uint8 HWC ↔ float NCHW [0, 1] conversion, exact both ways."""

import numpy as np
import pytest
import torch

from models.common.pixels import ImageNetNormalize, float_to_uint8, tensor_to_pil, uint8_to_float


def test_uint8_round_trip_is_exact_for_one_image_and_a_batch():
    pixels = np.random.default_rng(0).integers(0, 256, size=(2, 5, 7, 3), dtype=np.uint8)
    images = uint8_to_float(pixels)
    assert images.shape == (2, 3, 5, 7) and images.dtype == torch.float32 and images.is_contiguous()
    assert float(images.min()) >= 0 and float(images.max()) <= 1
    assert np.array_equal(float_to_uint8(images).numpy(), pixels)
    assert np.array_equal(float_to_uint8(uint8_to_float(pixels[0])).numpy(), pixels[0])
    assert np.array_equal(np.asarray(tensor_to_pil(uint8_to_float(pixels[1]))), pixels[1])


def test_read_only_arrays_are_copied_and_channels_last_keeps_the_layout():
    pixels = np.full((4, 6, 3), 51, np.uint8)
    pixels.flags.writeable = False
    images = uint8_to_float(pixels[None], channels_last=True)
    assert images.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(images, torch.full((1, 3, 4, 6), 0.2))


def test_out_of_range_values_are_clamped_and_rounded_to_nearest():
    red, green, blue = [-0.5, 0.0], [0.4 / 255, 0.6 / 255], [1.0, 3.0]
    images = torch.tensor([red, green, blue]).view(1, 3, 1, 2)
    assert float_to_uint8(images).flatten().tolist() == [0, 0, 255, 0, 1, 255]  # HWC: (r, g, b) of each pixel


def test_float_pixels_are_refused():
    with pytest.raises(TypeError, match="uint8"):
        uint8_to_float(np.zeros((2, 2, 3), np.float32))


def test_imagenet_normalize_maps_the_mean_to_zero():
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    assert torch.allclose(ImageNetNormalize()(mean), torch.zeros(1, 3, 2, 2), atol=1e-6)
