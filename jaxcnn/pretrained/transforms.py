"""torchvision's `ImageClassification` evaluation transform in numpy + PIL: resize the short
side (bilinear, antialiased), center crop, scale to [0, 1], normalize with ImageNet mean/std.
Output is float32 HWC, jaxcnn's layout, for a PIL image or an HWC/HW array."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from PIL import Image

from jaxcnn.data.transforms import center_crop, resized_size
from jaxcnn.errors import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _to_pil_channels(image: Any) -> tuple[list[Image.Image], bool]:
    """PIL images to resize: one RGB image (uint8 path, exactly torchvision-on-PIL) or one
    mode-"F" image per channel (float arrays in [0, 1]). Returns (images, is_uint8)."""
    if isinstance(image, Image.Image):
        return [image.convert("RGB")], True
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise InputError(
            f"Expected an image as a PIL image or an HWC array with 1, 3 or 4 channels; got "
            f"an array of shape {array.shape}. Batches: call the transform per image."
        )
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    array = array[..., :3]
    if array.dtype == np.uint8:
        return [Image.fromarray(np.ascontiguousarray(array), "RGB")], True
    if not np.issubdtype(array.dtype, np.floating):
        raise InputError(
            f"Expected uint8 pixels in [0, 255] or floats in [0, 1]; got dtype {array.dtype}."
        )
    channels = [Image.fromarray(np.ascontiguousarray(array[..., c], np.float32), "F")
                for c in range(3)]  # fmt: skip
    return channels, False


@dataclasses.dataclass(frozen=True)
class ImageClassification:
    """Callable preprocessing: image (PIL, uint8 or float [0, 1] HWC array) -> float32
    [crop, crop, 3], normalized. Matches torchvision's transform exactly on PIL/uint8 input."""

    resize_size: int = 256
    crop_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __call__(self, image: Any) -> np.ndarray:
        images, is_uint8 = _to_pil_channels(image)
        width, height = images[0].size
        new_h, new_w = resized_size(height, width, self.resize_size)
        # PIL's BILINEAR resize filters with a support scaled by the reduction factor:
        # the antialiased bilinear that torchvision applies to PIL images.
        resized = [im.resize((new_w, new_h), Image.BILINEAR) for im in images]
        if is_uint8:
            array = np.asarray(resized[0], np.float32) / 255.0
        else:
            array = np.stack([np.asarray(im, np.float32) for im in resized], axis=-1)
        array = center_crop(array, self.crop_size)
        mean = np.asarray(self.mean, np.float32)
        std = np.asarray(self.std, np.float32)
        return ((array - mean) / std).astype(np.float32)

    def batch(self, images: Any) -> np.ndarray:
        """A list of images -> one float32 NHWC batch."""
        return np.stack([self(im) for im in images])


def preprocess(image: Any, resize_size: int = 256, crop_size: int = 224) -> np.ndarray:
    """The ImageNet evaluation transform of one image (see `ImageClassification`)."""
    return ImageClassification(resize_size, crop_size)(image)
