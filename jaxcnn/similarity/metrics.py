"""Similarity of two images (or feature vectors) of equal shape, flattened: the four measures
of the classic lesson, as pure jittable functions.

| metric   | range            | more similar when | identical inputs |
|----------|------------------|-------------------|------------------|
| `l1`     | [0, inf)         | lower (distance)  | 0                |
| `mse`    | [0, inf)         | lower (distance)  | 0                |
| `cosine` | [-1, 1]          | higher            | 1                |
| `ncc`    | [-1, 1]          | higher            | 1                |

Degenerate inputs never give NaN. The rule for `cosine` (zero vectors) and `ncc` (constant
vectors, i.e. zero variance) is the same: if exactly one side is degenerate the score is 0 (no
direction to agree with), if both are the score is 1 (every input is maximally similar to
itself, so two blank images compare as identical).

`METRICS` maps each name to a `Metric` record with the pair function, whether higher is more
similar, and a matrix kernel used by `jaxcnn.similarity.search.pairwise` and `topk`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxcnn.errors import InputError

# A vector is degenerate (zero, or constant for ncc) when its RMS deviation is below this many
# float32 ulps of its largest magnitude: the rounding error of computing a mean of n equal
# numbers stays well below it, while real images differ by at least 1/255 ~ 2^15 ulps.
_DEGENERATE_ULPS = 64.0


def _flat_pair(a: jax.Array, b: jax.Array, name: str) -> tuple[jax.Array, jax.Array]:
    a, b = jnp.asarray(a), jnp.asarray(b)
    if a.shape != b.shape:
        raise InputError(
            f"{name}(a, b) needs two arrays of the same shape; got {a.shape} and {b.shape}. "
            "Resize the images to one size first (jaxcnn.similarity.load_images(..., size=) "
            "does it)."
        )
    if a.size == 0:
        raise InputError(f"{name}(a, b) got empty arrays of shape {a.shape}; pass real data.")
    dtype = jnp.promote_types(jnp.result_type(a, b), jnp.float32)
    return a.reshape(-1).astype(dtype), b.reshape(-1).astype(dtype)


def l1(a: jax.Array, b: jax.Array) -> jax.Array:
    """L1 distance, the sum of absolute differences (lower is more similar; 0 when equal)."""
    a, b = _flat_pair(a, b, "l1")
    return jnp.sum(jnp.abs(a - b))


def mse(a: jax.Array, b: jax.Array) -> jax.Array:
    """Mean squared error, mean((a - b)^2) (lower is more similar; 0 when equal)."""
    a, b = _flat_pair(a, b, "mse")
    return jnp.mean(jnp.square(a - b))


def unit(v: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`(v / ||v||, is_zero)` for one flat vector, computed on v scaled by max|v| so that
    tiny or huge values neither underflow nor overflow; a zero vector maps to zeros."""
    scale = jnp.max(jnp.abs(v))
    v = v / jnp.where(scale > 0, scale, 1).astype(v.dtype)
    sq = jnp.sum(jnp.square(v))
    is_zero = sq <= v.shape[-1] * jnp.square(_DEGENERATE_ULPS * jnp.finfo(v.dtype).eps)
    return jnp.where(is_zero, 0, v / jnp.sqrt(jnp.where(is_zero, 1, sq))), is_zero


