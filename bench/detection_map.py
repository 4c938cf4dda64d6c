"""COCO box mAP speed: `jaxcnn.detection.coco_evaluate` against pycocotools' `COCOeval`
(iouType="bbox") on the same synthetic detections, interleaved in one run, and a check that
the twelve numbers are equal.

    python bench/detection_map.py                      # 5,000 images x 100 detections
    python bench/detection_map.py --images 500 --repeats 1   # a quick run

Data: per image 1-15 ground-truth boxes over 80 categories (5% crowd), 100 detections: jittered
copies of the ground truth (80% with the right label) and random boxes, random scores.
pycocotools is timed from in-memory COCO-format lists made by `jaxcnn.detection.to_coco`
(createIndex, loadRes, evaluate, accumulate, summarize), jaxcnn from the per-image arrays.
Both are single-threaded numpy / Python, so the process CPU time is reported next to the wall
time: on a shared machine it is the steadier measure. Prints one JSON line per repeat and one
summary line with medians and the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import statistics
import time

import numpy as np


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--detections", type=int, default=100, help="per image")
    p.add_argument("--categories", type=int, default=80)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def make_data(args: argparse.Namespace):
    """Per-image prediction/target dicts (numpy)."""
    rng = np.random.default_rng(args.seed)
    preds, targets = [], []
    k = args.detections
    for _ in range(args.images):
        m = int(rng.integers(1, 16))
        xy = rng.uniform(0, 500, (m, 2))
        gt = np.concatenate([xy, xy + rng.uniform(8, 250, (m, 2))], 1).astype(np.float32)
        gl = rng.integers(1, args.categories + 1, m)
        src = rng.integers(0, m, k)
        db = gt[src] + rng.normal(0, 0.08, (k, 1)) * (gt[src, 2:] - gt[src, :2]).repeat(2, 1)
        far = rng.random(k) < 0.4
        xy = rng.uniform(0, 500, (k, 2))
        db[far] = np.concatenate([xy, xy + rng.uniform(4, 200, (k, 2))], 1)[far]
        db[:, 2:] = np.maximum(db[:, 2:], db[:, :2] + 1)
        dl = np.where(rng.random(k) < 0.8, gl[src], rng.integers(1, args.categories + 1, k))
        preds.append({"boxes": db.astype(np.float32), "scores": rng.random(k).astype(np.float32),
                      "labels": dl})  # fmt: skip
        targets.append({"boxes": gt, "labels": gl, "iscrowd": rng.random(m) < 0.05})
    return preds, targets


def run_pycocotools(dataset, results):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = dataset
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats)


def main() -> None:
    import pycocotools

    from jaxcnn.detection import coco_evaluate, to_coco

    args = _parse()
    preds, targets = make_data(args)
    dataset, results = to_coco(preds, targets)
    ours_s, theirs_s, ours_cpu, theirs_cpu = [], [], [], []
    for r in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        ours = np.array(list(coco_evaluate(preds, targets).values()))
        t1, c1 = time.perf_counter(), time.process_time()
        theirs = run_pycocotools(dataset, results)
        t2, c2 = time.perf_counter(), time.process_time()
        ours_s.append(t1 - t0)
        theirs_s.append(t2 - t1)
        ours_cpu.append(c1 - c0)
        theirs_cpu.append(c2 - c1)
        diff = float(np.abs(ours - theirs).max())
        row = {"repeat": r, "jaxcnn_s": round(t1 - t0, 3), "pycocotools_s": round(t2 - t1, 3)}
        row |= {"jaxcnn_cpu_s": round(c1 - c0, 3), "pycocotools_cpu_s": round(c2 - c1, 3)}
        print(json.dumps(row | {"max_abs_diff": diff}), flush=True)
    summary = {
        "images": args.images,
        "detections": args.images * args.detections,
        "ground_truth": len(dataset["annotations"]),
        "jaxcnn_s_median": round(statistics.median(ours_s), 3),
        "pycocotools_s_median": round(statistics.median(theirs_s), 3),
        "speedup": round(statistics.median(theirs_s) / statistics.median(ours_s), 1),
        "jaxcnn_cpu_s_median": round(statistics.median(ours_cpu), 3),
        "pycocotools_cpu_s_median": round(statistics.median(theirs_cpu), 3),
        "speedup_cpu": round(statistics.median(theirs_cpu) / statistics.median(ours_cpu), 1),
        "equal": bool(np.array_equal(ours, theirs)),
        "stats": dict(zip(("map", "map_50", "map_75"), map(float, ours[:3]), strict=True)),
        "numpy": np.__version__,
        "pycocotools": getattr(pycocotools, "__version__", "2.0.x"),
        "cpu": platform.processor() or platform.machine(),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
