"""How jittable NMS scales with N: `jaxcnn.detection.nms_padded` (a while-loop over kept boxes,
O(N) memory) against the textbook jittable form that first builds the N x N IoU matrix and then
scans it (written here, as the design jaxcnn did not take), and torchvision's C++
`torchvision.ops.nms` (eager) as the peer, interleaved per N in one run.

    python bench/detection_nms.py --torch-python /work/torchvenv/bin/python
    python bench/detection_nms.py --sizes 256,1024 --max-output 100 --no-torch

Boxes: N boxes in N/20 overlapping clusters on a 1000 x 1000 image, distinct random scores,
IoU threshold 0.5; `max_output` kept slots (default: 1000, torchvision's detections/RPN size).
Per N: XLA compile time, steady-state median wall and process-CPU milliseconds (after a warm-up
call), the compiled program's temporary memory (XLA memory_analysis), and the number of boxes
kept. All three agree on the kept indices (checked). torchvision returns every kept box, jaxcnn
stops after `max_output` (what a detector keeps), so at large N torchvision does more work.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import numpy as np


def _parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="256,1024,4096,16384")
    p.add_argument("--max-output", type=int, default=1000)
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--matrix-max", type=int, default=16384, help="largest N for the N x N form")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--torch-python", default=None, help="a python with torchvision")
    p.add_argument("--peer-only", type=int, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def make_boxes(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed + n)
    k = max(1, n // 20)
    xy = rng.uniform(0, 900, (k, 2))
    centres = np.concatenate([xy, xy + rng.uniform(20, 100, (k, 2))], 1)
    boxes = centres[rng.integers(0, k, n)] + rng.normal(0, 8, (n, 4))
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
    scores = (rng.permutation(n) + 1) / n
    return boxes.astype(np.float32), scores.astype(np.float32)


def _time(fn, repeats: int) -> tuple[float, float]:
    """Median wall and process-CPU seconds of `fn()`."""
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def nms_matrix(boxes, scores, threshold: float, max_output: int):
    """The N x N form: IoU matrix in score order, then a scan keeping box i unless a kept box
    before it overlaps it by more than the threshold."""
    import jax
    import jax.numpy as jnp

    from jaxcnn.detection import box_iou

    n = boxes.shape[0]
    order = jnp.argsort(-scores, stable=True)
    iou = box_iou(boxes[order], boxes[order])

    def body(i, kept):
        hit = jnp.any(kept & (iou[:, i] > threshold) & (jnp.arange(n) < i))
        return kept.at[i].set(~hit)

    kept = jax.lax.fori_loop(0, n, body, jnp.zeros((n,), bool))
    (slot,) = jnp.nonzero(kept, size=max_output, fill_value=-1)
    return jnp.where(slot >= 0, order[slot], -1), slot >= 0


def measure_jax(n: int, args) -> list[dict]:
    import jax

    from jaxcnn.detection import nms_padded

    boxes, scores = make_boxes(n)
    rows, results = [], {}
    impls = {"jaxcnn while-loop": nms_padded}
    if n <= args.matrix_max:
        impls["N x N matrix"] = nms_matrix
    for name, impl in impls.items():
        fn = jax.jit(impl, static_argnums=(2, 3))
        t0 = time.perf_counter()
        compiled = fn.lower(boxes, scores, args.threshold, args.max_output).compile()
        compile_s = time.perf_counter() - t0
        mem = compiled.memory_analysis()
        run = lambda: jax.block_until_ready(compiled(boxes, scores))  # noqa: B023
        keep, ok = run()
        results[name] = np.asarray(keep)[np.asarray(ok)]
        wall, cpu = _time(run, args.repeats)
        rows.append({
            "impl": name, "n": n, "compile_s": round(compile_s, 3),
            "steady_ms": round(1e3 * wall, 3), "steady_cpu_ms": round(1e3 * cpu, 3),
            "temp_mib": round(getattr(mem, "temp_size_in_bytes", 0) / 2**20, 2),
            "kept": int(np.asarray(ok).sum()),
        })  # fmt: skip
    first = next(iter(results.values()))
    for name, r in results.items():
        assert np.array_equal(r, first), f"{name} disagrees at N={n}"
    return rows, first


def measure_torch(n: int, args) -> dict:
    import torch
    import torchvision

    boxes, scores = make_boxes(n)
    b, s = torch.from_numpy(boxes), torch.from_numpy(scores)
    keep = torchvision.ops.nms(b, s, args.threshold)[: args.max_output].numpy()
    wall, cpu = _time(lambda: torchvision.ops.nms(b, s, args.threshold), args.repeats)
    return {
        "impl": "torchvision.ops.nms (C++, eager)", "n": n, "compile_s": 0.0,
        "steady_ms": round(1e3 * wall, 3), "steady_cpu_ms": round(1e3 * cpu, 3),
        "temp_mib": None, "kept": len(keep), "keep": keep.tolist(),
    }  # fmt: skip


def main() -> None:
    args = _parse()
    if args.peer_only is not None:
        print(json.dumps(measure_torch(args.peer_only, args)))
        return
    import jax

    print(json.dumps({"jax": jax.__version__, "device": str(jax.devices()[0]),
                      "max_output": args.max_output, "threshold": args.threshold}))  # fmt: skip
    for n in (int(v) for v in args.sizes.split(",")):
        rows, keep = measure_jax(n, args)
        peer = None
        if not args.no_torch:
            try:
                peer = measure_torch(n, args)
            except ImportError:
                if args.torch_python:
                    argv, skip = [], False
                    for a in sys.argv[1:]:
                        if skip or a.startswith("--torch-python"):
                            skip = a == "--torch-python"
                            continue
                        argv.append(a)
                    cmd = [args.torch_python, __file__, *argv, "--peer-only", str(n)]
                    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
                    peer = json.loads(out.stdout.strip().splitlines()[-1])
        if peer is not None:
            assert np.array_equal(np.asarray(peer.pop("keep")), keep), f"torch disagrees at N={n}"
            rows.append(peer)
        for row in rows:
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
