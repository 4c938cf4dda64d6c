"""`jaxcnn convert` and `jaxcnn weights`: torchvision's weights, converted once into a
directory that any --weights flag takes."""

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
