"""Checkpoints under damage, and workdirs under concurrent use and changed configs.

Every checkpoint carries the sha256 of each array (written at save, checked at restore);
a damaged newest step (garbled, missing or emptied files, zeroed, deleted or bit-flipped
array data, non-finite parameters) is named with the reason and the next older good one
is used, by the trainer (which moves the damaged step aside), `--eval_only` and every
workdir reader alike. One run at a time holds a workdir (a real second process is refused
at once, naming the holder's pid; a killed holder leaves no stale lock). Resuming with
another config is refused naming every changed key unless allowed, and then recorded. A
SIGTERM during start-up exits cleanly with a message; a run that died before its first
checkpoint says so on rerun."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from reliability_helpers import Train
from train_helpers import tiny_config, tiny_run

from jaxcnn.data import make_mesh, replicated
from jaxcnn.errors import CheckpointError, ConfigError, WorkdirInUseError
from jaxcnn.rundir import CheckpointDamage, RunDir, tree_digests
from jaxcnn.train import Checkpointer, create_state, evaluate_checkpoint, fit
from jaxcnn.train.workdir import HISTORY_FILE, lock_workdir

ROOT = Path(__file__).resolve().parents[1]
STEPS = (3, 6, 9)


def _state(seed: int = 0, fill: float | None = None) -> object:
    """A LeNet-5 shaped TrainState (SGD with momentum) of random (seeded) or `fill`
    parameters, replicated on the 4 devices."""
    rng = np.random.default_rng(seed)
    params = jax.tree.map(
        lambda p: jnp.asarray(rng.standard_normal(p.shape) if fill is None else
                              np.full(p.shape, fill), p.dtype),
        tiny_run("lenet5").variables["params"])
    state = create_state({"params": params}, optax.sgd(0.1, 0.9), 0, ("count", "loss"))
    return jax.device_put(state, replicated(make_mesh()))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A workdir with checkpoints at steps 3, 6 and 9 of distinct values."""
    workdir = tmp_path_factory.mktemp("saved")
    ckpt = Checkpointer(workdir, keep=5, keep_best=False, async_save=False)
    for step in STEPS:
        ckpt.save(step, _state(seed=step), {"step": step})
    ckpt.close()
    return workdir


def _copy(saved: Path, tmp_path: Path) -> Path:
    workdir = tmp_path / "w"
    shutil.copytree(saved, workdir)
    return workdir


def _largest_array_file(step_dir: Path) -> Path:
    return max((step_dir / "state").rglob("ocdbt.process_0/d/*"), key=lambda f: f.stat().st_size)


