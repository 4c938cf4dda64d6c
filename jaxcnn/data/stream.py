"""The host input pipeline on grain: decode + augment on the host, in worker processes, for
data that does not fit on the device (the Flax ImageNet example's `input_pipeline.py` role).

- A random-access example source: ArrayRecord shards from `jaxcnn prepare`
  (`records.RecordSource`), a tfds dataset prepared in array_record format
  (`tfds.data_source`, images left encoded), files of an image folder, or an in-memory
  `Source`.
- The training order is the on-device path's `epoch_permutation(seed, epoch, n)`: a pure
  function of (seed, epoch), so the batch of any step is known without reading earlier ones.
  Each process reads only its rows of every global batch (rows [p * B/P, (p + 1) * B/P)), and
  the augmentation of an example draws from a generator seeded by (seed, epoch, index): the
  global batch is the same for any number of processes or worker processes.
- One grain `MapDataset` spans all training steps (`source -> batch -> to_iter_dataset ->
  mp_prefetch`), so worker processes live for the whole run; its iterator state goes into
  the checkpoint and restores the stream exactly (`state_for_step` rebuilds it for another
  worker count).
- Batches leave as uint8 (normalized on the device, inside the compiled step). Tiny images
  (CIFAR's 32x32) decode faster than a worker process can ship them, so `workers=-1`
  (auto) measures a batch and keeps small work in the main process (a plain loop)."""

from __future__ import annotations

import dataclasses
import functools
import os
import random
import time
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np

from jaxcnn.data.order import epoch_permutation
from jaxcnn.data.transforms import IMAGENET_RATIO, IMAGENET_SCALE, ImageTransform
from jaxcnn.errors import DatasetError

_M64 = (1 << 64) - 1


def _key(seed: int, epoch: int, index: int) -> int:
    """One integer that seeds example `index`'s augmentation in `epoch`: distinct for every
    (seed, epoch, index), the same in any process or worker (Mersenne Twister's seeding by
    an int is a fixed function of its 32-bit words)."""
    return ((seed & _M64) << 128) | ((epoch & _M64) << 64) | (index & _M64)


class ExampleSource(Protocol):
    """Random access to examples: `source[i]` is a dict with "image" (encoded bytes or a
    uint8 array) and, for labelled data, "label"; `describe(i)` names example i."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict[str, Any]: ...

    def describe(self, index: int) -> str: ...


@dataclasses.dataclass
class RecordExamples:
    """One split of a `jaxcnn prepare` record directory."""

    records: Any  # records.RecordSource

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        data, label, _ = self.records[index]
        return {"image": data, "label": label}

    def describe(self, index: int) -> str:
        try:
            name = f"{self.records[index][2]!r} "
        except DatasetError:
            name = ""
        return f"image {name}({self.records.where(index)})"


@dataclasses.dataclass
class FileExamples:
    """Image files with their labels (an ImageFolder listing), read when indexed."""

    files: Sequence[tuple[str, int]]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path, label = self.files[index]
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as err:
            raise DatasetError(f"cannot read image file {path} ({err.strerror or err}).") from None
        return {"image": data, "label": label}

    def describe(self, index: int) -> str:
        return f"image file {self.files[index][0]}"


@dataclasses.dataclass
class TfdsExamples:
    """A tfds split read through `tfds.data_source` (array_record files, no TensorFlow) with
    the images left encoded, so they are decoded (at reduced size) by our transform."""

    name: str
    split: str
    data_dir: str
    length: int = 0

    def __post_init__(self) -> None:
        self._ds: Any = None
        self.length = self.length or len(self._open())

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_ds": None}

    def _open(self) -> Any:
        if self._ds is None:
            import tensorflow_datasets as tfds

            self._ds = tfds.data_source(self.name, split=self.split, data_dir=self.data_dir,
                                        decoders={"image": tfds.decode.SkipDecoding()})
        return self._ds

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        example = self._open()[int(index)]
        out = {"image": example["image"]}
        if "label" in example:
            out["label"] = int(example["label"])
        return out

    def describe(self, index: int) -> str:
        return f"tfds {self.name} {self.split} example {index} (in {self.data_dir})"


@dataclasses.dataclass
class ArrayExamples:
    """An in-memory (or memory-mapped) `Source`: image and label arrays. Read in the main
    process (workers=0): shipping the arrays to worker processes would copy them."""

    arrays: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.arrays["image"])

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {k: np.asarray(v[index]) for k, v in self.arrays.items()}

    def describe(self, index: int) -> str:
        return f"example {index}"


@functools.lru_cache(maxsize=2)
def _epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    # The on-device path's order, so both paths give the same batches; cached per worker
    # (a permutation of ImageNet's 1.28 M indices takes ~30 ms).
    return epoch_permutation(seed, epoch, n)


@dataclasses.dataclass(frozen=True)
class Layout:
    """How global batches are cut: global `batch_size`, this process's rows, the epoch."""

    n: int  # examples in the split
    batch_size: int  # global batch
    process_index: int = 0
    process_count: int = 1

    @property
    def per_process(self) -> int:
        """Rows of each global batch that this process reads."""
        return self.batch_size // self.process_count

    @property
    def offset(self) -> int:
        """First row of this process in each global batch."""
        return self.process_index * self.per_process

    @property
    def steps_per_epoch(self) -> int:
        """Full global batches per epoch (the last partial one is dropped)."""
        return self.n // self.batch_size


