"""train.py end to end on configs/smoke.py in subprocesses: the epoch table, metrics.jsonl,
curves.png and one final JSON line; --eval_only (top-1, top-5, confusion matrix PNG);
--lr_find (plot and suggestion); a bad config fails before compiling, naming the key."""

import json
import os
import subprocess
import sys
from pathlib import Path

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
    proc = _train(workdir, env)
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


def test_rerun_of_a_finished_run_resumes_at_the_end(trained, env):
    workdir, first = trained
    proc = _train(workdir, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Resuming from" in proc.stderr and "step 16" in proc.stderr
    final = json.loads(proc.stdout.strip().splitlines()[-1])
    assert final["test_accuracy"] == json.loads(first.stdout.strip().splitlines()[-1])[
        "test_accuracy"]


def test_eval_only_reports_top1_top5_and_saves_the_confusion_matrix(trained, env):
    workdir, _ = trained
    proc = _train(workdir, env, "--eval_only")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert 0.5 < result["test_accuracy"] <= result["test_top5_accuracy"] <= 1.0
    assert (workdir / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    matrix = json.loads((workdir / "eval.jsonl").read_text())["confusion_matrix"]
    assert sum(map(sum, matrix)) == 360 and len(matrix) == 10


def test_lr_find_saves_the_plot_and_suggests_a_rate(tmp_path, env):
    proc = _train(tmp_path, env, "--lr_find")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert 1e-7 <= result["suggested_lr"] <= 10.0
    assert (tmp_path / "lr_find.png").exists()


def test_bad_config_fails_before_compiling_and_names_the_key(tmp_path, env):
    proc = _train(tmp_path, env, "--config.data.batch_size=0")
    assert proc.returncode == 1
    assert "ConfigError" in proc.stderr and "data.batch_size=0" in proc.stderr
