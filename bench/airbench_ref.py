"""The peer of bench/cifar_speedrun.py: airbench94's own code (`airbench==0.1.8` from PyPI,
unmodified: `airbench.warmup94()` then `airbench.train94()`), N runs on the CIFAR-10 arrays
prepared by bench/cifar_data.py (its `CifarLoader('cifar10')` reads `cifar10/{train,test}.pt`
below --data-dir).

    python bench/airbench_ref.py --runs 5 --data-dir data/airbench        # a CUDA GPU
    python bench/airbench_ref.py --runs 1 --data-dir ... --smoke --epochs 1 --batch-size 64

Prints one JSON line per run with airbench's own figures, parsed from its final log row:
`tta_val_acc` and `total_time_seconds` (CUDA-event time of the whitening initialisation,
the training epochs and the test-time-augmented evaluation, i.e. without its per-epoch
evaluations and without the first, compiling/warm-up call), plus the wall time of the whole
`train94` call. `--smoke` runs the same calls on the CPU in float32 (airbench is CUDA-only:
`.cuda()`, `.half()`, CUDA events and `torch.load(map_location=device 0)` are redirected),
to prove the script before a GPU session."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
from pathlib import Path

COLUMNS = ("run", "epoch", "train_loss", "train_acc", "val_acc", "tta_val_acc",
           "total_time_seconds")  # airbench utils.py logging_columns_list


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--data-dir", type=Path, default=Path("data/airbench"))
    p.add_argument("--epochs", type=float, default=None, help="default: airbench's 9.9")
    p.add_argument("--batch-size", type=int, default=None, help="default: airbench's 1024")
    p.add_argument("--smoke", action="store_true", help="run on the CPU (tiny data only)")
    return p.parse_args(argv)


def _cpu_patches() -> None:
    """Let airbench's CUDA-only code run on the CPU, in float32, for a smoke test."""
    import torch

    class Event:
        def __init__(self, enable_timing: bool = False):
            self.t = 0.0

        def record(self) -> None:
            self.t = time.perf_counter()

        def elapsed_time(self, end: Event) -> float:
            return (end.t - self.t) * 1e3

    torch.nn.Module.cuda = lambda self, device=None: self
    # float16 convolutions crawl on a CPU (minutes per tiny epoch): the smoke runs float32.
    torch.nn.Module.half = lambda self: self
    torch.Tensor.half = lambda self, *a, **k: self.float()
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.cuda.Event = Event
    torch.cuda.synchronize = lambda *a, **k: None
    load = torch.load
    torch.load = lambda f, map_location=None, **k: load(f, map_location="cpu", **k)


def final_row(log: str) -> dict:
    """airbench's last table row (`epoch == 'eval'`) as {column: value}."""
    for line in reversed(log.splitlines()):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == len(COLUMNS) and cells[1] == "eval":
            row = dict(zip(COLUMNS, cells, strict=True))
            return {k: float(v) for k, v in row.items() if v and k not in ("run", "epoch")}
    raise RuntimeError(f"no final 'eval' row in airbench's output:\n{log[-2000:]}")


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.smoke:
        _cpu_patches()
    import airbench
    import torch
    from airbench import lib_airbench94

    os.chdir(args.data_dir)  # CifarLoader('cifar10') is relative to the working directory
    kwargs: dict = {}
    if args.epochs is not None:
        kwargs["epochs"] = args.epochs
    hyp = lib_airbench94.hyp

    def loader():
        if args.batch_size is None:
            return None  # train94's own: batch 1024, flip + translate 2, alternating flip
        return airbench.CifarLoader("cifar10", train=True, batch_size=args.batch_size,
                                    aug=hyp["aug"], altflip=True)

    device = torch.cuda.get_device_name() if not args.smoke else "cpu (smoke)"
    log = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(log):
        airbench.warmup94(train_loader=loader(), **kwargs)
    warmup = time.perf_counter() - t0
    for run in range(args.runs):
        log = io.StringIO()
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(log):
            airbench.train94(train_loader=loader(), run=run, **kwargs)
        if not args.smoke:
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
        print(log.getvalue(), file=sys.stderr, end="")
        row = final_row(log.getvalue())
        print(json.dumps({
            "bench": "speedrun", "impl": "airbench94", "airbench": airbench.__version__
            if hasattr(airbench, "__version__") else "0.1.8", "torch": torch.__version__,
            "device": device, "run": run, "tta_val_acc": row["tta_val_acc"],
            "val_acc": row.get("val_acc"), "seconds": row["total_time_seconds"],
            "wall_seconds_incl_epoch_evals": round(wall, 3),
            "warmup_call_seconds": round(warmup, 3),
            "epochs": kwargs.get("epochs", hyp["opt"]["train_epochs"]),
        }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
