"""One short ablation per training choice the course teaches (activations, initialization,
BatchNorm, dropout, early stopping) on a CIFAR-10 subset: each variant of
configs/ablations_cifar10_subset.py trained with train.py in its own process, the same seed,
data and schedule; one table row per run with its exact command.

    nice -n 10 python bench/ablations.py --data /work/data/cifar10 [--groups act,init]
        [--out bench/ablations.json]

Single runs of 6 epochs (early stopping: up to 25, in a setting that overfits): differences of about
a point of test accuracy are within seed noise; the table shows the large effects (zero init,
sigmoid, no BN) and the direction of the small ones."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/ablations_cifar10_subset.py"

GROUPS = {
    "act": ["base", "act=leaky_relu", "act=elu", "act=gelu", "act=prelu", "act=tanh",
            "act=sigmoid"],
    "init": ["base", "init=xavier_uniform", "init=he_normal", "init=normal(std=0.01)",
             "init=zeros"],
    # without BatchNorm the initial scale is not normalized away (the lesson's point)
    "init_nobn": ["bn=off", "bn=off,init=he_normal", "bn=off,init=normal(std=0.01)"],
    "bn": ["base", "bn=off"],
    "dropout": ["base", "dropout=0.3"],
    "early_stop": ["early_stop=0", "early_stop=3"],
}


def command(variant: str, data: str, workdir: Path, python: str = sys.executable) -> list[str]:
    """The train.py command of one run."""
    return [python, "train.py", "--config", f"{CONFIG}:{variant}",
            "--workdir", str(workdir), f"--config.data.path={data}", "--config.progress=False"]


def run(variant: str, data: str, workdir: Path, env: dict) -> dict:
    """Train one variant (a fresh workdir) and return train.py's final JSON line."""
    if workdir.exists():
        import shutil

        shutil.rmtree(workdir)
    t0, load = time.perf_counter(), os.getloadavg()[0]
    proc = subprocess.run(command(variant, data, workdir), cwd=ROOT, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{variant} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_seconds"] = round(time.perf_counter() - t0, 1)
    result["load_1min"] = [round(load, 1), round(os.getloadavg()[0], 1)]  # before, after
    result["command"] = shlex.join(command(variant, data, workdir, python="python"))
    records = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    result["epochs_run"] = sum(1 for r in records if "epoch" in r and not r.get("final"))
    return result


def main() -> None:
    """Run the chosen groups and print the markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="CIFAR-10 image folder (train/, test/)")
    parser.add_argument("--groups", default=",".join(GROUPS))
    parser.add_argument("--out", default=str(ROOT / "bench" / "ablations.json"))
    parser.add_argument("--workdir", default="/tmp/jaxcnn-ablations")
    args = parser.parse_args()
    env = dict(os.environ, JAXCNN_XLA_CACHE=str(Path(args.workdir) / "xla"))
    from importlib.metadata import version

    meta = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.processor() or
            platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
            **{pkg: version(pkg) for pkg in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint",
                                              "numpy")},
            "load_before": os.getloadavg()}
    done: dict[str, dict] = {}
    rows = []
    for group in args.groups.split(","):
        for variant in GROUPS[group]:
            if variant not in done:
                done[variant] = run(variant, args.data, Path(args.workdir) / variant, env)
                print(f"{group:10s} {variant:24s} test {done[variant]['test_accuracy']:.4f}",
                      file=sys.stderr, flush=True)
            rows.append((group, variant, done[variant]))
    meta["load_after"] = os.getloadavg()
    Path(args.out).write_text(json.dumps({"meta": meta, "runs": done}, indent=2, sort_keys=True))
    print("| group | variant | test acc | best valid acc | epochs run | train s | load "
          "| command |")
    print("|---|---|---|---|---|---|---|---|")
    for group, variant, r in rows:
        print(f"| {group} | `{variant}` | {r['test_accuracy']:.4f} | "
              f"{r['best_valid_accuracy']:.4f} | {r['epochs_run']} | {r['train_seconds']:.0f} | "
              f"{r['load_1min'][0]:.0f}-{r['load_1min'][1]:.0f} | `{r['command']}` |")
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
