"""Data sources behind one small interface: a `Source` is a random-access, in-host-memory
(or memory-mapped) split of uint8 NHWC images and integer labels; `Splits` holds train/valid/
test plus the class names. Every backend (embedded digits, in-memory arrays or an .npz file,
image folders decoded once into a .npy cache, tensorflow-datasets) produces the same thing, so
the loop, the epoch order and exact resume do not depend on where the pixels came from."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from jaxcnn.data.images import IMAGE_EXTENSIONS, read_image, resize, square_resize
from jaxcnn.errors import DatasetError, OfflineError


@dataclasses.dataclass
class Source:
    """One split: `arrays["image"]` uint8 [N, H, W, C] plus per-example arrays such as
    "label" (int32 [N]) or "mask" (segmentation targets), all of length N."""

    arrays: dict[str, np.ndarray]

    def __post_init__(self) -> None:
        if "image" not in self.arrays:
            raise DatasetError(f"a Source needs an 'image' array; got keys {sorted(self.arrays)}")
        _check_finite_pixels(self.arrays["image"], "Source")
        n = len(self.arrays["image"])
        for key, value in self.arrays.items():
            if len(value) != n:
                raise DatasetError(
                    f"array {key!r} has {len(value)} entries but 'image' has {n}; every "
                    "array of a split must have one entry per image."
                )

    def __len__(self) -> int:
        return len(self.arrays["image"])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one image."""
        return tuple(self.arrays["image"].shape[1:])  # type: ignore[return-value]

    @property
    def nbytes(self) -> int:
        """Bytes of all arrays (decides whether the split fits on the device)."""
        return int(sum(a.nbytes for a in self.arrays.values()))

    def take(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """The examples at `indices`, as a dict of arrays (the host-side batch)."""
        return {k: np.asarray(v[indices]) for k, v in self.arrays.items()}

    def subset(self, indices: np.ndarray) -> Source:
        """A new Source holding only `indices` (materialized; a streamed column stays
        streamed)."""
        idx = np.asarray(indices)
        return Source({k: v.subset(idx) if hasattr(v, "subset") else np.asarray(v[idx])
                       for k, v in self.arrays.items()})


@dataclasses.dataclass
class Splits:
    """A dataset: train, valid (for checkpoint selection) and test splits."""

    name: str
    train: Source
    valid: Source
    test: Source
    class_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # An out-of-range label fails nowhere by itself: the loss's gather/one-hot turns it
        # into a NaN or a zero loss. Catch it where the data enters.
        if "label" not in self.train.arrays or self.train.arrays["label"].ndim != 1:
            return
        k = self.num_classes
        where = (f"the {len(self.class_names)} class_names" if self.class_names else
                 "the training labels (no class_names given)")
        for split in ("train", "test", "valid"):  # valid is often the test split itself
            labels = getattr(self, split).arrays.get("label")
            if not isinstance(labels, np.ndarray) or not len(labels):
                continue  # none, or read on demand (a streamed tfds split)
            lo, hi = int(labels.min()), int(labels.max())
            if lo < 0 or hi >= k:
                raise DatasetError(
                    f"{self.name}: the {split} split has labels in [{lo}, {hi}] but {where} give "
                    f"{k} classes, so labels must lie in [0, {k - 1}]. Fix the labels, or pass "
                    "class_names listing every class."
                )

    @property
    def num_classes(self) -> int:
        """Number of classes (0 when the dataset has no labels)."""
        if self.class_names:
            return len(self.class_names)
        if "label" in self.train.arrays:
            return int(self.train.arrays["label"].max()) + 1
        return 0


def _check_finite_pixels(images: np.ndarray, name: str) -> None:
    """DatasetError naming the first image with a NaN or infinite pixel (float arrays only:
    integer pixels are always finite), so bad data fails here, not as a NaN loss later."""
    if not np.issubdtype(images.dtype, np.floating):
        return
    finite = np.isfinite(images).reshape(len(images), -1).all(axis=1)
    if not finite.all():
        bad = int(np.argmin(finite))
        raise DatasetError(
            f"{name}: image {bad} holds NaN or infinite pixels ({int((~finite).sum())} such "
            "image(s)). Fix or drop them before training."
        )


def _to_nhwc_uint8(images: np.ndarray, name: str) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise DatasetError(
            f"{name}: images must be [N, H, W] or [N, H, W, C]; got shape {images.shape}."
        )
    if images.dtype != np.uint8:
        _check_finite_pixels(images, name)
        if images.min() < 0 or images.max() > 255:
            raise DatasetError(
                f"{name}: images are stored as uint8 in [0, 255]; got dtype {images.dtype} with "
                f"range [{images.min()}, {images.max()}]. Rescale them first."
            )
        images = np.round(images).astype(np.uint8)
    return images


def from_arrays(
    x_train: np.ndarray,
    y_train: np.ndarray | None,
    x_test: np.ndarray,
    y_test: np.ndarray | None,
    *,
    name: str = "arrays",
    class_names: tuple[str, ...] = (),
    valid_fraction: float = 0.0,
    seed: int = 0,
) -> Splits:
    """Splits from in-memory arrays (uint8 or float in [0, 255]); labels may be None
    (reconstruction) or per-pixel masks [N, H, W] (segmentation)."""

    def source(x: np.ndarray, y: np.ndarray | None) -> Source:
        arrays = {"image": _to_nhwc_uint8(x, name)}
        if y is not None:
            y = np.asarray(y)
            arrays["label" if y.ndim == 1 else "mask"] = y.astype(np.int32)
        return Source(arrays)

    train, test = source(x_train, y_train), source(x_test, y_test)
    train, valid = _carve_valid(train, test, valid_fraction, seed)
    return Splits(name, train, valid, test, tuple(class_names))


def _carve_valid(
    train: Source, test: Source, valid_fraction: float, seed: int
) -> tuple[Source, Source]:
    """Hold `valid_fraction` of train out for validation; 0 means validate on test."""
    if not valid_fraction:
        return train, test
    if not 0.0 < valid_fraction < 1.0:
        raise DatasetError(f"valid_fraction must be in [0, 1); got {valid_fraction}.")
    order = np.random.default_rng([seed, 12345]).permutation(len(train))
    n_valid = max(1, int(round(valid_fraction * len(train))))
    return train.subset(np.sort(order[n_valid:])), train.subset(np.sort(order[:n_valid]))


# ----------------------------------------------------------------------------- digits


DIGITS_TEST_SIZE = 360  # fixed held-out split: 20% of scikit-learn's 1,797 digits


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits.csv.gz (8x8 images, values 0..16), read directly:
    importing sklearn.datasets alone costs ~2 s of the 60 s budget of the default run."""
    import gzip
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError("the embedded digits need scikit-learn: pip install scikit-learn")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int32)


def _stratified_split(labels: np.ndarray, test_size: int, seed: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """A fixed stratified split: each class gives its share of `test_size` examples."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.floor(counts * test_size / len(labels)).astype(int)
    for i in np.argsort(-(counts * test_size / len(labels) - quota))[: test_size - quota.sum()]:
        quota[i] += 1
    test = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:q]
                           for c, q in zip(classes, quota, strict=True)])
    train = np.setdiff1d(np.arange(len(labels)), test)
    return train, np.sort(test)


