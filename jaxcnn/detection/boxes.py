"""Box operations on (x1, y1, x2, y2) pixel boxes, as `torchvision.ops.boxes`.

Every function is a pure jax function that works under `jax.jit` and `jax.vmap` (leading batch
dimensions broadcast like torchvision's `[..., N, 4]`). Called eagerly on concrete arrays, they
first check their input (`check_boxes`): a wrong shape, NaN/inf coordinates or x2 < x1 raise
`InputError` naming the first bad row. Under `jit` the check is skipped (tracers have no values),
so a compiled caller masks its padded rows itself.

One deliberate difference from torchvision: the IoU of two zero-area boxes is 0, not 0/0 = NaN
(torchvision's nms treats NaN as "not overlapping", so its kept indices are unchanged).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.errors import InputError

FORMATS = ("xyxy", "xywh", "cxcywh")


def is_concrete(*arrays) -> bool:
    """True when no argument is a jax tracer, i.e. the values can be inspected on the host."""
    return not any(isinstance(a, jax.core.Tracer) for a in arrays)


def check_boxes(boxes, name: str = "boxes", *, allow_empty: bool = True) -> None:
    """Raise `InputError` if concrete `boxes` are not [..., 4] finite (x1, y1, x2, y2) with
    x1 <= x2 and y1 <= y2; a no-op on tracers (inside `jit`)."""
    if not is_concrete(boxes):
        return
    b = np.asarray(boxes)
    if b.ndim < 1 or b.shape[-1] != 4:
        raise InputError(
            f"{name} must have shape [..., 4] (x1, y1, x2, y2 per row); got shape {b.shape}."
        )
    if b.size == 0:
        if not allow_empty:
            raise InputError(f"{name} is empty (shape {b.shape}); pass at least one box.")
        return
    rows = b.reshape(-1, 4)
    bad = ~np.isfinite(rows).all(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        raise InputError(
            f"{name} row {i} = {rows[i].tolist()} has a NaN or infinite coordinate; "
            "drop or repair that box before calling."
        )
    flipped = (rows[:, 2] < rows[:, 0]) | (rows[:, 3] < rows[:, 1])
    if flipped.any():
        i = int(np.argmax(flipped))
        raise InputError(
            f"{name} row {i} = {rows[i].tolist()} has x2 < x1 or y2 < y1; boxes are "
            "(x1, y1, x2, y2) with the top-left corner first (convert with box_convert)."
        )


def _float(x) -> jax.Array:
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)


def box_convert(boxes, in_fmt: str, out_fmt: str) -> jax.Array:
    """Convert boxes between "xyxy", "xywh" (top-left, size) and "cxcywh" (centre, size), with
    torchvision's formulas (`torchvision.ops.box_convert`)."""
    for fmt in (in_fmt, out_fmt):
        if fmt not in FORMATS:
            raise InputError(f"unknown box format {fmt!r}; expected one of {FORMATS}.")
    boxes = _float(boxes)
    if boxes.shape[-1:] != (4,):
        raise InputError(f"boxes must have shape [..., 4]; got {boxes.shape}.")
    a, b, c, d = (boxes[..., i] for i in range(4))
    if in_fmt == "xywh":
        a, b, c, d = a, b, a + c, b + d
    elif in_fmt == "cxcywh":
        a, b, c, d = a - 0.5 * c, b - 0.5 * d, a + 0.5 * c, b + 0.5 * d
    if out_fmt == "xywh":
        a, b, c, d = a, b, c - a, d - b
    elif out_fmt == "cxcywh":
        a, b, c, d = (a + c) / 2, (b + d) / 2, c - a, d - b
    return jnp.stack((a, b, c, d), axis=-1)


def box_area(boxes) -> jax.Array:
    """Area (x2 - x1) * (y2 - y1) of each box, shape [...]."""
    check_boxes(boxes)
    boxes = _float(boxes)
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


@jax.jit
def _iou(boxes1: jax.Array, boxes2: jax.Array) -> jax.Array:
    return _safe_div(*_inter_union(boxes1, boxes2))


def _inter_union(boxes1: jax.Array, boxes2: jax.Array) -> tuple[jax.Array, jax.Array]:
    area1 = (boxes1[..., 2] - boxes1[..., 0]) * (boxes1[..., 3] - boxes1[..., 1])
    area2 = (boxes2[..., 2] - boxes2[..., 0]) * (boxes2[..., 3] - boxes2[..., 1])
    lt = jnp.maximum(boxes1[..., :, None, :2], boxes2[..., None, :, :2])
    rb = jnp.minimum(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])
    wh = jnp.maximum(rb - lt, 0.0)
    inter = wh[..., 0] * wh[..., 1]
    return inter, area1[..., :, None] + area2[..., None, :] - inter


def _safe_div(num: jax.Array, den: jax.Array) -> jax.Array:
    # 0 where den == 0 (two empty boxes), with finite gradients on both branches.
    ok = den > 0
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)


def box_iou(boxes1, boxes2) -> jax.Array:
    """Pairwise intersection over union, [..., N, 4] x [..., M, 4] -> [..., N, M]
    (`torchvision.ops.box_iou`; 0 instead of NaN for two empty boxes)."""
    check_boxes(boxes1, "boxes1")
    check_boxes(boxes2, "boxes2")
    return _iou(_float(boxes1), _float(boxes2))


def generalized_box_iou(boxes1, boxes2) -> jax.Array:
    """Pairwise generalized IoU (Rezatofighi et al., 2019): IoU - (C - U) / C with C the area
    of the smallest enclosing box (`torchvision.ops.generalized_box_iou`), in [-1, 1]."""
    check_boxes(boxes1, "boxes1")
    check_boxes(boxes2, "boxes2")
    boxes1, boxes2 = _float(boxes1), _float(boxes2)
    inter, union = _inter_union(boxes1, boxes2)
    lt = jnp.minimum(boxes1[..., :, None, :2], boxes2[..., None, :, :2])
    rb = jnp.maximum(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])
    wh = jnp.maximum(rb - lt, 0.0)
    hull = wh[..., 0] * wh[..., 1]
    return _safe_div(inter, union) - _safe_div(hull - union, hull)


def clip_boxes_to_image(boxes, size: tuple[int, int]) -> jax.Array:
    """Clamp x to [0, width] and y to [0, height]; `size` is (height, width) as torchvision."""
    check_boxes(boxes)
    boxes = _float(boxes)
    height, width = size
    hi = jnp.asarray([width, height, width, height], boxes.dtype)
    return jnp.clip(boxes, 0.0, hi.reshape((1,) * (boxes.ndim - 1) + (4,)))


def min_size_mask(boxes, min_size: float) -> jax.Array:
    """Boolean mask [...] of the boxes whose width and height are both >= `min_size`
    (the jittable form of `remove_small_boxes`)."""
    boxes = _float(boxes)
    ws = boxes[..., 2] - boxes[..., 0]
    hs = boxes[..., 3] - boxes[..., 1]
    return (ws >= min_size) & (hs >= min_size)


def remove_small_boxes(boxes, min_size: float) -> np.ndarray:
    """Indices of the boxes [N, 4] with both sides >= `min_size` (`torchvision.ops.
    remove_small_boxes`); eager only, since the result length depends on the values."""
    check_boxes(boxes)
    if not is_concrete(boxes):
        raise InputError(
            "remove_small_boxes returns a data-dependent number of indices and cannot run under "
            "jax.jit; use min_size_mask(boxes, min_size) there."
        )
    return np.flatnonzero(np.asarray(min_size_mask(boxes, min_size)))
