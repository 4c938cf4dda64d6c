"""All-pairs similarity and exact top-k search over large collections of vectors.

Both work in blocks, so memory stays bounded however large N and M are (never an [N, M, D]
array; L1, the one metric without a matmul form, materializes at most a
[block, block, D] tile), and spread the work over every device: `pairwise` shards the rows of
`x`, `topk` shards the database, each device keeping a running top-k that is merged at the end.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxcnn.data.pipeline import DATA_AXIS, make_mesh
from jaxcnn.errors import InputError
from jaxcnn.similarity.metrics import Metric, get_metric, real_array

# L1 tiles hold block_rows * block_cols * D float32 values; keep them near this many bytes.
_L1_TILE_BYTES = 64 * 2**20
# pairwise computes its [N, M] output in chunks of at most max(output / 16, this) bytes
# (capped at _MAX_CHUNK_BYTES), copied into one host array: peak memory stays near 1.2x
# the output instead of holding padded, stacked and replicated copies of it.
_MIN_CHUNK_BYTES = 4 * 2**20
_MAX_CHUNK_BYTES = 256 * 2**20


def _check_matrix(a: Any, name: str, fix: str) -> Any:
    if not hasattr(a, "shape"):
        try:
            a = np.asarray(a)
        except (ValueError, TypeError) as err:
            raise InputError(f"{name} is not a numeric array ({err}). {fix}") from None
    if a.ndim != 2:
        hint = " Add an axis with a[None] for a single vector." if a.ndim == 1 else ""
        raise InputError(
            f"{name} must be a rank-2 array [count, dim] of vectors; got shape {a.shape}.{hint}"
            f" {fix}"
        )
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise InputError(f"{name} is empty (shape {a.shape}); it needs at least one vector.")
    if isinstance(a, jax.core.Tracer):
        return a
    _check_rows_finite(a, name)
    return real_array(a, name)


def _check_rows_finite(a: Any, name: str) -> None:
    """InputError naming the rows of `a` that hold NaN or inf: they would rank first in a
    top-k (NaN compares as the best score) or fill a pairwise row with NaN."""
    xp = jnp if isinstance(a, jax.Array) else np
    if not xp.issubdtype(a.dtype, xp.floating) or a.dtype == np.float64 and xp is np:
        return  # integers are finite; float64 is checked by real_array after conversion
    bad = ~(xp.isfinite(a.max(axis=1)) & xp.isfinite(a.min(axis=1)))
    if not bool(bad.any()):
        return
    rows = np.flatnonzero(np.asarray(bad))
    shown = ", ".join(str(r) for r in rows[:5]) + (f" (and {len(rows) - 5} more)"
                                                   if len(rows) > 5 else "")
    raise InputError(
        f"{name} row {shown} holds NaN or infinite values; their scores would be NaN (and NaN "
        f"ranks first in a top-k). Drop those rows (e.g. {name}[np.isfinite({name}).all(1)]) "
        "or recompute their embeddings."
    )


def _check_pair(x: Any, y: Any, xname: str, yname: str) -> tuple[Any, Any]:
    fix = "Flatten images with images.reshape(len(images), -1)."
    x, y = _check_matrix(x, xname, fix), _check_matrix(y, yname, fix)
    if x.shape[1] != y.shape[1]:
        raise InputError(
            f"{xname} and {yname} must have the same vector length; got {xname} {x.shape} and "
            f"{yname} {y.shape}. Embed both with the same model and layer (or resize raw "
            "images to the same size)."
        )
    return x, y


def _matmul_dtype(dtype: Any) -> str | None:
    """The name of a floating `dtype` for the matmuls (None: the inputs' own)."""
    if dtype is None:
        return None
    try:
        dt = jnp.dtype(dtype)
    except TypeError:
        raise InputError(f"dtype={dtype!r} is not a dtype; use None, jnp.float32 or "
                         "jnp.bfloat16.") from None
    if not jnp.issubdtype(dt, jnp.floating):
        raise InputError(f"dtype={dt} would compute similarities in {dt}; use a floating "
                         "dtype (None, jnp.float32, jnp.bfloat16).")
    return dt.name


def _pad_rows(a: jax.Array, multiple: int) -> jax.Array:
    extra = -a.shape[0] % multiple
    return jnp.pad(a, ((0, extra), (0, 0))) if extra else a


def _block(requested: int | None, default: int, limit: int, dim: int, metric: Metric) -> int:
    """Rows per block: the request, else `default` (for L1 the side of a square
    [side, side, D] float32 tile of about _L1_TILE_BYTES), capped at `limit`."""
    if requested is not None and (not isinstance(requested, int | np.integer)
                                  or isinstance(requested, bool) or requested <= 0):
        raise InputError(f"block sizes must be positive integers; got {requested!r}.")
    if requested is None and metric.name == "l1":
        default = min(default, max(1, math.isqrt(_L1_TILE_BYTES // (4 * dim))))
    return max(1, min(int(requested or default), limit))


def _overflow_error(metric: Metric, *arrays: Any) -> InputError:
    big = max(float(jnp.max(jnp.abs(jnp.asarray(a, jnp.float32)))) for a in arrays)
    return InputError(
        f"some {metric.name} scores exceed float32's range (3.4e38) for vectors with values up "
        f"to |v| = {big:.3g}; scale all vectors down by one common factor (the ranking of "
        "every metric is unchanged by it)."
    )


# ----------------------------------------------------------------------------- pairwise


def pairwise(
    x: Any,
    y: Any | None = None,
    metric: str | Metric = "cosine",
    *,
    block_size: int | None = None,
    dtype: Any = None,
    devices: Any = None,
) -> np.ndarray:
    """Scores [N, M] of every row of `x` [N, D] against every row of `y` [M, D] (`y=None`:
    against `x` itself), with `metric` in l1, mse, cosine, ncc (see jaxcnn.similarity.metrics
    for directions). Returns a float32 numpy array on the host, filled chunk by chunk (rows
    of each chunk sharded over `devices`, default all; matmul metrics in one tile per device,
    L1 in [block_size, block_size, D] tiles), so peak memory stays near 1.2x the output.
    `block_size` caps the rows per device and the columns of a chunk; `dtype=jnp.bfloat16`
    rounds the inputs to bf16 and accumulates in float32. Rows holding NaN or inf, complex
    inputs and integers float32 cannot hold are refused (InputError)."""
    metric = get_metric(metric)
    mm_dtype = _matmul_dtype(dtype)
    if any(isinstance(a, jax.core.Tracer) for a in (x, y)):
        raise InputError("pairwise fills a host array chunk by chunk and cannot be traced "
                         "inside jax.jit; inside jit use get_metric(name).block(x, y).")
    x, y = _check_pair(x, x if y is None else y, "x", "y")
    n, dim = x.shape
    m = y.shape[0]
    mesh = make_mesh(devices)
    ndev = mesh.devices.size
    rows, cols = _chunk_shape(metric, n, m, dim, ndev, block_size)
    fn = _pairwise_fn(metric, mm_dtype, mesh)
    out = np.empty((n, m), np.float32)
    for r0 in range(0, n, rows * ndev):
        xc = _padded_slice(x, r0, rows * ndev)
        for c0 in range(0, m, cols):
            chunk = np.asarray(fn(xc, _padded_slice(y, c0, cols)))
            r1, c1 = min(n, r0 + rows * ndev), min(m, c0 + cols)
            out[r0:r1, c0:c1] = chunk[:r1 - r0, :c1 - c0]
            del chunk
    if not np.isfinite(out.max()) or not np.isfinite(out.min()):
        raise _overflow_error(metric, x, y)
    return out


def _chunk_shape(metric: Metric, n: int, m: int, dim: int, ndev: int,
                 block_size: int | None) -> tuple[int, int]:
    """(rows per device, columns) of one chunk: `block_size` when given; else matmul metrics
    fill the chunk byte budget and L1 one [rows, cols, D] tile of about _L1_TILE_BYTES per
    device. Never more than the data needs."""
    rows = _block(block_size, 1024, -(-n // ndev), dim, metric)
    if block_size is not None:
        return rows, min(int(block_size), m)
    if metric.name == "l1":
        return rows, max(1, min(m, _L1_TILE_BYTES // (4 * dim * rows)))
    budget = min(_MAX_CHUNK_BYTES, max(_MIN_CHUNK_BYTES, n * m * 4 // 16))
    return rows, max(1, min(m, budget // (4 * rows * ndev)))


def _padded_slice(a: Any, start: int, size: int) -> Any:
    """Rows start .. start+size of `a`, zero-padded to `size` rows (one compiled shape)."""
    part = a[start:start + size]
    if part.shape[0] == size:
        return part
    xp = jnp if isinstance(part, jax.Array) else np
    return xp.concatenate([part, xp.zeros((size - part.shape[0], part.shape[1]), part.dtype)])


@functools.lru_cache(maxsize=64)
def _pairwise_fn(metric: Metric, dtype: str | None, mesh: Mesh) -> Any:
    def local(x: jax.Array, y: jax.Array) -> jax.Array:
        return metric.block(x, y, dtype)  # this device's rows against every column

    sharded = jax.shard_map(
        local, mesh=mesh, in_specs=(P(DATA_AXIS), P()), out_specs=P(DATA_AXIS), check_vma=False
    )
    return jax.jit(
        sharded,
        in_shardings=(NamedSharding(mesh, P(DATA_AXIS)), NamedSharding(mesh, P())),
        out_shardings=NamedSharding(mesh, P(DATA_AXIS)),
    )


# ----------------------------------------------------------------------------- topk


def topk(
    queries: Any,
    database: Any,
    k: int,
    metric: str | Metric = "cosine",
    *,
    block_size: int | None = None,
    query_block_size: int | None = None,
    dtype: Any = None,
    devices: Any = None,
) -> tuple[jax.Array, jax.Array]:
    """Exact k nearest database rows for each query: `(scores [Q, k], indices [Q, k])`, best
    first (highest cosine/ncc, lowest l1/mse; ties go to the lower index, as a stable argsort).

    The database [N, D] is sharded over `devices` (default: all) and scanned in blocks of
    `block_size` rows; each device keeps a running top-k per query (merge of the previous k
    with the block's scores), and the per-device lists are merged at the end. Queries are
    processed `query_block_size` at a time. Memory: one [query_block, block] score tile per
    device. `dtype=jnp.bfloat16` rounds inputs to bf16 with float32 accumulation. Rows
    holding NaN or inf are refused with their row numbers (InputError): NaN would rank first."""
    metric = get_metric(metric)
    mm_dtype = _matmul_dtype(dtype)
    queries, database = _check_pair(queries, database, "queries", "database")
    if not isinstance(k, int | np.integer) or isinstance(k, bool) or k < 1:
        raise InputError(f"k must be a positive integer; got {k!r}.")
    n, dim = database.shape
    if k > n:
        raise InputError(
            f"k={k} is larger than the database ({n} vectors); ask for k <= {n}."
        )
    q = queries.shape[0]
    mesh = make_mesh(devices)
    ndev = mesh.devices.size
    local_n = -(-n // ndev)
    block = _block(block_size, 16384, local_n, dim, metric)
    qblock = _block(query_block_size, 4096, q, dim, metric)
    local_n = -(-local_n // block) * block
    fn = _topk_fn(metric, int(k), block, qblock, n, mm_dtype, mesh)
    dp = _pad_rows(jnp.asarray(database), local_n * ndev)
    qp = _pad_rows(jnp.asarray(queries), qblock)
    scores, indices = fn(qp, dp)
    scores, indices = scores[:q], indices[:q]
    if not isinstance(scores, jax.core.Tracer) and not bool(jnp.isfinite(scores).all()):
        raise _overflow_error(metric, queries, database)
    return scores, indices


def _merge(scores: jax.Array, indices: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """Top k along the last axis of (scores, indices) candidates; lax.top_k keeps the lower
    position on ties and candidates are laid out in index order, so ties go to lower indices."""
    best, pos = jax.lax.top_k(scores, k)
    return best, jnp.take_along_axis(indices, pos, axis=-1)


@functools.lru_cache(maxsize=64)
def _topk_fn(
    metric: Metric, k: int, block: int, qblock: int, n: int, dtype: str | None, mesh: Mesh
) -> Any:
    sign = 1.0 if metric.higher_is_better else -1.0  # search maximizes sign * score

    def local(queries: jax.Array, db: jax.Array) -> tuple[jax.Array, jax.Array]:
        offset = jax.lax.axis_index("data") * db.shape[0]
        blocks = db.reshape(-1, block, db.shape[-1])
        starts = offset + jnp.arange(blocks.shape[0], dtype=jnp.int32) * block

        def one_query_block(qb: jax.Array) -> tuple[jax.Array, jax.Array]:
            init = (
                jnp.full((qb.shape[0], k), -jnp.inf, jnp.float32),
                jnp.full((qb.shape[0], k), -1, jnp.int32),
            )

            def step(carry, xs):
                best, best_idx = carry
                rows, start = xs
                idx = start + jnp.arange(block, dtype=jnp.int32)
                s = sign * metric.block(qb, rows, dtype)
                s = jnp.where(idx[None, :] < n, s, -jnp.inf)  # padding rows never win
                idx = jnp.broadcast_to(idx[None, :], s.shape)
                # Block-local top-k first keeps the merge at 2k candidates per query.
                s, idx = _merge(s, idx, min(k, block))
                return _merge(
                    jnp.concatenate([best, s], axis=1),
                    jnp.concatenate([best_idx, idx], axis=1), k
                ), None

            (best, best_idx), _ = jax.lax.scan(step, init, (blocks, starts))
            return best, best_idx

        qblocks = queries.reshape(-1, qblock, queries.shape[-1])
        best, best_idx = jax.lax.map(one_query_block, qblocks)
        best = best.reshape(-1, k)
        best_idx = best_idx.reshape(-1, k)
        # Gather every device's candidates (device order = index order) and merge once.
        all_best = jax.lax.all_gather(best, "data", axis=1, tiled=True)
        all_idx = jax.lax.all_gather(best_idx, "data", axis=1, tiled=True)
        best, best_idx = _merge(all_best, all_idx, k)
        return sign * best, best_idx

    sharded = jax.shard_map(
        local, mesh=mesh, in_specs=(P(), P(DATA_AXIS)), out_specs=(P(), P()), check_vma=False
    )
    return jax.jit(
        sharded,
        in_shardings=(NamedSharding(mesh, P()), NamedSharding(mesh, P(DATA_AXIS))),
        out_shardings=(NamedSharding(mesh, P()), NamedSharding(mesh, P())),
    )
