"""The host side of a two-stage detector, torchvision's `GeneralizedRCNNTransform`
(torchvision/models/detection/transform.py) in numpy, float32 throughout:

- `normalize`: (image - mean) / std per channel, on [0, 1] images;
- `resize`: bilinear (`F.interpolate(..., scale_factor=s, recompute_scale_factor=True,
  align_corners=False)`): s = min(min_size / short side, max_size / long side), output size
  floor(side * s), source pixel (dst + 0.5) * in / out - 0.5 clamped at 0, weights as ATen's CPU
  kernel (`upsample_bilinear2d`); or to `fixed_size` (width, height) when set;
- `batch_images`: zero-pad every image to the batch's largest height and width, each rounded up
  to a multiple of `size_divisible` (32), as `batch_images`;
- `resize_boxes`: box coordinates times new / old size per axis (`resize_boxes`), used to put
  targets on the resized image and detections back on the original one.

Images are HWC float arrays with values in [0, 1] (torchvision's CHW float tensors, transposed).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from jaxcnn.errors import InputError


def check_image(image, index: int = 0) -> np.ndarray:
    """The image as float32 HWC with 3 channels, or InputError naming image `index` and the fix:
    rank other than 3, an empty side, integer pixels (scale them to [0, 1] first: torchvision
    refuses integer tensors too), a channel count other than 3, NaN or inf."""
    where = f"image {index}"
    shape = tuple(np.shape(image))
    if len(shape) != 3:
        hint = " Pass a list of single images, not a batch." if len(shape) == 4 else ""
        raise InputError(
            f"{where} has shape {shape}: a detector takes HWC images of rank 3 "
            f"(height, width, 3 channels) with values in [0, 1].{hint}"
        )
    if min(shape) == 0:
        raise InputError(f"{where} has shape {shape}, an empty side; every image needs pixels.")
    dtype = np.asarray(image).dtype if not hasattr(image, "dtype") else np.dtype(image.dtype)
    if not np.issubdtype(dtype, np.floating):
        raise InputError(
            f"{where} has integer dtype {dtype}: detectors take float images in [0, 1] (as "
            "torchvision's). Scale 8-bit pixels with image.astype('float32') / 255 "
            "(for a file: jaxcnn.data.images.read_image(path)[0] / 255)."
        )
    if shape[-1] != 3:
        hint = " It looks like CHW: transpose with image.transpose(1, 2, 0)." if shape[0] == 3 \
            else ""
        raise InputError(f"{where} has shape {shape}; expected HWC with 3 channels.{hint}")
    array = np.asarray(image, np.float32)
    if not np.isfinite(array).all():
        raise InputError(f"{where} contains NaN or infinite pixels.")
    return array


def resized_size(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
    """(height, width) after torchvision's resize: floor(side * s), s = min(min_size / short,
    max_size / long), in Python floats as `F.interpolate` computes it."""
    scale = min(min_size / min(height, width), max_size / max(height, width))
    return max(1, math.floor(height * scale)), max(1, math.floor(width * scale))


def _linear_weights(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per output index: (low source index, high source index, weight of the high one), with
    ATen's float32 arithmetic (area_pixel_compute_source_index, align_corners=False)."""
    scale = np.float32(in_size) / np.float32(out_size)
    # scale * (dst + 0.5) - 0.5 in float32, evaluated as ATen's compiled kernel does: one fused
    # multiply-add (the float32 product is exact in float64, then a single rounding).
    dst = np.arange(out_size, dtype=np.float32) + np.float32(0.5)
    src = (np.float64(scale) * dst.astype(np.float64) - 0.5).astype(np.float32)
    src = np.maximum(src, np.float32(0.0))
    low = src.astype(np.int64)  # truncation == floor on non-negatives
    high = low + (low < in_size - 1)
    frac = np.clip(src - low.astype(np.float32), np.float32(0), np.float32(1))
    return low, high, frac.astype(np.float32)


