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

from jaxcnn.train.distributed import is_writer

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
        if not is_writer():  # a multi-process run logs from process 0 only
            return
        names = ("epoch", "train_loss", "valid_loss", self.metric, "time")
        if not self._header:
            print("  ".join(f"{n:>10s}" for n in names), file=self.stream, flush=True)
            self._header = True
        secs = record.get("epoch_seconds", 0.0)
        values = [
            f"{record['epoch']:>10d}",
            *(_cell(record.get(key)) for key in ("train_loss", "valid_loss",
                                                  "valid_" + self.metric)),
            f"{int(secs // 60):>7d}:{int(secs % 60):02d}",
        ]
        print("  ".join(values), file=self.stream, flush=True)


def _cell(value: float | None) -> str:
    """A table cell: the value, or "-" where the run does not measure it (no validation split,
    or a task without an evaluation loss such as detection), never a made-up NaN."""
    return f"{'-':>10s}" if value is None else f"{value:>10.4f}"


def write_jsonl(path: str | os.PathLike, records: list[dict]) -> None:
    """Rewrite `path` with one JSON object per line (atomic replace)."""
    if not is_writer():  # a multi-process run logs from process 0 only
        return
    tmp = Path(str(path) + ".tmp")
    with open(tmp, "w") as f:
        for rec in records:
            f.write(json.dumps(rec, sort_keys=True) + "\n")
    os.replace(tmp, path)


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line."""
    if not is_writer():  # a multi-process run logs from process 0 only
        return
    with open(path, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history: list[dict], path: str | os.PathLike, metric: str = "accuracy") -> None:
    """Loss and `metric` vs epoch, train and valid, side by side."""
    if not is_writer():
        return
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
    if not is_writer():
        return
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
    if not is_writer():
        return
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


def overlay_masks(images: np.ndarray, masks: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """uint8 RGB [N, H, W, 3]: each image with its class mask [N, H, W] blended in, class c
    > 0 in the c-th colour of matplotlib's tab10 cycle, background left as is."""
    colours = np.array([(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40),
                        (148, 103, 189), (140, 86, 75), (227, 119, 194), (127, 127, 127),
                        (188, 189, 34), (23, 190, 207)], np.float32)
    rgb = np.asarray(images, np.float32)
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
    masks = np.asarray(masks)
    colour = colours[(np.maximum(masks, 1) - 1) % len(colours)]
    blend = np.where((masks > 0)[..., None], (1 - alpha) * rgb + alpha * colour, rgb)
    return np.clip(np.round(blend), 0, 255).astype(np.uint8)


def plot_segmentation(images: np.ndarray, true: np.ndarray, pred: np.ndarray,
                      class_names: list[str], path: str | os.PathLike) -> None:
    """One row per image: the image, the true mask overlaid, the predicted mask overlaid."""
    plt = _pyplot()
    n = len(images)
    fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.5 * n), squeeze=False)
    panels = (np.asarray(images), overlay_masks(images, true), overlay_masks(images, pred))
    for i in range(n):
        for j, (title, panel) in enumerate(zip(("image", "true", "predicted"), panels,
                                               strict=True)):
            ax = axes[i, j]
            ax.imshow(panel[i].squeeze(), cmap="gray" if panel.shape[-1] == 1 else None)
            ax.set_axis_off()
            if i == 0:
                ax.set_title(title)
    names = [f"{c}: {name}" for c, name in enumerate(class_names) if c > 0]
    if names:
        fig.suptitle("  ".join(names), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
