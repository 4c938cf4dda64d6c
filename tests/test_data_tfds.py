"""`--config.data.download=True` for real: a tiny local tfds `GeneratorBasedBuilder` is
downloaded-and-prepared by `load_tfds` into a temporary data_dir in array_record format (the
format `tfds.data_source` reads without TensorFlow), then trained on through the normal
config and `jaxcnn.train.fit`."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from jaxcnn.data import load_tfds

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `from configs import smoke`

NAME = "jaxcnn_tiny_images"


class JaxcnnTinyImages(tfds.core.GeneratorBasedBuilder):
    """Two classes of 32x32 JPEGs: dark and bright (a learnable, offline dataset)."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(32, 32, 3), encoding_format="jpeg"),
            "label": tfds.features.ClassLabel(names=["dark", "bright"])}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(64, 0), "test": self._generate_examples(16, 1)}

    def _generate_examples(self, n: int, seed: int):
        rng = np.random.default_rng(seed)
        for i in range(n):
            label = i % 2
            arr = np.clip(rng.normal(60 + 130 * label, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, format="JPEG")  # encoded: no TensorFlow needed
            yield i, {"image": buf.getvalue(), "label": label}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfds")


def test_download_true_prepares_array_record_and_trains_through_the_config(data_dir, tmp_path):
    from configs import smoke
    from jaxcnn.train import fit

    splits = load_tfds(NAME, data_dir=str(data_dir), download=True)
    files = sorted(p.name for p in (data_dir / NAME / "1.0.0").iterdir())
    assert any(".array_record-" in f for f in files), files
    assert len(splits.train) == 64 and splits.class_names == ("dark", "bright")
    assert splits.train.image_shape == (32, 32, 3)

    config = smoke.get_config()
    config.data.source = "tfds"
    config.data.name = NAME
    config.data.data_dir = str(data_dir)
    config.data.download = True
    config.data.batch_size = 16
    config.num_epochs = 2
    config.checkpoint.every_steps = 0
    config.progress = False
    result = fit(config, tmp_path / "run")
    assert result["steps"] == 6  # 2 epochs of (64 - 6 held out for validation) // 16 steps
    assert result["test_accuracy"] >= 0.9  # dark vs bright: learnt, not a constant guess


def test_a_streamed_tfds_split_is_read_encoded_by_the_host_pipeline(data_dir):
    from jaxcnn.data import load_data, make_feeder, make_mesh
    from jaxcnn.data.pipeline import StreamData, eval_batches
    from jaxcnn.data.stream import LazyImages, LazyLabels, TfdsExamples

    load_tfds(NAME, data_dir=str(data_dir), download=True)
    in_memory = load_data({"source": "tfds", "name": NAME, "data_dir": str(data_dir)})
    streamed = load_data({"source": "tfds", "name": NAME, "data_dir": str(data_dir),
                          "on_device": "off", "workers": 0})
    column = streamed.test.arrays["image"]
    assert isinstance(column, LazyImages) and isinstance(column.examples, TfdsExamples)
    assert isinstance(column.examples[0]["image"], bytes)  # left encoded by tfds (SkipDecoding)
    assert isinstance(streamed.test.arrays["label"], LazyLabels)
    feeder = make_feeder(streamed.test, make_mesh())
    assert isinstance(feeder, StreamData)
    try:
        batches = list(eval_batches(feeder, 16, 8))
    finally:
        feeder.close()
    images = np.concatenate([np.asarray(b["image"]) for b in batches])
    labels = np.concatenate([np.asarray(b["label"]) for b in batches])
    # The same JPEG decoder either way: the streamed pixels are tfds' own decoded arrays.
    np.testing.assert_array_equal(images, in_memory.test.arrays["image"])
    np.testing.assert_array_equal(labels, in_memory.test.arrays["label"])