def load_digits(image_size: int = 32, *, valid_fraction: float = 0.0) -> Splits:
    """scikit-learn's 8x8 handwritten digits, upsampled bilinearly to 28x28 and zero-padded to
    32x32 like MNIST for LeNet-5; a fixed stratified split of 1,437 train / 360 test images."""
    from PIL import Image

    small, labels = _digits_arrays()
    inner = image_size - 4 * image_size // 32  # 28 of 32, the MNIST margin
    big = np.stack([np.asarray(Image.fromarray(im / 16.0, mode="F").resize((inner, inner),
                                                                          Image.BILINEAR))
                    for im in small])
    pad = (image_size - inner) // 2
    big = np.pad(big, ((0, 0), (pad, image_size - inner - pad), (pad, image_size - inner - pad)))
    images = np.clip(np.round(big * 255.0), 0, 255).astype(np.uint8)[..., None]
    idx_train, idx_test = _stratified_split(labels, DIGITS_TEST_SIZE, seed=0)
    train = Source({"image": images[idx_train], "label": labels[idx_train]})
    test = Source({"image": images[idx_test], "label": labels[idx_test]})
    train, valid = _carve_valid(train, test, valid_fraction, 0)
    return Splits("digits", train, valid, test, tuple(str(i) for i in range(10)))


