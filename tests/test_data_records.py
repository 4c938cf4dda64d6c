"""`jaxcnn prepare` and the record reader: a round trip of bytes, labels and names; unreadable
files reported and skipped; a run killed midway resumed to byte-identical shards; and every
bad record directory (missing or truncated shard, corrupt record, another dataset, an
unfinished prepare) refused with a DatasetError naming the file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from image_tree import CLASSES, jpeg_bytes, make_tree

from jaxcnn.data.records import METADATA, RecordSource, prepare, read_metadata
from jaxcnn.errors import DatasetError

ROOT = Path(__file__).resolve().parents[1]
TRUNCATED = jpeg_bytes(40, 40, 100)[:300]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("tree"), n_train=7, n_test=3, bad={
        "train/bee/truncated.jpg": TRUNCATED, "train/cat/text.jpg": b"not an image"})


@pytest.fixture(scope="module")
def records(tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("rec") / "records"
    meta = prepare(tree, out, examples_per_shard=5, workers=1)
    return out, meta


def test_prepare_round_trips_encoded_bytes_labels_and_names(tree, records):
    out, meta = records
    assert meta["class_names"] == list(CLASSES)
    assert meta["splits"]["train"]["num_examples"] == 21  # 3 x 7 readable, 2 skipped
    assert meta["splits"]["test"]["num_examples"] == 9
    assert len(meta["splits"]["train"]["shards"]) == 5  # 23 files / 5 per shard
    src = RecordSource(out, "train")
    assert len(src) == 21
    seen = set()
    for i in range(len(src)):
        data, label, name = src[i]
        assert data == (tree / name).read_bytes()  # the original encoded bytes
        assert name.split("/")[1] == CLASSES[label]
        seen.add(name)
    assert "train/ant/000.jpg" in seen and len(seen) == 21
    assert src.labels.tolist() == [src[i][1] for i in range(len(src))]
    on_disk = json.loads((out / METADATA).read_text())
    assert on_disk["splits"]["train"]["num_skipped"] == 2
    reasons = dict(on_disk["splits"]["train"]["skipped"])
    assert set(reasons) == {"train/bee/truncated.jpg", "train/cat/text.jpg"}
    assert not list(out.glob("*/*.json")) and not (out / ".prepare-plan.json").exists()


def test_prepare_of_a_finished_directory_is_a_no_op_but_another_dataset_is_refused(
        tree, records, tmp_path):
    out, meta = records
    assert prepare(tree, out, examples_per_shard=5, workers=1)["fingerprint"] == \
        meta["fingerprint"]
    other = make_tree(tmp_path / "other", n_train=2, n_test=1)
    with pytest.raises(DatasetError, match="already holds records of"):
        prepare(other, out, examples_per_shard=5, workers=1)


def test_every_image_of_a_split_unreadable_is_a_clear_error(tmp_path):
    root = tmp_path / "src"
    for split in ("train", "test"):
        (root / split / "a").mkdir(parents=True)
        (root / split / "a" / "x.jpg").write_bytes(TRUNCATED)
    (root / "test" / "a" / "y.jpg").write_bytes(jpeg_bytes(8, 8, 10))
    with pytest.raises(DatasetError, match=r"no readable image in .*train.*x\.jpg"):
        prepare(root, tmp_path / "out", workers=1)


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_missing_truncated_and_corrupt_shards_are_named(records, tmp_path):
    out = _copy(records[0], tmp_path / "r1")
    shard = out / records[1]["splits"]["train"]["shards"][2]["file"]
    data = shard.read_bytes()
    shard.write_bytes(data[:-10])
    with pytest.raises(DatasetError, match=f"{shard.name} has .* bytes .* truncated"):
        read_metadata(out)
    shard.unlink()
    with pytest.raises(DatasetError, match=f"shard .*{shard.name} of split 'train' is missing"):
        RecordSource(out, "train")
    # Same size, scrambled content: caught when the record is read, naming shard and record.
    shard.write_bytes(data[:40] + bytes(len(data) - 80) + data[-40:])
    src = RecordSource(out, "train")
    with pytest.raises(DatasetError, match=rf"{shard.name}, record \d"):
        for i in range(len(src)):
            src[i]
    with pytest.raises(DatasetError, match="no split 'valid'"):
        RecordSource(out, "valid")
    with pytest.raises(DatasetError, match="jaxcnn prepare SRC --out"):
        RecordSource(tmp_path / "nothing", "train")


def test_prepare_killed_midway_resumes_to_identical_shards(tree, records, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "jaxcnn", "prepare", str(tree), "--out", str(out),
           "--examples-per-shard", "2", "--workers", "1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "JAX_PLATFORMS": "cpu"})
    for line in proc.stderr:
        if line.startswith("shard done"):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / METADATA).exists()
    with pytest.raises(DatasetError, match=r"interrupted\): rerun the same"):
        read_metadata(out)
    # A half-written shard as a killed writer leaves it: a temporary name, never taken as done.
    (out / "train" / "train-00003-of-00012.array_record.tmp-999").write_bytes(b"partial")
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert done.returncode == 0, done.stderr
    assert "resuming:" in done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["train_examples"] == 21 and summary["skipped"] == 2
    reference = prepare(tree, tmp_path / "reference", examples_per_shard=2, workers=1)
    for info in reference["splits"].values():
        for shard in info["shards"]:
            f = shard["file"]
            assert (out / f).read_bytes() == (tmp_path / "reference" / f).read_bytes(), f
    assert not list(out.rglob("*.tmp-*"))
    with pytest.raises(DatasetError, match="interrupted prepare .* another"):
        (out / METADATA).unlink()
        (out / ".prepare-plan.json").write_text(json.dumps({"source": "elsewhere"}))
        prepare(tree, out, examples_per_shard=2, workers=1)
