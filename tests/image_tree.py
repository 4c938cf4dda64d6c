"""Small generated ImageFolder trees for the input-pipeline tests: JPEGs whose pixels encode
their class and index, plus optional unreadable files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("ant", "bee", "cat")


def jpeg_bytes(h: int, w: int, value: int, seed: int = 0) -> bytes:
    """A JPEG whose mean pixel is about `value` (so a decoded image tells its source)."""
    rng = np.random.default_rng(seed)
    arr = np.clip(value + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def make_tree(root: Path, *, n_train: int = 8, n_test: int = 4, size: tuple[int, int] = (24, 32),
              bad: dict[str, bytes] | None = None, sizes_vary: bool = False) -> Path:
    """root/{train,test}/<class>/<i>.jpg for CLASSES; `bad` maps relative paths to bytes of
    unreadable files to add (e.g. {"train/ant/broken.jpg": b"not a jpeg"})."""
    for split, n in (("train", n_train), ("test", n_test)):
        for label, cls in enumerate(CLASSES):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h, w = size
                if sizes_vary:
                    h, w = h + 7 * i, w + 3 * ((i + label) % 4)
                value = 40 + 60 * label + i
                (d / f"{i:03d}.jpg").write_bytes(jpeg_bytes(h, w, value, seed=i))
    for rel, data in (bad or {}).items():
        (root / rel).write_bytes(data)
    return root


def digits_tree(root: Path) -> Path:
    """The embedded digits (the reliability tests' data, 32x32 grayscale) as an ImageFolder
    tree of PNGs, root/{train,test}/<digit>/<i>.png: the same pixels, for the host pipeline."""
    from jaxcnn.data import load_digits

    splits = load_digits()
    for split in ("train", "test"):
        source = getattr(splits, split)
        for i, (image, label) in enumerate(zip(source.arrays["image"], source.arrays["label"],
                                               strict=True)):
            d = root / split / str(int(label))
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[..., 0], "L").save(d / f"{i:04d}.png")
    return root
