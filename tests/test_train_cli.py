"""train.py end to end on configs/smoke.py in subprocesses: the start-up phase lines, the epoch
table, metrics.jsonl, curves.png, TensorBoard events, run.json and one final JSON line; a
rerun of a finished run reports it complete; --eval_only reports the checkpoint fit reported
(top-1, top-5, confusion matrix PNG); `python -m jaxcnn.train --lr_find` from another
directory (the mean loss of the first steps is near ln 10); `jaxcnn predict` on the trained
workdir; `jaxcnn train` in-process: help, config names, a bad key fails before compiling."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    env = dict(os.environ)
    env["JAXCNN_XLA_CACHE"] = str(tmp_path_factory.mktemp("xla"))  # shared by the 3 runs
    env["XLA_FLAGS"] = ""  # one CPU device, as a user's laptop
    return env


def _train(workdir, env, *args):
    cmd = [sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / "configs/smoke.py"),
           "--workdir", str(workdir), "--config.progress=False", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, env):
    workdir = tmp_path_factory.mktemp("smoke")
    proc = _train(workdir, env, "--config.log.tensorboard=True")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir, proc


def test_train_writes_table_metrics_curves_and_one_final_json_line(trained):
    workdir, proc = trained
    lines = proc.stdout.strip().splitlines()
    assert lines[0].split() == ["epoch", "train_loss", "valid_loss", "accuracy", "time"]
    assert [line.split()[0] for line in lines[1:3]] == ["1", "2"]
    final = json.loads(lines[-1])
    for key in ("test_accuracy", "epochs", "train_seconds", "compile_seconds",
                "images_per_second"):
        assert key in final
    assert final["epochs"] == 2 and final["steps"] == 16 and final["test_accuracy"] > 0.5
    records = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records[:2]] == [1, 2] and records[-1]["final"]
    assert {"train_loss", "valid_loss", "valid_accuracy", "lr"} <= set(records[0])
    assert (workdir / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((workdir / "config.json").read_text())["model"]["name"] == "lenet5"
    info = json.loads((workdir / "run.json").read_text())
    assert info["model"] == "lenet5" and info["input_shape"] == [32, 32, 1]
    assert info["model_kwargs"] == {"num_classes": 10, "in_channels": 1}
    assert info["mean"] == [127.5] and info["class_names"] == [str(i) for i in range(10)]
    assert list(workdir.glob("events.out.tfevents.*"))  # --config.log.tensorboard=True
    phases = [line.split(" ... ")[0] for line in proc.stderr.splitlines() if " ... " in line]
    assert phases == ["loading data (digits)", "initializing lenet5", "compiling the train step"]
    assert "\r" not in proc.stderr  # no progress bar when stderr is not a terminal


def test_rerun_of_a_finished_run_reports_it_complete(trained, env):
    workdir, first = trained
    proc = _train(workdir, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "the run is complete (2 epochs, step 16)" in proc.stderr
    assert "Resuming" not in proc.stderr and "compiling the train step" not in proc.stderr
    final = json.loads(proc.stdout.strip().splitlines()[-1])
    assert final["already_complete"] and "images_per_second" not in final
    assert final["test_accuracy"] == json.loads(first.stdout.strip().splitlines()[-1])[
        "test_accuracy"]


def test_eval_only_reports_what_fit_reported_and_saves_the_confusion_matrix(trained, env):
    workdir, _ = trained
    proc = _train(workdir, env, "--eval_only")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert 0.5 < result["test_accuracy"] <= result["test_top5_accuracy"] <= 1.0
    fitted = json.loads(_.stdout.strip().splitlines()[-1])  # fit's report, same checkpoint
    assert result["step"] == fitted["best_step"]
    assert result["test_accuracy"] == fitted["test_accuracy"]
    assert (workdir / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    matrix = json.loads((workdir / "eval.jsonl").read_text())["confusion_matrix"]
    assert sum(map(sum, matrix)) == 360 and len(matrix) == 10


def test_lr_find_from_another_directory_records_the_mean_loss(tmp_path, env):
    env = {**env, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "jaxcnn.train", "--config", "smoke", "--workdir", "lr",
           "--lr_find"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert 1e-7 <= result["suggested_lr"] <= 10.0
    assert (tmp_path / "lr" / "lr_find.png").exists()
    # At rates of 1e-7 the untrained 10-class network's mean cross-entropy is near ln(10) =
    # 2.30 (it was 32x that, the batch sum, before the fix).
    losses = [json.loads(line)["loss"] for line in
              (tmp_path / "lr" / "lr_find.jsonl").read_text().splitlines()[:5]]
    assert all(abs(x - math.log(10)) < 0.3 for x in losses), losses


def test_predict_uses_the_trained_workdir(trained, capsys):
    from PIL import Image

    from jaxcnn.cli import main

    workdir, _ = trained
    image = workdir / "digit.png"
    Image.fromarray(np.full((40, 30), 200, np.uint8)).save(image)
    assert main(["predict", str(image), "--weights", str(workdir), "--top-k", "3"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    labels = [label for label, _ in line["top3"]]
    assert len(labels) == 3 and set(labels) <= {str(i) for i in range(10)}


def test_jaxcnn_train_in_process_help_configs_and_a_bad_key(tmp_path, capsys):
    from jaxcnn.cli import main

    assert main(["train", "--help"]) == 0
    assert "--config NAME|PATH" in capsys.readouterr().out
    assert main(["train", "--config", "list"]) == 0
    assert "digits_lenet" in capsys.readouterr().out.split()
    assert main(["train", "--config", "digits_lenetx", "--workdir", str(tmp_path)]) == 1
    assert "Did you mean digits_lenet" in capsys.readouterr().err
    code = main(["train", "--config", "smoke", "--workdir", str(tmp_path), "--config.nokey=1"])
    assert code == 1 and "nokey" in capsys.readouterr().err
    assert main(["train", "--config", "smoke"]) == 2  # no --workdir: a usage error
    assert not list(tmp_path.iterdir())  # nothing was written


def test_bad_config_fails_before_compiling_and_names_the_key(tmp_path, env):
    proc = _train(tmp_path, env, "--config.data.batch_size=0")
    assert proc.returncode == 1
    assert "ConfigError" in proc.stderr and "data.batch_size=0" in proc.stderr