@dataclasses.dataclass(frozen=True)
class LoadExample:
    """Read + transform example `index` of `epoch` (runs in the worker processes)."""

    source: Any
    transform: ImageTransform
    seed: int

    def __call__(self, index: int, epoch: int) -> dict[str, np.ndarray]:
        example = self.source[index]
        rng = random.Random(_key(self.seed, epoch, index)) if self.transform.randomized else None
        try:
            image = self.transform(example["image"], rng)
        except Exception as err:
            raise DatasetError(
                f"cannot decode {self.source.describe(index)} ({type(err).__name__}: {err}). "
                "Remove or replace the file; `jaxcnn prepare` reports and skips unreadable "
                "files before training."
            ) from None
        out = {"image": image}
        if "label" in example:
            out["label"] = np.int32(example["label"])
        return out


@dataclasses.dataclass(frozen=True)
class TrainRows:
    """This process's training examples in order, as a grain random-access source: position
    j is row (offset + j % per) of global batch j // per, over all epochs."""

    load: LoadExample
    layout: Layout
    num_steps: int

    def __len__(self) -> int:
        return self.num_steps * self.layout.per_process

    def __getitem__(self, j: int) -> dict[str, np.ndarray]:
        lay = self.layout
        step, row = divmod(int(j), lay.per_process)
        epoch, pos = divmod(step, lay.steps_per_epoch)
        order = _epoch_order(self.load.seed, epoch, lay.n)
        return self.load(int(order[pos * lay.batch_size + lay.offset + row]), epoch)


