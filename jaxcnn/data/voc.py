"""PASCAL VOC-format detection data (`data.source="voc"`): one XML file per image with
`<size>` and `<object>`s (`<name>`, `<difficult>`, `<bndbox>` xmin/ymin/xmax/ymax in pixels),
image files, and split files listing image ids.

Two layouts are found automatically under the root: the VOC devkit's
`Annotations/`, `JPEGImages/`, `ImageSets/Main/<split>.txt`, and the flat
`annotations/`, `images/`, `splits/<split>.txt` (e.g. the raccoon set).

Every image is resized to `image_size` x `image_size` (bilinear, aspect ratio not kept) and its
boxes are scaled with it, so batches have static shapes. The variable-length box lists are padded
to `max_boxes` (default: the most boxes any image has, over all splits):

    image       uint8   [N, S, S, 3]
    boxes       float32 [N, K, 4]   (x1, y1, x2, y2) in pixels of the resized image
    box_labels  int32   [N, K]      index into class_names (0 on padding)
    box_mask    bool    [N, K]      True for real boxes
    difficult   bool    [N, K]
    orig_size   int32   [N, 2]      (height, width) of the original image

Class names come from `class_names` (config) or, if empty, the sorted set of object names in
the split files' XML. Bad data, by rule:

- an XML file that cannot be parsed, lacks required fields, or names an image that is missing
  or unreadable: the image is skipped with a warning naming the file (an error with strict);
- an object whose class is not in the given class_names: DatasetError naming file and class;
- a box with a NaN/inf/non-numeric coordinate, or x2 <= x1 or y2 <= y1: dropped with a warning
  naming the file (an error with strict); a box reaching outside the image is clipped to it
  with a warning (an error with strict), and dropped if nothing is left;
- an image with no boxes is kept (all rows padding), as VOC's negatives;
- an image with more than max_boxes boxes keeps its max_boxes largest, with a warning.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from jaxcnn.data.images import to_8bit
from jaxcnn.data.sources import Source, Splits, _carve_valid, register_source, subset_indices
from jaxcnn.errors import DatasetError

BOX_KEYS = ("boxes", "box_labels", "box_mask", "difficult")
"""The per-image padded box arrays of a detection Source."""

_LAYOUTS = (
    ("Annotations", "JPEGImages", "ImageSets/Main"),
    ("annotations", "images", "splits"),
)


@dataclasses.dataclass(frozen=True)
class VocImage:
    """One parsed annotation file: image path, (width, height) from `<size>` (0 if absent),
    object names, boxes [n, 4] float64 as written, difficult flags."""

    xml: Path
    image: Path
    size: tuple[int, int]
    names: tuple[str, ...]
    boxes: np.ndarray
    difficult: np.ndarray


class _Skip(Exception):
    """A file that the reader skips (or, with strict, reports as a DatasetError)."""


def _report(problem: str, strict: bool) -> None:
    if strict:
        raise DatasetError(
            problem + " (set config.data.strict=False to skip/repair with a warning)"
        )
    warnings.warn(problem, stacklevel=4)


def _layout(root: Path) -> tuple[Path, Path, Path]:
    for ann, img, splits in _LAYOUTS:
        if (root / ann).is_dir():
            return root / ann, root / img, root / splits
    raise DatasetError(
        f"{root} is not a VOC-format tree: expected an Annotations/ (or annotations/) folder of "
        "XML files next to JPEGImages/ (or images/) and ImageSets/Main/ (or splits/)."
    )


def _number(obj: ET.Element, tag: str, xml: Path) -> float:
    text = obj.findtext(f"bndbox/{tag}")
    if text is None:
        raise _Skip(f"{xml}: an <object> has no <bndbox>/<{tag}>")
    try:
        return float(text)
    except ValueError:
        return float("nan")  # reported with the box below


def parse_voc_xml(xml: str | os.PathLike, image_dir: str | os.PathLike | None = None) -> VocImage:
    """Parse one VOC annotation file; DatasetError names the file if it is malformed."""
    xml = Path(xml)
    try:
        root = ET.parse(xml).getroot()
    except (ET.ParseError, OSError) as err:
        raise DatasetError(f"{xml}: cannot parse the annotation XML ({err}).") from None
    try:
        filename = root.findtext("filename")
        if not filename:
            raise _Skip(f"{xml}: no <filename>")
        size = (int(float(root.findtext("size/width", "0"))),
                int(float(root.findtext("size/height", "0"))))  # fmt: skip
        names, boxes, difficult = [], [], []
        for obj in root.iter("object"):
            name = (obj.findtext("name") or "").strip()
            if not name:
                raise _Skip(f"{xml}: an <object> has no <name>")
            names.append(name)
            boxes.append([_number(obj, t, xml) for t in ("xmin", "ymin", "xmax", "ymax")])
            difficult.append((obj.findtext("difficult") or "0").strip() == "1")
    except (_Skip, ValueError) as err:
        raise DatasetError(f"malformed VOC annotation: {err}") from None
    folder = Path(image_dir) if image_dir is not None else xml.parent
    return VocImage(
        xml, folder / filename, size, tuple(names),
        np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(difficult, bool),
    )  # fmt: skip


def _split_ids(split_dir: Path, split: str) -> list[str]:
    path = split_dir / f"{split}.txt"
    if not path.is_file():
        raise DatasetError(
            f"no split file {path}; the VOC split '{split}' lists its image ids there."
        )
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise DatasetError(f"split file {path} lists no image ids.")
    return ids


def _clean_boxes(rec: VocImage, width: int, height: int, strict: bool) -> np.ndarray:
    """Indices of the usable boxes; repairs (clips) rec.boxes in place."""
    keep = []
    for i, box in enumerate(rec.boxes):
        where = f"{rec.xml}: object {i} ({rec.names[i]}) box {box.tolist()}"
        if not np.isfinite(box).all():
            _report(f"{where} has a non-numeric or infinite coordinate; dropped", strict)
            continue
        if box[2] <= box[0] or box[3] <= box[1]:
            _report(f"{where} has x2 <= x1 or y2 <= y1; dropped", strict)
            continue
        clipped = np.clip(box, 0, [width, height, width, height])
        if (clipped != box).any():
            if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
                _report(f"{where} lies outside the {width}x{height} image; dropped", strict)
                continue
            _report(f"{where} reaches outside the {width}x{height} image; clipped", strict)
            rec.boxes[i] = clipped
        keep.append(i)
    return np.asarray(keep, np.int64)


def _decode(path: Path, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    from PIL import Image

    with Image.open(path) as img:
        original = img.size  # (width, height) of the file, which the boxes refer to
        img.draft("RGB", (size, size))  # JPEG: decode at a reduced scale >= size (faster)
        # 16-bit grayscale scaled to 8 bits (PIL's convert would clip it to white)
        img = to_8bit(img).convert("RGB").resize((size, size), Image.BILINEAR)
        return np.asarray(img, np.uint8), original


def _load_one(rec: VocImage, size: int, strict: bool):
    try:
        pixels, (width, height) = _decode(rec.image, size)
    except FileNotFoundError:
        _report(
            f"{rec.xml} names the image {rec.image.name}, which is missing; image skipped", strict
        )
        return None
    except Exception as err:  # PIL raises many types for truncated/corrupt files
        _report(f"cannot decode {rec.image} ({type(err).__name__}: {err}); image skipped", strict)
        return None
    if rec.size[0] and rec.size != (width, height):
        warnings.warn(
            f"{rec.xml}: <size> says {rec.size[0]}x{rec.size[1]} but {rec.image.name} is "
            f"{width}x{height}; using the image's size",
            stacklevel=3,
        )
    keep = _clean_boxes(rec, width, height, strict)
    scale = np.array([size / width, size / height] * 2)
    return pixels, (height, width), (rec.boxes[keep] * scale).astype(np.float32), keep


def _read_split(
    root: Path, split: str, strict: bool, max_examples: int, seed: int
) -> list[VocImage]:
    ann_dir, img_dir, split_dir = _layout(root)
    ids = _split_ids(split_dir, split)
    if max_examples and len(ids) > max_examples:
        ids = [ids[i] for i in subset_indices(len(ids), max_examples, seed)]
    records = []
    for image_id in ids:
        xml = ann_dir / f"{image_id}.xml"
        try:
            if not xml.is_file():
                raise DatasetError(f"{xml} is missing (listed in {split_dir / split}.txt)")
            records.append(parse_voc_xml(xml, img_dir))
        except DatasetError as err:
            _report(f"{err}; image skipped", strict)
    return records


def load_voc(
    path: str,
    *,
    image_size: int,
    max_boxes: int = 0,
    class_names: Sequence[str] = (),
    train_split: str = "train",
    test_split: str = "test",
    valid_fraction: float = 0.0,
    seed: int = 0,
    strict: bool = False,
    max_examples: int = 0,
) -> Splits:
    """A VOC-format tree as `Splits` of resized images with padded box lists (module doc)."""
    if image_size < 1:
        raise DatasetError(
            "data.source='voc' resizes every image to one size for static batch shapes; set "
            "--config.data.image_size (e.g. 160)."
        )
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise DatasetError(f"VOC root {root} does not exist.")
    splits = {
        s: _read_split(root, s, strict, max_examples if s == train_split else 0, seed)
        for s in dict.fromkeys((train_split, test_split))
    }
    names = tuple(class_names) or tuple(
        sorted({n for r in sum(splits.values(), []) for n in r.names})
    )
    if not names:
        raise DatasetError(f"{root}: no object in any annotation and no data.class_names given.")
    index = {n: i for i, n in enumerate(names)}
    for rec in sum(splits.values(), []):
        unknown = [n for n in rec.names if n not in index]
        if unknown:
            raise DatasetError(
                f"{rec.xml}: object class {unknown[0]!r} is not one of the {len(names)} "
                f"class_names {list(names)}; add it to data.class_names or remove the object."
            )
    loaded = {}
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        for split, recs in splits.items():
            out = list(pool.map(lambda r: _load_one(r, image_size, strict), recs))
            loaded[split] = [(r, o) for r, o in zip(recs, out, strict=True) if o is not None]
            if not loaded[split]:
                raise DatasetError(f"{root}: no readable image in split {split!r}.")
    most = max(len(o[2]) for items in loaded.values() for _, o in items)
    k = int(max_boxes) or max(most, 1)
    sources = {s: _to_source(items, index, k) for s, items in loaded.items()}
    train, valid = _carve_valid(sources[train_split], sources[test_split], valid_fraction, seed)
    return Splits(root.name, train, valid, sources[test_split], names)


def _to_source(items, index: dict[str, int], k: int) -> Source:
    n = len(items)
    boxes = np.zeros((n, k, 4), np.float32)
    labels = np.zeros((n, k), np.int32)
    mask = np.zeros((n, k), bool)
    difficult = np.zeros((n, k), bool)
    for i, (rec, (_, _, b, keep)) in enumerate(items):
        lab = np.array([index[rec.names[j]] for j in keep], np.int32)
        diff = rec.difficult[keep]
        if len(b) > k:
            warnings.warn(
                f"{rec.xml} has {len(b)} boxes, more than data.max_boxes={k}; kept the {k} largest",
                stacklevel=3,
            )
            largest = np.argsort(-(b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), kind="stable")[:k]
            b, lab, diff = b[largest], lab[largest], diff[largest]
        boxes[i, : len(b)], labels[i, : len(b)] = b, lab
        mask[i, : len(b)], difficult[i, : len(b)] = True, diff
    return Source({
        "image": np.stack([o[0] for _, o in items]),
        "boxes": boxes, "box_labels": labels, "box_mask": mask, "difficult": difficult,
        "orig_size": np.array([o[1] for _, o in items], np.int32),
    })  # fmt: skip


def _from_config(data, seed: int) -> Splits:
    if not data.get("path"):
        raise DatasetError("data.source='voc' needs --config.data.path=DIR (the VOC root).")
    return load_voc(
        data["path"], image_size=int(data.get("image_size", 0)),
        max_boxes=int(data.get("max_boxes", 0)), class_names=tuple(data.get("class_names", ())),
        train_split=data.get("train_split", "train"), test_split=data.get("test_split", "test"),
        valid_fraction=float(data.get("valid_fraction", 0.0)), seed=seed,
        strict=bool(data.get("strict", False)), max_examples=int(data.get("max_examples", 0)),
    )  # fmt: skip


register_source("voc", _from_config)
