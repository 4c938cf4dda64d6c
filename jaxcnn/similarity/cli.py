"""`jaxcnn similarity`, `jaxcnn index` and `jaxcnn search`.

    jaxcnn similarity A.jpg B.jpg                       # the four metrics on raw pixels
    jaxcnn similarity A.jpg B.jpg --model resnet18 --weights WORKDIR   # ... and on features
    jaxcnn similarity a.jpg b.jpg c.jpg --heatmap sim.png   # pairwise matrix of a set
    jaxcnn similarity --demo [--heatmap demo.png]       # offline: scikit-image photos
    jaxcnn index photos/ --out photos.idx [--model resnet18 --weights W]
    jaxcnn search photos.idx query.jpg -k 5 --grid top5.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from jaxcnn.data.images import describe, list_images
from jaxcnn.errors import InputError
from jaxcnn.loading import WEIGHTS_HELP, model_of, weights_id
from jaxcnn.similarity.features import make_extractor
from jaxcnn.similarity.metrics import METRICS
from jaxcnn.similarity.search import pairwise

_ROW_NAMES = {"l1": "L1", "mse": "MSE", "cosine": "cosine", "ncc": "NCC"}


def _add_model_args(p: argparse.ArgumentParser, default_model: str | None) -> None:
    p.add_argument("--model", default=default_model,
                   help="registered model for CNN features, or 'pixels' (raw pixels)")
    p.add_argument("--weights", default=None,
                   help=WEIGHTS_HELP + " (default: random initialization, with a warning)")
    p.add_argument("--layer", default="pre_logits", help="feature stage of the model")
    p.add_argument("--size", type=int, default=32,
                   help="raw-pixel mode: images are resized to SIZE x SIZE (default 32)")
    p.add_argument("--batch-size", type=int, default=64)


def add_commands(subparsers: Any) -> None:
    """Register the similarity subcommands on the `jaxcnn` parser."""
    p = subparsers.add_parser(
        "similarity", help="compare images: L1, MSE, cosine, NCC on raw pixels and features",
        description="Print the Method | Similarity table (L1, MSE, cosine, NCC) for two images "
                    "on raw pixels and, with --model, on CNN features; with more images, the "
                    "pairwise matrix. --demo runs offline on scikit-image's photos.",
    )
    p.add_argument("images", nargs="*", help="two or more image files (or a directory)")
    p.add_argument("--demo", action="store_true",
                   help="rank scikit-image photos and transformed copies of the cat against it")
    p.add_argument("--metric", default="cosine", choices=sorted(METRICS),
                   help="metric of the heatmap / matrix (default cosine)")
    p.add_argument("--heatmap", default=None, help="save the pairwise matrix as this image")
    _add_model_args(p, None)
    p.set_defaults(func=_cmd_similarity)

    p = subparsers.add_parser(
        "index", help="embed a folder of images into a searchable index (resumable)",
    )
    p.add_argument("directory", help="folder of images (searched recursively)")
    p.add_argument("--out", required=True, help="index directory to create or extend")
    p.add_argument("--chunk-size", type=int, default=256,
                   help="images embedded between two saves (the resume granularity)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_model_args(p, "pixels")
    p.set_defaults(func=_cmd_index)

    p = subparsers.add_parser("search", help="top-k most similar indexed images to a query")
    p.add_argument("index", help="index directory written by `jaxcnn index`")
    p.add_argument("query", nargs="+", help="query image(s)")
    p.add_argument("-k", type=int, default=5, help="number of results (default 5)")
    p.add_argument("--metric", default="cosine", choices=sorted(METRICS))
    p.add_argument("--grid", default="retrieval_grid.png",
                   help="retrieval grid image to save (query + top-k); '' to skip")
    p.add_argument("--model", default=None, help="must match the index (default: the index's)")
    p.add_argument("--weights", default=None,
                   help="must match the index (default: the index's); " + WEIGHTS_HELP)
    p.add_argument("--layer", default=None, help="must match the index")
    p.add_argument("--batch-size", type=int, default=64)
    p.set_defaults(func=_cmd_search)


# ----------------------------------------------------------------------------- similarity


def _format_table(title: str, rows: list[tuple[str, float, bool]]) -> str:
    lines = [title, "| Method | Similarity   | more similar when |",
             "|--------|--------------|-------------------|"]
    for name, value, higher in rows:
        direction = "higher" if higher else "lower (distance)"
        lines.append(f"| {name:6s} | {value:12.6g} | {direction:17s} |")
    return "\n".join(lines)


def similarity_table(emb: np.ndarray) -> list[tuple[str, float, bool]]:
    """(method, value, higher_is_better) rows for the two embeddings emb[0], emb[1]."""
    return [(_ROW_NAMES[name], float(m.fn(emb[0], emb[1])), m.higher_is_better)
            for name, m in METRICS.items()]


def _extractors(args: argparse.Namespace) -> list[tuple[str, Any]]:
    """Raw pixels always; CNN features too when --model names a network."""
    out = [(f"raw pixels ({args.size}x{args.size} RGB in [0, 1])", make_extractor("pixels",
                                                                                size=args.size))]
    if args.model and args.model != "pixels":
        ext = make_extractor(args.model, args.weights, args.layer, batch_size=args.batch_size)
        out.append((f"{args.model} features (layer {args.layer}, weights {ext.weights}, "
                    f"dim {ext.dim})", ext))
    return out


def _cmd_similarity(args: argparse.Namespace) -> int:
    _check_model_args(args)
    if args.demo:
        return _run_demo(args)
    images: list[Any] = []
    for item in args.images:
        images.extend(list_images(item) if Path(item).is_dir() else [item])
    if len(images) < 2:
        raise InputError(
            f"`jaxcnn similarity` needs at least two images (or --demo); got {len(images)}."
        )
    labels = [Path(str(i)).name for i in images]
    embedded = [(title, ext, ext(images)) for title, ext in _extractors(args)]
    for title, _, emb in embedded:
        if len(images) == 2:
            print(_format_table(f"{labels[0]} vs {labels[1]}, {title}:", similarity_table(emb)))
        else:
            _print_matrix(title, args.metric, labels, np.asarray(pairwise(emb, emb, args.metric)))
        print()
    if args.heatmap:
        _save_heatmaps(args, embedded, labels)
    return 0


def _print_matrix(title: str, metric: str, labels: list[str], matrix: np.ndarray) -> None:
    print(f"{metric} matrix, {title}:")
    width = max(len(label) for label in labels)
    print(" " * width + "  " + " ".join(f"{i:>8d}" for i in range(len(labels))))
    for i, label in enumerate(labels):
        print(f"{label:>{width}s}  " + " ".join(f"{v:8.4g}" for v in matrix[i]))


def _save_heatmaps(args: argparse.Namespace, embedded: list[tuple[str, Any, np.ndarray]],
                   labels: list[str]) -> None:
    from jaxcnn.similarity.plots import save_heatmap

    for n, (title, ext, emb) in enumerate(embedded):
        matrix = np.asarray(pairwise(emb, emb, args.metric))
        out = Path(args.heatmap)
        if n:  # one file per embedding: name.png, name.resnet18.png
            out = out.with_name(f"{out.stem}.{ext.model_name}{out.suffix}")
        save_heatmap(matrix, labels, out, title=f"{args.metric}, {title}")
        print(f"saved {args.metric} heatmap ({title}) to {out}")


def _run_demo(args: argparse.Namespace) -> int:
    from jaxcnn.similarity.demo import QUERY, demo_images, rank_embeddings, transformed_on_top

    images = demo_images()
    names = list(images)
    print(f"Demo: the other images ranked by similarity to {QUERY!r} (scikit-image's cat); "
          "the transformed copies (flipped, cropped, brightened) should come first.\n")
    embedded = [(title, ext, ext(list(images.values()))) for title, ext in _extractors(args)]
    for title, _, emb in embedded:
        print(f"== {title}")
        for metric, ranking in rank_embeddings(emb, names).items():
            ok = transformed_on_top(ranking)
            shown = ", ".join(f"{n} {s:.3g}" for n, s in ranking[:5])
            print(f"  {_ROW_NAMES[metric]:6s} {'OK  ' if ok else 'MISS'} top 5: {shown}")
        print()
    print("OK: the three transformed cats are the top three; MISS: another photo ranks among "
          "them.")
    if args.heatmap:
        _save_heatmaps(args, embedded, names)
    return 0


# ----------------------------------------------------------------------------- index / search


def _cmd_index(args: argparse.Namespace) -> int:
    from jaxcnn.similarity.index import build_index

    _check_model_args(args)
    ext = make_extractor(args.model, args.weights, args.layer, size=args.size,
                         **({} if args.model == "pixels" else {"batch_size": args.batch_size}))
    report = build_index(args.directory, args.out, ext, chunk_size=args.chunk_size,
                         progress=not args.quiet and sys.stderr.isatty())
    print(f"index {args.out}: {report.total} images ({report.added} embedded now, "
          f"{report.already} already indexed, {len(report.skipped)} unreadable skipped); "
          f"model {ext.model_name}, layer {ext.layer}, dim {ext.dim}")
    for path, why in report.skipped:
        print(f"  skipped {path}: {why}", file=sys.stderr)
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    from jaxcnn.similarity.index import check_compatible, load_index, search

    index = load_index(args.index)
    meta = index.meta
    # Compare what was asked for with what built the index before building any network.
    asked = {"model": args.model, "layer": args.layer,
             "weights": None if args.weights is None else weights_id(args.weights)}
    if any(v is not None and v != meta[k] for k, v in asked.items()):
        check_compatible(meta, {**meta, **{k: v for k, v in asked.items() if v is not None}},
                         f"the index {args.index}")
    if meta["model"] == "pixels":
        ext = make_extractor("pixels", size=int(meta["transform"]["size"][0]))
    else:
        # "random(seed=N)" is what an index of a randomly initialized network records.
        weights = meta["weights"] or None
        if weights and weights.startswith("random(seed="):
            weights = None
        ext = make_extractor(meta["model"], weights, meta["layer"], batch_size=args.batch_size)
    check_compatible(meta, ext.describe(), f"the index {args.index}")
    if args.k < 1:
        raise InputError(f"-k must be at least 1; got {args.k}.")
    k = min(args.k, len(index))
    if k < args.k:
        print(f"note: the index holds only {len(index)} images; showing {k}.")
    scores, idx = search(index, ext(args.query), k, args.metric)
    files = index.files()
    for q, query in enumerate(args.query):
        print(f"top {k} for {describe(query)} ({args.metric}, "
              f"{'higher' if METRICS[args.metric].higher_is_better else 'lower'} = more "
              "similar):")
        for rank, (s, i) in enumerate(zip(scores[q], idx[q], strict=True), start=1):
            print(f"  {rank:2d}. {s:10.5g}  {files[i]}")
        if args.grid:
            from jaxcnn.similarity.plots import save_retrieval_grid

            grid = Path(args.grid)
            if len(args.query) > 1:
                grid = grid.with_name(f"{grid.stem}.{q}{grid.suffix}")
            save_retrieval_grid(query, [files[i] for i in idx[q]], scores[q], grid,
                                metric=args.metric, labels=[index.paths[i] for i in idx[q]])
            print(f"saved retrieval grid to {grid}")
    return 0


def _check_model_args(args: argparse.Namespace) -> None:
    """--model may be left out when --weights is a training workdir."""
    args.model = model_of(args.model, args.weights)
