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
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.errors import InputError

# A vector is degenerate (zero, or constant for ncc) when its RMS deviation is below this many
# float32 ulps of its largest magnitude: the rounding error of computing a mean of n equal
# numbers stays well below it, while real images differ by at least 1/255 ~ 2^15 ulps.
_DEGENERATE_ULPS = 64.0


def real_array(a: Any, name: str) -> Any:
    """`a` as an array jax computes on without a silent change of value. Tracers pass through
    (inside `jit` the caller owns the values); concrete inputs must be real numbers (complex,
    object and string arrays are refused), integers and float64 must be exactly representable
    in float32 (jax without x64 would wrap int64 to int32: `l1([2**40], [0])` was 0) and
    within its range, and values must be finite. Returns a jax array or a float32 numpy one."""
    if isinstance(a, jax.core.Tracer):
        return a
    if not isinstance(a, jax.Array):
        try:
            a = np.asarray(a)
        except (ValueError, TypeError) as err:
            raise InputError(f"{name} is not a numeric array ({err}); pass a numpy or jax "
                             "array of real numbers.") from None
    dtype = a.dtype
    if jnp.issubdtype(dtype, jnp.complexfloating):
        raise InputError(f"{name} has complex dtype {dtype}; similarity is defined for real "
                         "vectors. Pass abs(z), or z.real and z.imag as separate features.")
    if dtype != np.bool_ and not (jnp.issubdtype(dtype, jnp.integer)
                                  or jnp.issubdtype(dtype, jnp.floating)):
        raise InputError(f"{name} has dtype {dtype}; pass an array of real numbers (int, "
                         "float or bool).")
    if jnp.issubdtype(dtype, jnp.integer) or dtype == np.float64:
        a = _to_float32_exactly(np.asarray(a), name)
    if not _all_finite(a):
        where = int(np.flatnonzero(~np.isfinite(np.asarray(a, np.float32)).reshape(-1))[0])
        raise InputError(f"{name} holds NaN or infinite values (the first at flat position "
                         f"{where}); similarity of such vectors is undefined. Drop or repair "
                         "them first.")
    return a


def _to_float32_exactly(a: np.ndarray, name: str) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        f = a.astype(np.float32)
    if a.dtype == np.float64:
        lost = np.isinf(f) & np.isfinite(a)
        if lost.any():
            raise InputError(
                f"{name} holds values beyond float32's range (|v| <= 3.4e38), e.g. "
                f"{a[lost].flat[0]:g}; similarity is computed in float32. Scale the vectors "
                "down first.")
        return f
    big = (a > 2**24) | (a < -(2**24))  # every integer up to 2**24 is a float32
    if big.any():
        sub = a[big]
        back = f[big].astype(np.float64)
        limit = 2.0**64 if a.dtype.kind == "u" else 2.0**63
        fits = np.abs(back) < limit
        exact = fits & (np.where(fits, back, 0).astype(a.dtype) == sub)
        if not exact.all():
            raise InputError(
                f"{name} has {a.dtype} values that float32 cannot hold exactly, e.g. "
                f"{sub[~exact][0]} (float32 rounds it to {float(back[~exact][0]):.0f}); "
                "similarity is computed in float32. Convert the array yourself "
                "(a.astype('float32')) if rounding is acceptable.")
    return f


def _all_finite(a: Any) -> bool:
    if a.size == 0 or not jnp.issubdtype(a.dtype, jnp.floating):
        return True
    if isinstance(a, jax.Array):
        return bool(jnp.isfinite(a).all())
    return bool(np.isfinite(a.max()) and np.isfinite(a.min()))  # no [N, D] temporary


def _flat_pair(a: jax.Array, b: jax.Array, name: str) -> tuple[jax.Array, jax.Array]:
    a, b = real_array(a, f"{name}(a, b): a"), real_array(b, f"{name}(a, b): b")
    if a.shape != b.shape:
        raise InputError(
            f"{name}(a, b) needs two arrays of the same shape; got {a.shape} and {b.shape}. "
            "Resize the images to one size first (jaxcnn.similarity.load_images(..., size=) "
            "does it)."
        )
    if a.size == 0:
        raise InputError(f"{name}(a, b) got empty arrays of shape {a.shape}; pass real data.")
    a, b = jnp.asarray(a), jnp.asarray(b)
    dtype = jnp.promote_types(jnp.result_type(a, b), jnp.float32)
    return a.reshape(-1).astype(dtype), b.reshape(-1).astype(dtype)


