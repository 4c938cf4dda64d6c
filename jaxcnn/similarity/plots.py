"""Pictures of similarity results: a retrieval grid (query + top-k with scores) and a heatmap
of a pairwise similarity matrix. matplotlib with the file-only Agg backend."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxcnn.data.images import ImageLike, load_image


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_retrieval_grid(
    query: ImageLike,
    results: Sequence[ImageLike],
    scores: Sequence[float],
    out: str | os.PathLike,
    *,
    metric: str = "cosine",
    labels: Sequence[str] | None = None,
) -> Path:
    """Save the query and its ranked results side by side, each titled with its score."""
    plt = _pyplot()
    n = len(results) + 1
    fig, axes = plt.subplots(1, n, figsize=(2.2 * n, 2.6), squeeze=False)
    axes = axes[0]
    axes[0].imshow(load_image(query))
    axes[0].set_title("query", fontsize=9)
    for i, (img, score) in enumerate(zip(results, scores, strict=True), start=1):
        axes[i].imshow(load_image(img))
        title = f"#{i} {metric}={score:.3g}"
        if labels is not None:
            title += f"\n{labels[i - 1][-24:]}"
        axes[i].set_title(title, fontsize=8)
    for ax in axes:
        ax.axis("off")
    return _save(plt, fig, out)


def save_heatmap(
    matrix: np.ndarray, labels: Sequence[str], out: str | os.PathLike, *, title: str = ""
) -> Path:
    """Save a square similarity matrix as an annotated heatmap."""
    plt = _pyplot()
    matrix = np.asarray(matrix, np.float32)
    n = len(labels)
    size = max(4.0, 0.55 * n + 2.0)
    fig, ax = plt.subplots(figsize=(size + 1.0, size))
    im = ax.imshow(matrix, cmap="viridis")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    short = [lab[:24] for lab in labels]
    ax.set_xticks(range(n), short, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), short, fontsize=8)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if matrix[i, j] < matrix.mean() else "black")
    if title:
        ax.set_title(title, fontsize=10)
    return _save(plt, fig, out)


def _save(plt, fig, out: str | os.PathLike) -> Path:
    """Write `fig` to `out` (creating its folder) and release it."""
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
