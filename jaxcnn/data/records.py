"""Record files: an ImageFolder tree (`SRC/{train,test}/<class>/*`) converted once into
sharded ArrayRecord files of the ENCODED image bytes, the label and the file name, plus a
small metadata file (`jaxcnn_records.json`: class names, counts, each split's shards with
their sizes), read back by random access (`RecordSource`) in the host input pipeline.

`prepare` streams (one image in memory per worker), runs shards in parallel processes, and
is resumable: a shard is written under a temporary name and renamed when complete, so a
killed run keeps its finished shards and never takes a half-written one for done; rerunning
the same command finishes the rest. Unreadable files are reported and skipped, as the folder
source does. ArrayRecord (the format of tfds' `data_source` and grain) gives O(1) reads of
any record, which is what a global shuffle needs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxcnn.data.sources import Source, Splits, _carve_valid, _list_folder, register_source
from jaxcnn.errors import DatasetError

METADATA = "jaxcnn_records.json"
FORMAT = "jaxcnn-records"
VERSION = 1
_MAGIC = b"JXR1"
_HEADER = struct.Struct("<4sqH")  # magic, label, length of the UTF-8 file name
_PLAN = ".prepare-plan.json"  # the interrupted run's plan, checked on resume


# ----------------------------------------------------------------------------- one record


def encode_record(image: bytes, label: int, name: str) -> bytes:
    """One record: a 14-byte header (magic, int64 label, name length), the name, the bytes."""
    raw = name.encode("utf-8")
    return _HEADER.pack(_MAGIC, label, len(raw)) + raw + image


def decode_record(record: bytes, where: str = "record") -> tuple[bytes, int, str]:
    """(encoded image bytes, label, file name) of one record; DatasetError if malformed."""
    if len(record) < _HEADER.size or record[:4] != _MAGIC:
        raise DatasetError(
            f"{where} is not a jaxcnn image record (bad header): the shard is corrupt or was "
            "written by another program. Re-run `jaxcnn prepare` for this dataset."
        )
    _, label, n = _HEADER.unpack_from(record)
    end = _HEADER.size + n
    if len(record) < end:
        raise DatasetError(f"{where} is truncated; re-run `jaxcnn prepare` for this dataset.")
    return bytes(record[end:]), int(label), bytes(record[_HEADER.size:end]).decode("utf-8")


# ----------------------------------------------------------------------------- prepare


@dataclasses.dataclass(frozen=True)
class _ShardTask:
    split: str
    index: int
    count: int  # shards in this split
    files: tuple[tuple[str, int], ...]  # (path relative to the source root, label)

    @property
    def relpath(self) -> str:
        return f"{self.split}/{self.split}-{self.index:05d}-of-{self.count:05d}.array_record"


def _check_image(data: bytes) -> str:
    """'' when `data` decodes as an image, else the reason. Decodes JPEGs at 1/8 scale (the
    entropy-coded data is still read whole, so truncation is caught) to save time."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.draft(img.mode, (max(1, img.size[0] // 8), max(1, img.size[1] // 8)))
            img.load()
    except Image.UnidentifiedImageError:
        return "not an image format PIL can read"
    except Exception as err:  # PIL raises many types for truncated or corrupt files
        return f"{type(err).__name__}: {err}"
    return ""


def _write_shard(root: str, out: str, task: _ShardTask) -> dict:
    """Write one shard (temporary name, then an atomic rename) and its sidecar summary."""
    from array_record.python.array_record_module import ArrayRecordWriter

    final = Path(out) / task.relpath
    tmp = final.with_name(final.name + f".tmp-{os.getpid()}")
    skipped, labels = [], []
    writer = ArrayRecordWriter(str(tmp), "group_size:1")
    try:
        for rel, label in task.files:
            try:
                data = (Path(root) / rel).read_bytes()
            except OSError as err:
                skipped.append((rel, f"{type(err).__name__}: {err}"))
                continue
            why = _check_image(data)
            if why:
                skipped.append((rel, why))
                continue
            writer.write(encode_record(data, label, rel))
            labels.append(label)
    finally:
        writer.close()
    summary = {"file": task.relpath, "num_examples": len(labels), "bytes": tmp.stat().st_size,
               "skipped": skipped, "labels": labels}
    side = final.with_name(final.name + ".json")
    side_tmp = side.with_name(side.name + f".tmp-{os.getpid()}")
    side_tmp.write_text(json.dumps(summary))
    os.replace(side_tmp, side)
    os.replace(tmp, final)  # the shard counts as done only from here on
    return summary


