"""Exact top-k search speed: `jaxcnn.similarity.topk` for Q bf16 queries against an N x D bf16
database (default 10,000 x 1,000,000 x 512, cosine, k=10), against `torch.matmul` + `torch.topk`
(blocked the same way, so the [Q, N] score matrix is never materialized) in the same run.

    python bench/topk.py                                   # the issue's size (a GPU)
    python bench/topk.py --queries 256 --database 20000 --dim 128   # a CPU smoke run
    python bench/topk.py ... --torch-python /work/tvenv/bin/python  # torch in another venv

Prints one JSON line per implementation: seconds per search (median of --repeats after a
warm-up call that compiles), TFLOP/s counting the 2*Q*N*D multiply-adds of the score matmul,
and that rate as a fraction of the device's nominal dense bf16 peak (when known) and of a plain
bf16 matmul of one [query_block, D] x [D, block] tile measured here (the achievable rate).
Both implementations return the same indices (checked on the first queries).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time

# Nominal dense bf16 tensor-core peaks (TFLOP/s), from the vendors' data sheets.
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0}


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--queries", type=int, default=10_000)
    p.add_argument("--database", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--metric", default="cosine", choices=("cosine", "ncc", "mse", "l1"))
    p.add_argument("--block", type=int, default=None, help="database rows per block")
    p.add_argument("--query-block", type=int, default=None)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch peer")
    p.add_argument("--torch-python", default=None,
                   help="a python with torch, when this one has none (the peer runs there)")
    p.add_argument("--peer-only", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _data(args: argparse.Namespace):
    import numpy as np

    rng = np.random.default_rng(args.seed)
    q = rng.standard_normal((args.queries, args.dim), dtype=np.float32)
    # Database in chunks: float32 -> bf16 without a second full-size float32 copy.
    return q, rng


def _peak(name: str) -> float | None:
    for key, tflops in PEAK_BF16_TFLOPS.items():
        if key in name:
            return tflops
    return None


def _report(impl: str, device: str, args: argparse.Namespace, seconds: list[float],
            extra: dict) -> dict:
    t = statistics.median(seconds)
    tflops = 2.0 * args.queries * args.database * args.dim / t / 1e12
    peak = _peak(device)
    return {
        "impl": impl, "device": device, "queries": args.queries, "database": args.database,
        "dim": args.dim, "k": args.k, "metric": args.metric, "seconds": round(t, 5),
        "tflops": round(tflops, 4),
        "fraction_of_nominal_peak": round(tflops / peak, 4) if peak else None,
        **extra,
    }


def run_jax(args: argparse.Namespace) -> tuple[dict, object]:
    """Time jaxcnn's topk; returns the report and the first queries' indices."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxcnn.similarity import topk

    q, rng = _data(args)
    devices = jax.devices()
    chunks = []
    for start in range(0, args.database, 65536):
        n = min(65536, args.database - start)
        chunks.append(jnp.asarray(rng.standard_normal((n, args.dim), dtype=np.float32),
                                  jnp.bfloat16))
    db = jnp.concatenate(chunks)
    del chunks
    qb = jnp.asarray(q, jnp.bfloat16)
    kwargs = dict(block_size=args.block, query_block_size=args.query_block, dtype=jnp.bfloat16)
    t0 = time.perf_counter()
    scores, idx = topk(qb, db, args.k, args.metric, **kwargs)
    jax.block_until_ready(idx)
    first = time.perf_counter() - t0
    seconds = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        scores, idx = topk(qb, db, args.k, args.metric, **kwargs)
        jax.block_until_ready(idx)
        seconds.append(time.perf_counter() - t0)
    # The achievable matmul rate: one bf16 tile product with float32 accumulation.
    qt = min(args.queries, args.query_block or 4096)
    bt = min(-(-args.database // len(devices)), args.block or 16384)
    a = jnp.ones((qt, args.dim), jnp.bfloat16)
    b = jnp.ones((args.dim, bt), jnp.bfloat16)
    mm = jax.jit(lambda a, b: jnp.matmul(a, b, preferred_element_type=jnp.float32))
    jax.block_until_ready(mm(a, b))
    t0 = time.perf_counter()
    reps = 5
    for _ in range(reps):
        out = mm(a, b)
    jax.block_until_ready(out)
    tile_tflops = 2.0 * qt * bt * args.dim * reps / (time.perf_counter() - t0) / 1e12
    name = devices[0].device_kind if devices[0].platform != "cpu" else (
        f"cpu ({platform.machine()}, {len(devices)} device(s))")
    report = _report("jaxcnn.similarity.topk", name, args, seconds, {
        "first_call_seconds": round(first, 3), "tile_matmul_tflops": round(tile_tflops, 4),
        "devices": len(devices)})
    report["fraction_of_tile_matmul"] = round(report["tflops"] / tile_tflops, 4)
    return report, np.asarray(idx[:8])


def run_torch(args: argparse.Namespace) -> tuple[dict, object] | None:
    """torch.matmul + torch.topk over database blocks with a running top-k merge."""
    try:
        import torch
    except ImportError:
        return None
    import numpy as np

    device = "cuda" if torch.cuda.is_available() else "cpu"
    q, rng = _data(args)
    chunks = [torch.from_numpy(rng.standard_normal((min(65536, args.database - s), args.dim),
                                                   dtype=np.float32)).to(device, torch.bfloat16)
              for s in range(0, args.database, 65536)]
    db = torch.cat(chunks)
    del chunks
    qb = torch.from_numpy(q).to(device, torch.bfloat16)
    block = args.block or 16384
    qblock = args.query_block or 4096
    largest = args.metric in ("cosine", "ncc")
    if args.metric not in ("cosine",):
        raise SystemExit("the torch peer implements cosine only")

    def search() -> torch.Tensor:
        qn = torch.nn.functional.normalize(qb.float(), dim=1).to(torch.bfloat16)
        out = []
        for qs in range(0, args.queries, qblock):
            qq = qn[qs:qs + qblock]
            best_s = torch.full((len(qq), args.k), -float("inf"), device=device)
            best_i = torch.full((len(qq), args.k), -1, device=device, dtype=torch.long)
            for start in range(0, args.database, block):
                dbn = torch.nn.functional.normalize(db[start:start + block].float(), dim=1).to(
                    torch.bfloat16)
                s = torch.matmul(qq, dbn.T).float()
                s, i = torch.topk(s, min(args.k, s.shape[1]), dim=1, largest=largest)
                cand_s = torch.cat([best_s, s], 1)
                cand_i = torch.cat([best_i, i + start], 1)
                best_s, pos = torch.topk(cand_s, args.k, dim=1, largest=largest)
                best_i = torch.gather(cand_i, 1, pos)
            out.append(best_i)
        return torch.cat(out)

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    with torch.no_grad():
        t0 = time.perf_counter()
        idx = search()
        sync()
        first = time.perf_counter() - t0
        seconds = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            idx = search()
            sync()
            seconds.append(time.perf_counter() - t0)
    name = torch.cuda.get_device_name() if device == "cuda" else f"cpu ({platform.machine()})"
    report = _report(f"torch {torch.__version__} matmul+topk", name, args, seconds,
                     {"first_call_seconds": round(first, 3), "threads": torch.get_num_threads()})
    return report, idx[:8].cpu().numpy()


def main(argv: list[str] | None = None) -> int:
    """Run both implementations and print their JSON lines."""
    args = _parse(argv)
    if args.peer_only:
        result = run_torch(args)
        if result is None:
            print(json.dumps({"error": "torch is not installed"}))
            return 1
        report, idx = result
        print(json.dumps({**report, "first_indices": idx.tolist()}))
        return 0
    import numpy as np

    report, jidx = run_jax(args)
    print(json.dumps(report), flush=True)
    if args.no_torch:
        return 0
    peer = run_torch(args)
    if peer is None and args.torch_python:
        argv_peer, skip = [], False
        for a in argv if argv is not None else sys.argv[1:]:
            if skip or a.startswith("--torch-python"):
                skip = a == "--torch-python" and not skip
                continue
            argv_peer.append(a)
        cmd = [args.torch_python, __file__, *argv_peer, "--peer-only"]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        line = (out.stdout.strip().splitlines() or ["{}"])[-1]
        data = json.loads(line)
        if "first_indices" in data:
            peer = (data, np.asarray(data.pop("first_indices")))
        else:
            print(f"torch peer failed: {out.stderr[-2000:]}", file=sys.stderr)
    if peer is None:
        print("torch is not installed here: skipping the torch.matmul + torch.topk peer "
              "(pass --torch-python PATH to run it with another interpreter).", file=sys.stderr)
        return 0
    report, tidx = peer
    # bf16 rounding differs between the two, so near-ties may swap: compare the top-1.
    agree = float(np.mean(np.asarray(tidx)[:, 0] == jidx[:, 0]))
    print(json.dumps({**report, "top1_agreement_with_jax": agree}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
