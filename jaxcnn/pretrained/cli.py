"""`jaxcnn convert`, `jaxcnn weights` and `jaxcnn predict`."""

from __future__ import annotations

import argparse
import json
from typing import Any


def _convert(args: argparse.Namespace) -> int:
    from jaxcnn.models import count_params
    from jaxcnn.pretrained.hub import load, save_variables
    from jaxcnn.pretrained.weights import get_weights

    entry = get_weights(args.name, args.weights)
    source = args.source or entry.url
    variables = load(args.name, args.weights, path=args.source, cache_dir=args.cache_dir)
    meta = {"model": args.name, "weights": entry.name, "source": str(source),
            "num_params": count_params(variables)}  # fmt: skip
    if "crop_size" in entry.meta:  # classifiers; a detector's transform is its own options
        meta["transforms"] = {k: entry.meta[k]
                              for k in ("resize_size", "crop_size", "mean", "std")}  # fmt: skip
    else:
        meta["categories"] = list(entry.meta["categories"])
    out = save_variables(variables, args.to, meta)
    print(json.dumps({"converted": args.name, "to": str(out), "num_params": meta["num_params"]}))
    return 0


def _weights(args: argparse.Namespace) -> int:
    from jaxcnn.pretrained.weights import get_weights, list_weights

    for full in list_weights(args.pattern):
        model, name = full.split(".")
        w = get_weights(model, name)
        print(f"{full:34s} {w.summary:27s}  {w.num_params:>11,d}  {w.url}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from jaxcnn.pretrained.predict import predict

    results = predict(args.name, list(args.images), weights=args.weights, path=args.variables)
    for image, top in zip(args.images, results, strict=True):
        print(json.dumps({"image": image, "top5": [[label, round(p, 4)] for label, p in top]}))
    return 0


def add_commands(subparsers: Any) -> None:
    """Register the pretrained-weights subcommands on the `jaxcnn` parser."""
    p = subparsers.add_parser(
        "convert", help="convert torchvision weights to jaxcnn variables (msgpack)"
    )
    p.add_argument("name", help="model name, e.g. resnet50")
    p.add_argument("--from", dest="source", default=None,
                   help=".pth or .safetensors file (default: download the published file)")
    p.add_argument("--to", required=True, help="output directory (variables.msgpack, meta.json)")
    p.add_argument("--weights", default="IMAGENET1K_V1", help="registry entry (metadata, URL)")
    p.add_argument("--cache-dir", default=None, help="download cache (default ~/.cache/jaxcnn)")
    p.set_defaults(func=_convert)

    p = subparsers.add_parser("weights", help="list the registered pretrained weights")
    p.add_argument("pattern", nargs="?", default=None, help="glob on model names")
    p.set_defaults(func=_weights)

    p = subparsers.add_parser("predict", help="ImageNet top-5 of images with pretrained weights")
    p.add_argument("name", help="model name")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--weights", default="IMAGENET1K_V1")
    p.add_argument("--variables", default=None,
                   help="a `jaxcnn convert` directory or a .pth/.safetensors file")
    p.set_defaults(func=_predict)
