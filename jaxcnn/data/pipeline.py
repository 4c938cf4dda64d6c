"""Batches for the compiled step: the epoch order as a pure function of (seed, epoch), a
1-D "data" mesh over all devices, per-process shards via
`jax.make_array_from_process_local_data`, an on-device dataset for small data and a
prefetching host stream for large data. Both yield the same batches, so a run resumed at
(epoch, step-in-epoch) sees exactly the examples an uninterrupted run would."""

from __future__ import annotations

import os
import queue
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxcnn.data.order import epoch_permutation, steps_per_epoch, train_indices
from jaxcnn.data.sources import Source
from jaxcnn.errors import ConfigError, InputError

DATA_AXIS = "data"


def make_mesh(devices: Any = None) -> Mesh:
    """A 1-D mesh named "data" over `devices` (default: all devices of all processes): the
    one mesh of training, feature extraction and search. Anything but a non-empty list of
    jax devices is an InputError."""
    if devices is None:
        devices = jax.devices()
    try:
        devices = list(devices)
    except TypeError:
        raise InputError(f"devices must be a list of jax devices; got {devices!r}.") from None
    if not devices:
        raise InputError("devices=[] leaves nothing to compute on; pass devices=None for all "
                         "of jax.devices(), or a non-empty list of them.")
    if not all(isinstance(d, jax.Device) for d in devices):
        raise InputError(f"devices must be jax devices (from jax.devices()); got {devices!r}.")
    return Mesh(np.array(devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the "data" axis, the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (the train state)."""
    return NamedSharding(mesh, PartitionSpec())


def check_batch_size(batch_size: int, mesh: Mesh, what: str = "data.batch_size") -> None:
    """Raise ConfigError unless the global batch splits evenly over devices and processes."""
    n = mesh.devices.size
    if batch_size <= 0 or batch_size % n or batch_size % jax.process_count():
        raise ConfigError(
            f"{what}={batch_size} must be a positive multiple of the number of devices "
            f"({n}) so every device gets the same share; use e.g. {max(n, batch_size // n * n)}"
            + (" (on the CPU the device count is XLA_FLAGS' "
               "--xla_force_host_platform_device_count or JAX_NUM_CPU_DEVICES)."
               if mesh.devices.flat[0].platform == "cpu" else ".")
        )


def process_slice(global_batch: int) -> slice:
    """The rows of a global batch that this process reads and feeds."""
    per = global_batch // jax.process_count()
    return slice(jax.process_index() * per, (jax.process_index() + 1) * per)


def shard_batch(local: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """Assemble global arrays from this process's rows (`make_array_from_process_local_data`)."""
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
            for k, v in local.items()}


class OnDeviceData:
    """A split stored once on the devices (replicated); a batch is a jitted gather of
    global indices whose output is sharded over "data", so only indices cross the host."""

    def __init__(self, source: Source, mesh: Mesh):
        self.mesh = mesh
        self.arrays = jax.device_put(source.arrays, replicated(mesh))
        self._gather = jax.jit(
            lambda arrays, idx: {k: v[idx] for k, v in arrays.items()},
            out_shardings=batch_sharding(mesh),
        )

    def batch(self, indices: np.ndarray) -> dict[str, jax.Array]:
        """The batch at `indices` (the same on every process), sharded over "data"."""
        idx = jax.device_put(np.asarray(indices, np.int32), replicated(self.mesh))
        return self._gather(self.arrays, idx)


class HostData:
    """A split read from host memory (or memory-mapped .npy): each process takes its own
    rows of every global batch and feeds them with `make_array_from_process_local_data`."""

    def __init__(self, source: Source, mesh: Mesh):
        self.source = source
        self.mesh = mesh
        self.sharding = batch_sharding(mesh)

    def batch(self, indices: np.ndarray) -> dict[str, jax.Array]:
        """The batch at global `indices`, sharded over "data"."""
        local = np.asarray(indices)[process_slice(len(indices))]
        return shard_batch(self.source.take(local), self.sharding)


_ENDLESS = 1 << 40  # steps of the training stream: it outlasts any run, whatever num_epochs


class StreamData:
    """A streamed split (its "image" column a `stream.LazyImages`): batches made by the grain
    host pipeline (read, decode and augment in worker processes; `jaxcnn.data.stream`),
    this process's rows of every global batch, sharded over "data". Training reads one
    stream over all steps of the run; `consumed` is its grain state after the last batch
    handed to the loop, which the checkpoint saves and `restore` resumes exactly."""

    def __init__(self, source: Source, mesh: Mesh):
        self.column = source.arrays["image"]
        self.mesh = mesh
        self.sharding = batch_sharding(mesh)
        self.consumed: dict = {"position": 0, "grain": None}
        self._train_key: tuple[int, int] | None = None  # (seed, batch_size) of _train
        self._train: Any = None  # the training BatchStream
        self._position = 0  # batches _train has handed out
        self._eval_size = 0
        self._eval: Any = None  # the evaluation BatchStream (repeating)
        self._ahead: weakref.WeakSet[Prefetch] = weakref.WeakSet()  # threads reading ahead

    def _layout(self, batch_size: int) -> Any:
        from jaxcnn.data.stream import Layout

        return Layout(len(self.column), batch_size, jax.process_index(), jax.process_count())

    def _workers(self, rows: Any) -> int:
        from jaxcnn.data.stream import auto_workers

        if self.column.workers >= 0:
            return self.column.workers
        return auto_workers(rows, max_workers=max(1, min(16, (os.cpu_count() or 2) - 1)))

    def train_rows(self, seed: int, batch_size: int) -> Any:
        """This process's training examples in order (a grain source over all steps)."""
        from jaxcnn.data.stream import LoadExample, TrainRows

        load = LoadExample(self.column.examples, self.column.train, seed)
        return TrainRows(load, self._layout(batch_size), num_steps=_ENDLESS)

    def batch_at(self, step: int, *, seed: int, batch_size: int) -> dict[str, jax.Array]:
        """The batch of global training `step`, made in this process (compilation, the NaN
        re-run): the same examples and augmentation the stream gives at that step."""
        from jaxcnn.data.stream import Stack

        rows = self.train_rows(seed, batch_size)
        per = rows.layout.per_process
        return shard_batch(Stack()([rows[step * per + j] for j in range(per)]), self.sharding)

    def restore(self, saved: dict | None, step: int) -> None:
        """Continue the training stream after `step` batches, from a checkpoint's pipeline
        state (grain's iterator state), or from the step alone when the checkpoint has none
        (the batches are a pure function of (seed, step))."""
        if saved is not None and saved.get("position") != step:
            from jaxcnn.errors import CheckpointError

            raise CheckpointError(
                f"the checkpoint of step {step} holds an input-pipeline state at position "
                f"{saved.get('position')}: the checkpoint is inconsistent. Resume from another "
                "step or use a fresh --workdir."
            )
        self.consumed = dict(saved) if saved else {"position": step, "grain": None}
        if self._train is not None:
            self._position_stream(self._train, self.consumed)

    def _position_stream(self, stream: Any, state: dict) -> None:
        if state["grain"] is not None:
            stream.set_state(state["grain"])
        else:
            stream.seek(state["position"])
        self._position = state["position"]

    def _train_stream(self, seed: int, batch_size: int) -> Any:
        from jaxcnn.data.stream import BatchStream

        if self._train_key != (seed, batch_size):
            if self._train is not None:
                self._train.close()
            rows = self.train_rows(seed, batch_size)
            self._train = BatchStream(rows, workers=self._workers(rows))
            self._train_key = (seed, batch_size)
            self._position_stream(self._train, self.consumed)
        return self._train

    def train_epoch(self, *, seed: int, epoch: int, start_step: int, steps: int,
                    batch_size: int, prefetch_size: int = 2
                    ) -> Iterator[tuple[int, dict[str, jax.Array]]]:
        """(step_in_epoch, batch) from `start_step` to the end of `epoch` (of `steps` steps),
        read ahead in a thread; `consumed` follows what was handed out."""
        stream = self._train_stream(seed, batch_size)
        first = epoch * steps + start_step
        if self._position != first:
            self._position_stream(stream, {"position": first, "grain": None})

        def gen() -> Iterator[tuple[int, dict, dict]]:
            for i in range(start_step, steps):
                local = next(stream)
                yield i, shard_batch(local, self.sharding), stream.get_state()

        ahead = Prefetch(gen(), prefetch_size)
        self._ahead.add(ahead)
        for i, batch, grain_state in ahead:
            self._position = epoch * steps + i + 1
            self.consumed = {"position": self._position, "grain": grain_state}
            yield i, batch

    def eval_batches(self, n: int, batch_size: int) -> Iterator[dict[str, jax.Array]]:
        """The whole split in order (the last global batch padded, "weight" 0 on padding),
        from a stream kept open between evaluations (its workers read the next pass ahead)."""
        from jaxcnn.data.stream import BatchStream, EvalRows, LoadExample

        if self._eval is None or self._eval_size != batch_size:
            if self._eval is not None:
                self._eval.close()
            rows = EvalRows(LoadExample(self.column.examples, self.column.eval, 0),
                            self._layout(batch_size))
            self._eval = BatchStream(rows, workers=self._workers(rows), repeat=True)
            self._eval_size = batch_size
        stream = self._eval

        def gen() -> Iterator[dict[str, jax.Array]]:
            for _ in range(stream.num_batches):
                yield shard_batch(next(stream), self.sharding)

        ahead = Prefetch(gen())
        self._ahead.add(ahead)
        return iter(ahead)

    def close(self) -> None:
        """Stop the threads reading ahead (dropping their batches) and the worker processes."""
        for ahead in list(self._ahead):
            ahead.close()
        for stream in (self._train, self._eval):
            if stream is not None:
                stream.close()
        self._train = self._eval = self._train_key = None


def is_streamed(source: Source) -> bool:
    """Whether `source` is decoded on demand by the host pipeline (records, streamed tfds or
    folders) rather than held as arrays."""
    from jaxcnn.data.stream import LazyImages

    return isinstance(source.arrays.get("image"), LazyImages)


def batch_at(feeder: Any, *, seed: int, step: int, n: int, batch_size: int
             ) -> dict[str, jax.Array]:
    """The batch of global training `step` (what `train_batches` gives there), from any
    feeder: compilation, the NaN re-run and the learning-rate finder read batches this way."""
    if isinstance(feeder, StreamData):
        return feeder.batch_at(step, seed=seed, batch_size=batch_size)
    spe = steps_per_epoch(n, batch_size)
    return feeder.batch(train_indices(seed, step // spe, step % spe, n, batch_size))


class Prefetch:
    """`iterator` (host reads + device transfers) run `size` items ahead in a thread.
    `close()` (also when the consumer stops iterating) stops the thread and drops what it
    read ahead: a consumer that stops early (an error, a preemption) leaves no thread
    blocked forever holding batches, whose shared memory would outlive the run."""

    _DONE = object()

    def __init__(self, iterator: Iterator, size: int = 2):
        self._queue: queue.Queue = queue.Queue(maxsize=size)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, args=(iterator,), daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def _work(self, iterator: Iterator) -> None:
        try:
            for item in iterator:
                if not self._put(item):
                    return  # closed: the iterator is dropped with the thread
        except BaseException as err:  # re-raised in the consumer thread
            self._put(err)
            return
        self._put(self._DONE)

    def __iter__(self) -> Iterator:
        try:
            while True:
                item = self._queue.get()
                if item is self._DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.close()

    def _drain(self) -> None:
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return

    def close(self, timeout: float = 2.0) -> None:
        """Stop the thread (waiting up to `timeout` s for its current item) and drop the
        items read ahead."""
        self._stop.set()
        self._drain()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._drain()


def prefetch(iterator: Iterator, size: int = 2) -> Iterator:
    """Run `iterator` (host reads + device transfers) `size` batches ahead in a thread."""
    return iter(Prefetch(iterator, size))


def make_feeder(source: Source, mesh: Mesh, on_device: str | bool = "auto",
                limit_bytes: int = 2 << 30) -> OnDeviceData | HostData | StreamData:
    """StreamData for a streamed source (the host pipeline); else OnDeviceData when the split
    is small enough (or asked for), else HostData."""
    if is_streamed(source):
        return StreamData(source, mesh)
    if on_device == "auto":
        on_device = source.nbytes <= limit_bytes
    return OnDeviceData(source, mesh) if on_device else HostData(source, mesh)


def train_batches(feeder: OnDeviceData | HostData | StreamData, *, seed: int, epoch: int,
                  start_step: int, n: int, batch_size: int, prefetch_size: int = 2
                  ) -> Iterator[tuple[int, dict[str, jax.Array]]]:
    """(step_in_epoch, batch) from `start_step` to the end of `epoch`."""
    if isinstance(feeder, StreamData):
        return feeder.train_epoch(seed=seed, epoch=epoch, start_step=start_step,
                                  steps=steps_per_epoch(n, batch_size), batch_size=batch_size,
                                  prefetch_size=prefetch_size)
    order = epoch_permutation(seed, epoch, n)

    def gen() -> Iterator[tuple[int, dict[str, jax.Array]]]:
        for i in range(start_step, steps_per_epoch(n, batch_size)):
            yield i, feeder.batch(order[i * batch_size:(i + 1) * batch_size])

    return prefetch(gen(), prefetch_size) if isinstance(feeder, HostData) else gen()


def eval_batches(feeder: OnDeviceData | HostData | StreamData, n: int, batch_size: int
                 ) -> Iterator[dict[str, jax.Array]]:
    """The whole split in order; the last batch is padded and carries weight 0 for padding."""
    if isinstance(feeder, StreamData):
        return feeder.eval_batches(n, batch_size)
    return _eval_batches(feeder, n, batch_size)


def _eval_batches(feeder: OnDeviceData | HostData, n: int, batch_size: int
                  ) -> Iterator[dict[str, jax.Array]]:
    for start in range(0, n, batch_size):
        idx = np.arange(start, start + batch_size)
        weight = (idx < n).astype(np.float32)
        batch = feeder.batch(np.minimum(idx, n - 1))
        if isinstance(feeder, HostData):
            batch["weight"] = shard_batch({"w": weight[process_slice(batch_size)]},
                                          feeder.sharding)["w"]
        else:
            batch["weight"] = jax.device_put(weight, batch_sharding(feeder.mesh))
        yield batch