def _shard_done(out: Path, task: _ShardTask) -> dict | None:
    final = out / task.relpath
    side = final.with_name(final.name + ".json")
    if not (final.exists() and side.exists()):
        return None
    summary = json.loads(side.read_text())
    if summary.get("bytes") != final.stat().st_size:
        return None  # a shard replaced or truncated since: write it again
    return summary


def _plan(root: Path, splits: Sequence[str], examples_per_shard: int
          ) -> tuple[list[str], list[_ShardTask], dict[str, int], str]:
    listings = {s: _list_folder(root / s) for s in splits}
    classes = listings[splits[0]][0]
    for s in splits[1:]:
        if listings[s][0] != classes:
            a, b = set(classes), set(listings[s][0])
            raise DatasetError(
                f"class folders differ under {root}: only in {splits[0]}: {sorted(a - b)}, "
                f"only in {s}: {sorted(b - a)}. Every split needs the same class sub-folders."
            )
    tasks, totals = [], {}
    digest = hashlib.sha1(f"{examples_per_shard}|{classes}".encode())
    for s in splits:
        files = [(str(p.relative_to(root)), label) for p, label in listings[s][1]]
        totals[s] = len(files)
        count = max(1, -(-len(files) // examples_per_shard))
        for k in range(count):
            chunk = tuple(files[k * examples_per_shard:(k + 1) * examples_per_shard])
            tasks.append(_ShardTask(s, k, count, chunk))
        for rel, label in files:
            digest.update(f"{rel}|{label};".encode())
    return classes, tasks, totals, digest.hexdigest()


def prepare(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    splits: Sequence[str] = ("train", "test"),
    examples_per_shard: int = 2048,
    workers: int = 0,
    name: str = "",
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Convert the ImageFolder tree `src/<split>/<class>/*` into ArrayRecord shards in `out`
    and return the metadata written to `out/jaxcnn_records.json`. workers: processes (0 =
    one per CPU, 1 = this process). Rerun after a kill to finish: done shards are kept."""
    root = Path(src).expanduser().resolve()
    outdir = Path(out).expanduser().resolve()
    if examples_per_shard < 1:
        raise DatasetError(f"examples_per_shard must be >= 1; got {examples_per_shard}.")
    if outdir == root or root in outdir.parents:
        raise DatasetError(f"--out {outdir} is inside the source tree {root}; choose another.")
    classes, tasks, totals, fingerprint = _plan(root, list(splits), examples_per_shard)
    plan = {"source": str(root), "splits": list(splits), "examples_per_shard": examples_per_shard,
            "fingerprint": fingerprint}
    meta_path = outdir / METADATA
    if meta_path.exists():
        existing = json.loads(meta_path.read_text())
        if existing.get("fingerprint") == fingerprint:
            return existing  # already complete
        raise DatasetError(
            f"{outdir} already holds records of {existing.get('source')} (another file list or "
            "shard size); remove it or choose another --out."
        )
    plan_path = outdir / _PLAN
    if plan_path.exists():
        previous = json.loads(plan_path.read_text())
        if previous != plan:
            raise DatasetError(
                f"{outdir} holds an interrupted prepare of {previous.get('source')} with another "
                "file list or shard size (the source changed since?); remove the directory to "
                "start over, or rerun with the same source and settings to finish it."
            )
    for s in splits:
        (outdir / s).mkdir(parents=True, exist_ok=True)
    plan_path.write_text(json.dumps(plan))
    for s in splits:  # half-written shards of a killed run
        for leftover in (outdir / s).glob("*.tmp-*"):
            leftover.unlink(missing_ok=True)
    say = progress or (lambda msg: None)
    summaries: dict[str, dict] = {}
    todo = []
    for task in tasks:
        done = _shard_done(outdir, task)
        if done is None:
            todo.append(task)
        else:
            summaries[task.relpath] = done
    if summaries:
        say(f"resuming: {len(summaries)} of {len(tasks)} shards already written")
    workers = workers or os.cpu_count() or 1
    t0 = time.perf_counter()
    if workers == 1 or len(todo) <= 1:
        for task in todo:
            summaries[task.relpath] = _write_shard(str(root), str(outdir), task)
            say(f"shard done: {task.relpath}")
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        ctx = multiprocessing.get_context("spawn")  # no fork of a process that loaded jax
        with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=ctx) as pool:
            futures = {pool.submit(_write_shard, str(root), str(outdir), t): t for t in todo}
            for fut in as_completed(futures):
                task = futures[fut]
                summaries[task.relpath] = fut.result()
                say(f"shard done: {task.relpath}")
    meta: dict[str, Any] = {
        "format": FORMAT, "version": VERSION, "name": name or root.name, "source": str(root),
        "class_names": list(classes), "fingerprint": fingerprint,
        "examples_per_shard": examples_per_shard, "splits": {},
    }
    skipped_total = []
    for s in splits:
        shards = [summaries[t.relpath] for t in tasks if t.split == s]
        skipped = [item for sh in shards for item in sh["skipped"]]
        skipped_total += [(s, *item) for item in skipped]
        n = sum(sh["num_examples"] for sh in shards)
        if n == 0:
            example = f" e.g. {skipped[0][0]} ({skipped[0][1]})" if skipped else ""
            raise DatasetError(
                f"no readable image in {root / s}: all {totals[s]} file(s) failed to decode"
                f"{example}. Fix or replace the files, then rerun the same command."
            )
        labels = np.array([label for sh in shards for label in sh["labels"]], np.int32)
        np.save(outdir / s / "labels.npy", labels)  # before the metadata marks the run done
        meta["splits"][s] = {
            "num_examples": n, "num_skipped": len(skipped), "skipped": skipped[:100],
            "labels": f"{s}/labels.npy",
            "shards": [{k: sh[k] for k in ("file", "num_examples", "bytes")} for sh in shards],
        }
    tmp = meta_path.with_name(METADATA + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, meta_path)
    for t in tasks:
        side = outdir / (t.relpath + ".json")
        side.unlink(missing_ok=True)
    plan_path.unlink(missing_ok=True)
    meta["seconds"] = time.perf_counter() - t0
    meta["skipped_all"] = skipped_total
    return meta


# ----------------------------------------------------------------------------- read


def read_metadata(path: str | os.PathLike) -> dict:
    """The metadata of a record directory, checked: every shard present with its size."""
    root = Path(path).expanduser()
    meta_path = root / METADATA
    if not meta_path.exists():
        if (root / _PLAN).exists():
            raise DatasetError(
                f"{root} holds an unfinished `jaxcnn prepare` run (it was interrupted): rerun "
                "the same `jaxcnn prepare SRC --out DIR` command to finish it."
            )
        raise DatasetError(
            f"no record directory at {str(root)!r} (no {METADATA}); create one with "
            f"`jaxcnn prepare SRC --out {root}` from an ImageFolder tree SRC/train/<class>/*."
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as err:
        raise DatasetError(f"cannot read {meta_path} ({err}); re-run `jaxcnn prepare`.") from None
    if meta.get("format") != FORMAT:
        raise DatasetError(f"{meta_path} is not a jaxcnn record directory's metadata.")
    for split, info in meta["splits"].items():
        if not (root / info["labels"]).exists():
            raise DatasetError(f"{root / info['labels']} is missing (the labels of split "
                               f"{split!r}); restore it or re-run `jaxcnn prepare`.")
        for shard in info["shards"]:
            f = root / shard["file"]
            if not f.exists():
                raise DatasetError(
                    f"shard {f} of split {split!r} is missing ({len(info['shards'])} shards "
                    "listed in the metadata); restore it or re-run `jaxcnn prepare`."
                )
            size = f.stat().st_size
            if size != shard["bytes"]:
                raise DatasetError(
                    f"shard {f} has {size} bytes but the metadata of {root} records "
                    f"{shard['bytes']}: it is truncated or from another dataset. Re-run "
                    "`jaxcnn prepare` into a fresh directory."
                )
    return meta


class RecordSource:
    """Random access to one split of a record directory: `source[i]` is
    (encoded image bytes, label, file name). Picklable (grain workers reopen the files)."""

    def __init__(self, path: str | os.PathLike, split: str, meta: dict | None = None):
        self.root = Path(path).expanduser().resolve()
        self.meta = meta or read_metadata(self.root)
        if split not in self.meta["splits"]:
            raise DatasetError(
                f"record directory {self.root} has no split {split!r}; it has "
                f"{sorted(self.meta['splits'])}."
            )
        self.split = split
        self.shards = self.meta["splits"][split]["shards"]
        self._starts = [0]
        for shard in self.shards:
            self._starts.append(self._starts[-1] + shard["num_examples"])
        self._source: Any = None
        self._labels: np.ndarray | None = None

    def __len__(self) -> int:
        return self._starts[-1]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_source": None, "_labels": None}

    def _open(self) -> Any:
        if self._source is None:
            from array_record.python.array_record_data_source import ArrayRecordDataSource

            paths = [f"{self.root / s['file']}[0:{s['num_examples']}]" for s in self.shards]
            self._source = ArrayRecordDataSource(paths)
        return self._source

    def where(self, index: int) -> str:
        """'shard FILE, record K' of global record `index` (for error messages)."""
        import bisect

        k = bisect.bisect_right(self._starts, index) - 1
        return f"shard {self.root / self.shards[k]['file']}, record {index - self._starts[k]}"

    def __getitem__(self, index: int) -> tuple[bytes, int, str]:
        try:
            record = self._open()[int(index)]
        except Exception as err:
            raise DatasetError(
                f"cannot read {self.where(int(index))} ({type(err).__name__}: {err}): the shard "
                "is corrupt or truncated. Re-run `jaxcnn prepare` into a fresh directory."
            ) from None
        return decode_record(record, self.where(int(index)))

    @property
    def labels(self) -> np.ndarray:
        """Every record's label, in record order (int32 [N]; from the split's labels.npy)."""
        if self._labels is None:
            path = self.root / self.meta["splits"][self.split]["labels"]
            try:
                labels = np.load(path)
            except (OSError, ValueError) as err:
                raise DatasetError(
                    f"cannot read {path} ({err}); re-run `jaxcnn prepare`.") from None
            if labels.shape != (len(self),):
                raise DatasetError(f"{path} holds {labels.shape} labels for {len(self)} records; "
                                   "re-run `jaxcnn prepare` into a fresh directory.")
            self._labels = labels
        return self._labels

    @property
    def class_names(self) -> tuple[str, ...]:
        """The class names (sorted folder names, the label order)."""
        return tuple(self.meta["class_names"])


def load_records(data: Any, seed: int = 0) -> Splits:
    """`data.source=records`: the record directory `data.path` (from `jaxcnn prepare`),
    streamed by the host pipeline with the config's transforms; `data.name`, when set, must
    be the dataset the directory holds."""
    from jaxcnn.data.stream import LazyImages, RecordExamples, transforms_from_config

    path = data.get("path", "")
    if not path:
        raise DatasetError("data.source='records' needs --config.data.path=DIR (a directory "
                           "written by `jaxcnn prepare SRC --out DIR`).")
    meta = read_metadata(path)
    name = data.get("name", "")
    if name and name != meta["name"]:
        raise DatasetError(
            f"record directory {path} holds dataset {meta['name']!r} (prepared from "
            f"{meta['source']}) but config.data.name is {name!r}: another dataset's records? "
            "Point data.path at the right directory, or clear data.name."
        )
    train_t, eval_t = transforms_from_config(data)
    workers = int(data.get("workers", -1))

    def split(which: str) -> Source:
        records = RecordSource(path, which, meta)
        column = LazyImages(RecordExamples(records), train_t, eval_t, workers=workers)
        return Source({"image": column, "label": records.labels})

    train_split, test_split = data.get("train_split", "train"), data.get("test_split", "test")
    train, test = split(train_split), split(test_split)
    train, valid = _carve_valid(train, test, float(data.get("valid_fraction", 0.0)), seed)
    return Splits(meta["name"], train, valid, test, tuple(meta["class_names"]))


register_source("records", load_records)

__all__ = ["METADATA", "RecordSource", "decode_record", "encode_record", "load_records",
           "prepare", "read_metadata"]
