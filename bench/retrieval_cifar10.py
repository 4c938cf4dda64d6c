"""Image retrieval on the real CIFAR-10 test JPEGs: precision@k (the fraction of each query's k
nearest test images that share its class, the query itself left out) with CNN features of a
network trained on the train set, against raw pixels and the same network untrained.

    python train.py --config configs/retrieval_cifar10.py --workdir runs/retrieval_cifar10
    python bench/retrieval_cifar10.py --workdir runs/retrieval_cifar10 --per-class 200

Prints one JSON line per embedding (precision@k, dim, seconds); the search is
jaxcnn.similarity.topk (exact, cosine by default)."""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default="runs/retrieval_cifar10")
    p.add_argument("--data", default=None, help="ImageFolder root (default: the run's)")
    p.add_argument("--per-class", type=int, default=200, help="test images per class (0: all)")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--metric", default="cosine")
    p.add_argument("--layer", default="pre_logits")
    return p.parse_args()


def precision_at_k(emb: np.ndarray, labels: np.ndarray, k: int, metric: str) -> float:
    """Mean over queries of the fraction of their k nearest others with the same label."""
    from jaxcnn.similarity import topk

    _, idx = topk(emb, emb, k + 1, metric)
    idx = np.asarray(idx)
    rows = np.arange(len(emb))[:, None]
    # Drop the query itself (first unless an exact duplicate ties with it), keep k others.
    others = np.where(idx == rows, -1, idx)
    neighbours = np.array([r[r >= 0][:k] for r in others])
    return float(np.mean(labels[neighbours] == labels[:, None]))


def main() -> int:
    """Evaluate raw pixels, the untrained and the trained network."""
    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)
    from jaxcnn.data import load_folder
    from jaxcnn.rundir import RunDir
    from jaxcnn.similarity.features import FeatureExtractor

    args = _parse()
    workdir = Path(args.workdir)
    config = RunDir(workdir).config()
    data = args.data or config["data"]["path"]
    splits = load_folder(data, cache_dir=config["data"].get("cache_dir", ""))
    images = np.asarray(splits.test.arrays["image"])
    labels = np.asarray(splits.test.arrays["label"])
    if args.per_class:
        keep = np.concatenate([np.flatnonzero(labels == c)[:args.per_class]
                               for c in np.unique(labels)])
        images, labels = images[keep], labels[keep]
    common = {"images": len(labels), "classes": len(np.unique(labels)), "k": args.k,
              "metric": args.metric, "dataset": f"{data} test"}

    def report(name: str, emb: np.ndarray, t0: float, **extra) -> None:
        p = precision_at_k(emb, labels, args.k, args.metric)
        print(json.dumps({"embedding": name, f"precision_at_{args.k}": round(p, 4),
                          "dim": emb.shape[1], "seconds": round(time.perf_counter() - t0, 2),
                          **common, **extra}), flush=True)

    t0 = time.perf_counter()
    report("raw pixels 32x32x3", images.reshape(len(images), -1).astype(np.float32) / 255, t0)
    name = config["model"]["name"]
    trained = FeatureExtractor(name, weights=workdir, layer=args.layer, batch_size=256)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the untrained control warns by design
        t0 = time.perf_counter()
        untrained = FeatureExtractor(name, layer=args.layer, batch_size=256,
                                     model_kwargs=RunDir(workdir).info()["model_kwargs"],
                                     transform=trained.transform)
        report(f"{name} untrained (random init) {args.layer}", untrained.embed_dataset(images),
               t0)
    t0 = time.perf_counter()
    report(f"{name} trained {args.layer}", trained.embed_dataset(images), t0,
           weights=trained.source)
    return 0


if __name__ == "__main__":
    sys.exit(main())