@dataclasses.dataclass(frozen=True)
class EvalRows:
    """This process's rows of the evaluation batches: the whole split in order, the last
    global batch padded with copies of the last example that carry weight 0."""

    load: LoadExample
    layout: Layout

    @property
    def num_batches(self) -> int:
        """Global batches per pass (the last one padded)."""
        return -(-self.layout.n // self.layout.batch_size)

    def __len__(self) -> int:
        return self.num_batches * self.layout.per_process

    def __getitem__(self, j: int) -> dict[str, np.ndarray]:
        lay = self.layout
        k, row = divmod(int(j), lay.per_process)
        pos = k * lay.batch_size + lay.offset + row
        out = self.load(min(pos, lay.n - 1), 0)
        out["weight"] = np.float32(pos < lay.n)
        return out


@dataclasses.dataclass(frozen=True)
class Stack:
    """grain's batch function: stack examples into one array per key, checking that the
    images agree in size; in a worker process, straight into shared memory, so the batch
    crosses to the main process without another copy."""

    shared_memory: bool = False

    def __call__(self, examples: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        shapes = {e["image"].shape for e in examples}
        if len(shapes) > 1:
            raise DatasetError(
                f"images of one batch have different sizes {sorted(shapes)[:4]}; set "
                "config.data.image_size (and data.eval_resize) so every image is cropped or "
                "resized to one size."
            )
        out = {}
        for key in examples[0]:
            first = np.asarray(examples[0][key])
            buffer = _shared_array((len(examples), *first.shape), first.dtype) \
                if self.shared_memory else None
            out[key] = np.stack([e[key] for e in examples], out=buffer)
        return out


def _shared_array(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray | None:
    try:  # grain's own shared-memory array (what its workers copy batches into otherwise)
        from grain._src.python.ipc.shared_memory_array import SharedMemoryArray
    except ImportError:
        return None
    return SharedMemoryArray(shape, dtype=dtype)


def _flush_shared_memory() -> None:
    """Wait until grain has unlinked the shared memory of the batches dropped so far: it
    unlinks on a background thread, which the interpreter's exit would cut short (the
    segments would then be reported as leaked by multiprocessing's resource tracker)."""
    import gc

    gc.collect()
    try:
        from grain._src.python.ipc.shared_memory_array import SharedMemoryArray

        pool = SharedMemoryArray._del_thread_pool
        if pool is not None:  # one thread, first in first out: this runs after them all
            pool.apply_async(int).wait(5.0)
    except Exception:  # grain internals moved: nothing to wait for
        pass


@functools.cache
def _flush_at_exit() -> None:
    import atexit

    atexit.register(_flush_shared_memory)


def state_for_position(position: int, workers: int) -> dict:
    """grain's iterator state of `source -> batch -> to_iter_dataset -> mp_prefetch(workers)`
    after `position` batches: worker i serves batches i, i + W, ... round-robin. Lets a run
    resume with another worker count than the one that saved it."""
    if workers == 0:
        return {"next_index": position}
    return {
        "next_index_in_cycle": position % workers,
        "next_index_in_datasets": workers,
        "iterators_in_use_indices": list(range(workers)),
        "iterators_in_use_states": [{"next_index": (position - i + workers - 1) // workers}
                                    for i in range(workers)],
        "exhausted": [0] * workers,
        "future_states": {},
    }


def position_of_state(state: dict) -> int:
    """The number of batches an iterator with grain state `state` has produced."""
    if "next_index" in state:
        return int(state["next_index"])
    return int(sum(s["next_index"] for s in state["iterators_in_use_states"]))


def exit_with_parent(worker_index: int = 0, worker_count: int = 0, *, parent: int,
                     poll: float = 1.0) -> None:
    """grain `worker_init_fn` (bound to the training process's pid, `parent`): end this worker
    process when that process dies (a `kill -9` of the training run gives its workers no
    goodbye; they would otherwise live on, each holding its memory and shared-memory
    batches). A daemon thread exits as soon as the worker has another parent, also when the
    parent died before this worker finished starting."""
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll)
        os._exit(1)

    threading.Thread(target=watch, name="jaxcnn-exit-with-parent", daemon=True).start()


def _ensure_absl_flags() -> None:
    # grain reads absl flags in its worker set-up; outside an absl app they are unparsed.
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


class BatchStream:
    """An iterator of this process's local batches (dicts of numpy arrays) over a grain
    dataset of batches, starting at a checkpointable position."""

    def __init__(self, rows: TrainRows | EvalRows, *, workers: int, buffer_size: int = 2,
                 repeat: bool = False):
        import grain

        self.rows = rows
        self.workers = workers
        per = rows.layout.per_process
        ds = grain.MapDataset.source(rows).batch(per, drop_remainder=True,
                                                  batch_fn=Stack(shared_memory=workers > 0))
        if repeat:
            ds = ds.repeat()
        self.num_batches = len(rows) // per
        it = ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
        if workers:
            _ensure_absl_flags()
            _flush_at_exit()
            it = it.mp_prefetch(grain.MultiprocessingOptions(
                num_workers=workers, per_worker_buffer_size=buffer_size),
                worker_init_fn=functools.partial(exit_with_parent, parent=os.getpid()))
        self.dataset = it
        self._it: Any = None

    @property
    def iterator(self) -> Any:
        """The grain DatasetIterator (created on first use)."""
        if self._it is None:
            self._it = iter(self.dataset)
        return self._it

    def get_state(self) -> dict:
        """grain's iterator state (JSON-serializable)."""
        return self.iterator.get_state()

    def set_state(self, state: dict) -> None:
        """Continue from a saved state; one saved with another worker count is translated."""
        same = (len(state.get("iterators_in_use_states", ())) == self.workers if self.workers
                else "next_index" in state)
        if not same:
            state = state_for_position(position_of_state(state), self.workers)
        self.iterator.set_state(state)

    def seek(self, position: int) -> None:
        """Continue from batch `position`."""
        self.set_state(state_for_position(position, self.workers))

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        try:
            batch = next(self.iterator)
        except StopIteration:
            raise
        except DatasetError:
            raise
        except RuntimeError as err:
            if "terminated unexpectedly" in str(err) or "Worker" in str(err):
                raise DatasetError(
                    f"an input worker process died ({err}). A negative exit code is the "
                    "signal that killed it (-9: SIGKILL, often the out-of-memory killer): lower "
                    "config.data.workers or the batch size."
                ) from None
            raise
        return batch  # from worker processes: arrays in shared memory, freed when dropped

    def close(self) -> None:
        """Stop the worker processes."""
        if self._it is not None and hasattr(self._it, "close"):
            self._it.close()
        self._it = None


class _Subset:
    """Examples `index` of an example source (a carved validation split, max_examples)."""

    def __init__(self, examples: Any, index: np.ndarray):
        self.examples, self.index = examples, np.asarray(index)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.examples[int(self.index[i])]

    def describe(self, i: int) -> str:
        return self.examples.describe(int(self.index[i]))


class LazyImages:
    """The "image" column of a streamed split: a `Source` column whose pixels are decoded on
    demand. Indexing decodes with the eval transform here (a few examples: shapes, init);
    the host pipeline (`jaxcnn.data.pipeline.StreamData`) reads `examples` with the `train`
    or `eval` transform in grain's worker processes. workers: -1 = auto (`auto_workers`)."""

    dtype = np.dtype(np.uint8)

    def __init__(self, examples: Any, train: ImageTransform, eval: ImageTransform, *,
                 workers: int = -1):
        self.examples, self.train, self.eval, self.workers = examples, train, eval, workers
        self._shape: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def shape(self) -> tuple[int, ...]:
        """(N, H, W, C) of the decoded split (the eval transform's output)."""
        if self._shape is None:
            size, channels = self.eval.size, self.eval.channels
            hw = (size, size) if size else self[np.arange(1)].shape[1:3]
            self._shape = (len(self), *hw, channels)
        return self._shape

    @property
    def nbytes(self) -> int:
        """Bytes the decoded split would take (why it is streamed)."""
        return int(np.prod(self.shape))

    def __getitem__(self, indices: Any) -> np.ndarray:
        idx = np.atleast_1d(np.arange(len(self))[indices])
        load = LoadExample(self.examples, self.eval, 0)
        return _stack_images([load(int(i), 0)["image"] for i in idx])

    def subset(self, indices: np.ndarray) -> LazyImages:
        """The column of examples `indices` (still streamed)."""
        return LazyImages(_Subset(self.examples, indices), self.train, self.eval,
                          workers=self.workers)


class LazyLabels:
    """The "label" column of a streamed split whose labels are not stored apart (tfds):
    read from the examples when indexed."""

    ndim = 1
    dtype = np.dtype(np.int32)

    def __init__(self, examples: Any):
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def shape(self) -> tuple[int]:
        """(N,)."""
        return (len(self),)

    @property
    def nbytes(self) -> int:
        """4 bytes a label."""
        return 4 * len(self)

    def __getitem__(self, indices: Any) -> np.ndarray:
        idx = np.arange(len(self))[indices]
        return np.array([self.examples[int(i)]["label"] for i in np.atleast_1d(idx)],
                        np.int32).reshape(np.shape(idx))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:]
        return out.astype(dtype) if dtype is not None else out

    def subset(self, indices: np.ndarray) -> LazyLabels:
        """The labels of examples `indices`."""
        return LazyLabels(_Subset(self.examples, indices))


def _stack_images(images: list[np.ndarray]) -> np.ndarray:
    return Stack()([{"image": im} for im in images])["image"]


def transforms_from_config(data: Any) -> tuple[ImageTransform, ImageTransform]:
    """(train, eval) host transforms of a `config.data` block. Training: RandomResizedCrop
    to `resized_crop` (scale `resized_crop_scale`, torchvision's ratio 3/4-4/3), or
    Resize(eval_resize) + CenterCrop(image_size) and a padded random crop (`crop_padding`);
    then a flip (`flip`). Evaluation: Resize(eval_resize) + CenterCrop of the output side
    (resized_crop or image_size; 0 keeps the decoded size)."""
    get = data.get
    resized = int(get("resized_crop", 0))
    size = resized or int(get("image_size", 0))
    common = {"size": size, "channels": int(get("channels", 3)),
              "resize": int(get("eval_resize", 0)), "draft": bool(get("jpeg_draft", True))}
    train = ImageTransform(
        train=True, random_resized_crop=resized > 0,
        scale=tuple(get("resized_crop_scale", IMAGENET_SCALE)), ratio=IMAGENET_RATIO,
        crop_padding=int(get("crop_padding", 0)), flip=bool(get("flip", False)), **common)
    return train, ImageTransform(**common)


def auto_workers(rows: TrainRows | EvalRows, max_workers: int) -> int:
    """0 (a plain loop in this process) when a batch is cheap to make, else `max_workers`.
    Worker processes pay a fixed start-up and a copy of every batch; they win once a batch
    costs more than a few milliseconds (decoding photos), not for tiny images."""
    per = rows.layout.per_process
    take = min(per, 16)
    t0 = time.perf_counter()
    for j in range(take):
        rows[j]
    per_batch = (time.perf_counter() - t0) / take * per
    return 0 if per_batch < 0.02 or max_workers <= 0 else max_workers


__all__ = [
    "ArrayExamples",
    "BatchStream",
    "EvalRows",
    "ExampleSource",
    "FileExamples",
    "LazyImages",
    "LazyLabels",
    "Layout",
    "LoadExample",
    "RecordExamples",
    "TfdsExamples",
    "TrainRows",
    "auto_workers",
    "position_of_state",
    "state_for_position",
    "transforms_from_config",
]
