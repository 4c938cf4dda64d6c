"""Multi-process training on `jax.distributed` (the multi-controller runtime JAX ships with):
one process per host (or per GPU), all running the same program; the "data" mesh spans every
device of every process, each process feeds its own rows of each global batch, and the
compiled step's all-reduces cross processes (Gloo over TCP on CPU, NCCL on GPU).

`initialize` connects the processes (explicit flags, or `jax.distributed.initialize()`'s
auto-detection under SLURM / Open MPI / Cloud TPU). `is_writer` says who writes logs, plots
and JSON (process 0; orbax writes checkpoints from all processes itself). `peer_failure`
turns the error a collective raises when a peer dies into a TrainingError that names the lost
process, found by a check-in through the coordination service's key-value store."""

from __future__ import annotations

import os
import time

import jax

from jaxcnn.errors import ConfigError, TrainingError

# Environment variables that mean "this process is one task of a multi-process job" to
# jax.distributed.initialize()'s cluster auto-detection (SLURM, Open MPI, multi-host TPU).
_CLUSTER_ENV = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES",
                "JAX_COORDINATOR_ADDRESS")
_CHECK_IN = "jaxcnn/check-in/"


def _cluster_detected() -> bool:
    for var in _CLUSTER_ENV:
        value = os.environ.get(var, "")
        if var == "TPU_WORKER_HOSTNAMES":
            if value.count(",") >= 1:
                return True
        elif var == "JAX_COORDINATOR_ADDRESS":
            if value:
                return True
        elif value.isdigit() and int(value) > 1:
            return True
    return False


def initialize(coordinator_address: str = "", num_processes: int = 0, process_id: int = -1,
               *, heartbeat_timeout: int = 20, auto: bool = True) -> bool:
    """Join a multi-process run; returns whether one was joined. With no arguments, joins
    one only where `jax.distributed.initialize()` can detect a cluster (SLURM, Open MPI,
    Cloud TPU, $JAX_COORDINATOR_ADDRESS); otherwise the run stays single-process.
    heartbeat_timeout: seconds after which a silent process counts as dead (JAX's default,
    100 s, lets a survivor wait that long)."""
    explicit = bool(coordinator_address) or num_processes > 0 or process_id >= 0
    if explicit and not (coordinator_address and num_processes > 0 and process_id >= 0):
        raise ConfigError(
            "a multi-process run needs all three of --coordinator_address=HOST:PORT (process "
            "0's address), --num_processes=N and --process_id=0..N-1; got "
            f"coordinator_address={coordinator_address!r}, num_processes={num_processes}, "
            f"process_id={process_id}."
        )
    if explicit and not 0 <= process_id < num_processes:
        raise ConfigError(f"--process_id={process_id} must lie in [0, {num_processes - 1}].")
    if not explicit and not (auto and _cluster_detected()):
        return False
    # CPU collectives across processes need an implementation (GPU uses NCCL by itself).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        if explicit:
            jax.distributed.initialize(coordinator_address, num_processes, process_id,
                                       heartbeat_timeout_seconds=heartbeat_timeout)
        else:
            jax.distributed.initialize(heartbeat_timeout_seconds=heartbeat_timeout)
    except Exception as err:
        where = coordinator_address or "the detected cluster"
        raise ConfigError(
            f"could not join the multi-process run at {where} ({type(err).__name__}: {err}). "
            "Start every process with the same --coordinator_address and --num_processes "
            "and a distinct --process_id, process 0 first reachable at that address."
        ) from None
    return True


def is_writer() -> bool:
    """Whether this process writes logs, plots and JSON files (process 0 only)."""
    return jax.process_index() == 0


def barrier(name: str, timeout: float = 1800.0) -> None:
    """Wait until every process reaches `name` (no-op in a single-process run). Called before
    a run's first collectives: processes load data and compile at different speeds, and the
    CPU collectives' (Gloo's) set-up gives up after 30 s."""
    if jax.process_count() < 2:
        return
    from jax._src import distributed as jax_distributed

    jax_distributed.global_state.client.wait_at_barrier(f"jaxcnn/{name}", int(timeout * 1000))


def _looks_like_peer_loss(err: BaseException) -> bool:
    text = f"{type(err).__name__}: {err}"
    return any(s in text for s in ("Gloo", "gloo", "Connection closed by peer",
                                   "coordination service", "Socket closed", "NCCL",
                                   "heartbeat", "DEADLINE_EXCEEDED", "Barrier", "barrier"))


def lost_processes(wait: float = 3.0) -> list[int] | None:
    """After a failed collective: every survivor checks in through the coordination service's
    key-value store; the processes that have not checked in after `wait` seconds are the lost
    ones. None when the store itself is unreachable (process 0, which hosts it, is gone)."""
    from jax._src import distributed as jax_distributed

    client = jax_distributed.global_state.client
    n, me = jax.process_count(), jax.process_index()
    try:
        client.key_value_set(f"{_CHECK_IN}{me}", "alive")
        deadline = time.monotonic() + wait
        while True:
            seen = {int(k.rsplit("/", 1)[1]) for k, _ in client.key_value_dir_get(_CHECK_IN)}
            if len(seen) == n or time.monotonic() > deadline:
                return sorted(set(range(n)) - seen)
            time.sleep(0.2)
    except Exception:
        return None


def peer_failure(err: BaseException) -> TrainingError | None:
    """A TrainingError naming the lost process(es) when `err` is a multi-process run's
    collective failing because a peer died; None otherwise (or in a single-process run)."""
    if jax.process_count() < 2 or not _looks_like_peer_loss(err):
        return None
    lost = lost_processes()
    n, me = jax.process_count(), jax.process_index()
    if lost is None:
        who = "process 0 (the coordinator)" if me else "a process"
    elif lost:
        who = ", ".join(f"process {p}" for p in lost)
    else:
        return None  # every process is alive: not a lost peer
    return TrainingError(
        f"{who} of {n} was lost (it died or stopped responding); process {me} stops too: "
        f"{type(err).__name__}: {str(err).splitlines()[0][:300]}. The last complete checkpoint "
        "is kept as the latest; restart every process with the same command to resume."
    )


__all__ = ["barrier", "initialize", "is_writer", "lost_processes", "peer_failure"]
