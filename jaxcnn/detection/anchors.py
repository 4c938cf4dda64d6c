"""Anchor boxes of the region proposal network (Ren et al., Faster R-CNN, 2015), the numbers of
torchvision's `AnchorGenerator` (torchvision/models/detection/anchor_utils.py).

For each feature level, every (aspect ratio, size) pair gives a zero-centred cell anchor
(-w/2, -h/2, w/2, h/2) with h/w = aspect ratio and sqrt(w h) = size, rounded to integers
(half to even, as `torch.round`); the cell anchors are then shifted to every feature-map cell,
(x, y) = (column, row) * stride with stride = image_size // feature_size per axis. The order is
torchvision's: levels, then cells row-major, then the cell's anchors ratio-major.

Anchors depend only on static shapes, so they are numpy float32 constants: computed once per
shape on the host and folded into a compiled detector.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from jaxcnn.errors import InputError


def _nested(values, name: str) -> tuple[tuple[float, ...], ...]:
    if not isinstance(values, (list, tuple)) or not values:
        raise InputError(f"AnchorGenerator {name} must be a non-empty tuple; got {values!r}.")
    return tuple(tuple(v) if isinstance(v, (list, tuple)) else (v,) for v in values)


@dataclasses.dataclass(frozen=True)
class AnchorGenerator:
    """Anchors for a set of feature levels: `sizes[i]` x `aspect_ratios[i]` per cell of level i.

    Accepts torchvision's forms: `sizes=(32, 64)` means one size per level, and a flat
    `aspect_ratios=(0.5, 1.0, 2.0)` is used for every level.
    """

    sizes: tuple = ((128, 256, 512),)
    aspect_ratios: tuple = ((0.5, 1.0, 2.0),)

    def __post_init__(self):
        sizes = _nested(self.sizes, "sizes")
        ratios = self.aspect_ratios
        if (
            isinstance(ratios, (list, tuple))
            and ratios
            and not isinstance(ratios[0], (list, tuple))
        ):
            ratios = (tuple(ratios),) * len(sizes)
        ratios = _nested(ratios, "aspect_ratios")
        if len(sizes) != len(ratios):
            raise InputError(
                f"AnchorGenerator needs one aspect-ratio tuple per level: {len(sizes)} size "
                f"tuples but {len(ratios)} aspect-ratio tuples."
            )
        if any(s <= 0 for level in sizes for s in level) or any(
            r <= 0 for level in ratios for r in level
        ):
            raise InputError("AnchorGenerator sizes and aspect ratios must be positive.")
        object.__setattr__(self, "sizes", sizes)
        object.__setattr__(self, "aspect_ratios", ratios)

    def num_anchors_per_location(self) -> list[int]:
        """Anchors per feature-map cell, per level (the RPN head's output channels)."""
        return [len(s) * len(a) for s, a in zip(self.sizes, self.aspect_ratios, strict=True)]

    def cell_anchors(self) -> list[np.ndarray]:
        """Per level, the zero-centred anchors [A, 4] float32 (`generate_anchors`)."""
        out = []
        for sizes, ratios in zip(self.sizes, self.aspect_ratios, strict=True):
            scales = np.asarray(sizes, np.float32)
            h_ratios = np.sqrt(np.asarray(ratios, np.float32))
            w_ratios = np.float32(1) / h_ratios
            ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)
            hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)
            out.append(np.round(np.stack([-ws, -hs, ws, hs], axis=1) / np.float32(2)))
        return out

    def level_anchors(
        self, image_size: tuple[int, int], feature_sizes: Sequence[tuple[int, int]]
    ) -> list[np.ndarray]:
        """Per level, the anchors [h * w * A, 4] float32 of an image (batch) of `image_size`
        (height, width) whose feature maps have `feature_sizes` [(h, w), ...]."""
        if len(feature_sizes) != len(self.sizes):
            raise InputError(
                f"AnchorGenerator has {len(self.sizes)} level(s) but got "
                f"{len(feature_sizes)} feature map size(s); pass one (h, w) per level."
            )
        height, width = (int(v) for v in image_size)
        out = []
        for (gh, gw), base in zip(feature_sizes, self.cell_anchors(), strict=True):
            gh, gw = int(gh), int(gw)
            if gh < 1 or gw < 1 or gh > height or gw > width:
                raise InputError(
                    f"feature map size {(gh, gw)} does not fit image size {(height, width)}."
                )
            sy, sx = height // gh, width // gw
            shift_y, shift_x = np.meshgrid(
                np.arange(gh, dtype=np.int64) * sy,
                np.arange(gw, dtype=np.int64) * sx,
                indexing="ij",
            )
            shifts = np.stack([shift_x, shift_y, shift_x, shift_y], axis=-1).reshape(-1, 1, 4)
            out.append((shifts.astype(np.float32) + base[None]).reshape(-1, 4))
        return out

    def __call__(
        self, image_size: tuple[int, int], feature_sizes: Sequence[tuple[int, int]]
    ) -> np.ndarray:
        """All levels' anchors concatenated, [sum_l h_l * w_l * A_l, 4] float32 (the anchors of
        every image of a padded batch, as torchvision's `AnchorGenerator.forward`)."""
        return np.concatenate(self.level_anchors(image_size, feature_sizes), axis=0)
