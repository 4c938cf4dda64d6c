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

from jaxcnn.errors import InputError
from jaxcnn.similarity.metrics import Metric, get_metric

# L1 tiles hold block_rows * block_cols * D float32 values; keep them near this many bytes.
_L1_TILE_BYTES = 64 * 2**20


def _check_matrix(a: Any, name: str, fix: str) -> jax.Array | np.ndarray:
    if not hasattr(a, "shape"):
        a = np.asarray(a)
    if a.ndim != 2:
        hint = " Add an axis with a[None] for a single vector." if a.ndim == 1 else ""
        raise InputError(
            f"{name} must be a rank-2 array [count, dim] of vectors; got shape {a.shape}.{hint}"
            f" {fix}"
        )
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise InputError(f"{name} is empty (shape {a.shape}); it needs at least one vector.")
    return a


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


def _mesh(devices: Any) -> Mesh:
    devices = list(jax.devices() if devices is None else devices)
    return Mesh(np.array(devices), ("data",))


def _pad_rows(a: jax.Array, multiple: int) -> jax.Array:
    extra = -a.shape[0] % multiple
    return jnp.pad(a, ((0, extra), (0, 0))) if extra else a


def _block(requested: int | None, default: int, limit: int, dim: int, metric: Metric) -> int:
    """Rows per block: the request, else `default` (for L1 the side of a square
    [side, side, D] float32 tile of about _L1_TILE_BYTES), capped at `limit`."""
    if requested is not None and (not isinstance(requested, int) or requested <= 0):
        raise InputError(f"block sizes must be positive integers; got {requested!r}.")
    if requested is None and metric.name == "l1":
        default = min(default, max(1, math.isqrt(_L1_TILE_BYTES // (4 * dim))))
    return max(1, min(requested or default, limit))


# ----------------------------------------------------------------------------- pairwise


def pairwise(
    x: Any,
    y: Any | None = None,
    metric: str | Metric = "cosine",
    *,
    block_size: int | None = None,
    dtype: Any = None,
    devices: Any = None,
) -> jax.Array:
    """Scores [N, M] of every row of `x` [N, D] against every row of `y` [M, D] (`y=None`:
    against `x` itself), with `metric` in l1, mse, cosine, ncc (see jaxcnn.similarity.metrics
    for directions). Computed in [block_size, block_size] tiles with a vmapped kernel, rows of
    `x` sharded over `devices` (default: all); `dtype=jnp.bfloat16` rounds the inputs to bf16
    and accumulates in float32. Returns float32 (replicated on one host)."""
    metric = get_metric(metric)
    y = x if y is None else y
    x, y = _check_pair(x, y, "x", "y")
    n, dim = x.shape
    m = y.shape[0]
    mesh = _mesh(devices)
    ndev = mesh.devices.size
    rows = _block(block_size, 1024, -(-n // ndev), dim, metric)
    cols = _block(block_size, 1024, m, dim, metric)
    fn = _pairwise_fn(metric, rows, cols, None if dtype is None else jnp.dtype(dtype).name, mesh)
    xp = _pad_rows(jnp.asarray(x), rows * ndev)
    yp = _pad_rows(jnp.asarray(y), cols)
    return fn(xp, yp)[:n, :m]


@functools.lru_cache(maxsize=64)
def _pairwise_fn(metric: Metric, rows: int, cols: int, dtype: str | None, mesh: Mesh) -> Any:
    def local(x: jax.Array, y: jax.Array) -> jax.Array:
        # x: this device's [rows * i, D]; y: all [cols * j, D]. Loop over tiles with lax.map so
        # only one [rows, cols] (for L1 [rows, cols, D]) tile is live at a time.
        xb = x.reshape(-1, rows, x.shape[-1])
        yb = y.reshape(-1, cols, y.shape[-1])

        def row_block(xi: jax.Array) -> jax.Array:
            tiles = jax.lax.map(lambda yj: metric.block(xi, yj, dtype), yb)  # [J, rows, cols]
            return jnp.moveaxis(tiles, 0, 1).reshape(rows, -1)

        return jax.lax.map(row_block, xb).reshape(-1, yb.shape[0] * cols)

    sharded = jax.shard_map(
        local, mesh=mesh, in_specs=(P("data"), P()), out_specs=P("data"), check_vma=False
    )
    return jax.jit(
        sharded,
        in_shardings=(NamedSharding(mesh, P("data")), NamedSharding(mesh, P())),
        out_shardings=NamedSharding(mesh, P()),
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
    device. `dtype=jnp.bfloat16` rounds inputs to bf16 with float32 accumulation."""
    metric = get_metric(metric)
    queries, database = _check_pair(queries, database, "queries", "database")
    if not isinstance(k, int | np.integer) or isinstance(k, bool) or k < 1:
        raise InputError(f"k must be a positive integer; got {k!r}.")
    n, dim = database.shape
    if k > n:
        raise InputError(
            f"k={k} is larger than the database ({n} vectors); ask for k <= {n}."
        )
    q = queries.shape[0]
    mesh = _mesh(devices)
    ndev = mesh.devices.size
    local_n = -(-n // ndev)
    block = _block(block_size, 16384, local_n, dim, metric)
    qblock = _block(query_block_size, 4096, q, dim, metric)
    local_n = -(-local_n // block) * block
    fn = _topk_fn(metric, k, block, qblock, n, None if dtype is None else jnp.dtype(dtype).name,
                  mesh)
    dp = _pad_rows(jnp.asarray(database), local_n * ndev)
    qp = _pad_rows(jnp.asarray(queries), qblock)
    scores, indices = fn(qp, dp)
    return scores[:q], indices[:q]


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
        local, mesh=mesh, in_specs=(P(), P("data")), out_specs=(P(), P()), check_vma=False
    )
    return jax.jit(
        sharded,
        in_shardings=(NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))),
        out_shardings=(NamedSharding(mesh, P()), NamedSharding(mesh, P())),
    )