def resize_bilinear(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`F.interpolate(mode="bilinear", align_corners=False, antialias=False)` of an HWC float32
    image to `size` (height, width): (w0 x[h0, w0] + w1 x[h0, w1]) h0' + (...) h1', as ATen."""
    height, width = image.shape[:2]
    out_h, out_w = size
    if (out_h, out_w) == (height, width):
        return image
    y0, y1, fy = _linear_weights(height, out_h)
    x0, x1, fx = _linear_weights(width, out_w)
    wy0, wy1 = (np.float32(1) - fy)[:, None, None], fy[:, None, None]
    wx0, wx1 = (np.float32(1) - fx)[None, :, None], fx[None, :, None]
    top, bottom = image[y0], image[y1]
    t = top[:, x0] * wx0 + top[:, x1] * wx1
    b = bottom[:, x0] * wx0 + bottom[:, x1] * wx1
    return (t * wy0 + b * wy1).astype(np.float32)


def resize_boxes(boxes, original_size: Sequence[int], new_size: Sequence[int]) -> np.ndarray:
    """Boxes [..., 4] on an image of `original_size` (h, w) mapped onto `new_size` (h, w), with
    torchvision's float32 ratios new / original."""
    boxes = np.asarray(boxes, np.float32)
    ratio_h = np.float32(new_size[0]) / np.float32(original_size[0])
    ratio_w = np.float32(new_size[1]) / np.float32(original_size[1])
    return boxes * np.array([ratio_w, ratio_h, ratio_w, ratio_h], np.float32)


@dataclasses.dataclass(frozen=True)
class RCNNTransform:
    """`GeneralizedRCNNTransform(min_size, max_size, image_mean, image_std, size_divisible,
    fixed_size)` in evaluation mode (the resize uses min_size; torchvision picks one of a tuple
    of min sizes at random only when training)."""

    min_size: int
    max_size: int
    image_mean: tuple[float, ...]  # on the [0, 1] scale, as torchvision's detection models
    image_std: tuple[float, ...]
    size_divisible: int = 32
    fixed_size: tuple[int, int] | None = None  # (width, height), as torchvision

    def target_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) an image of this size is resized to."""
        if self.fixed_size is not None:
            return int(self.fixed_size[1]), int(self.fixed_size[0])
        return resized_size(height, width, self.min_size, self.max_size)

    def normalize(self, image: np.ndarray) -> np.ndarray:
        """(image - mean) / std per channel, float32."""
        mean = np.asarray(self.image_mean, np.float32)
        std = np.asarray(self.image_std, np.float32)
        return (image - mean) / std

    def padded_shape(self, sizes: Sequence[tuple[int, int]]) -> tuple[int, int]:
        """The batch's (height, width): the largest of `sizes`, rounded up to size_divisible."""
        d = self.size_divisible
        return (int(math.ceil(max(h for h, _ in sizes) / d) * d),
                int(math.ceil(max(w for _, w in sizes) / d) * d))  # fmt: skip

    def __call__(
        self, images: Sequence, padded_shape: tuple[int, int] | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(batch [N, H, W, 3] float32 zero-padded, resized sizes [N, 2], original sizes
        [N, 2]) of a list of HWC [0, 1] images; `padded_shape` overrides the batch's (H, W)
        (it must hold every resized image)."""
        if isinstance(images, np.ndarray) and images.ndim == 4:
            images = list(images)
        if not isinstance(images, (list, tuple)) or not images:
            raise InputError(
                "detection takes a non-empty list of HWC images (they may differ in size); got "
                f"{type(images).__name__} {getattr(images, 'shape', '')}."
            )
        prepared, sizes, originals = [], [], []
        for i, image in enumerate(images):
            image = check_image(image, i)
            size = self.target_size(*image.shape[:2])
            prepared.append(resize_bilinear(self.normalize(image), size))
            sizes.append(size)
            originals.append(image.shape[:2])
        shape = padded_shape or self.padded_shape(sizes)
        if any(h > shape[0] or w > shape[1] for h, w in sizes):
            raise InputError(f"padded_shape {shape} is smaller than a resized image {sizes}.")
        batch = np.zeros((len(prepared), *shape, 3), np.float32)
        for i, image in enumerate(prepared):
            batch[i, : image.shape[0], : image.shape[1]] = image
        return batch, np.asarray(sizes, np.int32), np.asarray(originals, np.int32)
