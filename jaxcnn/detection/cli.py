"""`jaxcnn detect IMAGE... --weights W [--threshold 0.5] --out DIR`: run a detector on image
files, print each image's detections (one JSON line per image) and write the image with its
boxes, labels and scores drawn (PNG); `jaxcnn detect --eval VOC_ROOT --weights W` scores the
detector on a VOC-format split (COCO mAP and mAP@0.5, VOC AP@0.5 per class).

--weights is a training workdir (its best checkpoint; the run knows the model and the class
names), a registry tag of --model ("DEFAULT", "COCO_V1"), or a weight file / `jaxcnn convert`
directory of --model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from jaxcnn.errors import InputError

COLORS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
          (70, 240, 240), (240, 50, 230), (210, 245, 60))  # fmt: skip


def label_names(num_classes: int, class_names: tuple[str, ...]) -> list[str]:
    """The name of each model label 0..num_classes-1: `class_names` with or without the
    background (a dataset's names, or COCO's 91 categories), else the numbers."""
    if len(class_names) == num_classes:
        return list(class_names)
    if len(class_names) == num_classes - 1:
        return ["__background__", *class_names]
    return [str(i) for i in range(num_classes)]


def draw(image: np.ndarray, detections: dict, names: list[str], path: Path, *,
         max_side: int = 0, colors: int = 0) -> None:  # fmt: skip
    """Save `image` (uint8 HWC) with each detection's box and "label score" as a PNG, scaled
    down to `max_side` pixels on its longest side and to a `colors`-color palette when set
    (small files for documents)."""
    from PIL import Image, ImageDraw

    canvas = Image.fromarray(image)
    scale = 1.0
    if max_side and max(canvas.size) > max_side:
        scale = max_side / max(canvas.size)
        canvas = canvas.resize((max(1, round(canvas.size[0] * scale)),
                                max(1, round(canvas.size[1] * scale))), Image.LANCZOS)
    pen = ImageDraw.Draw(canvas)
    width = max(2, round(max(canvas.size) / 250))
    for box, score, label in zip(detections["boxes"], detections["scores"],
                                 detections["labels"], strict=True):  # fmt: skip
        color = COLORS[int(label) % len(COLORS)]
        x1, y1, x2, y2 = (float(v) * scale for v in box)
        pen.rectangle((x1, y1, x2, y2), outline=color, width=width)
        text = f"{names[int(label)]} {score:.2f}"
        left, top, right, bottom = pen.textbbox((x1, y1), text)
        y = max(0.0, y1 - (bottom - top) - 2)
        pen.rectangle((x1, y, x1 + right - left + 4, y + bottom - top + 2), fill=color)
        pen.text((x1 + 2, y), text, fill=(255, 255, 255))
    if colors:
        canvas = canvas.quantize(colors)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, optimize=True)


def _load(args: argparse.Namespace) -> tuple[Any, dict, list[str]]:
    from absl import logging

    from jaxcnn.loading import load_weights

    logging.set_verbosity(logging.ERROR)  # orbax: read-only checkpoint directories are fine

    loaded = load_weights(args.model, args.weights)
    model = loaded.model()
    if not hasattr(model, "transform"):
        raise InputError(
            f"{loaded.model_name} is not a detector; `jaxcnn detect` runs detection models "
            "(jaxcnn models --task detection)."
        )
    return model, loaded.variables, label_names(model.num_classes, loaded.class_names)


def _detect_images(args: argparse.Namespace) -> int:
    from jaxcnn.data.images import read_image
    from jaxcnn.detection.detect import detect

    if not args.images:
        raise InputError("give image files to detect in, or --eval VOC_ROOT.")
    model, variables, names = _load(args)
    out = Path(args.out) if args.out else None
    for path in args.images:
        pixels, _ = read_image(path)
        (found,) = detect(model, variables, [pixels.astype(np.float32) / 255.0],
                          score_threshold=args.threshold)  # fmt: skip
        record = {"image": str(path), "detections": [
            {"label": names[int(lab)], "score": round(float(s), 4),
             "box": [round(float(v), 1) for v in b]}
            for b, s, lab in zip(found["boxes"], found["scores"], found["labels"], strict=True)]}
        if out is not None:
            target = out / f"{Path(path).stem}.png"
            draw(pixels, found, names, target, max_side=args.max_side, colors=args.colors)
            record["drawn"] = str(target)
        print(json.dumps(record), flush=True)
    return 0


def evaluate_voc(model: Any, variables: dict, root: str, split: str, names: list[str],
                 batch: int = 4) -> dict:  # fmt: skip
    """COCO and VOC metrics of `model` on a VOC-format split, each image at its own size
    through the model's transform, boxes in original pixels (difficult objects as VOC)."""
    from jaxcnn.data.images import read_image
    from jaxcnn.data.voc import _layout, _split_ids, parse_voc_xml
    from jaxcnn.detection import coco_evaluate, voc_evaluate
    from jaxcnn.detection.detect import detect

    ann_dir, img_dir, split_dir = _layout(Path(root).expanduser())
    index = {n: i for i, n in enumerate(names)}
    records = [parse_voc_xml(ann_dir / f"{i}.xml", img_dir) for i in _split_ids(split_dir, split)]
    unknown = sorted({n for r in records for n in r.names} - set(index))
    if unknown:
        raise InputError(
            f"{root}: object class(es) {unknown} are not among the model's labels {names[1:]}."
        )
    preds, targets = [], []
    for start in range(0, len(records), batch):
        chunk = records[start : start + batch]
        images = [read_image(r.image)[0].astype(np.float32) / 255.0 for r in chunk]
        preds += detect(model, variables, images)
        targets += [{"boxes": r.boxes.astype(np.float32),
                     "labels": np.array([index[n] for n in r.names], np.int64),
                     "difficult": r.difficult} for r in chunk]  # fmt: skip
    coco = coco_evaluate(preds, targets)
    voc = voc_evaluate(preds, targets)
    return {"images": len(records), **{k: float(v) for k, v in coco.items()},
            "voc_map": float(voc["map"]),
            "voc_ap": {names[int(k)]: float(v) for k, v in voc["ap"].items()}}  # fmt: skip


