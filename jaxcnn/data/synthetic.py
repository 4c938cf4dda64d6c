"""Small datasets generated offline, deterministically from a seed, for the lessons that need
targets the bundled digits do not have:

- `data.source="shapes"`: semantic segmentation. Each RGB image holds one to three filled
  shapes (circle = class 1, square = 2, triangle = 3) of random colour, size and place on a
  noisy background; the mask gives every pixel its class (0 = background), later shapes
  covering earlier ones. 1,024 train and 256 test images at `data.image_size` (default 64).
- `data.source="rotated_digits"`: regression. The digits (`load_digits`) each rotated by an
  angle drawn uniformly from [-45, 45] degrees; the target is the angle / 45 (float [N, 1],
  in [-1, 1]), the digit's class is kept as "label". The regression lesson's "predict a
  continuous quantity from the image" on real handwriting.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxcnn.data.sources import Source, Splits, _carve_valid, load_digits, register_source
from jaxcnn.errors import DatasetError

SHAPE_CLASSES = ("background", "circle", "square", "triangle")
SHAPES_TRAIN, SHAPES_TEST = 1024, 256
MAX_ANGLE = 45.0


def make_shapes(n: int, size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`n` images uint8 [n, size, size, 3] and masks int32 [n, size, size] with classes
    0..3 (`SHAPE_CLASSES`)."""
    if size < 16:
        raise DatasetError(f"shapes need image_size >= 16; got {size}.")
    rng = np.random.default_rng([seed, 0x5A4E])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    images = np.empty((n, size, size, 3), np.uint8)
    masks = np.zeros((n, size, size), np.int32)
    for i in range(n):
        background = rng.uniform(0, 90, 3)
        image = background + rng.normal(0, 12, (size, size, 3))
        mask = masks[i]
        for _ in range(rng.integers(1, 4)):
            cls = int(rng.integers(1, 4))
            r = rng.uniform(0.12, 0.25) * size
            cy, cx = rng.uniform(r, size - r, 2)
            if cls == 1:
                inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            elif cls == 2:
                inside = (np.abs(yy - cy) <= r * 0.85) & (np.abs(xx - cx) <= r * 0.85)
            else:  # upward triangle: apex at the top, base at the bottom
                top, base = cy - r, cy + r
                half = (yy - top) / (2 * r) * r
                inside = (yy >= top) & (yy <= base) & (np.abs(xx - cx) <= half)
            mask[inside] = cls
            image[inside] = rng.uniform(120, 255, 3) + rng.normal(0, 12, (int(inside.sum()), 3))
        images[i] = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return images, masks


def load_shapes(image_size: int = 64, *, valid_fraction: float = 0.0, seed: int = 0) -> Splits:
    """The shapes segmentation set: train and test generated from different seeds."""
    train = Source(dict(zip(("image", "mask"), make_shapes(SHAPES_TRAIN, image_size, seed),
                            strict=True)))
    test = Source(dict(zip(("image", "mask"), make_shapes(SHAPES_TEST, image_size, seed + 1),
                           strict=True)))
    train, valid = _carve_valid(train, test, valid_fraction, seed)
    return Splits("shapes", train, valid, test, SHAPE_CLASSES)


def rotate_images(images: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """uint8 images [N, H, W, C] rotated counter-clockwise by `angles` degrees about their
    centres (bilinear, black corners), with PIL."""
    from PIL import Image

    out = np.empty_like(images)
    for i, (image, angle) in enumerate(zip(images, angles, strict=True)):
        channels = [np.asarray(Image.fromarray(image[..., c]).rotate(
            float(angle), resample=Image.BILINEAR)) for c in range(image.shape[-1])]
        out[i] = np.stack(channels, -1)
    return out


def load_rotated_digits(image_size: int = 32, *, valid_fraction: float = 0.0, seed: int = 0
                        ) -> Splits:
    """The digits rotated by U(-45, 45) degrees; "target" = angle / 45 (float32 [N, 1])."""
    digits = load_digits(image_size)

    def rotated(split: Source, offset: int) -> Source:
        rng = np.random.default_rng([seed, offset, 0xA16])
        angles = rng.uniform(-MAX_ANGLE, MAX_ANGLE, len(split)).astype(np.float32)
        return Source({"image": rotate_images(split.arrays["image"], angles),
                       "label": split.arrays["label"],
                       "target": (angles / MAX_ANGLE)[:, None]})

    train, test = rotated(digits.train, 0), rotated(digits.test, 1)
    train, valid = _carve_valid(train, test, valid_fraction, seed)
    return Splits("rotated_digits", train, valid, test, digits.class_names)


def _shapes_from_config(data: Any, seed: int) -> Splits:
    return load_shapes(int(data.get("image_size") or 64),
                       valid_fraction=float(data.get("valid_fraction", 0.0)), seed=seed)


def _rotated_from_config(data: Any, seed: int) -> Splits:
    return load_rotated_digits(int(data.get("image_size") or 32),
                               valid_fraction=float(data.get("valid_fraction", 0.0)), seed=seed)


register_source("shapes", _shapes_from_config)
register_source("rotated_digits", _rotated_from_config)
