"""RoI pooling (Girshick, Fast R-CNN, 2015) and RoI Align (He et al., Mask R-CNN, 2017) on NHWC
feature maps, with the numbers of `torchvision.ops.roi_pool` / `roi_align` (their CPU kernels,
torchvision/csrc/ops/cpu/roi_pool_kernel.cpp and roi_align_kernel.cpp), gradients included.

`boxes` is [K, 5] with rows (batch_index, x1, y1, x2, y2) in image pixels; `spatial_scale` maps
them onto the feature map (1/16 for a stride-16 map). Outputs are [K, PH, PW, C].

Both ops are jittable with any K: the loops run over the sampling points of one bin (RoI Align)
or the cells of one bin (RoI pool), vectorized over all RoIs, bins and channels, so memory stays
O(K * PH * PW * C) and the adaptive `sampling_ratio=-1` grid (ceil(roi_height / PH) points, per
RoI) needs no static bound. RoI Align's backward (a `jax.custom_vjp`) scatters the bilinear
weights as torchvision's `_roi_align_backward`; RoI pool's gradient goes to the arg-max cell of
each bin, as torchvision's. Neither op has a gradient with respect to the boxes (as torchvision).

Boxes partly or wholly outside the map, empty or inverted (x2 < x1) boxes are legal and give
torchvision's numbers: RoI pool and RoI Align with `aligned=False` treat a box smaller than one
cell as 1 x 1, samples beyond one cell outside the map count as zero, and a bin with no cell
(RoI pool) or no sample (RoI Align with `aligned=True`) is 0. NaN/inf coordinates and batch
indices outside the features raise `InputError` (checked when the boxes are concrete).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.detection.boxes import is_concrete
from jaxcnn.errors import InputError

_FLT_MAX = float(np.finfo(np.float32).max)


def _pair(size) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    ph, pw = (int(v) for v in size)
    return ph, pw


def _check(features, boxes, output_size, where: str
           ) -> tuple[int, int, jax.Array, jax.Array]:
    """(PH, PW, float features, float32 rois) after checking the shapes and box rows."""
    fs, bs = jnp.shape(features), jnp.shape(boxes)
    if len(fs) != 4:
        raise InputError(f"{where}: features must be NHWC [N, H, W, C]; got shape {fs}.")
    if len(bs) != 2 or bs[1] != 5:
        raise InputError(
            f"{where}: boxes must be [K, 5] rows (batch_index, x1, y1, x2, y2); got shape {bs}. "
            "Prepend the image index to [K, 4] boxes, e.g. jnp.pad(b, ((0, 0), (1, 0)))."
        )
    ph, pw = _pair(output_size)
    if ph < 1 or pw < 1:
        raise InputError(f"{where}: output_size must be positive; got {output_size}.")
    if is_concrete(boxes) and bs[0]:
        b = np.asarray(boxes)
        if not np.isfinite(b).all():
            i = int(np.argmax(~np.isfinite(b).all(axis=1)))
            raise InputError(f"{where}: boxes row {i} = {b[i].tolist()} is not finite.")
        batch = b[:, 0].astype(np.int64)
        if (batch < 0).any() or (batch >= fs[0]).any():
            i = int(np.argmax((batch < 0) | (batch >= fs[0])))
            raise InputError(
                f"{where}: boxes row {i} names batch index {b[i, 0]:g}, but features hold "
                f"{fs[0]} image(s)."
            )
    features = jnp.asarray(features)
    if not jnp.issubdtype(features.dtype, jnp.floating):
        features = features.astype(jnp.float32)
    return ph, pw, features, jnp.asarray(boxes, jnp.float32)


class _Geometry(NamedTuple):
    """Static description of one roi_align call (hashable, for custom_vjp)."""

    shape: tuple[int, int, int, int]
    pooled: tuple[int, int]
    spatial_scale: float
    sampling_ratio: int
    aligned: bool


def _align_grid(rois: jax.Array, geo: _Geometry):
    """Per-RoI start, bin size and sampling grid, in torchvision's float32 arithmetic."""
    ph, pw = geo.pooled
    scale = jnp.float32(geo.spatial_scale)
    offset = jnp.float32(0.5 if geo.aligned else 0.0)
    start_w = rois[:, 1] * scale - offset
    start_h = rois[:, 2] * scale - offset
    roi_w = (rois[:, 3] * scale - offset) - start_w
    roi_h = (rois[:, 4] * scale - offset) - start_h
    if not geo.aligned:  # "Force malformed ROIs to be 1x1"
        roi_w = jnp.maximum(roi_w, 1.0)
        roi_h = jnp.maximum(roi_h, 1.0)
    bin_h, bin_w = roi_h / ph, roi_w / pw
    if geo.sampling_ratio > 0:
        grid_h = jnp.full(rois.shape[:1], geo.sampling_ratio, jnp.int32)
        grid_w = grid_h
    else:
        grid_h = jnp.ceil(roi_h / ph).astype(jnp.int32)
        grid_w = jnp.ceil(roi_w / pw).astype(jnp.int32)
    count = jnp.maximum(grid_h * grid_w, 1).astype(jnp.float32)
    return start_h, start_w, bin_h, bin_w, grid_h, grid_w, count


