"""Bounding-box regression targets: the R-CNN parametrization (Girshick et al., 2014, eq. 1-4;
Ren et al., 2015) exactly as torchvision's `BoxCoder.encode_single` / `decode_single`
(torchvision/models/detection/_utils.py):

    t_x = w_x (g_x - p_x) / p_w      t_y = w_y (g_y - p_y) / p_h
    t_w = w_w log(g_w / p_w)         t_h = w_h log(g_h / p_h)

with (p_x, p_y) and (g_x, g_y) box centres and the inverse g_w = p_w exp(d_w / w_w), d_w and d_h
clamped at log(1000 / 16) before the exp. torchvision's Faster R-CNN uses weights (1, 1, 1, 1)
for the RPN and (10, 10, 5, 5) for the box head.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.detection.boxes import _float, check_boxes, is_concrete
from jaxcnn.errors import InputError

BBOX_XFORM_CLIP = math.log(1000.0 / 16)
"""torchvision's clamp of the decoded d_w, d_h (a box grows at most 62.5x its reference)."""


def _check_positive_size(boxes, name: str) -> None:
    check_boxes(boxes, name)
    if not is_concrete(boxes):
        return
    b = np.asarray(boxes).reshape(-1, 4)
    empty = (b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])
    if empty.any():
        i = int(np.argmax(empty))
        raise InputError(
            f"{name} row {i} = {b[i].tolist()} has zero width or height, so its regression "
            "target is log(0) or a division by zero; drop empty boxes first "
            "(remove_small_boxes / min_size_mask)."
        )


def _centres(boxes: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    widths = boxes[..., 2] - boxes[..., 0]
    heights = boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + 0.5 * widths, boxes[..., 1] + 0.5 * heights, widths, heights


def encode_boxes(
    reference_boxes, proposals, weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
) -> jax.Array:
    """Regression targets [..., N, 4] of ground-truth `reference_boxes` relative to
    `proposals` (both [..., N, 4] xyxy), equal to `BoxCoder(weights).encode_single`."""
    _check_positive_size(reference_boxes, "reference_boxes")
    _check_positive_size(proposals, "proposals")
    gt, prop = _float(reference_boxes), _float(proposals)
    if gt.shape != prop.shape:
        raise InputError(
            f"reference_boxes and proposals must have the same shape; got {gt.shape} and "
            f"{prop.shape} (one ground-truth box per proposal)."
        )
    wx, wy, ww, wh = weights
    ex_x, ex_y, ex_w, ex_h = _centres(prop)
    gt_x, gt_y, gt_w, gt_h = _centres(gt)
    return jnp.stack(
        (
            wx * (gt_x - ex_x) / ex_w,
            wy * (gt_y - ex_y) / ex_h,
            ww * jnp.log(gt_w / ex_w),
            wh * jnp.log(gt_h / ex_h),
        ),
        axis=-1,
    )


def decode_boxes(
    rel_codes,
    boxes,
    weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
    clip: float = BBOX_XFORM_CLIP,
) -> jax.Array:
    """Apply regression deltas `rel_codes` [..., N, 4k] (k boxes per reference, e.g. one per
    class) to reference `boxes` [..., N, 4]; returns [..., N, 4k] xyxy boxes, equal to
    `BoxCoder(weights, clip).decode_single`."""
    check_boxes(boxes)
    rel = _float(rel_codes)
    if is_concrete(rel) and not np.isfinite(np.asarray(rel)).all():
        raise InputError("rel_codes contain NaN or infinite values; check the regression head.")
    boxes = _float(boxes).astype(rel.dtype)
    if rel.shape[:-1] != boxes.shape[:-1] or rel.shape[-1] % 4:
        raise InputError(
            f"rel_codes must have shape [..., N, 4k] matching boxes [..., N, 4]; got "
            f"{rel.shape} and {boxes.shape}."
        )
    ctr_x, ctr_y, widths, heights = (v[..., None] for v in _centres(boxes))
    wx, wy, ww, wh = weights
    dx = rel[..., 0::4] / wx
    dy = rel[..., 1::4] / wy
    dw = jnp.minimum(rel[..., 2::4] / ww, clip)
    dh = jnp.minimum(rel[..., 3::4] / wh, clip)
    pred_ctr_x = dx * widths + ctr_x
    pred_ctr_y = dy * heights + ctr_y
    half_w = 0.5 * (jnp.exp(dw) * widths)
    half_h = 0.5 * (jnp.exp(dh) * heights)
    out = jnp.stack(
        (pred_ctr_x - half_w, pred_ctr_y - half_h, pred_ctr_x + half_w, pred_ctr_y + half_h),
        axis=-1,
    )
    return out.reshape(rel.shape)