def _eval(args: argparse.Namespace) -> int:
    model, variables, names = _load(args)
    result = evaluate_voc(model, variables, args.eval, args.split, names)
    print(f"{args.eval} ({args.split}, {result['images']} images)")
    rows = [("COCO mAP@[.5:.95]", "map"), ("mAP@0.5", "map_50"), ("mAP@0.75", "map_75"),
            ("mAP small", "map_small"), ("mAP medium", "map_medium"),
            ("mAP large", "map_large"), ("mAR@100", "mar_100"),
            ("VOC AP@0.5 (all-point)", "voc_map")]  # fmt: skip
    for title, key in rows:
        print(f"  {title:24s} {result[key]:7.4f}")
    for name, ap in result["voc_ap"].items():
        print(f"  AP@0.5 {name:17s} {ap:7.4f}")
    print(json.dumps(result))
    return 0


def _cmd_detect(args: argparse.Namespace) -> int:
    return _eval(args) if args.eval else _detect_images(args)


def add_commands(subparsers: Any) -> None:
    """Register `jaxcnn detect` on the `jaxcnn` parser."""
    p = subparsers.add_parser(
        "detect", help="detect objects in images (boxes drawn) or score a detector on VOC data",
        description=__doc__.split("\n\n")[0])
    p.add_argument("images", nargs="*", help="image files")
    p.add_argument("--weights", required=True,
                   help="training workdir, registry tag (DEFAULT, COCO_V1) or weight file")
    p.add_argument("--model", default=None,
                   help="model name when --weights is not a workdir (e.g. fasterrcnn_resnet50_fpn)")
    p.add_argument("--threshold", type=float, default=0.5, help="lowest score shown (0.5)")
    p.add_argument("--out", default=None, help="directory for the drawn PNGs")
    p.add_argument("--max-side", type=int, default=0,
                   help="scale the drawn PNGs down to this many pixels on the longest side")
    p.add_argument("--colors", type=int, default=0,
                   help="save the drawn PNGs with a palette of this many colors (smaller files)")
    p.add_argument("--eval", default=None, metavar="VOC_ROOT",
                   help="score the detector on this VOC-format tree instead")
    p.add_argument("--split", default="test", help="the --eval split (test)")
    p.set_defaults(func=_cmd_detect)