def load_npz(path: str, *, valid_fraction: float = 0.0, seed: int = 0) -> Splits:
    """Arrays saved with `np.savez(path, x_train=, y_train=, x_test=, y_test=)`."""
    if not os.path.exists(path):
        raise DatasetError(
            f"no .npz file at {path!r}; save one with np.savez(path, x_train=..., y_train=..., "
            "x_test=..., y_test=...)."
        )
    with np.load(path) as z:
        missing = {"x_train", "x_test"} - set(z.files)
        if missing:
            raise DatasetError(f"{path}: missing arrays {sorted(missing)}; found {z.files}.")
        get = lambda k: z[k] if k in z.files else None
        names = tuple(str(c) for c in get("class_names")) if "class_names" in z.files else ()
        return from_arrays(
            z["x_train"], get("y_train"), z["x_test"], get("y_test"),
            name=Path(path).stem, class_names=names, valid_fraction=valid_fraction, seed=seed,
        )


# ----------------------------------------------------------------------------- folders


def _list_folder(split_dir: Path) -> tuple[list[str], list[tuple[Path, int]], list[Path]]:
    """Classes (sorted sub-folder names, as torchvision's ImageFolder), (file, label) pairs,
    and the non-image files skipped."""
    if not split_dir.is_dir():
        raise DatasetError(
            f"image folder {str(split_dir)!r} does not exist; expected <path>/train/<class>/*.jpg "
            "and <path>/test/<class>/*.jpg (torchvision ImageFolder layout)."
        )
    classes = sorted(d.name for d in split_dir.iterdir() if d.is_dir())
    if not classes:
        raise DatasetError(
            f"{split_dir} has no class sub-folders; expected {split_dir}/<class>/<image files>."
        )
    files, skipped = [], []
    for label, cls in enumerate(classes):
        # scandir's cached file types: no stat per file (1.28 M files for ImageNet)
        with os.scandir(split_dir / cls) as it:
            entries = sorted(Path(e.path) for e in it if e.is_file())
        images = [p for p in entries if p.suffix.lower() in IMAGE_EXTENSIONS]
        skipped += [p for p in entries if p.suffix.lower() not in IMAGE_EXTENSIONS]
        if not images:
            raise DatasetError(
                f"class folder {split_dir / cls} holds no images ({IMAGE_EXTENSIONS}); remove "
                "it or add images."
            )
        files.extend((p, label) for p in images)
    return classes, files, skipped


def _decode(path: Path, mode: str, size: int) -> tuple[np.ndarray | None, str]:
    """(uint8 image, "" or the mode conversion done), or (None, why it is unreadable)."""
    try:
        arr, file_mode = read_image(path, 1 if mode == "L" else 3)
    except DatasetError as err:
        cause = err.__cause__ or err
        return None, f"{type(cause).__name__}: {cause}"
    note = "" if file_mode == mode else f"{file_mode}->{mode}"
    return (resize(arr, (size, size)) if size else arr), note