def _axis_weights(start, bin_size, grid, i, pooled: int, size: int):
    """Sample coordinate of grid point i in every bin along one axis, torchvision's clamping,
    and the (low, high) cell indices with their bilinear weights; all [K, pooled]."""
    p = jnp.arange(pooled, dtype=jnp.float32)[None, :]
    gridf = jnp.maximum(grid, 1).astype(jnp.float32)[:, None]
    pos = start[:, None] + p * bin_size[:, None] + ((i + 0.5) * bin_size[:, None]) / gridf
    inside = (pos >= -1.0) & (pos <= size)
    pos = jnp.maximum(pos, 0.0)
    low = jnp.floor(pos).astype(jnp.int32)
    at_edge = low >= size - 1
    low = jnp.where(at_edge, size - 1, low)
    high = jnp.where(at_edge, size - 1, low + 1)
    pos = jnp.where(at_edge, low.astype(jnp.float32), pos)
    frac = pos - low
    in_grid = (i < grid)[:, None]
    return low, high, 1.0 - frac, frac, inside & in_grid


def _align_samples(rois: jax.Array, geo: _Geometry):
    """(number of sampling points, fn(s) -> flat indices [4, K, PH, PW], weights [4, K, PH, PW])."""
    n, height, width, _ = geo.shape
    ph, pw = geo.pooled
    start_h, start_w, bin_h, bin_w, grid_h, grid_w, count = _align_grid(rois, geo)
    if geo.sampling_ratio > 0:
        gmax_h = gmax_w = geo.sampling_ratio
    else:
        gmax_h, gmax_w = jnp.max(grid_h), jnp.max(grid_w)
    batch = jnp.clip(rois[:, 0].astype(jnp.int32), 0, n - 1)[None, :, None, None]

    def sample(s):
        iy, ix = s // gmax_w, s % gmax_w
        y_lo, y_hi, hy, ly, y_ok = _axis_weights(start_h, bin_h, grid_h, iy, ph, height)
        x_lo, x_hi, hx, lx, x_ok = _axis_weights(start_w, bin_w, grid_w, ix, pw, width)
        ok = y_ok[:, :, None] & x_ok[:, None, :]
        rows = (batch * height + jnp.stack([y_lo, y_lo, y_hi, y_hi])[..., None]) * width
        cols = jnp.stack([x_lo, x_hi, x_lo, x_hi])[:, :, None, :]
        wy = jnp.stack([hy, hy, ly, ly])[..., None]
        wx = jnp.stack([hx, lx, hx, lx])[:, :, None, :]
        weights = jnp.where(ok[None], wy * wx, 0.0)
        return rows + cols, weights

    return gmax_h * gmax_w, sample, count


