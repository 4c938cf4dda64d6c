"""The "fixed feature extractor" scenario: embed a whole dataset with a frozen network
(batched, jitted, each batch sharded over all devices) into a .npy, then fit a linear
classifier and a k-NN classifier (scikit-learn) on the embeddings."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.data.augment import normalize
from jaxcnn.data.pipeline import batch_sharding, make_mesh, replicated


def extract_embeddings(
    model: Any,
    variables: Mapping,
    images: np.ndarray,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 256,
    layer: str = "pre_logits",
    out: str | os.PathLike | None = None,
) -> np.ndarray:
    """`model.features(...)[layer]` (eval mode) of every uint8 NHWC image, float32 [N, D];
    saved to `out` (.npy) when given. The batch is split over all devices; the last
    partial batch is padded and the padding dropped."""
    mesh = make_mesh()
    n_dev = mesh.devices.size
    batch_size = max(n_dev, batch_size // n_dev * n_dev)
    variables = jax.device_put(dict(variables), replicated(mesh))

    @jax.jit
    def embed(variables: Any, x: jax.Array) -> jax.Array:
        x = normalize(x, mean, std)
        y = model.apply(variables, x, train=False, method=model.features)[layer]
        return y.reshape(y.shape[0], -1).astype(jnp.float32)

    chunks = []
    for start in range(0, len(images), batch_size):
        batch = np.asarray(images[start : start + batch_size])
        n = len(batch)
        if n < batch_size:  # one compiled shape: pad the last batch
            batch = np.concatenate([batch, np.zeros((batch_size - n, *batch.shape[1:]),
                                                    batch.dtype)])  # fmt: skip
        x = jax.device_put(batch, batch_sharding(mesh))
        chunks.append(np.asarray(embed(variables, x))[:n])
    embeddings = np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        np.save(out, embeddings)
    return embeddings


def fit_classifiers(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    k: int = 5,
    c: float = 1.0,
    max_iter: int = 1000,
) -> dict[str, float]:
    """Test accuracy of a logistic-regression (linear) classifier and of a cosine k-NN
    fitted on standardized embeddings; with fit times in seconds."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x)
    a, b = scaler.transform(train_x), scaler.transform(test_x)
    t0 = time.perf_counter()
    linear = LogisticRegression(C=c, max_iter=max_iter).fit(a, train_y)
    t1 = time.perf_counter()
    knn = KNeighborsClassifier(n_neighbors=k, metric="cosine").fit(a, train_y)
    knn_acc = float(knn.score(b, test_y))
    t2 = time.perf_counter()
    return {
        "linear_accuracy": float(linear.score(b, test_y)),
        "knn_accuracy": knn_acc,
        "linear_seconds": t1 - t0,
        "knn_seconds": t2 - t1,
    }