def _decode_split(
    files: list[tuple[Path, int]], channels: int, size: int, strict: bool, split_dir: Path
) -> tuple[np.ndarray, np.ndarray]:
    mode = "L" if channels == 1 else "RGB"
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        decoded = list(pool.map(lambda f: _decode(f[0], mode, size), files))
    bad = [(f, why) for (f, _), (arr, why) in zip(files, decoded, strict=True) if arr is None]
    if bad and strict:
        path, why = bad[0]
        raise DatasetError(
            f"cannot decode image {path} ({why}); {len(bad)} unreadable file(s) in {split_dir}. "
            "Remove them, or set config.data.strict=False to skip them with a warning."
        )
    if bad:
        named = "; ".join(f"{path} ({why})" for path, why in bad[:5])
        more = f"; and {len(bad) - 5} more" if len(bad) > 5 else ""
        warnings.warn(
            f"skipped {len(bad)} unreadable image(s) in {split_dir}: {named}{more}. Set "
            "config.data.strict=True to stop on them instead.",
            stacklevel=3,
        )
    converted = sum(1 for arr, why in decoded if arr is not None and why)
    if converted:
        warnings.warn(
            f"converted {converted} image(s) in {split_dir} to {mode} (e.g. grayscale or RGBA)",
            stacklevel=3,
        )
    keep = [(arr, label) for (arr, _), (_, label) in zip(decoded, files, strict=True)
            if arr is not None]
    if not keep:
        path, why = bad[0]
        raise DatasetError(
            f"no readable image in {split_dir}: all {len(files)} file(s) failed to decode, "
            f"e.g. {path} ({why}). Fix or replace the files."
        )
    shapes = {arr.shape for arr, _ in keep}
    if len(shapes) > 1:
        raise DatasetError(
            f"images in {split_dir} have different sizes {sorted(shapes)[:4]}; set "
            "config.data.image_size to resize them all to one size."
        )
    images = np.stack([arr for arr, _ in keep])
    return images.astype(np.uint8), np.array([label for _, label in keep], np.int32)


