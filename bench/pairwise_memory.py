"""Peak memory of `jaxcnn.similarity.pairwise` as a multiple of its [N, M] float32 output,
against numpy computing the same matrix in the same run (cosine: unit rows then one matmul;
mse: ||x||^2 + ||y||^2 - 2 x.y), each measured in a fresh child process.

    python bench/pairwise_memory.py                              # [2000, 50000], D=64
    python bench/pairwise_memory.py --n 2000 --m 200000          # the issue's 1.6 GB output
    python bench/pairwise_memory.py --repo /path/to/other/checkout   # another jaxcnn version

A child builds x [N, D] and y [M, D], warms jax up on a tiny call, then records its resident
set (VmRSS) and runs the call up to a host numpy array (np.asarray of the result); the peak
growth is ru_maxrss after minus VmRSS before, so the inputs and the jax runtime are not
counted but every temporary and the result are. Prints one
JSON line per (implementation, metric): output MB, peak growth MB, and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _child(impl: str, metric: str, n: int, m: int, dim: int, devices: int) -> dict:
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, dim), dtype=np.float32)
    y = rng.standard_normal((m, dim), dtype=np.float32)
    if impl == "jaxcnn":
        import jax

        from jaxcnn.similarity import pairwise

        devs = jax.devices()[:devices]
        pairwise(x[:4], y[:4], metric, devices=devs)  # start the runtime, not the big compile
        fn = lambda: pairwise(x, y, metric, devices=devs)
    else:
        def fn():
            if metric == "cosine":
                xn = x / np.linalg.norm(x, axis=1, keepdims=True)
                yn = y / np.linalg.norm(y, axis=1, keepdims=True)
                return xn @ yn.T
            sx, sy = (x * x).sum(1), (y * y).sum(1)
            return (sx[:, None] + sy[None, :] - 2.0 * (x @ y.T)) / dim
    before = _rss_mb()
    t0 = time.perf_counter()
    out = np.asarray(fn())  # the matrix on the host, as every caller reads it
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out_mb = n * m * 4 / 2**20
    assert out.shape == (n, m)
    return {"impl": impl, "metric": metric, "shape": [n, m], "dim": dim, "devices": devices,
            "output_mb": round(out_mb, 1), "peak_growth_mb": round(peak - before, 1),
            "peak_over_output": round((peak - before) / out_mb, 2),
            "seconds_incl_compile": round(seconds, 2)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--m", type=int, default=50_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--metrics", default="cosine,mse")
    p.add_argument("--devices", type=int, default=1, help="jax CPU devices to use")
    p.add_argument("--repo", default=ROOT, help="checkout whose jaxcnn is measured")
    p.add_argument("--numpy", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--child", nargs=2, metavar=("IMPL", "METRIC"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(_child(*args.child, args.n, args.m, args.dim, args.devices)))
        return
    env = dict(os.environ, PYTHONPATH=args.repo, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={args.devices}")
    impls = ["jaxcnn"] + (["numpy"] if args.numpy else [])
    for metric in args.metrics.split(","):
        for impl in impls:  # interleaved per metric
            cmd = [sys.executable, os.path.abspath(__file__), "--child", impl, metric,
                   "--n", str(args.n), "--m", str(args.m), "--dim", str(args.dim),
                   "--devices", str(args.devices)]
            out = subprocess.run(cmd, env=env, cwd=args.repo, capture_output=True, text=True,
                                 check=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            row["repo"] = args.repo
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
