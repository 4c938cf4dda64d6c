"""Crash safety of the real training entry point, proven with real processes on CPU: a
`python train.py` killed with SIGKILL (during a checkpoint save and at a random moment),
preempted with SIGTERM, or hit by a failing save, then rerun with the same command, ends
BIT-identical to a run that was never interrupted (parameters, optimizer state, BatchNorm
statistics, rng, metrics); checkpoints move between 4 and 1 devices; a checkpoint of another
architecture or head size is refused naming the first mismatching parameter and both shapes.
The interrupted chain runs twice: with the digits on the device, and (slow) with the same
digits as PNG records read by the host input pipeline with 2 worker processes, whose grain
iterator state is part of every checkpoint.

All processes of this file share one JAX compilation cache, so only the first one compiles."""

from __future__ import annotations

import json
import random
import shutil
import signal
import sys
import time

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

from jaxcnn import create_model
from jaxcnn.errors import CheckpointError, ConfigError
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


def _reference(workdir, cache, *flags):
    t = run_train(workdir, *flags, cache_dir=cache)
    assert t.proc.returncode == 0, t.stderr[-3000:]
    return {"workdir": workdir, "result": t.result(), "records": epoch_records(workdir),
            "final": read_checkpoint(workdir, FINAL_STEP)}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache):
    """An uninterrupted run: final JSON, metrics.jsonl records and the final checkpoint."""
    return _reference(tmp_path_factory.mktemp("reference"), cache)


@pytest.fixture(scope="module", params=["device", pytest.param("host", marks=pytest.mark.slow)])
def pipeline(request, tmp_path_factory):
    """The input path of the interrupted runs: the digits on the device, or the same digits
    as PNG records read by the host pipeline with 2 worker processes (whose iterator state
    is part of every checkpoint)."""
    if request.param == "device":
        return ()
    from image_tree import digits_tree

    from jaxcnn.data.records import prepare

    root = tmp_path_factory.mktemp("digits-records")
    prepare(digits_tree(root / "tree"), root / "records", examples_per_shard=256, workers=1)
    return ("--config.data.source=records", f"--config.data.path={root / 'records'}",
            "--config.data.channels=1", "--config.data.workers=2")


@pytest.fixture(scope="module")
def pipeline_reference(tmp_path_factory, cache, reference, pipeline):
    """The uninterrupted run of `pipeline`."""
    if not pipeline:
        return reference
    return _reference(tmp_path_factory.mktemp("host-reference"), cache, *pipeline)


@pytest.fixture(scope="module")
def chain(tmp_path_factory, cache, pipeline_reference, pipeline):
    """One workdir through SIGKILL mid-save, SIGTERM, a failing save and a SIGKILL at a random
    moment, each followed by the same command; what each process left behind is recorded."""
    workdir = tmp_path_factory.mktemp("interrupted")
    rng = random.Random(20261123)  # seeded: the "random" kill moments are reproducible
    seen: dict = {}

    # 1. SIGKILL while step 6's checkpoint is being written (data in the temporary dir,
    #    not yet committed). The fault hook holds the commit open so the kill lands there.
    t = Train(workdir, *pipeline, fault="hold:6", cache_dir=cache)
    t.wait_for_stderr("JAXCNN_FAULT: holding save of step 6")
    t.signal(signal.SIGKILL)
    seen["kill_mid_save"] = {"rc": t.finish(), "steps": complete_steps(workdir),
                             "tmp": temp_dirs(workdir),
                             "latest": Checkpointer(workdir, read_only=True).latest_step()}

    # 2. Rerun; SIGTERM at a random moment while step 9's save is pending (held 4 s).
    t = Train(workdir, *pipeline, fault="hold:9:4", cache_dir=cache)
    t.wait_for_stderr("JAXCNN_FAULT: holding save of step 9")
    seen["sigterm_delay"] = rng.uniform(0.0, 1.0)
    time.sleep(seen["sigterm_delay"])
    t.signal(signal.SIGTERM)
    seen["sigterm"] = {"rc": t.finish(), "stderr": t.stderr, "out": t.out,
                       "steps": complete_steps(workdir), "tmp": temp_dirs(workdir)}

    # 3. Rerun; the save of step 15 fails in orbax's background thread (disk full).
    t = run_train(workdir, *pipeline, fault="enospc:15", cache_dir=cache)
    seen["enospc"] = {"rc": t.proc.returncode, "stderr": t.stderr,
                      "steps": complete_steps(workdir)}

    # 4. Rerun; SIGKILL at a random moment after it has resumed (compile, steps, eval, save).
    t = Train(workdir, *pipeline, cache_dir=cache)
    t.wait_for_stderr("Resuming from")
    seen["random_kill_delay"] = rng.uniform(0.0, 4.0)
    time.sleep(seen["random_kill_delay"])
    t.signal(signal.SIGKILL)
    seen["random_kill"] = {"rc": t.finish(), "stderr": t.stderr}

    # 5. The same command once more finishes the run.
    t = run_train(workdir, *pipeline, cache_dir=cache)
    assert t.proc.returncode == 0, t.stderr[-3000:]
    seen["final"] = {"result": t.result(), "records": epoch_records(workdir),
                     "final": read_checkpoint(workdir, FINAL_STEP), "stderr": t.stderr}
    seen["workdir"] = workdir
    return seen


