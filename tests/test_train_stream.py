"""Training through the host pipeline: `data.source=records` trains with host-side
RandomResizedCrop + flip, checkpoints carry the pipeline's grain state, and a run resumed from
them ends bit-identical to an uninterrupted one; streamed folders and tfds splits are the
same pipeline; bad combinations fail at start-up naming the fix."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from image_tree import make_tree
from reliability_helpers import read_checkpoint, without_timing
from train_helpers import tiny_config

from jaxcnn.data import load_data, make_feeder, make_mesh, replicated
from jaxcnn.data.pipeline import StreamData, eval_batches
from jaxcnn.data.records import prepare
from jaxcnn.data.stream import LazyImages
from jaxcnn.errors import ConfigError, DatasetError
from jaxcnn.train import Checkpointer, create_state, fit


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("tree"), n_train=12, n_test=4, sizes_vary=True)


@pytest.fixture(scope="module")
def records(tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("rec") / "records"
    prepare(tree, out, examples_per_shard=10, workers=1)
    return out


def records_config(path, **data):
    config = tiny_config("small_cnn")
    config.data.source = "records"
    config.data.path = str(path)
    config.data.max_examples = 0
    config.data.valid_fraction = 0.0  # validate on the test split
    config.data.resized_crop = 16  # on the host: RandomResizedCrop from the decoded image
    config.data.eval_resize = 18
    config.data.flip = True
    config.data.workers = 0
    config.data.batch_size = 12  # 36 images: 3 steps per epoch
    config.checkpoint.every_steps = 2
    config.checkpoint.keep = 20
    for key, value in data.items():
        config.data[key] = value
    return config


def _fit(config, workdir):
    with contextlib.redirect_stdout(io.StringIO()):
        return fit(config, workdir)


def test_records_train_and_resume_bit_identical_from_the_pipeline_state(records, tmp_path):
    config = records_config(records)
    config.num_epochs = 2
    whole = _fit(config, tmp_path / "whole")
    assert whole["steps"] == 6 and whole["devices"] == 4
    data = tmp_path / "whole" / "checkpoints" / "2" / "data" / "process_0-of-1.json"
    saved = json.loads(data.read_text())
    assert saved["position"] == 2 and saved["grain"] == {"next_index": 2}

    config.num_epochs = 1
    _fit(config, tmp_path / "resumed")
    # The pipeline state is covered by the checkpoint's digests: an edited one (still valid
    # JSON) makes step 3 damaged, and the run resumes from step 2 instead.
    state_file = tmp_path / "resumed" / "checkpoints" / "3" / "data" / "process_0-of-1.json"
    state_file.write_text(state_file.read_text().replace('"next_index": 3', '"next_index": 1'))
    config.num_epochs = 2
    with pytest.warns(UserWarning, match="3 is damaged: its input-pipeline state"):
        resumed = _fit(config, tmp_path / "resumed")  # continues from step 2's saved state
    assert resumed["steps"] == 6
    assert [p.name[:2] for p in (tmp_path / "resumed" / "damaged_checkpoints").iterdir()] == \
        ["3-"]
    want, got = read_checkpoint(tmp_path / "whole", 6), read_checkpoint(tmp_path / "resumed", 6)
    assert sorted(want) == sorted(got)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key, strict=True)
    records_of = lambda w: [without_timing(json.loads(line))
                            for line in (w / "metrics.jsonl").read_text().splitlines()]
    assert records_of(tmp_path / "resumed") == records_of(tmp_path / "whole")


def _tiny_state():
    import jax
    import jax.numpy as jnp
    import optax

    params = {"w": jnp.arange(6, dtype=jnp.float32)}
    state = create_state({"params": params}, optax.sgd(0.1), 0, ("count",))
    return jax.device_put(state, replicated(make_mesh()))


def _edit(f):
    f.write_text(f.read_text().replace('"position": 4', '"position": 2'))


@pytest.mark.parametrize("damage,reason", [
    (_edit, "differs from the sha256 written at save time"),
    (lambda f: f.write_text('{"position": 4, "gr'), "differs from the sha256"),
    (lambda f: f.unlink(), "is not readable"),
])
def test_a_damaged_pipeline_state_is_named_and_the_older_checkpoint_restored(
        tmp_path, damage, reason):
    state = _tiny_state()
    ckpt = Checkpointer(tmp_path, keep=5, keep_best=False, async_save=False, data=True)
    for step in (2, 4):
        ckpt.save(step, state, {"step": step},
                  data={"position": step, "grain": {"next_index": step}})
    ckpt.close()
    ckpt = Checkpointer(tmp_path, keep=5, keep_best=False, data=True)
    step, _, meta = ckpt.restore_good(state, make_mesh())  # intact: the newest
    assert step == 4 and meta == {"step": 4}  # the digests are not part of the meta returned
    step_dir = tmp_path / "checkpoints" / "4"
    damage(step_dir / "data" / "process_0-of-1.json")
    with pytest.warns(UserWarning, match=f"checkpoint {step_dir} is damaged: its "
                                         f"input-pipeline state data/process_0-of-1.json {reason}"):
        step, _, meta = ckpt.restore_good(state, make_mesh())
    assert step == 2 and meta == {"step": 2} and ckpt.all_steps() == [2]
    assert ckpt.read_data(2) == {"position": 2, "grain": {"next_index": 2}}
    assert [p.name[:2] for p in (tmp_path / "damaged_checkpoints").iterdir()] == ["4-"]
    ckpt.close()


def test_streamed_folder_gives_the_in_memory_pixels(tree, tmp_path):
    common = {"source": "folder", "path": str(tree), "cache_dir": str(tmp_path / "cache"),
              "image_size": 20, "eval_resize": 20}
    streamed = load_data({**common, "on_device": "off"})
    assert isinstance(streamed.test.arrays["image"], LazyImages)
    feeder = make_feeder(streamed.test, make_mesh())
    assert isinstance(feeder, StreamData)
    try:
        batches = list(eval_batches(feeder, len(streamed.test), 8))
    finally:
        feeder.close()
    images = np.concatenate([np.asarray(b["image"]) for b in batches])[:12]
    weights = np.concatenate([np.asarray(b["weight"]) for b in batches])
    np.testing.assert_array_equal(weights, [1] * 12 + [0] * 4)
    labels = np.concatenate([np.asarray(b["label"]) for b in batches])[:12]
    np.testing.assert_array_equal(labels, streamed.test.arrays["label"])
    # The eval transform is Resize(20) + CenterCrop(20): the test images are 24x32, so the
    # streamed pixels are the centre of the resized image, as the decoded array's own crop.
    direct = np.stack([np.asarray(streamed.test.arrays["image"][i]) for i in range(12)])
    np.testing.assert_array_equal(images, direct[:, 0])


def test_device_only_augmentations_are_refused_for_a_streamed_source(records):
    config = records_config(records, crop_size=12, resized_crop=0, image_size=16)
    with pytest.raises(ConfigError, match="host input pipeline.*data.crop_size"):
        fit(config, "/nonexistent/never-written")


def test_a_record_directory_of_another_dataset_is_refused(records, tmp_path):
    config = records_config(records, name="imagenet2012")
    with pytest.raises(DatasetError, match=r"holds dataset 'tree\d*' .* config.data.name is "
                                           r"'imagenet2012'"):
        fit(config, tmp_path / "w")


@pytest.mark.parametrize("key,value,match", [
    ("resized_crop_scale", (0.5, 0.1), "resized_crop_scale"),
    ("eval_resize", 10, "smaller than the centre crop"),
    ("workers", -2, "data.workers"),
])
def test_bad_host_pipeline_settings_fail_at_start_up(records, key, value, match):
    from jaxcnn.train.config import validate_config

    config = records_config(records)
    config.data[key] = value
    with pytest.raises(ConfigError, match=match):
        validate_config(config)


def test_imagenet_recipe_is_torchvisions_classic():
    import importlib

    from jaxcnn.train.config import validate_config

    config = importlib.import_module("configs.imagenet_resnet50").get_config()
    validate_config(config)
    assert (config.num_epochs, config.optimizer.name, config.optimizer.momentum) == (90, "sgd", 0.9)
    assert config.optimizer.weight_decay == 1e-4 and config.optimizer.decay_all
    assert tuple(config.schedule.milestones) == (30, 60) and config.schedule.gamma == 0.1
    assert (config.data.resized_crop, config.data.eval_resize) == (224, 256)
    assert tuple(config.data.resized_crop_scale) == (0.08, 1.0) and config.data.flip
    assert config.data.valid_fraction == 0.0  # all of train, as torchvision
    assert config.optimizer.lr == pytest.approx(0.1)
    config.data.batch_size = 1024  # as --config.data.batch_size=1024 does: lr follows
    assert config.optimizer.lr == pytest.approx(0.4)
