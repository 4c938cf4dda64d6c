"""The grain host pipeline: batches are a pure function of (seed, step) — the on-device
path's epoch order, each process's rows of every global batch, augmentation seeded per
example — whatever the number of worker processes; its iterator state resumes the stream
exactly (also with another worker count); a bad record or a dead worker stops it with a
DatasetError, never a hang."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
from image_tree import make_tree

from jaxcnn.data.pipeline import epoch_permutation
from jaxcnn.data.records import RecordSource, prepare
from jaxcnn.data.stream import (
    ArrayExamples,
    BatchStream,
    EvalRows,
    FileExamples,
    Layout,
    LoadExample,
    RecordExamples,
    TrainRows,
    auto_workers,
    position_of_state,
    state_for_position,
)
from jaxcnn.data.transforms import ImageTransform
from jaxcnn.errors import DatasetError

SEED = 5
RRC = ImageTransform(train=True, size=12, random_resized_crop=True, flip=True)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    tree = make_tree(root / "tree", n_train=9, n_test=3, sizes_vary=True)
    prepare(tree, root / "rec", examples_per_shard=4, workers=1)
    return root / "rec"


def train_rows(records, *, batch_size=6, epochs=2, process_index=0, process_count=1,
               transform=RRC) -> TrainRows:
    src = RecordExamples(RecordSource(records, "train"))
    layout = Layout(len(src), batch_size, process_index, process_count)
    return TrainRows(LoadExample(src, transform, SEED), layout,
                     num_steps=epochs * layout.steps_per_epoch)


def labelled_arrays(n: int = 20) -> ArrayExamples:
    images = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 4, 4, 1), np.uint8)
    return ArrayExamples({"image": images, "label": np.arange(n, dtype=np.int32) * 10})


def test_train_batches_follow_the_on_device_epoch_order():
    src = labelled_arrays(20)
    layout = Layout(20, 8)
    rows = TrainRows(LoadExample(src, ImageTransform(), SEED), layout, num_steps=6)
    batches = list(BatchStream(rows, workers=0))
    assert len(batches) == 6 == 3 * layout.steps_per_epoch
    for step, batch in enumerate(batches):
        epoch, pos = divmod(step, 2)
        want = epoch_permutation(SEED, epoch, 20)[pos * 8:(pos + 1) * 8]
        np.testing.assert_array_equal(batch["label"], want * 10)
        np.testing.assert_array_equal(batch["image"][:, 0, 0, 0], want)


def test_each_process_reads_its_rows_of_the_same_global_batches(records):
    whole = list(BatchStream(train_rows(records), workers=0))
    halves = [list(BatchStream(train_rows(records, process_index=p, process_count=2),
                               workers=0)) for p in (0, 1)]
    assert len(whole) == 2 * (27 // 6)
    for step, batch in enumerate(whole):
        for key in ("image", "label"):
            joined = np.concatenate([halves[0][step][key], halves[1][step][key]])
            np.testing.assert_array_equal(joined, batch[key])
    assert whole[0]["image"].shape == (6, 12, 12, 3) and whole[0]["image"].dtype == np.uint8
    # The augmentation differs between epochs: the same example is cropped anew.
    assert not np.array_equal(whole[0]["image"], whole[4]["image"])


def test_worker_processes_give_the_same_stream_and_resume_exactly(records):
    rows = train_rows(records)
    reference = list(BatchStream(rows, workers=0))
    stream = BatchStream(rows, workers=2)
    try:
        head = [next(stream) for _ in range(3)]
        state = stream.get_state()
        assert state == state_for_position(3, 2)  # our translation matches grain's own
        assert position_of_state(state) == 3
        tail = list(stream)
    finally:
        stream.close()
    for want, got in zip(reference, head + tail, strict=True):
        np.testing.assert_array_equal(want["image"], got["image"])
        np.testing.assert_array_equal(want["label"], got["label"])
    # The state saved by two workers resumes a plain loop, and a plain loop's state a
    # two-worker stream: the rest of the stream is the same either way.
    resumed = BatchStream(rows, workers=0)
    resumed.set_state(state)
    np.testing.assert_array_equal(next(resumed)["image"], reference[3]["image"])
    for position in (0, 1, 5, 8):
        assert position_of_state(state_for_position(position, 3)) == position


def test_eval_rows_cover_the_split_once_with_zero_weight_padding(records):
    src = RecordExamples(RecordSource(records, "test"))
    ev = ImageTransform(size=10, resize=12)
    per_process = []
    for p in (0, 1):
        rows = EvalRows(LoadExample(src, ev, SEED), Layout(len(src), 4, p, 2))
        assert rows.num_batches == 3  # 9 examples in batches of 4: the last padded
        per_process.append(list(BatchStream(rows, workers=0)))
    labels = np.concatenate([np.concatenate([a["label"], b["label"]])
                             for a, b in zip(*per_process, strict=True)])
    weight = np.concatenate([np.concatenate([a["weight"], b["weight"]])
                             for a, b in zip(*per_process, strict=True)])
    np.testing.assert_array_equal(weight, [1] * 9 + [0] * 3)
    want = [RecordSource(records, "test")[i][1] for i in range(9)]
    np.testing.assert_array_equal(labels[:9], want)


def test_images_of_different_sizes_without_image_size_are_a_clear_error(records):
    rows = train_rows(records, transform=ImageTransform(train=True, flip=True))
    with pytest.raises(DatasetError, match="different sizes.*image_size"):
        next(BatchStream(rows, workers=0))


def test_auto_workers_keeps_tiny_images_in_this_process(records):
    tiny = TrainRows(LoadExample(labelled_arrays(), ImageTransform(), 0), Layout(20, 8), 2)
    assert auto_workers(tiny, max_workers=4) == 0


class _Unreadable:
    """A file source whose 7th file is garbage (decode error raised inside a worker)."""

    def __init__(self, files):
        self.inner = FileExamples(files)

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, index):
        out = self.inner[index]
        return {**out, "image": b"garbage"} if index == 7 else out

    def describe(self, index):
        return self.inner.describe(index)


class _Dies(_Unreadable):
    """A source whose worker process is killed (as the OOM killer does) at one example."""

    def __getitem__(self, index):
        if index == 7:
            os.kill(os.getpid(), signal.SIGKILL)
        return self.inner[index]


@pytest.mark.parametrize("kind,match", [
    (_Unreadable, r"cannot decode image file .*ant/007\.jpg"),
    (_Dies, r"input worker process died .*-9"),
])
def test_a_bad_file_or_a_dead_worker_stops_the_stream_with_a_named_error(
        tmp_path, kind, match):
    tree = make_tree(tmp_path, n_train=9, n_test=1)
    files = [(str(p), 0) for p in sorted((tree / "train" / "ant").iterdir())]
    rows = TrainRows(LoadExample(kind(files), ImageTransform(size=8), 0), Layout(9, 3),
                     num_steps=3)
    stream = BatchStream(rows, workers=1)
    try:
        with pytest.raises(DatasetError, match=match):
            for _ in stream:
                pass
    finally:
        stream.close()


WORKER_SCRIPT = """
import multiprocessing, sys, time
sys.path.insert(0, {tests!r})
from test_data_stream import train_rows
from jaxcnn.data.stream import BatchStream
stream = BatchStream(train_rows({records!r}), workers=2)
next(stream)
print(" ".join(str(p.pid) for p in multiprocessing.active_children()), flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_worker_processes_end_when_the_training_process_is_killed(records):
    import subprocess
    import sys
    import time
    from pathlib import Path

    script = WORKER_SCRIPT.format(tests=str(Path(__file__).parent), records=str(records))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        workers = [int(p) for p in proc.stdout.readline().split()]
        assert len(workers) >= 2 and all(_alive(p) for p in workers)
    finally:
        proc.send_signal(signal.SIGKILL)  # no clean-up code runs in the parent
        proc.wait()
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(p) for p in workers), "grain workers outlived a killed run"
