"""Training throughput on CPU with 1 vs N forced XLA host devices
(`--xla_force_host_platform_device_count`), the measurement behind the choice of one CPU
device as `jaxcnn train`'s default (issue 11). Every run is its own process (the device count
is fixed when jax starts), the counts alternate in order from round to round, and each
workload reports images/s after compilation:

- `small_cnn`: bench/throughput.py's train phase, small_cnn on synthetic 32x32x3 (CIFAR-size)
  images, global batch 128, the public donated and sharded train step;
- `digits`: the LeNet-5 digits demo end to end, `jaxcnn train --config digits_lenet`
  (`--config.num_epochs` epochs, batch 32), its reported images_per_second.

    python bench/host_devices.py --rounds 3 --counts 1,2

Prints one JSON line per run and a summary line per workload: the median images/s of each
count with its [min, max], and the per-round ratio of each count to the first."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--counts", default="1,2", help="forced host device counts to compare")
    p.add_argument("--workloads", default="small_cnn,digits")
    p.add_argument("--steps", type=int, default=20, help="small_cnn steady-state steps")
    p.add_argument("--epochs", type=int, default=3, help="digits demo epochs")
    return p.parse_args()


def _command(workload: str, args: argparse.Namespace, workdir: str) -> list[str]:
    if workload == "small_cnn":
        return [sys.executable, str(ROOT / "bench" / "throughput.py"), "--model", "small_cnn",
                "--batch", "128", "--size", "32", "--num-classes", "10", "--phases", "train",
                "--warmup", "3", "--steps", str(args.steps)]
    if workload == "digits":
        return [sys.executable, "-m", "jaxcnn", "train", "--config", "digits_lenet",
                "--workdir", workdir, f"--config.num_epochs={args.epochs}",
                "--config.checkpoint.keep=1"]
    raise SystemExit(f"unknown workload {workload!r}; choose small_cnn or digits")


def _run(workload: str, count: int, args: argparse.Namespace) -> dict:
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={count}"}
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(_command(workload, args, str(Path(tmp) / "run")), env=env,
                              cwd=ROOT, capture_output=True, text=True, check=False)
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    if proc.returncode or not lines:
        raise SystemExit(f"{workload} with {count} devices failed:\n{proc.stderr[-3000:]}")
    out = lines[-1]
    return {"workload": workload, "devices": count,
            "images_per_second": out["images_per_second"],
            "compile_seconds": out.get("compile_seconds")}


def main() -> int:
    """Run the workloads interleaved and print the summary."""
    args = _parse()
    counts = [int(c) for c in args.counts.split(",")]
    results: dict[tuple[str, int], list[float]] = {}
    for r in range(args.rounds):
        for workload in args.workloads.split(","):
            for count in (counts if r % 2 == 0 else counts[::-1]):
                rec = {"round": r, **_run(workload, count, args)}
                print(json.dumps(rec), flush=True)
                results.setdefault((workload, count), []).append(rec["images_per_second"])
    for workload in args.workloads.split(","):
        base = results[(workload, counts[0])]
        summary = {}
        for count in counts:
            ips = results[(workload, count)]
            ratios = [a / b for a, b in zip(ips, base, strict=True)]
            summary[str(count)] = {
                "images_per_second_median": round(statistics.median(ips), 1),
                "range": [min(ips), max(ips)],
                f"vs_{counts[0]}_median": round(statistics.median(ratios), 3),
                f"vs_{counts[0]}_range": [round(min(ratios), 3), round(max(ratios), 3)]}
        print(json.dumps({"summary": workload, "rounds": args.rounds, "devices": summary,
                          "cpus": os.cpu_count()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
