"""Images/s of jaxcnn's host input pipeline (grain workers, `jaxcnn.data.stream`) against
`torch.utils.data.DataLoader` + `torchvision.transforms.v2` with the same number of worker
processes, the same files and the same transforms, interleaved round by round (the torch
side runs in its own interpreter, bench/torch_input_peer.py), median and range over rounds:

  (a) CIFAR-10's 32x32 JPEGs, RandomCrop(32, padding 4) + flip
  (b) photos of 178-2000 px (the raccoon set's 200 images, cycled), RandomResizedCrop(224) + flip
  (c) the same photos, the eval transform Resize(256) + CenterCrop(224)

Steady state only: each pass times from its first batch to its last; the start-up (worker
processes, first batch) is reported apart. `--prepare` also times `jaxcnn prepare` on the
CIFAR-10 tree and samples the peak memory of its whole process tree.

    nice -n 10 python bench/input_pipeline.py --rounds 5 --workers 1,2
    nice -n 10 python bench/input_pipeline.py --prepare
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from tree_cpu import tree_cpu

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TORCH_PYTHON = os.environ.get("TORCH_PYTHON", "/work/torchvenv/bin/python")


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cifar", default="/work/data/cifar10")
    p.add_argument("--photos", default="/work/data/raccoon/images")
    p.add_argument("--cases", default="a,b,c")
    p.add_argument("--workers", default="1,2", help="comma list of worker counts (0 = main)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--cifar-images", type=int, default=10240)
    p.add_argument("--photo-images", type=int, default=800, help="the 200 photos, cycled")
    p.add_argument("--prepare", action="store_true", help="time `jaxcnn prepare` on --cifar")
    p.add_argument("--out", default="", help="write the raw results as JSON here")
    return p.parse_args()


def _files(args: argparse.Namespace, case: str) -> tuple[list[tuple[str, int]], int]:
    """(files with labels, batch size) of a case: the same list for both sides."""
    if case == "a":
        root = Path(args.cifar) / "train"
        classes = sorted(d.name for d in root.iterdir())
        files = [(str(p), k) for k, c in enumerate(classes) for p in sorted((root / c).iterdir())]
        keep = np.random.default_rng(0).permutation(len(files))[:args.cifar_images]
        return [files[i] for i in sorted(keep)], 256
    photos = sorted(str(p) for p in Path(args.photos).glob("*.jpg"))
    return [(photos[i % len(photos)], 0) for i in range(args.photo_images)], 32


def _transform(case: str):
    from jaxcnn.data.transforms import ImageTransform

    return {
        "a": ImageTransform(train=True, crop_padding=4, flip=True),
        "b": ImageTransform(train=True, size=224, random_resized_crop=True, flip=True),
        "c": ImageTransform(size=224, resize=256),
    }[case]


def run_jaxcnn(case: str, files: list, batch: int, workers: int, seed: int) -> dict:
    """One timed pass of the grain pipeline over `files` (one epoch)."""
    from jaxcnn.data.stream import BatchStream, FileExamples, Layout, LoadExample, TrainRows

    src = FileExamples(files)
    layout = Layout(len(src), batch)
    rows = TrainRows(LoadExample(src, _transform(case), seed), layout, layout.steps_per_epoch)
    t0 = time.perf_counter()
    stream = BatchStream(rows, workers=workers, buffer_size=2)
    n, t_first = 0, None
    try:
        last = stream.num_batches - 1
        for k, b in enumerate(stream):
            if t_first is None:
                t_first, cpu0 = time.perf_counter(), tree_cpu()
                shape = list(b["image"].shape)
            else:
                n += len(b["image"])
            if k == last:  # before the workers exit
                t_end, cpu1 = time.perf_counter(), tree_cpu()
    finally:
        stream.close()
    return {"startup_s": t_first - t0, "steady_images": n,
            "images_per_s": n / (t_end - t_first), "shape": shape,
            "cpu_ms_per_image": (cpu1 - cpu0) / n * 1e3}



class TorchPeer:
    """bench/torch_input_peer.py in the torch interpreter, one command per round."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([TORCH_PYTHON, str(ROOT / "bench" / "torch_input_peer.py")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.versions = json.loads(self.proc.stdout.readline())

    def run(self, case: str, files: list, batch: int, workers: int, seed: int) -> dict:
        self.proc.stdin.write(json.dumps({"case": case, "files": files, "batch": batch,
                                          "workers": workers, "seed": seed}) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(60)


def _summary(values: list[float]) -> str:
    return f"{statistics.median(values):.0f} [{min(values):.0f}-{max(values):.0f}]"


def bench_pipelines(args: argparse.Namespace) -> list[dict]:
    peer = TorchPeer()
    print(json.dumps(peer.versions), flush=True)  # torch, torchvision
    rows = []
    try:
        for case in args.cases.split(","):
            files, batch = _files(args, case)
            for workers in (int(w) for w in args.workers.split(",")):
                ours, theirs, ratios = [], [], []
                for r in range(args.rounds):
                    order = ("jaxcnn", "torch") if r % 2 == 0 else ("torch", "jaxcnn")
                    got = {}
                    for side in order:
                        fn = run_jaxcnn if side == "jaxcnn" else peer.run
                        got[side] = fn(case, files, batch, workers, seed=r)
                    ours.append(got["jaxcnn"])
                    theirs.append(got["torch"])
                    ratios.append(got["jaxcnn"]["images_per_s"] / got["torch"]["images_per_s"])
                    print(f"case {case} workers {workers} round {r}: jaxcnn "
                          f"{got['jaxcnn']['images_per_s']:.0f} img/s, torch "
                          f"{got['torch']['images_per_s']:.0f} img/s", file=sys.stderr, flush=True)
                per = max(workers, 1)
                row = {
                    "case": case, "workers": workers, "batch": batch, "images": len(files),
                    "jaxcnn_images_per_s": [o["images_per_s"] for o in ours],
                    "torch_images_per_s": [t["images_per_s"] for t in theirs],
                    "ratio": ratios,
                    "jaxcnn_cpu_ms_per_image": [o["cpu_ms_per_image"] for o in ours],
                    "torch_cpu_ms_per_image": [t["cpu_ms_per_image"] for t in theirs],
                    "jaxcnn_startup_s": [o["startup_s"] for o in ours],
                    "torch_startup_s": [t["startup_s"] for t in theirs],
                    "shapes": [ours[0]["shape"], theirs[0]["shape"]],
                }
                rows.append(row)
                print(f"| ({case}) | {workers} | {_summary(row['jaxcnn_images_per_s'])} | "
                      f"{_summary(row['torch_images_per_s'])} | "
                      f"{statistics.median(ratios):.2f}x [{min(ratios):.2f}-{max(ratios):.2f}] | "
                      f"{statistics.median(row['jaxcnn_images_per_s']) / per:.0f} / "
                      f"{statistics.median(row['torch_images_per_s']) / per:.0f} | "
                      f"{1e3 / statistics.median(row['jaxcnn_cpu_ms_per_image']):.0f} / "
                      f"{1e3 / statistics.median(row['torch_cpu_ms_per_image']):.0f} | "
                      f"{statistics.median(row['jaxcnn_startup_s']):.1f} / "
                      f"{statistics.median(row['torch_startup_s']):.1f} |", flush=True)
    finally:
        peer.close()
    return rows


def bench_prepare(args: argparse.Namespace) -> dict:
    """`jaxcnn prepare` on the CIFAR-10 tree: wall time, images/s, peak memory (RSS of the
    whole process tree, sampled every 0.1 s, and of its largest process)."""
    import resource

    import psutil

    out = Path(tempfile.mkdtemp(prefix="jaxcnn-prepare-")) / "records"
    cmd = [sys.executable, "-m", "jaxcnn", "prepare", args.cifar, "--out", str(out)]
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu0 = kids.ru_utime + kids.ru_stime
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    peak = {"tree": 0, "process": 0}

    def sample() -> None:
        p = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                rss = [q.memory_info().rss for q in [p, *p.children(recursive=True)]]
            except psutil.Error:
                continue
            peak["tree"] = max(peak["tree"], sum(rss))
            peak["process"] = max(peak["process"], max(rss))
            time.sleep(0.1)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    stdout, _ = proc.communicate()
    thread.join()
    seconds = time.perf_counter() - t0
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # the command and its workers
    cpu = kids.ru_utime + kids.ru_stime - cpu0
    summary = json.loads(stdout.strip().splitlines()[-1])
    images = summary["train_examples"] + summary["test_examples"]
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    shutil.rmtree(out.parent)  # the records were written to be timed, not kept
    result = {"command": " ".join(cmd[1:]), "images": images, "seconds": seconds,
              "images_per_s": images / seconds, "cpu_seconds": cpu,
              "images_per_cpu_second": images / cpu, "peak_rss_tree_mib": peak["tree"] / 2**20,
              "peak_rss_process_mib": peak["process"] / 2**20, "records_mib": size / 2**20,
              "workers": os.cpu_count()}
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    args = _parse()
    import grain
    import jax
    import PIL

    info = {"python": platform.python_version(), "jax": jax.__version__,
            "grain": getattr(grain, "__version__", ""), "pillow": PIL.__version__,
            "cpus": os.cpu_count(), "load": os.getloadavg(),
            "date": time.strftime("%Y-%m-%d %H:%M")}
    print(json.dumps(info), flush=True)
    results: dict = {"info": info}
    if args.prepare:
        results["prepare"] = bench_prepare(args)
    else:
        print("| case | workers | jaxcnn img/s | torch img/s | ratio | per worker (jaxcnn / "
              "torch) | per CPU-second (jaxcnn / torch) | start-up s (jaxcnn / torch) |\n"
              "|---|---|---|---|---|---|---|---|", flush=True)
        results["pipelines"] = bench_pipelines(args)
    results["load_after"] = os.getloadavg()
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