def pow2_scale(m: jax.Array) -> jax.Array:
    """A power of two s with m / s in [1, 4) (1 for m == 0): dividing by it is exact, and
    keeps squares and sums of float32 values near 3.4e38 from overflowing. s stays within
    2**+-126 so that 1 / s is a normal float (XLA divides by multiplying with the reciprocal,
    and CPUs flush subnormals to zero)."""
    _, e = jnp.frexp(jnp.where(m > 0, m, 1).astype(jnp.float32))
    return jnp.ldexp(jnp.ones((), jnp.float32), jnp.clip(e - 1, -126, 126))


def _checked_result(out: jax.Array, name: str, a: Any, b: Any) -> jax.Array:
    """Concrete results must be finite: a non-finite one means the true value exceeds
    float32's range (inputs are finite by then)."""
    if isinstance(out, jax.core.Tracer) or bool(jnp.isfinite(out)):
        return out
    big = max(float(jnp.max(jnp.abs(a))), float(jnp.max(jnp.abs(b))))
    raise InputError(f"{name}(a, b) exceeds float32's range (3.4e38) for inputs up to |v| = "
                     f"{big:.3g}; scale both vectors down by the same factor first.")


def l1(a: jax.Array, b: jax.Array) -> jax.Array:
    """L1 distance, the sum of absolute differences (lower is more similar; 0 when equal)."""
    a, b = _flat_pair(a, b, "l1")
    return _checked_result(jnp.sum(jnp.abs(a - b)), "l1", a, b)


def mse(a: jax.Array, b: jax.Array) -> jax.Array:
    """Mean squared error, mean((a - b)^2) (lower is more similar; 0 when equal), computed on
    a / s and b / s for a power of two s, so that squares of values above 1.8e19 do not
    overflow when the mean itself fits in float32."""
    a, b = _flat_pair(a, b, "mse")
    s = pow2_scale(jnp.maximum(jnp.max(jnp.abs(a)), jnp.max(jnp.abs(b)))).astype(a.dtype)
    return _checked_result(jnp.mean(jnp.square(a / s - b / s)) * s * s, "mse", a, b)


def unit(v: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`(v / ||v||, is_zero)` for one flat vector, computed on v divided by a power of two
    near max|v| (`pow2_scale`) so that tiny or huge values neither underflow nor overflow; a
    zero vector maps to zeros."""
    v, big = _scaled(v)
    sq = jnp.sum(jnp.square(v))
    is_zero = sq <= v.shape[-1] * jnp.square(_DEGENERATE_ULPS * jnp.finfo(v.dtype).eps * big)
    return jnp.where(is_zero, 0, v / jnp.sqrt(jnp.where(is_zero, 1, sq))), is_zero


def centered_unit(v: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`unit(v - mean(v))`, with constant vectors flagged as degenerate (relative to max|v|,
    not to the centred values, so a constant with rounding noise is still constant)."""
    v, big = _scaled(v)
    c = v - jnp.mean(v)
    sq = jnp.sum(jnp.square(c))
    is_const = sq <= v.shape[-1] * jnp.square(_DEGENERATE_ULPS * jnp.finfo(v.dtype).eps * big)
    return jnp.where(is_const, 0, c / jnp.sqrt(jnp.where(is_const, 1, sq))), is_const


def _scaled(v: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(v / s, max|v| / s) for the power of two s of `pow2_scale` (exact; no subnormal
    reciprocal, which CPUs flush to zero: 1e38-valued vectors became "zero")."""
    m = jnp.max(jnp.abs(v))
    s = pow2_scale(m).astype(v.dtype)
    return v / s, m / s


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
        accumulation; mse: ||x||^2 + ||y||^2 - 2 x.y (exact in exact arithmetic, clamped at 0)
        on the block divided by a power of two and centred on y's first row (so 1e20-valued
        vectors neither overflow to inf - inf = NaN nor lose identical rows to rounding);
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
            xr, yr = x.astype(mm_dtype).astype(f32), y.astype(mm_dtype).astype(f32)
            s = pow2_scale(jnp.maximum(jnp.max(jnp.abs(xr)), jnp.max(jnp.abs(yr))))
            center = yr[:1] / s
            # Norms from the same (possibly bf16-rounded) values the matmul sees.
            rnd = lambda v: (v / s - center).astype(mm_dtype).astype(f32)
            xr, yr = rnd(xr), rnd(yr)
            sx = jax.vmap(lambda v: jnp.sum(jnp.square(v)))(xr)
            sy = jax.vmap(lambda v: jnp.sum(jnp.square(v)))(yr)
            d2 = sx[:, None] + sy[None, :] - 2.0 * dot(xr, yr)
            return jnp.maximum(d2, 0.0) / x.shape[-1] * s * s
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