def _roi_align_forward(features: jax.Array, rois: jax.Array, geo: _Geometry) -> jax.Array:
    n, height, width, c = geo.shape
    flat = features.reshape(n * height * width, c)
    num, sample, count = _align_samples(rois, geo)
    ph, pw = geo.pooled

    acc_dtype = jnp.promote_types(features.dtype, jnp.float32)  # bf16 maps sum in float32

    def body(s, acc):
        idx, w = sample(s)
        v = flat[idx].astype(acc_dtype)  # [4, K, PH, PW, C]
        wv = w[..., None] * v
        return acc + (((wv[0] + wv[1]) + wv[2]) + wv[3])

    acc = jnp.zeros((rois.shape[0], ph, pw, c), acc_dtype)
    acc = jax.lax.fori_loop(0, num, body, acc)
    return (acc / count[:, None, None, None]).astype(features.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _roi_align(features: jax.Array, rois: jax.Array, geo: _Geometry) -> jax.Array:
    return _roi_align_forward(features, rois, geo)


def _roi_align_fwd(features, rois, geo):
    return _roi_align_forward(features, rois, geo), rois


def _roi_align_bwd(geo, rois, g):
    n, height, width, c = geo.shape
    num, sample, count = _align_samples(rois, geo)
    acc_dtype = jnp.promote_types(g.dtype, jnp.float32)
    g32 = g.astype(acc_dtype) / count[:, None, None, None]

    def body(s, grad):
        idx, w = sample(s)
        upd = w[..., None] * g32[None]
        return grad.at[idx.reshape(-1)].add(upd.reshape(-1, c))

    grad = jnp.zeros((n * height * width, c), acc_dtype)
    grad = jax.lax.fori_loop(0, num, body, grad)
    return grad.reshape(n, height, width, c).astype(g.dtype), jnp.zeros_like(rois)


_roi_align.defvjp(_roi_align_fwd, _roi_align_bwd)
_roi_align_jit = jax.jit(_roi_align, static_argnums=(2,))


def roi_align(
    features,
    boxes,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> jax.Array:
    """RoI Align: average of bilinear samples on a sampling_ratio x sampling_ratio grid per
    output bin (adaptive ceil(roi_size / output_size) when <= 0); `aligned=True` shifts the
    boxes by -0.5 pixel (Detectron2). [N, H, W, C] x [K, 5] -> [K, PH, PW, C]."""
    ph, pw, features, rois = _check(features, boxes, output_size, "roi_align")
    if rois.shape[0] == 0:
        return jnp.zeros((0, ph, pw, features.shape[-1]), features.dtype)
    geo = _Geometry(
        tuple(features.shape), (ph, pw), float(spatial_scale), int(sampling_ratio), bool(aligned)
    )
    return _roi_align_jit(features, rois, geo)


def _round_half_away(x: jax.Array) -> jax.Array:
    """C's round(): halves away from zero (jnp.round rounds them to even)."""
    t = jnp.trunc(x)
    return jnp.where(jnp.abs(x - t) == 0.5, t + jnp.sign(x), jnp.round(x))


def _pool_windows(rois: jax.Array, shape, pooled, spatial_scale: float):
    """[K, P] start/end cells of every bin along both axes (torchvision's integer rounding)."""
    _, height, width, _ = shape
    ph, pw = pooled
    scale = jnp.float32(spatial_scale)
    start_w, start_h, end_w, end_h = (
        _round_half_away(rois[:, i] * scale).astype(jnp.int32) for i in range(1, 5)
    )

    def axis(start, end, pooled_n, size):
        length = jnp.maximum(end - start + 1, 1)
        bin_size = length.astype(jnp.float32)[:, None] / pooled_n
        p = jnp.arange(pooled_n, dtype=jnp.float32)[None, :]
        lo = jnp.floor(p * bin_size).astype(jnp.int32) + start[:, None]
        hi = jnp.ceil((p + 1) * bin_size).astype(jnp.int32) + start[:, None]
        return jnp.clip(lo, 0, size), jnp.clip(hi, 0, size)

    h0, h1 = axis(start_h, end_h, ph, height)
    w0, w1 = axis(start_w, end_w, pw, width)
    return h0, h1, w0, w1


def roi_pool(
    features, boxes, output_size: int | tuple[int, int], spatial_scale: float = 1.0
) -> jax.Array:
    """RoI max pooling: box corners rounded to feature cells (C round), each of PH x PW bins
    (floor/ceil edges, clipped to the map) max-pooled; an empty bin gives 0.
    [N, H, W, C] x [K, 5] -> [K, PH, PW, C]."""
    ph, pw, features, rois = _check(features, boxes, output_size, "roi_pool")
    if rois.shape[0] == 0:
        return jnp.zeros((0, ph, pw, features.shape[-1]), features.dtype)
    return _roi_pool(features, rois, (ph, pw), float(spatial_scale))


@functools.partial(jax.jit, static_argnums=(2, 3))
def _roi_pool(features, rois, pooled: tuple[int, int], spatial_scale: float) -> jax.Array:
    ph, pw = pooled
    n, height, width, c = features.shape
    k = rois.shape[0]
    h0, h1, w0, w1 = _pool_windows(rois, features.shape, pooled, spatial_scale)
    empty = (h1[:, :, None] <= h0[:, :, None]) | (w1[:, None, :] <= w0[:, None, :])
    span_h, span_w = jnp.max(h1 - h0), jnp.max(w1 - w0)
    batch = jnp.clip(rois[:, 0].astype(jnp.int32), 0, n - 1)[:, None, None]
    flat = jax.lax.stop_gradient(features).reshape(n * height * width, c)

    def body(s, carry):
        best, arg = carry
        h = h0[:, :, None] + s // span_w
        w = w0[:, None, :] + s % span_w
        inside = (h < h1[:, :, None]) & (w < w1[:, None, :])
        idx = (batch * height + jnp.minimum(h, height - 1)) * width + jnp.minimum(w, width - 1)
        v = flat[idx]
        better = inside[..., None] & (v > best)  # strict: the first maximum in row order wins
        return jnp.where(better, v, best), jnp.where(better, idx[..., None], arg)

    best = jnp.where(empty[..., None], 0.0, -_FLT_MAX).astype(features.dtype)
    best = jnp.broadcast_to(best, (k, ph, pw, c))
    arg = jnp.full((k, ph, pw, c), -1, jnp.int32)
    best, arg = jax.lax.fori_loop(0, span_h * span_w, body, (best, arg))
    # Gather the arg-max cells from the differentiable features: the gradient of each bin
    # flows to its arg-max cell, as torchvision's backward.
    picked = jnp.take_along_axis(
        features.reshape(n * height * width, c), jnp.maximum(arg, 0).reshape(-1, c), axis=0
    ).reshape(k, ph, pw, c)
    return jnp.where(arg >= 0, picked, best)  # best: 0 for an empty bin
