"""RoI Align over a feature pyramid (Lin et al., FPN, 2017, eq. 1), as torchvision's
`MultiScaleRoIAlign` (torchvision/ops/poolers.py): each box is pooled from one level,

    k = clamp(floor(4 + log2(sqrt(area) / 224) + 1e-6), k_min, k_max)     (`LevelMapper`)

with level scales 2^round(log2(feature height / largest image height)) (`_infer_scale`). One
gather serves all levels (the levels' maps are concatenated, each RoI carries its level's
offset, size and scale), so every RoI is pooled once, at the cost of one level, under `jit`;
the sampling is `roi_align`'s (aligned=False, torchvision's CPU kernel arithmetic), with
gradients to the features through the gather.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.detection.roi import _axis_weights


def infer_scales(
    feature_sizes: Sequence[tuple[int, int]], image_size: tuple[int, int]
) -> tuple[float, ...]:
    """torchvision's `_infer_scale` per level: 2^round(log2(feature h / image h)), with
    `image_size` the largest (height, width) of the batch's images."""
    out = []
    for h, _ in feature_sizes:
        approx = np.float32(float(h) / float(image_size[0]))
        out.append(2.0 ** float(np.round(np.log2(approx))))
    return tuple(out)


def map_levels(
    boxes: jax.Array,
    k_min: int,
    k_max: int,
    canonical_scale: int = 224,
    canonical_level: int = 4,
    eps: float = 1e-6,
) -> jax.Array:
    """Pyramid level index (0 = k_min) of each box [..., 4] (`LevelMapper.__call__`)."""
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    s = jnp.sqrt(area)
    lvl = jnp.floor(canonical_level + jnp.log2(s / canonical_scale) + jnp.float32(eps))
    return (jnp.clip(lvl, k_min, k_max) - k_min).astype(jnp.int32)


def multiscale_roi_align(
    features: Sequence[jax.Array],
    boxes: jax.Array,
    output_size: int,
    scales: Sequence[float],
    sampling_ratio: int = 2,
) -> jax.Array:
    """Pool [N, P, 4] boxes (image pixels) from NHWC `features` (one per scale in `scales`,
    finest first) into [N, P, S, S, C]. `sampling_ratio` > 0 (a fixed sampling grid)."""
    if sampling_ratio <= 0:
        raise ValueError("multiscale_roi_align needs a fixed sampling_ratio > 0")
    n, p = boxes.shape[:2]
    c = features[0].shape[-1]
    k_min = int(round(-math.log2(scales[0])))
    k_max = int(round(-math.log2(scales[-1])))
    level = map_levels(boxes, k_min, k_max).reshape(-1)
    heights = np.array([f.shape[1] for f in features], np.int32)
    widths = np.array([f.shape[2] for f in features], np.int32)
    bases = np.cumsum([0] + [n * h * w for h, w in zip(heights, widths, strict=True)])[:-1]
    flat = jnp.concatenate([f.reshape(-1, c) for f in features], axis=0)

    rois = boxes.reshape(-1, 4)
    batch = jnp.repeat(jnp.arange(n, dtype=jnp.int32), p)
    scale = jnp.asarray(np.asarray(scales, np.float32))[level]
    height = jnp.asarray(heights)[level]
    width = jnp.asarray(widths)[level]
    base = jnp.asarray(bases.astype(np.int32))[level]
    start_w = rois[:, 0] * scale
    start_h = rois[:, 1] * scale
    roi_w = jnp.maximum(rois[:, 2] * scale - start_w, 1.0)  # "malformed ROIs" are 1 x 1
    roi_h = jnp.maximum(rois[:, 3] * scale - start_h, 1.0)
    bin_h, bin_w = roi_h / output_size, roi_w / output_size
    grid = jnp.full(rois.shape[:1], sampling_ratio, jnp.int32)
    row0 = (base + batch * height * width)[:, None, None]

    def body(s, acc):
        iy, ix = s // sampling_ratio, s % sampling_ratio
        y_lo, y_hi, hy, ly, y_ok = _axis_weights(
            start_h, bin_h, grid, iy, output_size, height[:, None]
        )
        x_lo, x_hi, hx, lx, x_ok = _axis_weights(
            start_w, bin_w, grid, ix, output_size, width[:, None]
        )
        ok = (y_ok[:, :, None] & x_ok[:, None, :])[..., None]
        w_ = width[:, None, None]
        corners = (
            (y_lo, x_lo, hy, hx), (y_lo, x_hi, hy, lx), (y_hi, x_lo, ly, hx), (y_hi, x_hi, ly, lx)
        )  # fmt: skip
        val = None
        for yi, xi, wy, wx in corners:
            idx = row0 + yi[:, :, None] * w_ + xi[:, None, :]
            term = (wy[:, :, None] * wx[:, None, :])[..., None] * flat[idx]
            val = term if val is None else val + term
        return acc + jnp.where(ok, val, 0.0)

    acc = jnp.zeros((rois.shape[0], output_size, output_size, c), flat.dtype)
    acc = jax.lax.fori_loop(0, sampling_ratio * sampling_ratio, body, acc)
    out = acc / jnp.asarray(sampling_ratio * sampling_ratio, flat.dtype)
    return out.reshape(n, p, output_size, output_size, c)