def load_folder(
    path: str,
    *,
    image_size: int = 0,
    channels: int = 3,
    cache_dir: str = "",
    strict: bool = False,
    train_split: str = "train",
    test_split: str = "test",
    valid_fraction: float = 0.0,
    seed: int = 0,
    max_examples: int = 0,
    stream: bool | str = False,
    transforms: tuple[Any, Any] | None = None,
    workers: int = -1,
    limit_bytes: int = 2 << 30,
) -> Splits:
    """An ImageFolder tree `path/{train,test}/<class>/*.jpg`, decoded once with PIL into a
    uint8 .npy cache (keyed by the file list, sizes and mtimes) so later runs start at once;
    with `stream` (True, or "auto" when the decoded train split would pass `limit_bytes`)
    the files are read and decoded by the host pipeline instead, with the (train, eval)
    `transforms` in `workers` processes. `max_examples` keeps a fixed random subset of the
    train FILES, chosen before decoding."""
    root = Path(path).expanduser().resolve()
    listings = {s: _list_folder(root / s) for s in (train_split, test_split)}
    if max_examples and len(listings[train_split][1]) > max_examples:
        classes_, files_, ignored_ = listings[train_split]
        keep = subset_indices(len(files_), max_examples, seed)
        listings[train_split] = (classes_, [files_[i] for i in keep], ignored_)
    classes = listings[train_split][0]
    if len(classes) == 1:
        warnings.warn(
            f"{root / train_split} has a single class folder ({classes[0]!r}): every label is 0, "
            "so training reaches accuracy 1.0 without learning anything. Add one folder per "
            "class.",
            stacklevel=2,
        )
    if listings[test_split][0] != classes:
        a, b = set(classes), set(listings[test_split][0])
        raise DatasetError(
            f"train and test class folders differ under {root}: only in {train_split}: "
            f"{sorted(a - b)}, only in {test_split}: {sorted(b - a)}. Both splits need the "
            "same class sub-folders."
        )
    if stream == "auto":
        stream = _decoded_bytes(listings[train_split][1], image_size, channels) > limit_bytes
    if stream:
        from jaxcnn.data.stream import (
            FileExamples,
            LazyImages,
            LoadExample,
            transforms_from_config,
        )

        train_t, eval_t = transforms or transforms_from_config({"image_size": image_size,
                                                                 "channels": channels})
        sources = {}
        for split, (_, files, _) in listings.items():
            examples = FileExamples([(str(f), label) for f, label in files])
            # The files are read while training: decode each split's first one now, so an
            # unreadable split fails here, not after an epoch (DatasetError naming the file).
            LoadExample(examples, eval_t, 0)(0, 0)
            sources[split] = Source({
                "image": LazyImages(examples, train_t, eval_t, workers=workers),
                "label": np.array([label for _, label in files], np.int32)})
        train, valid = _carve_valid(sources[train_split], sources[test_split], valid_fraction,
                                    seed)
        return Splits(root.name, train, valid, sources[test_split], tuple(classes))
    cache_root = Path(cache_dir or Path.home() / ".cache" / "jaxcnn" / "folders").expanduser()
    sources = {}
    for split, (_, files, ignored) in listings.items():
        if ignored:
            warnings.warn(
                f"ignored {len(ignored)} non-image file(s) in {root / split} (not "
                f"{'/'.join(IMAGE_EXTENSIONS)}), e.g. {ignored[0]}",
                stacklevel=2,
            )
        digest = hashlib.sha1()
        # "16bit-scaled": caches decoded before 16-bit images were scaled are not reused.
        digest.update(f"{root}|{split}|{image_size}|{channels}|{strict}|16bit-scaled".encode())
        for f, label in files:
            st = f.stat()
            digest.update(f"{f.name}|{label}|{st.st_size}|{st.st_mtime_ns}".encode())
        cache = cache_root / f"{root.name}-{split}-{digest.hexdigest()[:16]}"
        if (cache / "label.npy").exists():
            images = np.load(cache / "image.npy", mmap_mode="r")
            labels = np.load(cache / "label.npy")
        else:
            images, labels = _decode_split(files, channels, image_size, strict, root / split)
            try:
                tmp = cache.with_name(cache.name + f".tmp{os.getpid()}")
                tmp.mkdir(parents=True, exist_ok=True)
                np.save(tmp / "image.npy", images)
                np.save(tmp / "label.npy", labels)
                (tmp / "classes.json").write_text(json.dumps(classes))
                os.replace(tmp, cache)  # atomic: a killed decode never leaves a half cache
            except OSError as err:
                warnings.warn(f"could not write the decode cache {cache}: {err}", stacklevel=2)
        sources[split] = Source({"image": images, "label": labels})
    train, valid = _carve_valid(sources[train_split], sources[test_split], valid_fraction, seed)
    return Splits(root.name, train, valid, sources[test_split], tuple(classes))


def _decoded_bytes(files: list[tuple[Path, int]], image_size: int, channels: int) -> int:
    """The size of a split decoded to uint8 arrays, from `image_size` or the first image's
    header (whether it fits in memory)."""
    from PIL import Image

    if image_size:
        h = w = image_size
    else:
        try:
            with Image.open(files[0][0]) as img:
                w, h = img.size
        except Exception:  # an unreadable first file: the decode reports it
            return 0
    return len(files) * h * w * channels


# ----------------------------------------------------------------------------- tfds

_MANUAL_HINTS = {
    "imagenet2012": "download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from "
    "https://image-net.org and place them in {manual}",
    "cifar10": "download cifar-10-binary.tar.gz from https://www.cs.toronto.edu/~kriz/ and "
    "place it in {downloads}, or extract CIFAR-10 as JPEG folders and use "
    "--config.data.source=folder --config.data.path=DIR",
    "mnist": "download the four MNIST .gz files and place them in {downloads}",
}


