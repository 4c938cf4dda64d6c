"""CIFAR-10 for the speedrun benchmarks, carried to the GPU machine as the JPEG tarball itself
(19.4 MB: the smallest form, since the decoded uint8 arrays are 184 MB raw and do not
compress well losslessly) and decoded there into the arrays both jaxcnn and airbench94 use.

    python bench/cifar_data.py pack                 # here: data/cifar10-jpg.tar.gz (ignored)
    python bench/cifar_data.py prepare --workers 16 # there: data/cifar10_uint8.npz and
                                                    # data/airbench/cifar10/{train,test}.pt

The tarball holds `cifar10/{train,test}/<class>/*.jpg`. Images are decoded straight from
the tar stream (no extraction) in a process pool, in the order of `jaxcnn.data.load_folder`
(classes sorted, files sorted), so the arrays equal what jaxcnn's folder source gives."""

from __future__ import annotations

import argparse
import io
import os
import shutil
import tarfile
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
TARBALL = DATA / "cifar10-jpg.tar.gz"
ARRAYS = DATA / "cifar10_uint8.npz"
AIRBENCH_DIR = DATA / "airbench"  # airbench's CifarLoader('cifar10') reads cifar10/*.pt here
SOURCES = (Path("/work/shared/data/cifar10-jpg.tar.gz"), ROOT.parent / "shared" / "data" /
           "cifar10-jpg.tar.gz", Path("/work/data/cifar10"))


def pack(source: Path | None = None) -> Path:
    """Copy the JPEG tarball (or tar a `cifar10/` JPEG folder) to data/cifar10-jpg.tar.gz."""
    candidates = [source] if source else [p for p in SOURCES if p.exists()]
    if not candidates or not candidates[0].exists():
        raise SystemExit(f"no CIFAR-10 JPEGs found at {source or [str(p) for p in SOURCES]}")
    src = candidates[0]
    DATA.mkdir(exist_ok=True)
    if src.is_dir():
        with tarfile.open(TARBALL, "w:gz") as tf:
            tf.add(src, arcname="cifar10")
    else:
        shutil.copyfile(src, TARBALL)
    return TARBALL


def _decode(blobs: list[bytes]) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB"), np.uint8)
                     for b in blobs])


def read_tarball(path: Path = TARBALL, workers: int | None = None,
                 limit_per_class: int = 0) -> dict[str, np.ndarray]:
    """{"x_train", "y_train", "x_test", "y_test", "classes"} decoded from the tarball;
    `limit_per_class` > 0 keeps only the first files of each class (smoke runs)."""
    members: dict[tuple[str, str, str], bytes] = {}
    with tarfile.open(path, "r:*") as tf:
        for m in tf:
            parts = Path(m.name).parts
            if not m.isfile() or len(parts) < 4 or not m.name.lower().endswith(".jpg"):
                continue
            split, cls, name = parts[-3], parts[-2], parts[-1]
            members[(split, cls, name)] = tf.extractfile(m).read()
    classes = sorted({cls for (_, cls, _) in members})
    out: dict[str, np.ndarray] = {"classes": np.array(classes)}
    workers = workers or os.cpu_count() or 1
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for split in ("train", "test"):
            keys = sorted(k for k in members if k[0] == split)
            if limit_per_class:
                keys = _first_per_class(keys, limit_per_class)
            blobs = [members[k] for k in keys]
            chunk = max(1, -(-len(blobs) // (4 * workers)))
            parts = list(pool.map(_decode, [blobs[i:i + chunk]
                                            for i in range(0, len(blobs), chunk)]))
            out[f"x_{split}"] = np.concatenate(parts)
            out[f"y_{split}"] = np.array([classes.index(k[1]) for k in keys], np.int32)
    return out


def _first_per_class(keys: list, limit: int) -> list:
    seen: dict[str, int] = {}
    kept = []
    for k in keys:  # keys are sorted by (split, class, name)
        if seen.get(k[1], 0) < limit:
            kept.append(k)
            seen[k[1]] = seen.get(k[1], 0) + 1
    return kept


def load(path: Path = ARRAYS) -> dict[str, np.ndarray]:
    """The decoded arrays written by `prepare`."""
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def write_airbench(arrays: dict[str, np.ndarray], directory: Path = AIRBENCH_DIR) -> Path:
    """airbench's `CifarLoader` files (utils.py lines 100-106): `cifar10/{train,test}.pt`
    dicts of uint8 NHWC images, int64 labels and class names, read with torch.load. The
    training images are shuffled once (seed 0): airbench initialises its whitening layer
    from `images[:5000]`, a class-mixed sample in the original CIFAR-10 files but a single
    class in the folder order."""
    import torch

    target = directory / "cifar10"
    target.mkdir(parents=True, exist_ok=True)
    order = {"train": np.random.default_rng(0).permutation(len(arrays["y_train"])),
             "test": np.arange(len(arrays["y_test"]))}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"][order[split]], arrays[f"y_{split}"][order[split]]
        torch.save({"images": torch.from_numpy(np.ascontiguousarray(x)),
                    "labels": torch.from_numpy(y.astype(np.int64)),
                    "classes": [str(c) for c in arrays["classes"]]}, target / f"{split}.pt")
    return directory


def prepare(workers: int | None = None, limit_per_class: int = 0, airbench: bool = True,
            out: Path = ARRAYS) -> dict:
    """Decode the tarball to `out` (.npz) and, when torch is there, airbench's .pt files."""
    t0 = time.perf_counter()
    arrays = read_tarball(TARBALL, workers, limit_per_class)
    decode_s = time.perf_counter() - t0
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=out.parent, suffix=".npz", delete=False) as tmp:
        np.savez(tmp, **arrays)
    os.replace(tmp.name, out)
    info = {"train": int(len(arrays["y_train"])), "test": int(len(arrays["y_test"])),
            "decode_seconds": round(decode_s, 2), "arrays": str(out)}
    if airbench:
        info["airbench_dir"] = str(write_airbench(arrays, out.parent / "airbench"))
    return info


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    pk = sub.add_parser("pack", help="copy the JPEG tarball into data/ (for `carry`)")
    pk.add_argument("--from", dest="source", type=Path, default=None)
    pr = sub.add_parser("prepare", help="decode data/cifar10-jpg.tar.gz into arrays")
    pr.add_argument("--workers", type=int, default=None)
    pr.add_argument("--limit-per-class", type=int, default=0, help="smoke runs: a subset")
    pr.add_argument("--no-airbench", action="store_true", help="skip the .pt files (no torch)")
    pr.add_argument("--out", type=Path, default=ARRAYS)
    args = p.parse_args(argv)
    if args.cmd == "pack":
        path = pack(args.source)
        print(f"{path} ({path.stat().st_size / 2**20:.1f} MiB)")
    else:
        import json

        print(json.dumps(prepare(args.workers, args.limit_per_class, not args.no_airbench,
                                 args.out)))


if __name__ == "__main__":
    main()
