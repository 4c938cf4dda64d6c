"""Non-maximum suppression with torchvision's exact semantics (`torchvision.ops.nms`,
csrc/ops/cpu/nms_kernel.cpp): visit boxes by decreasing score, keep a box unless a kept box
overlaps it with IoU > `iou_threshold`, IoU computed in float32 as
inter / (area_i + area_j - inter) and compared with the threshold as the C++ kernel does (a
float32 IoU against a double threshold).

The jittable forms `nms_padded` / `batched_nms_padded` return a static `max_output` slots:
kept indices in decreasing score order, padded with -1, and a validity mask. They run a
`lax.while_loop` that takes, at each step, the best box not yet suppressed and suppresses the
rest of its class against it: at most min(max_output, N) steps of O(N) work and O(N) memory,
never an N x N IoU matrix (bench/detection_nms.py measures both). Under `vmap` they run per
image. Truncating torchvision's result to its first `max_output` indices gives the same array,
because kept boxes come out in score order.

`batched_nms` suppresses only within a category, as torchvision's per-class path
(`_batched_nms_vanilla`); torchvision's coordinate-offset trick, used for small inputs, gives the
same kept set except where adding the offsets rounds an IoU across the threshold.
Equal scores are visited in index order (a stable sort); torchvision leaves ties unspecified.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.detection.boxes import _float, check_boxes, is_concrete
from jaxcnn.errors import InputError


def _f32_threshold(threshold: float) -> np.float32:
    """The float32 t with (iou_f32 > t) == (double(iou_f32) > threshold) for every float32 iou,
    i.e. the threshold rounded down to float32."""
    t = np.float32(threshold)
    if float(t) > threshold:
        t = np.nextafter(t, np.float32(-np.inf))
    return t


def _check_inputs(boxes, scores, idxs, where: str) -> None:
    check_boxes(boxes, "boxes")
    b, s = jnp.shape(boxes), jnp.shape(scores)
    if len(b) != 2 or len(s) != 1 or b[0] != s[0]:
        raise InputError(
            f"{where} needs boxes [N, 4] and scores [N]; got boxes {b} and scores {s}."
        )
    if idxs is not None and jnp.shape(idxs) != s:
        raise InputError(f"{where}: idxs must have shape {s} like scores; got {jnp.shape(idxs)}.")
    if is_concrete(scores) and not np.isfinite(np.asarray(scores)).all():
        raise InputError(f"{where}: scores contain NaN or infinite values.")


@functools.partial(jax.jit, static_argnames=("max_output",))
def _nms_core(boxes, scores, idxs, valid, threshold, *, max_output: int):
    n = boxes.shape[0]
    order = jnp.argsort(-scores, stable=True)
    boxes = boxes[order].astype(jnp.float32)
    idxs = idxs[order]
    x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
    areas = (x2 - x1) * (y2 - y1)

    def cond(state):
        suppressed, _, count = state
        return (count < max_output) & ~jnp.all(suppressed)

    def body(state):
        suppressed, keep, count = state
        i = jnp.argmin(suppressed)  # the best-scored box still in play
        w = jnp.maximum(0.0, jnp.minimum(x2[i], x2) - jnp.maximum(x1[i], x1))
        h = jnp.maximum(0.0, jnp.minimum(y2[i], y2) - jnp.maximum(y1[i], y1))
        inter = w * h
        iou = inter / (areas[i] + areas - inter)  # NaN (0/0) compares False, as in C++
        hit = (iou > threshold) & (idxs == idxs[i])
        suppressed = suppressed | hit | (jnp.arange(n) == i)
        return suppressed, keep.at[count].set(order[i].astype(jnp.int32)), count + 1

    init = (~valid[order], jnp.full((max_output,), -1, jnp.int32), jnp.int32(0))
    _, keep, count = jax.lax.while_loop(cond, body, init)
    return keep, jnp.arange(max_output) < count


def batched_nms_padded(
    boxes,
    scores,
    idxs,
    iou_threshold: float,
    max_output: int,
    valid=None,
) -> tuple[jax.Array, jax.Array]:
    """Per-category NMS under `jit`: (indices [max_output] int32 padded with -1, mask
    [max_output] bool). `valid` [N] (optional) excludes padded boxes from the start."""
    _check_inputs(boxes, scores, idxs, "batched_nms_padded")
    if int(max_output) < 1:
        raise InputError(f"max_output must be a positive int; got {max_output}.")
    n = jnp.shape(scores)[0]
    if n == 0:
        return jnp.full((max_output,), -1, jnp.int32), jnp.zeros((max_output,), bool)
    idxs = jnp.zeros((n,), jnp.int32) if idxs is None else jnp.asarray(idxs)
    valid = jnp.ones((n,), bool) if valid is None else jnp.asarray(valid, bool)
    return _nms_core(
        _float(boxes),
        jnp.asarray(scores),
        idxs,
        valid,
        _f32_threshold(float(iou_threshold)),
        max_output=int(max_output),
    )


def nms_padded(
    boxes, scores, iou_threshold: float, max_output: int, valid=None
) -> tuple[jax.Array, jax.Array]:
    """`torchvision.ops.nms` under `jit`: the first `max_output` kept indices (int32, -1 padded)
    in decreasing score order and their validity mask."""
    return batched_nms_padded(boxes, scores, None, iou_threshold, max_output, valid)


def _eager(boxes, scores, idxs, iou_threshold: float, where: str) -> np.ndarray:
    _check_inputs(boxes, scores, idxs, where)
    if not is_concrete(boxes, scores, idxs):
        raise InputError(
            f"{where} returns a data-dependent number of indices and cannot run under jax.jit; "
            f"use {where}_padded(..., max_output=K) there."
        )
    n = int(np.shape(scores)[0])
    if n == 0:
        return np.zeros((0,), np.int64)
    # Pad to a power of two so eager calls of similar sizes share one compiled loop.
    size = max(8, 1 << (n - 1).bit_length())
    pad = size - n
    b = np.pad(np.asarray(boxes, np.float32), ((0, pad), (0, 0)))
    s = np.pad(np.asarray(scores, np.float32), (0, pad))
    c = np.pad(np.zeros(n, np.int32) if idxs is None else np.asarray(idxs, np.int32), (0, pad))
    keep, ok = _nms_core(
        b, s, c, np.arange(size) < n, _f32_threshold(float(iou_threshold)), max_output=size
    )
    return np.asarray(keep)[np.asarray(ok)].astype(np.int64)


def nms(boxes, scores, iou_threshold: float) -> np.ndarray:
    """Indices (int64) of the boxes kept by NMS, by decreasing score: `torchvision.ops.nms`.
    Eager; inside `jit` use `nms_padded`."""
    return _eager(boxes, scores, None, iou_threshold, "nms")


def batched_nms(boxes, scores, idxs, iou_threshold: float) -> np.ndarray:
    """NMS within each category `idxs` [N] (int), kept indices by decreasing score:
    `torchvision.ops.batched_nms`. Eager; inside `jit` use `batched_nms_padded`."""
    return _eager(boxes, scores, idxs, iou_threshold, "batched_nms")


def nms_keep_dense(boxes, scores, valid, iou_threshold: float) -> jax.Array:
    """Keep mask [..., K] of greedy NMS within each group of K boxes ([..., K, 4], e.g. one
    group per feature level and image), equal to `nms` on each group's valid boxes, computed
    as Cluster-NMS (Zheng et al., 2020, "Enhancing Geometric Factors in Model Learning and
    Inference for Object Detection", sec. 4.1): with B the IoU > threshold matrix of the boxes
    in score order, iterate keep_j = no kept i before j with B_ij from all-kept until it stops
    changing. The greedy result is the only fixed point, and the loop reaches it in as many
    rounds as the longest suppression chain (a handful), each a dense [K, K] step, instead of
    one sequential step per kept box: the fast form for a few thousand boxes per group."""
    boxes, scores, valid = jnp.asarray(boxes, jnp.float32), jnp.asarray(scores), jnp.asarray(
        valid, bool)
    return _nms_dense(boxes, scores, valid, _f32_threshold(float(iou_threshold)))


@jax.jit
def _nms_dense(boxes, scores, valid, threshold):
    k = boxes.shape[-2]
    order = jnp.argsort(-scores, axis=-1, stable=True)
    b = jnp.take_along_axis(boxes, order[..., None], axis=-2)
    ok = jnp.take_along_axis(valid, order, axis=-1)
    x1, y1, x2, y2 = (b[..., i] for i in range(4))
    area = (x2 - x1) * (y2 - y1)
    w = jnp.maximum(0.0, jnp.minimum(x2[..., :, None], x2[..., None, :])
                    - jnp.maximum(x1[..., :, None], x1[..., None, :]))  # fmt: skip
    h = jnp.maximum(0.0, jnp.minimum(y2[..., :, None], y2[..., None, :])
                    - jnp.maximum(y1[..., :, None], y1[..., None, :]))  # fmt: skip
    inter = w * h
    iou = inter / (area[..., :, None] + area[..., None, :] - inter)  # NaN compares False
    earlier = jnp.arange(k)[:, None] < jnp.arange(k)[None, :]
    earlier = earlier.reshape((1,) * (iou.ndim - 2) + earlier.shape)
    suppresses = (iou > threshold) & earlier & ok[..., :, None]

    def body(state):
        keep, _ = state
        new = ok & ~jnp.any(suppresses & keep[..., :, None], axis=-2)
        return new, jnp.any(new != keep)

    keep, _ = jax.lax.while_loop(lambda s: s[1], body, (ok, jnp.asarray(True)))
    inverse = jnp.argsort(order, axis=-1)
    return jnp.take_along_axis(keep, inverse, axis=-1)