def test_kill9_during_a_save_leaves_the_previous_checkpoint_as_latest(chain):
    seen = chain["kill_mid_save"]
    assert seen["rc"] == -signal.SIGKILL
    assert any(name.startswith("6.") for name in seen["tmp"])  # the interrupted save
    assert 6 not in seen["steps"] and seen["steps"] == [3]
    assert seen["latest"] == 3  # an interrupted save is never taken for the latest


def test_rerun_after_kill_resumes_and_leftover_temp_dir_does_not_break_the_next_save(chain):
    seen = chain["sigterm"]
    assert "Resuming from" in seen["stderr"] and "step 3, epoch 1, batch 3" in seen["stderr"]
    assert 6 in seen["steps"]  # saved again over the killed save's leftovers
    assert not any(name.startswith("6.") for name in seen["tmp"])


def test_sigterm_finishes_the_step_saves_and_exits_0(chain):
    seen = chain["sigterm"]
    assert seen["rc"] == 0, seen["stderr"][-3000:]
    out = json.loads(seen["out"][-1])
    assert out["preempted"] is True
    # SIGTERM arrived while step 9's save was pending: training stopped at the next step
    # boundary (the loop cannot pass step 13 before that save ends) and saved that step.
    assert 9 < out["step"] <= 13
    assert out["step"] in seen["steps"] and 9 in seen["steps"]
    assert f"SIGTERM: saved step {out['step']}" in seen["stderr"]


def test_failed_save_exits_nonzero_with_the_path_and_the_reason(chain):
    seen = chain["enospc"]
    assert seen["rc"] == 1
    last = seen["stderr"].strip().splitlines()[-1]
    workdir = chain["workdir"]
    assert last.startswith("train.py: error: CheckpointError: saving checkpoint step 15 to ")
    assert str(workdir / "checkpoints") in last
    assert "No space left on device" in last
    assert 15 not in seen["steps"]  # and nothing half-written is taken for a checkpoint


def test_interrupted_run_is_bit_identical_to_an_uninterrupted_one(chain, pipeline_reference):
    reference = pipeline_reference
    final = chain["final"]
    assert chain["random_kill"]["rc"] in (-signal.SIGKILL, 0)
    # A random kill that lands after the last save leaves a finished run, which the rerun
    # only reports (already_complete): the same results either way.
    got = {k: v for k, v in without_timing(final["result"]).items() if k != "already_complete"}
    assert got == without_timing(reference["result"])
    # every epoch's train/valid metrics (a finished run's final record may carry the flag)
    records = [{k: v for k, v in r.items() if k != "already_complete"} for r in final["records"]]
    assert records == reference["records"]
    want, got = reference["final"], final["final"]
    assert sorted(got) == sorted(want)
    assert any("batch_stats" in k for k in want) and any("opt_state" in k for k in want)
    for key in want:  # params, BN statistics, optimizer state, rng, metric sums, step
        assert got[key].dtype == want[key].dtype, key
        np.testing.assert_array_equal(got[key], want[key], err_msg=key, strict=True)


@pytest.fixture(scope="module")
def moved(tmp_path_factory, cache, reference):
    """The reference's step-8 checkpoint (written by a 1-device process) restored in this
    4-device process and saved again from there; then a 1-device train.py resumes from it."""
    from jaxcnn.data import make_mesh
    from jaxcnn.train import initial_state, make_optimizer, setup
    from jaxcnn.train.state import state_to_tree

    assert jax.device_count() == 4  # conftest forces 4 CPU devices on this process
    config = load_config()
    run = setup(config)
    tx, _ = make_optimizer(config, run.variables["params"], run.steps_per_epoch)
    source = Checkpointer(reference["workdir"], read_only=True)
    try:
        state, meta = source.restore(8, initial_state(run, tx), make_mesh())
    finally:
        source.manager.close()
    restored = {jax.tree_util.keystr(p): leaf
                for p, leaf in jax.tree_util.tree_flatten_with_path(state_to_tree(state))[0]}
    workdir = tmp_path_factory.mktemp("moved")
    valid = {k[len("valid_"):]: v for k, v in meta["history"][-1].items()
             if k.startswith("valid_")}
    target = Checkpointer(workdir, keep=20)
    target.save(8, state, meta, metrics=valid)
    target.close()
    resumed = run_train(workdir, cache_dir=cache)
    assert resumed.proc.returncode == 0, resumed.stderr[-3000:]
    return {"restored": restored, "want8": read_checkpoint(reference["workdir"], 8),
            "workdir": workdir, "resumed": resumed}


