"""What a run shows and leaves behind: a tqdm bar per epoch, a fast.ai-style table row per
epoch, `metrics.jsonl`, `curves.png`, and the lr-finder and confusion-matrix plots."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

COLUMNS = ("epoch", "train_loss", "valid_loss", "accuracy", "time")


@contextlib.contextmanager
def phase(what: str) -> Iterator[None]:
    """One stderr line per start-up phase once it is done: "loading data ... 1.2 s"."""
    t0 = time.perf_counter()
    yield
    print(f"{what} ... {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)


class TensorBoard:
    """Scalars of every epoch record as TensorBoard event files in the workdir (through
    tensorboardX: no TensorFlow), as the Flax examples write their summaries."""

    def __init__(self, workdir: str | os.PathLike):
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            from jaxcnn.errors import ConfigError

            raise ConfigError(
                "config.log.tensorboard=True writes event files with tensorboardX, which is not "
                "installed: pip install 'jaxcnn[tensorboard]' (or set "
                "--config.log.tensorboard=False)."
            ) from None
        self.writer = SummaryWriter(logdir=str(workdir))

    def write(self, record: dict[str, Any]) -> None:
        """Every numeric value of an epoch record at its step ("train_loss" -> train/loss)."""
        for key, value in record.items():
            if key in ("epoch", "step") or not isinstance(value, int | float):
                continue
            split, _, name = key.partition("_")
            tag = f"{split}/{name}" if split in ("train", "valid", "test") else key
            self.writer.add_scalar(tag, value, record["step"])
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()


class EpochTable:
    """Prints `epoch  train_loss  valid_loss  <metric>  time` rows (header once)."""

    def __init__(self, metric: str = "accuracy", stream: Any = None):
        self.metric = metric
        self.stream = stream or sys.stdout
        self._header = False

    def row(self, record: dict[str, Any]) -> None:
        """Print one epoch's row."""
        names = ("epoch", "train_loss", "valid_loss", self.metric, "time")
        if not self._header:
            print("  ".join(f"{n:>10s}" for n in names), file=self.stream, flush=True)
            self._header = True
        secs = record.get("epoch_seconds", 0.0)
        values = [
            f"{record['epoch']:>10d}",
            f"{record.get('train_loss', float('nan')):>10.4f}",
            f"{record.get('valid_loss', float('nan')):>10.4f}",
            f"{record.get('valid_' + self.metric, float('nan')):>10.4f}",
            f"{int(secs // 60):>7d}:{int(secs % 60):02d}",
        ]
        print("  ".join(values), file=self.stream, flush=True)


def write_jsonl(path: str | os.PathLike, records: list[dict]) -> None:
    """Rewrite `path` with one JSON object per line (atomic replace)."""
    tmp = Path(str(path) + ".tmp")
    with open(tmp, "w") as f:
        for rec in records:
            f.write(json.dumps(rec, sort_keys=True) + "\n")
    os.replace(tmp, path)


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line."""
    with open(path, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history: list[dict], path: str | os.PathLike, metric: str = "accuracy") -> None:
    """Loss and `metric` vs epoch, train and valid, side by side."""
    plt = _pyplot()
    epochs = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("loss", metric), strict=True):
        for split, style in (("train", "-o"), ("valid", "-s")):
            values = [r.get(f"{split}_{key}", np.nan) for r in history]
            ax.plot(epochs, values, style, label=split, markersize=3)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_lr_find(lrs: list[float], losses: list[float], suggested: float,
                 path: str | os.PathLike) -> None:
    """fast.ai's lr_find plot: smoothed loss vs learning rate (log x), suggestion marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(lrs, losses)
    ax.axvline(suggested, color="r", ls="--", label=f"suggested {suggested:.2e}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss (smoothed)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(matrix: np.ndarray, class_names: list[str], path: str | os.PathLike) -> None:
    """Row-normalized confusion matrix (true class vs predicted) as a heat map."""
    plt = _pyplot()
    n = len(matrix)
    norm = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = min(20, max(4, n * 0.5))
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    if n <= 30:
        ax.set_xticks(range(n), class_names, rotation=90)
        ax.set_yticks(range(n), class_names)
        if n <= 15:
            for i in range(n):
                for j in range(n):
                    ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