def _damage(kind: str, step_dir: Path) -> None:
    if kind == "garbled meta":
        (step_dir / "meta" / "metadata").write_text('{"step": 9, "hist')
    elif kind == "edited meta":  # still valid JSON
        meta = step_dir / "meta" / "metadata"
        meta.write_text(meta.read_text().replace('"step": 9', '"step": 8'))
    elif kind == "missing meta":
        (step_dir / "meta" / "metadata").unlink()
    elif kind == "emptied step dir":
        shutil.rmtree(step_dir)
        step_dir.mkdir()
    elif kind == "zeroed array file":
        f = _largest_array_file(step_dir)
        f.write_bytes(bytes(f.stat().st_size))
    elif kind == "deleted array file":
        _largest_array_file(step_dir).unlink()
    else:  # "1 flipped bit" / "64 flipped bytes": still decodes, other values
        f = _largest_array_file(step_dir)
        data = bytearray(f.read_bytes())
        positions = [len(data) // 2] if kind == "1 flipped bit" else range(200, 200 + 64 * 7, 7)
        for p in positions:
            data[p] ^= 0x08 if kind == "1 flipped bit" else 0xFF
        f.write_bytes(bytes(data))


DAMAGES = {  # kind -> what the reason says
    "garbled meta": "meta/metadata is not valid JSON",
    "edited meta": "meta/metadata does not match the sha256 written with it",
    "missing meta": "File meta/metadata not found",
    "emptied step dir": "the step directory is empty",
    "zeroed array file": "Error reading",
    "deleted array file": "Error reading",
    "1 flipped bit": "differ from the sha256 written at save time",
    "64 flipped bytes": "differ from the sha256 written at save time",
}


@pytest.mark.parametrize("kind", sorted(DAMAGES))
def test_a_damaged_newest_checkpoint_is_named_and_the_next_older_one_restored(kind, saved,
                                                                              tmp_path):
    workdir = _copy(saved, tmp_path)
    step_dir = workdir / "checkpoints" / "9"
    _damage(kind, step_dir)
    with pytest.warns(UserWarning) as caught:
        step, tree, meta = RunDir(workdir).restore()
    message = str(caught[0].message)
    assert f"checkpoint {step_dir} is damaged: " in message and DAMAGES[kind] in message
    assert message.endswith("using the next older one.")
    assert step == 6 and meta == {"step": 6}
    np.testing.assert_array_equal(np.asarray(tree["params"]["fc1"]["kernel"]),
                                  np.asarray(_state(seed=6).params["fc1"]["kernel"]))
    # The trainer's reader too: same fallback, and the damaged step is moved aside.
    ckpt = Checkpointer(workdir, keep=5, keep_best=False)
    with pytest.warns(UserWarning, match=f"checkpoint {step_dir} is damaged"):
        step, state, _ = ckpt.restore_good(_state(), make_mesh())
    assert step == 6 and ckpt.all_steps() == [3, 6]
    assert [p.name[:2] for p in (workdir / "damaged_checkpoints").iterdir()] == ["9-"]
    ckpt.save(9, state, {"step": 9})  # the step can be written again
    ckpt.close()
    assert RunDir(workdir).restore()[0] == 9


def test_non_finite_parameters_are_never_restored(saved, tmp_path):
    workdir = _copy(saved, tmp_path)
    ckpt = Checkpointer(workdir, keep=5, keep_best=False, async_save=False)
    ckpt.save(12, _state(fill=float("nan")), {"step": 12})  # digests match: the values are NaN
    ckpt.close()
    with pytest.warns(UserWarning, match=r"checkpoints/12 is damaged: params/\S+ .*hold NaN"):
        assert RunDir(workdir).restore()[0] == 9


def test_every_checkpoint_damaged_is_one_error_listing_each(saved, tmp_path):
    workdir = _copy(saved, tmp_path)
    for step in STEPS:
        _damage("garbled meta", workdir / "checkpoints" / str(step))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(CheckpointError, match=r"no usable checkpoint in .*checkpoints/9 is "
                                                  r"damaged.*checkpoints/3 is damaged"):
            RunDir(workdir).restore()
    with pytest.raises(CheckpointDamage, match="meta/metadata is not valid JSON"):
        RunDir(workdir).restore(step=6)  # an explicit step is never swapped for another


def test_digests_cover_every_array_and_change_with_one_bit():
    tree = {"a": {"b": np.arange(6, dtype=np.float32)}, "c": np.zeros((), np.int32)}
    digests = tree_digests(tree)
    assert sorted(digests) == ["a/b", "c"] and all(len(d) == 64 for d in digests.values())
    tree["a"]["b"].view(np.uint32)[3] ^= 1
    assert tree_digests(tree)["a/b"] != digests["a/b"]
    assert tree_digests({"c": np.zeros((1,), np.int32)})["c"] != digests["c"]  # shape counts


def test_unreadable_validation_metrics_do_not_lock_the_workdir_out(saved, tmp_path):
    workdir = _copy(saved, tmp_path)
    metrics = workdir / "checkpoints" / "9" / "metrics"
    metrics.mkdir()
    (metrics / "metrics").write_text("{garbage")
    (workdir / "run.json").write_text(json.dumps({"best_metric": "accuracy"}))
    with pytest.warns(UserWarning, match="checkpoints/9 are not readable: the checkpoints are "
                                         "taken newest first"):
        assert RunDir(workdir).restore()[0] == 9
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        Checkpointer(workdir, best_metric="accuracy").close()  # a writer repairs it
    assert "checkpoints/9: its validation metrics (metrics/metrics) are not readable" in (
        err.getvalue())
    assert not metrics.exists()


# ----------------------------------------------------------------------------- training runs


def _lenet(**overrides):
    config = tiny_config("lenet5")
    config.num_epochs = 1
    config.checkpoint.every_steps = 3  # 8 steps per epoch: checkpoints 3, 6, 8
    config.checkpoint.keep = 5
    for key, value in overrides.items():
        node = config
        *groups, leaf = key.split(".")
        for g in groups:
            node = node[g]
        node[leaf] = value
    return config


def _quiet(fn, *args, **kwargs):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        result = fn(*args, **kwargs)
    return result, err.getvalue()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A real (tiny) training run: LeNet-5, one epoch of 8 steps, checkpoints 3, 6, 8."""
    workdir = tmp_path_factory.mktemp("trained")
    _quiet(fit, _lenet(), workdir)
    return workdir


def test_eval_only_falls_back_like_every_reader(trained, tmp_path):
    workdir = _copy(trained, tmp_path)
    _damage("1 flipped bit", workdir / "checkpoints" / "8")
    with pytest.warns(UserWarning, match="checkpoints/8 is damaged: .*sha256"):
        result, _ = _quiet(evaluate_checkpoint, _lenet(), workdir)
    assert result["step"] == 6 and 0.0 <= result["test_accuracy"] <= 1.0
    assert (workdir / "checkpoints" / "8").is_dir()  # a reader never moves anything


def test_resume_skips_a_damaged_newest_checkpoint_and_finishes(trained, tmp_path):
    workdir = _copy(trained, tmp_path)
    (workdir / "metrics.jsonl").unlink()
    _damage("zeroed array file", workdir / "checkpoints" / "8")
    config = _lenet(num_epochs=2)  # num_epochs may change on resume
    with pytest.warns(UserWarning, match="checkpoints/8 is damaged"):
        result, err = _quiet(fit, config, workdir)
    assert "moved the damaged checkpoint" in err and "Resuming from" in err
    assert f"{workdir}/checkpoints/6: step 6" in err
    assert result["steps"] == 16 and result["epochs"] == 2
    history = [json.loads(line) for line in (workdir / HISTORY_FILE).read_text().splitlines()]
    assert history[-1]["changes"] == {"num_epochs": [1, 2]}
    assert history[-1]["allowed_by"] == "resumable keys"


def test_a_changed_config_is_refused_naming_every_key_before_anything_loads(trained, tmp_path):
    workdir = _copy(trained, tmp_path)
    before = (workdir / "config.json").read_text()
    config = _lenet(**{"optimizer.lr": 0.05, "seed": 1, "data.batch_size": 28})
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        fit(config, workdir)
    assert time.perf_counter() - t0 < 5  # before data loading and compiling
    msg = str(info.value)
    assert "trained with another config" in msg and "latest checkpoint step 8" in msg
    for text in ("data.batch_size: 32 -> 28", "optimizer.lr: 0.003 -> 0.05", "seed: 0 -> 1",
                 "--allow_config_change"):
        assert text in msg
    assert (workdir / "config.json").read_text() == before and not (
        workdir / HISTORY_FILE).exists()


def test_an_allowed_optimizer_change_names_the_optimizer_not_the_architecture(trained,
                                                                              tmp_path):
    workdir = _copy(trained, tmp_path)
    before = (workdir / "config.json").read_text()
    with pytest.raises(CheckpointError) as info:
        _quiet(fit, _lenet(**{"optimizer.name": "sgd"}), workdir, allow_config_change=True)
    msg = str(info.value)
    assert "was written with another optimizer: the model's parameters match" in msg
    assert "another architecture" not in msg
    assert (workdir / "config.json").read_text() == before  # nothing recorded: no resume


# ----------------------------------------------------------------------------- processes


def _env() -> dict:
    return dict({k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}, JAX_PLATFORMS="cpu",
                PYTHONPATH=str(ROOT))


def test_a_second_process_is_refused_at_once_and_a_dead_holder_leaves_no_lock(tmp_path):
    workdir = tmp_path / "w"
    workdir.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pathlib import Path\n"
         "from jaxcnn.train.workdir import lock_workdir\n"
         f"with lock_workdir(Path({str(workdir)!r})):\n"
         "    print('locked', flush=True)\n    time.sleep(600)\n"],
        cwd=ROOT, env=_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "train.py", "--config", "configs/smoke.py",
                               "--workdir", str(workdir)], cwd=ROOT, env=_env(),
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1, proc.stderr[-2000:]
        assert (f"train.py: error: WorkdirInUseError: workdir {workdir} in use by pid "
                f"{holder.pid}") in proc.stderr
        assert time.perf_counter() - t0 < 30 and not (workdir / "config.json").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with lock_workdir(workdir):  # the kernel dropped the dead holder's lock
        with pytest.raises(WorkdirInUseError, match=f"in use by pid {os.getpid()}"):
            with lock_workdir(workdir):
                pass


def test_sigterm_during_start_up_exits_cleanly_and_a_run_killed_before_its_first_checkpoint_says_so(  # noqa: E501
        tmp_path):
    workdir = tmp_path / "w"
    first = Train(workdir, config=str(ROOT / "configs" / "smoke.py"))
    deadline = time.monotonic() + 120
    while not (workdir / "config.json").exists():  # written before data loading starts
        assert first.proc.poll() is None and time.monotonic() < deadline, first.stderr
        time.sleep(0.02)
    first.signal(signal.SIGKILL)
    assert first.finish() == -9 and not (workdir / "checkpoints").exists()

    second = Train(workdir, config=str(ROOT / "configs" / "smoke.py"))
    second.wait_for_stderr("stopped before its first checkpoint")
    second.signal(signal.SIGTERM)  # now loading data / compiling: no handler used to exist
    assert second.finish() == 0, second.stderr[-3000:]
    assert "SIGTERM during start-up (data loading or compilation), before the first " \
           "training step" in second.stderr
    assert json.loads(second.out[-1]) == {"preempted": True, "started": False, "step": 0,
                                          "workdir": str(workdir)}


@pytest.mark.slow
def test_two_real_training_runs_on_one_workdir_and_a_damaged_resume_from_the_command_line(
        tmp_path):
    workdir = tmp_path / "w"
    config = str(ROOT / "configs" / "smoke.py")
    first = Train(workdir, "--config.checkpoint.keep=10", config=config)
    deadline = time.monotonic() + 120
    while not (workdir / ".lock").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    second = Train(workdir, "--config.checkpoint.keep=10", config=config)
    assert second.finish() == 1
    assert f"in use by pid {first.proc.pid}" in second.stderr
    assert first.finish() == 0, first.stderr[-3000:]
    records = (workdir / "metrics.jsonl").read_text().splitlines()
    assert len(records) == 3  # 2 epochs + final: nothing interleaved
    latest = max(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    _damage("64 flipped bytes", workdir / "checkpoints" / str(latest))
    evaluation = Train(workdir, "--config.checkpoint.keep=10", "--eval_only", config=config)
    assert evaluation.finish() == 0, evaluation.stderr[-3000:]
    assert f"checkpoints/{latest} is damaged" in evaluation.stderr
    rerun = Train(workdir, "--config.checkpoint.keep=10", "--config.num_epochs=3",
                  config=config)
    assert rerun.finish() == 0, rerun.stderr[-3000:]
    assert f"checkpoints/{latest} is damaged" in rerun.stderr
    assert "moved the damaged checkpoint" in rerun.stderr and "Resuming from" in rerun.stderr


def test_allowed_changes_are_recorded_in_the_config_history(trained, tmp_path):
    from jaxcnn.train.workdir import check_config, record_config

    workdir = _copy(trained, tmp_path)
    config = _lenet(**{"optimizer.lr": 0.01, "log_every": 2})
    with pytest.raises(ConfigError, match=r"Changed: optimizer.lr: 0.003 -> 0.01\. "):
        check_config(workdir, config)  # log_every alone would be allowed
    changes = check_config(workdir, config, allow_change=True)
    record_config(workdir, config, changes, resumed_at=8)
    entry = json.loads((workdir / HISTORY_FILE).read_text())
    assert entry["changes"] == {"log_every": [4, 2], "optimizer.lr": [0.003, 0.01]}
    assert entry["allowed_by"] == "--allow_config_change" and entry["resumed_at_step"] == 8
    assert json.loads((workdir / "config.json").read_text())["optimizer"]["lr"] == 0.01


def test_the_command_line_refuses_a_changed_config_and_allow_config_change_lets_it_through(
        trained, tmp_path, capsys):
    from jaxcnn.train.cli import train_main

    workdir = _copy(trained, tmp_path)
    argv = ["--config", str(ROOT / "configs" / "smoke.py"), "--workdir", str(workdir),
            "--config.progress=False", "--config.optimizer.name=sgd"]
    assert train_main(argv, prog="train.py") == 1
    err = capsys.readouterr().err
    assert "train.py: error: ConfigError:" in err and "optimizer.name: 'adam' -> 'sgd'" in err
    assert train_main([*argv, "--allow_config_change"], prog="train.py") == 1
    err = capsys.readouterr().err  # past the refusal: the checkpoint names the optimizer
    assert "train.py: error: CheckpointError:" in err and "another optimizer" in err
