"""Crash safety of the real training entry point, proven with real processes on CPU: a
`python train.py` killed with SIGKILL (during a checkpoint save and at a random moment),
preempted with SIGTERM, or hit by a failing save, then rerun with the same command, ends
BIT-identical to a run that was never interrupted (parameters, optimizer state, BatchNorm
statistics, rng, metrics); checkpoints move between 4 and 1 devices; a checkpoint of another
architecture or head size is refused naming the first mismatching parameter and both shapes.

All processes of this file share one JAX compilation cache, so only the first one compiles."""

from __future__ import annotations

import random
import shutil
import signal
import sys

import jax
import numpy as np
import pytest
from reliability_helpers import (
    CONFIG,
    Train,
    complete_steps,
    epoch_records,
    read_checkpoint,
    run_train,
    temp_dirs,
    without_timing,
)

from jaxcnn.errors import CheckpointError
from jaxcnn.train.checkpoint import Checkpointer

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

FINAL_STEP = 16  # 2 epochs x 8 steps of 32 images


def load_config(**overrides):
    """tests/reliability_config.py as a ConfigDict, with `overrides` ("model.name": ...)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("reliability_config", CONFIG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("jax-compilation-cache")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache):
    """An uninterrupted run: final JSON, metrics.jsonl records and the final checkpoint."""
    workdir = tmp_path_factory.mktemp("reference")
    t = run_train(workdir, cache_dir=cache)
    assert t.proc.returncode == 0, t.stderr[-3000:]
    return {"workdir": workdir, "result": t.result(), "records": epoch_records(workdir),
            "final": read_checkpoint(workdir, FINAL_STEP)}


@pytest.fixture(scope="module")
def chain(tmp_path_factory, cache, reference):
    """One workdir through SIGKILL mid-save, SIGTERM, a failing save and a SIGKILL at a random
    moment, each followed by the same command; what each process left behind is recorded."""
    workdir = tmp_path_factory.mktemp("interrupted")
    rng = random.Random(20261123)  # seeded: the "random" kill moments are reproducible
    seen: dict = {}

    # 1. SIGKILL while step 6's checkpoint is being written (data in the temporary dir,
    #    not yet committed). The fault hook holds the commit open so the kill lands there.
    t = Train(workdir, fault="hold:6", cache_dir=cache)
    t.wait_for_stderr("JAXCNN_FAULT: holding save of step 6")
    t.signal(signal.SIGKILL)
    seen["kill_mid_save"] = {"rc": t.finish(), "steps": complete_steps(workdir),
                             "tmp": temp_dirs(workdir),
                             "latest": Checkpointer(workdir, read_only=True).latest_step()}

    # 2. Rerun; SIGTERM at a random moment while step 9's save is pending (held 4 s).
    t = Train(workdir, fault="hold:9:4", cache_dir=cache)
    t.wait_for_stderr("JAXCNN_FAULT: holding save of step 9")
    seen["sigterm_delay"] = rng.uniform(0.0, 1.0)
    t.proc.wait(seen["sigterm_delay"]) if False else __import__("time").sleep(seen["sigterm_delay"])
    t.signal(signal.SIGTERM)
    seen["sigterm"] = {"rc": t.finish(), "stderr": t.stderr, "out": t.out,
                       "steps": complete_steps(workdir), "tmp": temp_dirs(workdir)}

    # 3. Rerun; the save of step 15 fails in orbax's background thread (disk full).
    t = run_train(workdir, fault="enospc:15", cache_dir=cache)
    seen["enospc"] = {"rc": t.proc.returncode, "stderr": t.stderr,
                      "steps": complete_steps(workdir)}

    # 4. Rerun; SIGKILL at a random moment after it has resumed (compile, steps, eval, save).
    t = Train(workdir, cache_dir=cache)
    t.wait_for_stderr("Resuming from")
    seen["random_kill_delay"] = rng.uniform(0.0, 4.0)
    __import__("time").sleep(seen["random_kill_delay"])
    t.signal(signal.SIGKILL)
    seen["random_kill"] = {"rc": t.finish(), "stderr": t.stderr}

    # 5. The same command once more finishes the run.
    t = run_train(workdir, cache_dir=cache)
    assert t.proc.returncode == 0, t.stderr[-3000:]
    seen["final"] = {"result": t.result(), "records": epoch_records(workdir),
                     "final": read_checkpoint(workdir, FINAL_STEP), "stderr": t.stderr}
    seen["workdir"] = workdir
    return seen
