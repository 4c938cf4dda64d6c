"""Multi-process training on jax.distributed, proven with real processes on CPU (Gloo
collectives over localhost): two `train.py` processes of one device each end with the same
parameters, bit for bit, as one process with two forced devices, and write each
metrics.jsonl record once; when a peer is killed, the survivor exits non-zero within seconds
naming the lost process, the latest checkpoint is a committed one, and rerunning both
processes resumes from it to the uninterrupted result.

Both paths read records through the host pipeline (RandomResizedCrop + flip on the host, each
process its own rows of every global batch)."""

from __future__ import annotations

import signal
import socket
import sys
import time

import numpy as np
import pytest
from image_tree import make_tree
from reliability_helpers import (
    Train,
    complete_steps,
    epoch_records,
    run_train,
    temp_dirs,
    without_timing,
)

from jaxcnn.data.records import prepare
from jaxcnn.train.checkpoint import Checkpointer

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")]

EPOCHS, STEPS_PER_EPOCH = 6, 2  # 36 images, global batch 16
FINAL_STEP = EPOCHS * STEPS_PER_EPOCH


def read_checkpoint(workdir, step: int) -> dict[str, np.ndarray]:
    """Every array of checkpoint `step` as host numpy, whatever devices wrote it (two
    processes' device ids are not this process's)."""
    import jax
    import orbax.checkpoint as ocp

    from jaxcnn.rundir import item_handlers

    options = ocp.CheckpointManagerOptions(read_only=True)
    with ocp.CheckpointManager(workdir.absolute() / "checkpoints", options=options,
                               item_handlers=item_handlers()) as mngr:
        meta = mngr.item_metadata(step)["state"]
        here = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=here),
                              getattr(meta, "tree", meta),
                              is_leaf=lambda x: hasattr(x, "shape") and hasattr(x, "dtype"))
        tree = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
    flat = jax.tree_util.tree_flatten_with_path(tree["state"])[0]
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in flat}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("jax-compilation-cache")


@pytest.fixture(scope="module")
def flags(tmp_path_factory):
    root = tmp_path_factory.mktemp("mp")
    tree = make_tree(root / "tree", n_train=12, n_test=4, sizes_vary=True)
    prepare(tree, root / "records", examples_per_shard=10, workers=1)
    return ("--config.data.source=records", f"--config.data.path={root / 'records'}",
            "--config.data.max_examples=0", "--config.data.valid_fraction=0.0",
            "--config.data.channels=3",
            "--config.data.resized_crop=16", "--config.data.eval_resize=18",
            "--config.data.workers=0",
            "--config.data.batch_size=16", f"--config.num_epochs={EPOCHS}",
            "--config.checkpoint.every_steps=3")


def two_processes(workdir, flags, cache, *extra) -> list[Train]:
    port = _port()
    return [Train(workdir, *flags, *extra, f"--coordinator_address=localhost:{port}",
                  "--num_processes=2", f"--process_id={i}", "--heartbeat_timeout=10",
                  cache_dir=cache) for i in (0, 1)]


@pytest.fixture(scope="module")
def one(tmp_path_factory, flags, cache):
    """One process with two forced CPU devices."""
    workdir = tmp_path_factory.mktemp("one")
    t = run_train(workdir, *flags, devices=2, cache_dir=cache)
    assert t.proc.returncode == 0, t.stderr[-3000:]
    return {"workdir": workdir, "result": t.result()}


def test_two_processes_equal_one_process_with_two_devices(tmp_path, flags, cache, one):
    procs = two_processes(tmp_path, flags, cache)
    for t in procs:
        assert t.finish() == 0, t.stderr[-3000:]
    results = [t.result() for t in procs]
    assert results[0]["devices"] == 2 == one["result"]["devices"]
    for result in results:
        assert without_timing(result) == without_timing(one["result"])
    want, got = read_checkpoint(one["workdir"], FINAL_STEP), read_checkpoint(tmp_path, FINAL_STEP)
    assert sorted(got) == sorted(want)
    for key in want:  # params, BN statistics, optimizer state, rng, sums
        np.testing.assert_array_equal(got[key], want[key], err_msg=key, strict=True)
    records = epoch_records(tmp_path)
    assert records == epoch_records(one["workdir"])
    assert [r.get("epoch") for r in records] == [*range(1, EPOCHS + 1), None]  # each once
    assert sum(1 for r in records if r.get("final")) == 1
    assert (tmp_path / "config.json").exists() and (tmp_path / "curves.png").exists()
    assert not list(tmp_path.glob("*.tmp"))
    # Each process saved its own pipeline state beside the shared arrays.
    data = tmp_path / "checkpoints" / str(FINAL_STEP) / "data"
    assert sorted(p.name for p in data.glob("*.json")) == ["process_0-of-2.json",
                                                           "process_1-of-2.json"]


def test_a_dead_peer_stops_the_survivor_naming_it_then_a_rerun_resumes(
        tmp_path, flags, cache, one):
    procs = two_processes(tmp_path, flags, cache)
    deadline = time.monotonic() + 600
    while len(complete_steps(tmp_path)) < 2:  # two checkpoints committed: training runs
        assert procs[0].proc.poll() is None, procs[0].stderr[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    procs[1].signal(signal.SIGKILL)
    t0 = time.monotonic()
    rc = procs[0].finish(timeout=120)
    survived = time.monotonic() - t0
    procs[1].finish()
    err = procs[0].stderr
    ours = "process 1 of 2 was lost" in err
    print(f"survivor: exit {rc} {survived:.1f} s after the kill, "
          f"{'jaxcnn' if ours else 'JAX'}'s message", file=sys.stderr)
    assert rc != 0
    assert survived < 40, survived  # JAX's default heartbeat timeout alone is 100 s
    # Ours when the failure surfaces in a collective, JAX's own when the survivor was waiting
    # elsewhere (a checkpoint barrier): either names process (task) 1.
    assert ours or "stopped sending heartbeats):\n1\n" in err, err[-3000:]
    latest = Checkpointer(tmp_path, read_only=True).latest_step()
    assert latest in complete_steps(tmp_path)  # a half-written save is never the latest
    assert not any(name.startswith(f"{latest}.") for name in temp_dirs(tmp_path))

    rerun = two_processes(tmp_path, flags, cache)
    for t in rerun:
        assert t.finish() == 0, t.stderr[-3000:]
    assert f"checkpoints/{latest}: step {latest}" in rerun[0].stderr
    assert without_timing(rerun[0].result()) == without_timing(one["result"])
    want, got = read_checkpoint(one["workdir"], FINAL_STEP), read_checkpoint(tmp_path, FINAL_STEP)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key, strict=True)