def test_checkpoint_saved_on_1_device_restores_on_4_bit_exact(moved):
    restored, want = moved["restored"], moved["want8"]
    assert sorted(restored) == sorted(want)
    for key, leaf in restored.items():
        assert len(leaf.sharding.device_set) == 4, key  # laid out on all 4 devices
        np.testing.assert_array_equal(np.asarray(leaf), want[key], err_msg=key, strict=True)


def test_checkpoint_saved_on_4_devices_resumes_on_1_to_the_same_final_result(moved, reference):
    resumed = moved["resumed"]
    assert "step 8, epoch 2, batch 0" in resumed.stderr
    assert resumed.result()["devices"] == 1
    assert without_timing(resumed.result()) == without_timing(reference["result"])
    got = read_checkpoint(moved["workdir"], FINAL_STEP)
    for key, want in reference["final"].items():
        np.testing.assert_array_equal(got[key], want, err_msg=key, strict=True)


def abstract_state(num_classes: int):
    """Shapes of a TrainState of the reliability model with another head (no compile)."""
    from jaxcnn.models.registry import abstract_variables
    from jaxcnn.train import create_state, make_optimizer

    config = load_config(**{"model.kwargs.num_classes": num_classes})
    model = create_model("small_cnn", width=4, num_classes=num_classes, in_channels=1)
    variables = abstract_variables(model, (32, 32, 1))
    tx, _ = make_optimizer(config, variables["params"], 8)
    return jax.eval_shape(
        lambda v: create_state(v, tx, config.seed, ("accuracy", "count", "loss")), variables)


def test_restore_into_another_num_classes_names_the_parameter_and_both_shapes(reference):
    from jaxcnn.data import make_mesh

    target = abstract_state(7)
    ckpt = Checkpointer(reference["workdir"], read_only=True)
    try:
        with pytest.raises(CheckpointError) as info:
            ckpt.restore(FINAL_STEP, target, make_mesh())
    finally:
        ckpt.manager.close()
    msg = str(info.value)
    # The parameter (not its optimizer moments, which mismatch too) and both shapes.
    assert "'params/fc/bias' has shape (10,) in the checkpoint but (7,) in the current model" \
        in msg, msg
    assert str(reference["workdir"] / "checkpoints" / str(FINAL_STEP)) in msg
    assert "reinit_head" in msg


def test_rerun_with_another_architecture_fails_before_training_naming_the_parameter(
        reference, tmp_path):
    from jaxcnn.train import fit

    workdir = tmp_path / "w"
    shutil.copytree(reference["workdir"], workdir)
    config = load_config(**{"model.name": "lenet5"})
    config.model.kwargs = type(config.model.kwargs)()  # lenet5 has no `width`
    with pytest.raises(ConfigError) as info:  # the changed config is refused first ...
        fit(config, workdir)
    assert "model.name: 'small_cnn' -> 'lenet5'" in str(info.value)
    assert "model.kwargs.width: 4 -> '(unset)'" in str(info.value)
    with pytest.raises(CheckpointError) as info:  # ... and allowed, the checkpoint refuses
        fit(config, workdir, allow_config_change=True)
    msg = str(info.value)
    assert str(workdir / "checkpoints" / str(FINAL_STEP)) in msg
    assert "'params/" in msg and "another architecture" in msg
    assert complete_steps(workdir) == complete_steps(reference["workdir"])  # nothing written


def test_init_from_checkpoint_with_another_head_needs_reinit_head(reference):
    from jaxcnn.rundir import RunDir
    from jaxcnn.train import load_init_variables, merge_variables, setup

    config = load_config(**{"model.kwargs.num_classes": 7, "init.path": str(reference["workdir"])})
    fresh = {"params": abstract_state(7).params}
    loaded = load_init_variables(config.init.path, config)
    with pytest.raises(CheckpointError) as info:  # what setup() raises, without compiling
        merge_variables(fresh, loaded, reinit_head=False, where=config.init.path)
    msg = str(info.value)
    assert "'params/fc/bias' is shape (10,) but the model needs shape (7,)" in msg, msg
    assert "config.init.reinit_head=True" in msg
    config.init.reinit_head = True
    run = setup(config)
    # A workdir initializes from its best checkpoint (by validation accuracy).
    best = RunDir(reference["workdir"]).best_step()
    saved = read_checkpoint(reference["workdir"], best)
    for path, leaf in jax.tree_util.tree_flatten_with_path(run.variables["params"])[0]:
        key = "['params']" + jax.tree_util.keystr(path)
        if leaf.shape == saved[key].shape:
            np.testing.assert_array_equal(np.asarray(leaf), saved[key])  # loaded
        else:
            assert leaf.shape[-1] == 7  # the head, freshly initialized