def centered_unit(v: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`unit(v - mean(v))`, with constant vectors flagged as degenerate (relative to max|v|,
    not to the centred values, so a constant with rounding noise is still constant)."""
    scale = jnp.max(jnp.abs(v))
    v = v / jnp.where(scale > 0, scale, 1).astype(v.dtype)
    c = v - jnp.mean(v)
    sq = jnp.sum(jnp.square(c))
    is_const = sq <= v.shape[-1] * jnp.square(_DEGENERATE_ULPS * jnp.finfo(v.dtype).eps)
    return jnp.where(is_const, 0, c / jnp.sqrt(jnp.where(is_const, 1, sq))), is_const


def _agreement(ua: jax.Array, za: jax.Array, ub: jax.Array, zb: jax.Array) -> jax.Array:
    """Dot product of unit vectors with the degenerate-input rule of the module docstring."""
    score = jnp.clip(jnp.dot(ua, ub), -1.0, 1.0)
    return jnp.where(za & zb, 1.0, jnp.where(za | zb, 0.0, score)).astype(score.dtype)


def cosine(a: jax.Array, b: jax.Array) -> jax.Array:
    """Cosine similarity a.b / (|a| |b|) in [-1, 1] (higher is more similar). A zero vector
    against a non-zero one gives 0; two zero vectors give 1."""
    a, b = _flat_pair(a, b, "cosine")
    return _agreement(*unit(a), *unit(b))


def ncc(a: jax.Array, b: jax.Array) -> jax.Array:
    """Normalized cross-correlation: the cosine of the mean-centred vectors, in [-1, 1]
    (higher is more similar; invariant to brightness and contrast changes a -> s a + t with
    s > 0). A constant vector against a varying one gives 0; two constants give 1."""
    a, b = _flat_pair(a, b, "ncc")
    return _agreement(*centered_unit(a), *centered_unit(b))


@dataclasses.dataclass(frozen=True)
class Metric:
    """A metric's pair function, its direction, and how search computes it for blocks."""

    name: str
    fn: Callable[[jax.Array, jax.Array], jax.Array]
    higher_is_better: bool
    label: str  # the CLI table's wording

    def block(self, x: jax.Array, y: jax.Array, dtype: jnp.dtype | None = None) -> jax.Array:
        """Scores [n, m] of the rows of `x` [n, D] against the rows of `y` [m, D], float32.

        cosine/ncc: unit rows (vmapped, float32) then one matmul in `dtype` with float32
        accumulation; mse: ||x||^2 + ||y||^2 - 2 x.y (exact in exact arithmetic, clamped at 0);
        l1: the vmapped pair function over the block (memory n*m*D, bounded by the caller).
        """
        f32 = jnp.float32
        mm_dtype = jnp.dtype(dtype) if dtype is not None else jnp.promote_types(x.dtype, f32)

        def dot(u: jax.Array, v: jax.Array) -> jax.Array:
            return jnp.matmul(
                u.astype(mm_dtype), v.astype(mm_dtype).T, preferred_element_type=f32
            )

        if self.name in ("cosine", "ncc"):
            prep = jax.vmap(unit if self.name == "cosine" else centered_unit)
            (ux, zx), (uy, zy) = prep(x.astype(f32)), prep(y.astype(f32))
            score = jnp.clip(dot(ux, uy), -1.0, 1.0)
            zx, zy = zx[:, None], zy[None, :]
            return jnp.where(zx & zy, 1.0, jnp.where(zx | zy, 0.0, score))
        if self.name == "mse":
            # Norms from the same (possibly bf16-rounded) values the matmul sees.
            xr, yr = x.astype(mm_dtype).astype(f32), y.astype(mm_dtype).astype(f32)
            sx = jax.vmap(lambda v: jnp.sum(jnp.square(v)))(xr)
            sy = jax.vmap(lambda v: jnp.sum(jnp.square(v)))(yr)
            d2 = sx[:, None] + sy[None, :] - 2.0 * dot(xr, yr)
            return jnp.maximum(d2, 0.0) / x.shape[-1]
        xr, yr = x.astype(mm_dtype).astype(f32), y.astype(mm_dtype).astype(f32)
        return jax.vmap(jax.vmap(self.fn, (None, 0)), (0, None))(xr, yr)


METRICS: dict[str, Metric] = {
    "l1": Metric("l1", l1, False, "L1 (sum |a-b|, lower = more similar)"),
    "mse": Metric("mse", mse, False, "MSE (mean (a-b)^2, lower = more similar)"),
    "cosine": Metric("cosine", cosine, True, "cosine (higher = more similar)"),
    "ncc": Metric("ncc", ncc, True, "NCC (higher = more similar)"),
}


def get_metric(name: str | Metric) -> Metric:
    """The `Metric` named `name` (l1, mse, cosine or ncc)."""
    if isinstance(name, Metric):
        return name
    try:
        return METRICS[name]
    except KeyError:
        raise InputError(
            f"unknown similarity metric {name!r}; choose one of {sorted(METRICS)}."
        ) from None
