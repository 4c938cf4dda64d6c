"""Host-side image transforms, run per example in the input pipeline's worker processes:
decode (with PIL's reduced-size JPEG `draft` when the output is much smaller), torchvision's
RandomResizedCrop (10-attempt sampling and central fallback) and horizontal flip for
training, Resize(shorter side) + CenterCrop for evaluation, RandomCrop with zero padding.

Given the same crop parameters the outputs equal torchvision's `transforms.v2` on PIL images
(the classic `ImageFolder` recipe): RandomResizedCrop bit for bit, the evaluation transform
within one uint8 level (it resizes only the centre crop's pixels, a PIL `box` resize).
tests/golden/make_transforms_golden.py records torchvision's outputs; tests/test_data_transforms.py
compares. numpy + PIL only: no jax here, the workers never compile anything."""

from __future__ import annotations

import dataclasses
import io
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from jaxcnn.errors import ConfigError

IMAGENET_SCALE = (0.08, 1.0)
IMAGENET_RATIO = (3.0 / 4.0, 4.0 / 3.0)
_DRAFT_SCALES = (8, 4, 2)  # the reductions libjpeg can apply while decoding (1 = none)


def resized_size(height: int, width: int, size: int) -> tuple[int, int]:
    """torchvision's `resize(img, size)` output for an int size: the short side becomes
    `size`, the long side `int(size * long / short)` (truncated, as torchvision does)."""
    short, long = (height, width) if height <= width else (width, height)
    new_short, new_long = size, int(size * long / short)
    return (new_short, new_long) if height <= width else (new_long, new_short)


def center_crop_anchor(height: int, width: int, crop: int) -> tuple[int, int]:
    """torchvision's `center_crop` top/left offsets: `int(round((size - crop) / 2))`."""
    return int(round((height - crop) / 2.0)), int(round((width - crop) / 2.0))


