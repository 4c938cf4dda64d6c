"""Batches for the compiled step: the epoch order as a pure function of (seed, epoch), a
1-D "data" mesh over all devices, per-process shards via
`jax.make_array_from_process_local_data`, an on-device dataset for small data and a
prefetching host stream for large data. Both yield the same batches, so a run resumed at
(epoch, step-in-epoch) sees exactly the examples an uninterrupted run would."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

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
            f"({n}) so every device gets the same share; use e.g. {max(n, batch_size // n * n)}."
        )


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The training order of epoch `epoch`: a pure function of (seed, epoch, n)."""
    return np.random.default_rng([seed, epoch, 0x5EED]).permutation(n)


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Full batches per epoch (the last partial batch is dropped, as in the Flax examples)."""
    return n // batch_size


def train_indices(seed: int, epoch: int, step_in_epoch: int, n: int, batch_size: int
                  ) -> np.ndarray:
    """Global indices of training batch `step_in_epoch` of `epoch`."""
    order = epoch_permutation(seed, epoch, n)
    return order[step_in_epoch * batch_size:(step_in_epoch + 1) * batch_size]


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


def prefetch(iterator: Iterator, size: int = 2) -> Iterator:
    """Run `iterator` (host reads + device transfers) `size` batches ahead in a thread."""
    q: queue.Queue = queue.Queue(maxsize=size)
    done = object()

    def worker() -> None:
        try:
            for item in iterator:
                q.put(item)
        except BaseException as err:  # re-raised in the consumer thread
            q.put(err)
        q.put(done)

    threading.Thread(target=worker, daemon=True).start()
    while True:
        item = q.get()
        if item is done:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


def make_feeder(source: Source, mesh: Mesh, on_device: str | bool = "auto",
                limit_bytes: int = 2 << 30) -> OnDeviceData | HostData:
    """OnDeviceData when the split is small enough (or asked for), else HostData."""
    if on_device == "auto":
        on_device = source.nbytes <= limit_bytes
    return OnDeviceData(source, mesh) if on_device else HostData(source, mesh)


def train_batches(feeder: OnDeviceData | HostData, *, seed: int, epoch: int, start_step: int,
                  n: int, batch_size: int, prefetch_size: int = 2
                  ) -> Iterator[tuple[int, dict[str, jax.Array]]]:
    """(step_in_epoch, batch) from `start_step` to the end of `epoch`."""
    order = epoch_permutation(seed, epoch, n)

    def gen() -> Iterator[tuple[int, dict[str, jax.Array]]]:
        for i in range(start_step, steps_per_epoch(n, batch_size)):
            yield i, feeder.batch(order[i * batch_size:(i + 1) * batch_size])

    return prefetch(gen(), prefetch_size) if isinstance(feeder, HostData) else gen()


def eval_batches(feeder: OnDeviceData | HostData, n: int, batch_size: int
                 ) -> Iterator[dict[str, jax.Array]]:
    """The whole split in order; the last batch is padded and carries weight 0 for padding."""
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