def load_tfds(
    name: str,
    *,
    data_dir: str = "",
    manual_dir: str = "",
    train_split: str = "train",
    test_split: str = "test",
    download: bool = False,
    valid_fraction: float = 0.0,
    seed: int = 0,
    max_examples: int = 0,
    image_size: int = 0,
    lazy: bool = False,
    transforms: tuple[Any, Any] | None = None,
    workers: int = -1,
) -> Splits:
    """A tensorflow-datasets dataset read without TensorFlow through `tfds.data_source`
    (array_record files), materialized as uint8 arrays, or with `lazy` streamed by the host
    pipeline (images left encoded, decoded by the (train, eval) `transforms` in `workers`
    processes). A dataset that is not prepared raises `OfflineError` naming it, the
    directory tried, and how to provide the files."""
    import tensorflow_datasets as tfds

    data_dir = str(Path(data_dir or os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets"))
                   .expanduser())
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as err:
        raise DatasetError(f"tfds has no dataset {name!r} ({err}).") from None
    if not builder.is_prepared():
        manual = manual_dir or os.path.join(data_dir, "downloads", "manual")
        if download:
            try:
                # file_format is download_and_prepare's argument, not DownloadConfig's;
                # array_record is what tfds.data_source reads without TensorFlow.
                builder.download_and_prepare(
                    download_config=tfds.download.DownloadConfig(manual_dir=manual),
                    file_format="array_record",
                )
            except Exception as err:
                raise OfflineError(
                    f"could not download and prepare tfds dataset {name!r} into {data_dir} "
                    f"({type(err).__name__}: {err}). " + _manual_hint(name, data_dir, manual)
                ) from None
        else:
            raise OfflineError(
                f"tfds dataset {name!r} is not prepared in {builder.data_dir!r} (data_dir="
                f"{data_dir!r}) and downloads are off. "
                + _manual_hint(name, data_dir, manual)
                + " Then run with --config.data.download=True (tfds prepares it, in array_record "
                "format, once), or point --config.data.data_dir at a prepared copy."
            )
    sources = {}
    for split in (train_split, test_split):
        try:
            ds = tfds.data_source(name, split=split, data_dir=data_dir, builder_kwargs=None)
        except Exception as err:
            raise DatasetError(
                f"cannot read tfds {name!r} split {split!r} from {data_dir} without TensorFlow "
                f"({type(err).__name__}: {err}). jaxcnn reads tfds through "
                "tfds.data_source, which needs the array_record file format: prepare the "
                "dataset with file_format='array_record', or install the 'tensorflow' extra."
            ) from None
        if lazy:  # large data (ImageNet): decode on demand in the host pipeline
            sources[split] = _streamed_tfds(name, split, data_dir, len(ds), transforms, workers,
                                            labelled="label" in builder.info.features.keys())
            continue
        n = len(ds) if not max_examples else min(len(ds), max_examples)
        examples = [ds[i] for i in range(n)]
        images = [square_resize(np.asarray(e["image"]), image_size) for e in examples]
        arrays = {"image": _to_nhwc_uint8(np.stack(images), name)}
        if "label" in examples[0]:
            arrays["label"] = np.array([e["label"] for e in examples], np.int32)
        sources[split] = Source(arrays)
    names: tuple[str, ...] = ()
    features = builder.info.features  # a FeaturesDict: `in` and [] but no .get
    label = features["label"] if "label" in features.keys() else None
    if label is not None and hasattr(label, "names"):
        names = tuple(label.names)
    train, valid = _carve_valid(sources[train_split], sources[test_split], valid_fraction, seed)
    return Splits(name, train, valid, sources[test_split], names)


def _streamed_tfds(name: str, split: str, data_dir: str, n: int, transforms: Any,
                   workers: int, *, labelled: bool) -> Source:
    """A tfds split read by the host pipeline: a `LazyImages` column (and labels read on
    demand)."""
    from jaxcnn.data.stream import LazyImages, LazyLabels, TfdsExamples, transforms_from_config

    train_t, eval_t = transforms or transforms_from_config({})
    examples = TfdsExamples(name, split, data_dir, length=n)
    columns: dict[str, Any] = {"image": LazyImages(examples, train_t, eval_t, workers=workers)}
    if labelled:
        columns["label"] = LazyLabels(examples)
    return Source(columns)


def _manual_hint(name: str, data_dir: str, manual: str) -> str:
    downloads = os.path.join(data_dir, "downloads")
    hint = _MANUAL_HINTS.get(name, "place the files tfds expects in {manual}")
    return "To provide it manually: " + hint.format(manual=manual, downloads=downloads) + "."


# ----------------------------------------------------------------------------- entry

# More `data.source` backends, registered by their own modules (jaxcnn.data.voc), so this
# module needs not import them: name -> loader(config.data, seed) -> Splits.
_SOURCES: dict[str, Any] = {}


def register_source(name: str, loader: Any) -> None:
    """Make `data.source=name` call `loader(config.data, seed)`, which returns `Splits`."""
    _SOURCES[name] = loader


def load_data(data: Mapping[str, Any], *, seed: int = 0) -> Splits:
    """The dataset named by a `config.data` block (source: digits | npz | folder | tfds)."""
    source = data["source"]
    common = {"valid_fraction": float(data.get("valid_fraction", 0.0))}
    if source == "digits":
        splits = load_digits(int(data.get("image_size") or 32), **common)
    elif source in ("npz", "arrays"):
        splits = load_npz(data["path"], seed=seed, **common)
    elif source == "folder":
        if not data.get("path"):
            raise DatasetError("data.source='folder' needs --config.data.path=DIR.")
        splits = load_folder(
            data["path"], image_size=int(data.get("image_size", 0)),
            channels=int(data.get("channels", 3)), cache_dir=data.get("cache_dir", ""),
            strict=bool(data.get("strict", False)), train_split=data.get("train_split", "train"),
            test_split=data.get("test_split", "test"), seed=seed,
            max_examples=int(data.get("max_examples", 0)),
            stream={"off": True, "on": False}.get(data.get("on_device", "auto"), "auto"),
            transforms=_host_transforms(data), workers=int(data.get("workers", -1)), **common,
        )
    elif source == "tfds":
        splits = load_tfds(
            data["name"], data_dir=data.get("data_dir", ""), manual_dir=data.get("manual_dir", ""),
            train_split=data.get("train_split", "train"), test_split=data.get("test_split", "test"),
            download=bool(data.get("download", False)), seed=seed,
            max_examples=int(data.get("max_examples", 0)),
            image_size=int(data.get("image_size", 0)),
            lazy=data.get("on_device", "auto") == "off", transforms=_host_transforms(data),
            workers=int(data.get("workers", -1)), **common,
        )
    elif source in _SOURCES:
        splits = _SOURCES[source](data, seed)
    else:
        raise DatasetError(
            f"unknown data.source {source!r}; choose digits, npz, folder, tfds or "
            f"{', '.join(sorted(_SOURCES))} (or pass "
            "in-memory arrays to jaxcnn.train.fit(..., data=jaxcnn.data.from_arrays(...)))."
        )
    limit = int(data.get("max_examples", 0))
    if limit and len(splits.train) > limit:
        splits.train = splits.train.subset(subset_indices(len(splits.train), limit, seed))
    return splits


def _host_transforms(data: Mapping[str, Any]) -> tuple[Any, Any]:
    from jaxcnn.data.stream import transforms_from_config

    return transforms_from_config(data)


def subset_indices(n: int, limit: int, seed: int) -> np.ndarray:
    """The `data.max_examples` subset: `limit` of `n` indices, a fixed random choice (folder
    sources are sorted by class, so a prefix would hold only the first classes), sorted."""
    return np.sort(np.random.default_rng([seed, 0xC0DE]).permutation(n)[:limit])
