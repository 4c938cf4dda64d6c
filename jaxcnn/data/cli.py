"""`jaxcnn prepare`: an ImageFolder tree -> sharded ArrayRecord files for the host pipeline.

    jaxcnn prepare ~/data/imagenet --out ~/data/imagenet-records      # train/ and test/
    jaxcnn prepare SRC --out DIR --splits train,val --workers 16
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any


def _prepare(args: argparse.Namespace) -> int:
    from jaxcnn.data.records import prepare

    t0 = time.perf_counter()
    meta = prepare(args.src, args.out, splits=[s for s in args.splits.split(",") if s],
                   examples_per_shard=args.examples_per_shard, workers=args.workers,
                   name=args.name, progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    seconds = time.perf_counter() - t0
    skipped = meta.get("skipped_all", [])
    for _, rel, why in skipped[:20]:  # rel: the path under SRC (it starts with the split)
        print(f"skipped unreadable {rel}: {why}", file=sys.stderr)
    if len(skipped) > 20:
        print(f"... and {len(skipped) - 20} more unreadable file(s)", file=sys.stderr)
    images = sum(s["num_examples"] for s in meta["splits"].values())
    print(json.dumps({
        "out": args.out, "name": meta["name"], "classes": len(meta["class_names"]),
        **{f"{k}_examples": v["num_examples"] for k, v in meta["splits"].items()},
        "shards": sum(len(v["shards"]) for v in meta["splits"].values()),
        "skipped": sum(v["num_skipped"] for v in meta["splits"].values()),
        "seconds": round(seconds, 2), "images_per_second": round(images / max(seconds, 1e-9), 1),
    }), flush=True)
    return 0


def add_commands(subparsers: Any) -> None:
    """Register `jaxcnn prepare` on the `jaxcnn` parser."""
    p = subparsers.add_parser(
        "prepare", help="convert an ImageFolder tree into sharded ArrayRecord files",
        description="Write SRC/<split>/<class>/* as ArrayRecord shards of the encoded image "
                    "bytes, label and file name, plus DIR/jaxcnn_records.json. Streaming and "
                    "parallel; rerun the same command after an interruption to finish it. "
                    "Unreadable files are reported and skipped.",
    )
    p.add_argument("src", help="ImageFolder root: SRC/train/<class>/*.jpg, SRC/test/<class>/*")
    p.add_argument("--out", required=True, help="record directory to write")
    p.add_argument("--splits", default="train,test", help="comma-separated split folders")
    p.add_argument("--examples-per-shard", type=int, default=2048)
    p.add_argument("--workers", type=int, default=0, help="processes (default: one per CPU)")
    p.add_argument("--name", default="", help="dataset name (default: SRC's folder name)")
    p.set_defaults(func=_prepare)