def center_crop(array: np.ndarray, crop: int) -> np.ndarray:
    """torchvision's `center_crop` on HWC: zero-pad when smaller, top/left offsets rounded."""
    h, w = array.shape[:2]
    if h < crop or w < crop:
        pad_h, pad_w = max(crop - h, 0), max(crop - w, 0)
        pad = [(pad_h // 2, (pad_h + 1) // 2), (pad_w // 2, (pad_w + 1) // 2)]
        array = np.pad(array, pad + [(0, 0)] * (array.ndim - 2))
        h, w = array.shape[:2]
    top, left = center_crop_anchor(h, w, crop)
    return array[top:top + crop, left:left + crop]


def random_resized_crop_params(
    rng: random.Random, height: int, width: int,
    scale: tuple[float, float] = IMAGENET_SCALE, ratio: tuple[float, float] = IMAGENET_RATIO,
) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a RandomResizedCrop (Szegedy et al. 2015, "Going deeper
    with convolutions"), as torchvision's `RandomResizedCrop.make_params`: up to 10 tries of
    an area fraction uniform in `scale` and a log-uniform aspect ratio in `ratio`; if none
    fits, the whole image clipped to the ratio range, centred."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randrange(height - h + 1), rng.randrange(width - w + 1), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _mode(channels: int) -> str:
    return "L" if channels == 1 else "RGB"


def open_image(data: bytes | str | Path | np.ndarray | Image.Image) -> Image.Image:
    """A PIL image from encoded bytes, a path, an HWC/HW uint8 array or a PIL image. Only the
    header is read for encoded input (decoding waits for `load`/`draft`)."""
    if isinstance(data, Image.Image):
        return data
    if isinstance(data, np.ndarray):
        return Image.fromarray(data[..., 0] if data.ndim == 3 and data.shape[-1] == 1 else data)
    if isinstance(data, str | Path):
        return Image.open(data)
    return Image.open(io.BytesIO(data))


def _draft(img: Image.Image, mode: str, region: tuple[float, float], size: tuple[int, int]
           ) -> tuple[float, float]:
    """Let libjpeg decode `img` at 1/2, 1/4 or 1/8 scale when the `region` (w, h) of the full
    image that becomes `size` (w, h) keeps at least `size` pixels; returns the (x, y) factors
    from full-size to decoded coordinates (1.0 when nothing was reduced)."""
    if img.format != "JPEG":
        return 1.0, 1.0
    full_w, full_h = img.size
    for s in _DRAFT_SCALES:
        if region[0] >= s * size[0] and region[1] >= s * size[1]:
            img.draft(mode, (full_w // s, full_h // s))
            return img.size[0] / full_w, img.size[1] / full_h
    return 1.0, 1.0


def _as_mode(img: Image.Image, mode: str) -> Image.Image:
    return img if img.mode == mode else img.convert(mode)


def _to_array(img: Image.Image) -> np.ndarray:
    arr = np.asarray(img, np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


def resized_crop(img: Image.Image, top: int, left: int, height: int, width: int, size: int,
                 *, channels: int = 3, draft: bool = False) -> np.ndarray:
    """torchvision's `resized_crop` on a PIL image: crop (top, left, height, width), then
    resize to size x size, bilinear with PIL's antialiasing. With `draft`, a JPEG is decoded
    at reduced scale when the crop keeps at least `size` pixels (an approximation)."""
    mode = _mode(channels)
    fx, fy = _draft(img, mode, (width, height), (size, size)) if draft else (1.0, 1.0)
    img = _as_mode(img, mode)
    if (fx, fy) != (1.0, 1.0):
        box = (left * fx, top * fy, (left + width) * fx, (top + height) * fy)
        return _to_array(img.resize((size, size), Image.BILINEAR, box=box))
    crop = img.crop((left, top, left + width, top + height))
    if crop.size != (size, size):
        crop = crop.resize((size, size), Image.BILINEAR)
    return _to_array(crop)


def resize_center_crop(img: Image.Image, resize: int, crop: int, *, channels: int = 3,
                       draft: bool = False) -> np.ndarray:
    """torchvision's `Resize(resize)` (shorter side, bilinear, antialiased) then
    `CenterCrop(crop)`, computing only the crop's pixels (one PIL resize with a `box`; equal
    to resize-then-crop within one uint8 level of rounding)."""
    mode = _mode(channels)
    full_w, full_h = img.size
    new_h, new_w = resized_size(full_h, full_w, resize)
    if new_h < crop or new_w < crop:  # torchvision zero-pads: do it the plain way
        img = _as_mode(img, mode)
        return center_crop(_to_array(img.resize((new_w, new_h), Image.BILINEAR)), crop)
    fx, fy = (_draft(img, mode, (full_w * crop / new_w, full_h * crop / new_h), (crop, crop))
              if draft else (1.0, 1.0))
    img = _as_mode(img, mode)
    if (new_h, new_w) == (full_h, full_w):
        top, left = center_crop_anchor(new_h, new_w, crop)
        return _to_array(img.crop((left, top, left + crop, top + crop)))
    top, left = center_crop_anchor(new_h, new_w, crop)
    sx, sy = full_w / new_w * fx, full_h / new_h * fy
    box = (left * sx, top * sy, (left + crop) * sx, (top + crop) * sy)
    return _to_array(img.resize((crop, crop), Image.BILINEAR, box=box))


def pad_random_crop(rng: random.Random, array: np.ndarray, padding: int) -> np.ndarray:
    """torchvision's `RandomCrop(size, padding)`: zero-pad by `padding` on every side and
    crop the original size at a uniform random offset (top, then left, in [0, 2 * padding])."""
    if not padding:
        return array
    top, left = rng.randrange(2 * padding + 1), rng.randrange(2 * padding + 1)
    return shifted(array, top - padding, left - padding)


def shifted(array: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """The window of `array`'s size at offset (dy, dx), zeros outside: a crop of the
    zero-padded image without building the padded copy."""
    h, w = array.shape[:2]
    out = np.zeros_like(array)
    y0, y1, x0, x1 = max(dy, 0), min(dy + h, h), max(dx, 0), min(dx + w, w)
    if y0 < y1 and x0 < x1:
        out[y0 - dy:y1 - dy, x0 - dx:x1 - dx] = array[y0:y1, x0:x1]
    return out


@dataclasses.dataclass(frozen=True)
class ImageTransform:
    """One example's host transform: decode, then (train) RandomResizedCrop or pad-and-crop
    and a horizontal flip, or (eval) Resize + CenterCrop; uint8 [size, size, channels] out
    (possibly a strided view: batching copies it anyway). Random draws come from a
    `random.Random` (cheap to seed per example: the pipeline seeds one per (seed, epoch,
    example)). Picklable, so grain ships it to its worker processes.

    size: output side (0: keep the decoded size); resize: the shorter side before the centre
    crop (eval, and train without RandomResizedCrop; 0: `size`)."""

    train: bool = False
    size: int = 0
    channels: int = 3
    random_resized_crop: bool = False
    scale: tuple[float, float] = IMAGENET_SCALE
    ratio: tuple[float, float] = IMAGENET_RATIO
    resize: int = 0
    crop_padding: int = 0
    flip: bool = False
    draft: bool = True

    def __post_init__(self) -> None:
        if self.random_resized_crop and not self.size:
            raise ConfigError(
                "RandomResizedCrop needs an output size: set config.data.image_size (e.g. 224)."
            )
        if not (0 < self.scale[0] <= self.scale[1] <= 1.0):
            raise ConfigError(f"RandomResizedCrop scale must satisfy 0 < lo <= hi <= 1; got "
                              f"{tuple(self.scale)}.")
        if not (0 < self.ratio[0] <= self.ratio[1]):
            raise ConfigError(f"RandomResizedCrop ratio must satisfy 0 < lo <= hi; got "
                              f"{tuple(self.ratio)}.")
        if self.resize and self.size and self.resize < self.size:
            raise ConfigError(f"the eval resize ({self.resize}) is smaller than the centre crop "
                              f"({self.size}); use resize >= image_size (e.g. 256 for 224).")

    @property
    def randomized(self) -> bool:
        """Whether the transform draws random numbers (a train transform that augments)."""
        return self.train and (self.random_resized_crop or self.crop_padding > 0 or self.flip)

    def __call__(self, image: Any, rng: random.Random | None = None) -> np.ndarray:
        """uint8 [H, W, C] from encoded bytes, a path, an array or a PIL image."""
        img = open_image(image)
        if self.train and self.random_resized_crop:
            assert rng is not None
            width, height = img.size
            top, left, h, w = random_resized_crop_params(rng, height, width, self.scale,
                                                         self.ratio)
            out = resized_crop(img, top, left, h, w, self.size, channels=self.channels,
                               draft=self.draft)
        elif self.size:
            out = resize_center_crop(img, self.resize or self.size, self.size,
                                     channels=self.channels, draft=self.draft)
        else:
            out = _to_array(_as_mode(img, _mode(self.channels)))
        if self.train and self.crop_padding:
            assert rng is not None
            out = pad_random_crop(rng, out, self.crop_padding)
        if self.train and self.flip:
            assert rng is not None
            if rng.random() < 0.5:  # torchvision: flip when rand < p
                out = out[:, ::-1]
        return out
