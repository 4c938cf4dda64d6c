"""A folder of images embedded once, searched many times.

An index is a directory: `meta.json` (what made the embeddings: model, weights, layer, dim,
transform, image root; the committed parts with their image counts; a sha256 of its own
fields) and `part-NNNNN.npz` files (relative paths + float32 embeddings). Each part is
written under a hidden temporary name, renamed, then committed by rewriting meta.json, so an
interrupted `build_index` resumes where it stopped and re-running it embeds only new files.
Any damaged file (garbled meta.json, a missing, truncated or altered part) is a DatasetError
naming it, and `build_index` re-embeds what it held. Unreadable images are skipped and
listed in `skipped.txt`."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from jaxcnn.data.images import list_images, load_image
from jaxcnn.errors import ConfigError, DatasetError, InputError
from jaxcnn.similarity.search import topk

FORMAT = "jaxcnn-similarity-index"
VERSION = 2  # 2: "transform" (was "preprocessing", mean/std on one scale)
# Fields of the embedding description that must agree between an index and its queries.
IDENTITY_KEYS = ("model", "weights", "layer", "dim", "transform")


@dataclasses.dataclass
class Index:
    """Embeddings [N, D] of the images at `root / paths[i]`, and how they were made."""

    root: Path
    paths: list[str]
    embeddings: np.ndarray
    meta: dict[str, Any]

    def __len__(self) -> int:
        return len(self.paths)

    def files(self) -> list[Path]:
        """Absolute paths of the indexed images."""
        return [self.root / p for p in self.paths]


@dataclasses.dataclass
class BuildReport:
    """What one `build_index` run did."""

    added: int
    already: int
    skipped: list[tuple[str, str]]  # (path, reason)
    total: int


_META_KEYS = {"version": int, "root": str, "model": str, "weights": str, "layer": str,
              "dim": int, "transform": dict}  # and "parts": {file: image count}, "sha256"
_PART = re.compile(r"part-(\d{5})\.npz")  # temporary files (".part-...tmp") never match


class IndexDamage(DatasetError):
    """A file of an index that cannot be read: `path` and why. `jaxcnn index` rebuilds it."""

    def __init__(self, path: Path, why: str):
        self.path = path
        super().__init__(
            f"the similarity index file {path} is damaged: {why}. Run `jaxcnn index` with the "
            f"same --out ({path.parent}) to re-embed what it held."
        )


def _read_meta(index_dir: Path) -> dict[str, Any] | None:
    """meta.json of an index (None when absent); a damaged one is an IndexDamage naming it."""
    path = index_dir / "meta.json"
    if not path.exists():
        return None
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise IndexDamage(path, f"it is not readable JSON ({err})") from None
    if not isinstance(meta, dict):
        raise IndexDamage(path, f"it holds a JSON {type(meta).__name__}, not an object")
    if "sha256" in meta and meta["sha256"] != _meta_digest(meta):
        # A changed byte can leave valid JSON with another root, dim or format: never trust it.
        raise IndexDamage(path, "its content does not match the sha256 written with it")
    if meta.get("format") != FORMAT:
        raise ConfigError(f"{index_dir} is not a jaxcnn similarity index (meta.json format "
                          f"{meta.get('format')!r}).")
    if isinstance(meta.get("version"), int) and meta["version"] != VERSION:
        raise ConfigError(f"{index_dir} was built by another jaxcnn version (index format "
                          f"{meta.get('version')}, this one reads {VERSION}); build it again "
                          "with `jaxcnn index` into a new --out.")
    bad = [k for k, t in _META_KEYS.items() if not isinstance(meta.get(k), t)
           or isinstance(meta.get(k), bool)]
    if bad:
        raise IndexDamage(path, f"the keys {bad} are missing or of the wrong type")
    parts = meta.get("parts", {})
    if not isinstance(parts, dict) or not all(
            isinstance(k, str) and _PART.fullmatch(k) and isinstance(v, int) and v > 0
            for k, v in parts.items()):
        raise IndexDamage(path, f"its list of parts is malformed ({str(parts)[:80]})")
    return meta


def _meta_digest(meta: dict[str, Any]) -> str:
    """sha256 of meta.json's fields (all but "sha256"), in canonical JSON."""
    body = {k: v for k, v in meta.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def check_compatible(index_meta: dict[str, Any], embedder: dict[str, Any], where: str) -> None:
    """Raise ConfigError unless `embedder` (FeatureExtractor.describe()) made `index_meta`."""
    diffs = [k for k in IDENTITY_KEYS if _norm(index_meta.get(k)) != _norm(embedder.get(k))]
    if diffs:
        have = ", ".join(f"{k}={index_meta.get(k)!r}" for k in diffs)
        want = ", ".join(f"{k}={embedder.get(k)!r}" for k in diffs)
        raise ConfigError(
            f"{where} was built with {have} but the embeddings requested use {want}. "
            f"Embeddings from different models, weights or layers are not comparable: search "
            f"with --model {index_meta.get('model')} --weights "
            f"{index_meta.get('weights') or '(none)'} --layer {index_meta.get('layer')} (the "
            "default: taken from the index), or build a new index with the other model."
        )


def _norm(value: Any) -> Any:
    return json.loads(json.dumps(value))  # tuples vs lists compare equal


def _part_files(index_dir: Path) -> list[Path]:
    """Every committed-looking part file on disk, in order."""
    return sorted(p for p in index_dir.glob("part-*.npz") if _PART.fullmatch(p.name))


def _parts(index_dir: Path, meta: dict[str, Any]) -> list[tuple[Path, int | None]]:
    """(file, image count) of the parts meta.json lists (indexes written before the list:
    every part file on disk, counts unknown). A part file meta.json does not list was never
    committed (its writer died before updating meta.json) and is not read."""
    if "parts" not in meta:
        return [(p, None) for p in _part_files(index_dir)]
    return [(index_dir / name, n) for name, n in sorted(meta["parts"].items())]


def _read_part(part: Path, dim: int, count: int | None = None
               ) -> tuple[list[str], np.ndarray]:
    """(paths, float32 embeddings [n, dim]) of one part; IndexDamage if it is missing,
    unreadable, truncated (zip CRCs cover its bytes) or inconsistent with meta.json."""
    if not part.is_file():
        raise IndexDamage(part, "meta.json lists it but the file is missing")
    try:
        # The file is ours to close: np.load leaks its handle when the zip is unreadable.
        with open(part, "rb") as f, np.load(f, allow_pickle=False) as z:
            paths = [str(p) for p in z["paths"]]
            emb = np.asarray(z["embeddings"], np.float32)
    except Exception as err:  # BadZipFile, EOFError, KeyError, ValueError, zlib.error, ...
        raise IndexDamage(part, f"{type(err).__name__}: {err}") from None
    if emb.ndim != 2 or emb.shape != (len(paths), dim):
        raise IndexDamage(part, f"it holds {len(paths)} paths and embeddings of shape "
                                f"{emb.shape}, expected [{len(paths)}, {dim}]")
    if count is not None and len(paths) != count:
        raise IndexDamage(part, f"it holds {len(paths)} images, meta.json lists {count}")
    if not np.isfinite(emb).all():
        raise IndexDamage(part, "its embeddings hold NaN or inf")
    return paths, emb


def load_index(index_dir: str | os.PathLike) -> Index:
    """Read an index written by `build_index`; a damaged file is a DatasetError naming it."""
    index_dir = Path(index_dir)
    meta = _read_meta(index_dir)
    if meta is None:
        raise DatasetError(
            f"no index at {str(index_dir)!r} (meta.json missing); build one with "
            f"`jaxcnn index DIR --out {index_dir}`."
        )
    paths: list[str] = []
    chunks = []
    for part, count in _parts(index_dir, meta):
        names, emb = _read_part(part, int(meta["dim"]), count)
        paths.extend(names)
        chunks.append(emb)
    emb = np.concatenate(chunks) if chunks else np.zeros((0, int(meta["dim"])), np.float32)
    return Index(Path(meta["root"]), paths, emb, meta)


def _salvage(out: Path, meta: dict[str, Any]) -> set[str]:
    """The images already embedded in the index `out`. Damaged parts are dropped from
    meta.json and deleted (with a warning naming each) so that their images are embedded
    again; part files meta.json does not list (never committed) are deleted."""
    done: set[str] = set()
    good: dict[str, int] = {}
    for part, count in _parts(out, meta):
        try:
            names = _read_part(part, int(meta["dim"]), count)[0]
        except IndexDamage as err:
            warnings.warn(f"{err} Removing it and re-embedding its images.", stacklevel=3)
            part.unlink(missing_ok=True)
            continue
        done.update(names)
        good[part.name] = len(names)
    for stray in set(_part_files(out)) - {out / name for name in good}:
        stray.unlink()
    if meta.get("parts", good) != good:
        _write_meta(out, {**meta, "parts": good})
    meta["parts"] = good
    return done


def _write_meta(out: Path, meta: dict[str, Any]) -> None:
    meta = {k: v for k, v in meta.items() if k != "sha256"}
    _atomic_write(out / "meta.json", json.dumps({**meta, "sha256": _meta_digest(meta)},
                                                indent=2).encode())


def _remove_stale_temporaries(out: Path) -> None:
    """Temporary files of writers that died (their pid is gone)."""
    for tmp in [*out.glob(".*.tmp*"), *out.glob("part-*.tmp*.npz")]:  # (older jaxcnn's)
        pid = tmp.name.rsplit(".tmp", 1)[-1].removesuffix(".npz")
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def build_index(
    directory: str | os.PathLike,
    out: str | os.PathLike,
    embedder: Callable[[list[Any]], np.ndarray] | Any,
    *,
    chunk_size: int = 256,
    progress: bool = True,
) -> BuildReport:
    """Embed every image under `directory` into the index `out` with `embedder` (a
    FeatureExtractor or PixelExtractor), skipping files already in the index. Returns counts
    and the unreadable files (also written to `out/skipped.txt`)."""
    from tqdm import tqdm

    if not isinstance(chunk_size, int | np.integer) or isinstance(chunk_size, bool) or (
            chunk_size < 1):
        raise InputError(f"chunk_size (--chunk-size) must be a positive number of images; got "
                         f"{chunk_size!r}.")
    root = Path(directory).resolve()
    out = Path(out)
    files = list_images(root)
    description = embedder.describe()
    _remove_stale_temporaries(out)
    try:
        meta = _read_meta(out)
    except IndexDamage as err:
        # Which model made the parts is unknown now: none of them can be trusted.
        warnings.warn(f"{err} Rebuilding the whole index.", stacklevel=2)
        for part in _part_files(out):
            part.unlink()
        meta = None
    if meta is not None:
        check_compatible(meta, description, f"the index {out}")
        if Path(meta["root"]) != root:
            raise ConfigError(
                f"the index {out} holds images of {meta['root']}, not {root}; use another --out."
            )
        done = _salvage(out, meta)
    else:
        out.mkdir(parents=True, exist_ok=True)
        for stale in _part_files(out):  # left by an index whose meta.json is gone
            stale.unlink()
        meta = {"format": FORMAT, "version": VERSION, "root": str(root), **description,
                "parts": {}}
        _write_meta(out, meta)
        done = set()
    todo = [f for f in files if f.relative_to(root).as_posix() not in done]
    numbers = [int(_PART.fullmatch(name).group(1)) for name in meta["parts"]]
    next_part = max(numbers) + 1 if numbers else 0
    skipped: list[tuple[str, str]] = []
    added = 0
    bar = tqdm(total=len(todo), desc=f"embedding {root.name}", unit="img", disable=not progress,
               file=sys.stderr)
    for start in range(0, len(todo), chunk_size):
        images, names = [], []
        for f in todo[start:start + chunk_size]:
            try:
                images.append(load_image(f))
                names.append(f.relative_to(root).as_posix())
            except (DatasetError, InputError) as err:
                skipped.append((str(f), str(err)))
        if images:
            emb = np.asarray(embedder(images), np.float32)
            name = f"part-{next_part:05d}.npz"
            _atomic_savez(out / name, paths=np.array(names), embeddings=emb)
            meta["parts"][name] = len(names)
            _write_meta(out, meta)  # the commit: a part meta.json does not list is not read
            next_part += 1
            added += len(names)
        bar.update(len(todo[start:start + chunk_size]))
    bar.close()
    _atomic_write(out / "skipped.txt",
                  "".join(f"{p}\t{why}\n" for p, why in skipped).encode())
    return BuildReport(added=added, already=len(done), skipped=skipped, total=len(done) + added)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    # A hidden temporary name that never matches part-*.npz: a writer killed mid-save
    # leaves nothing that `load_index` reads.
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    _atomic_write(path, buf.getvalue())


def search(index: Index, query_embeddings: np.ndarray, k: int = 5, metric: str = "cosine"
           ) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, indices) of each query embedding [Q, D] among the index's images."""
    if len(index) == 0:
        raise DatasetError("the index is empty: no image could be embedded.")
    scores, idx = topk(np.asarray(query_embeddings, np.float32), index.embeddings, k, metric)
    return np.asarray(scores), np.asarray(idx)
