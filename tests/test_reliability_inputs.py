"""Every bad input a user can hand jaxcnn gets a documented exception whose message names the
problem and the fix: model inputs, datasets (arrays, image folders, tfds offline), weight
files, configs (rejected before anything compiles) and similarity search."""

from __future__ import annotations

import io
import json
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxcnn import create_model
from jaxcnn.data import Source, from_arrays, load_folder, load_tfds
from jaxcnn.errors import (
    CheckpointError,
    ConfigError,
    DatasetError,
    InputError,
    OfflineError,
    UnknownModelError,
)

GOLDEN = Path(__file__).parent / "golden"


def trace_lenet(shape, dtype=jnp.float32):
    """Trace LeNet-5's init on an input of `shape` (no compute: errors are raised at trace)."""
    model = create_model("lenet5")
    x = jax.ShapeDtypeStruct(shape, dtype)
    return jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)


# ----------------------------------------------------------------------------- models


@pytest.mark.parametrize("shape, expected", [
    ((32, 32, 1), ["rank-4 NHWC", "got shape (32, 32, 1)", "Add a batch axis with x[None]"]),
    ((2, 32, 32, 3), ["expects 1 input channel(s)", "got shape (2, 32, 32, 3)"]),
    ((2, 1, 32, 32), ["looks like NCHW", "x.transpose(0, 2, 3, 1)"]),
    ((2, 16, 16, 1), ["at least 32x32 pixels", "got shape (2, 16, 16, 1)", "Resize"]),
])
def test_model_rejects_bad_input_shapes_with_the_expected_shape_and_the_fix(shape, expected):
    with pytest.raises(InputError) as info:
        trace_lenet(shape)
    for text in ["lenet5", "[batch, H, W, 1] with H, W >= 32", *expected]:
        assert text in str(info.value)


def test_model_never_casts_integer_pixels_silently():
    with pytest.raises(InputError) as info:
        trace_lenet((2, 32, 32, 1), jnp.uint8)
    msg = str(info.value)
    assert "floating-point pixels, got dtype uint8" in msg and "never cast silently" in msg
    assert "x.astype('float32') / 255" in msg


def test_unknown_model_name_lists_close_matches():
    with pytest.raises(UnknownModelError,
                       match=r"Unknown model 'resnet19'.*Did you mean.*resnet18"):
        create_model("resnet19")


def test_unknown_model_option_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['widht'\]; valid options are"):
        create_model("small_cnn", widht=4)


# ----------------------------------------------------------------------------- data


def test_nan_pixels_are_rejected_where_the_data_enters():
    x = np.full((4, 8, 8, 1), 100.0, np.float32)
    x[2, 3, 3, 0] = np.nan
    y = np.zeros(4, np.int32)
    with pytest.raises(DatasetError, match=r"arrays: image 2 holds NaN or infinite pixels"):
        from_arrays(x, y, x[:2] * 0, y[:2])
    with pytest.raises(DatasetError, match=r"image 2 holds NaN or infinite pixels"):
        Source({"image": x, "label": y})


def test_out_of_range_and_misshapen_arrays_name_the_fix():
    y = np.zeros(2, np.int32)
    with pytest.raises(DatasetError, match=r"got dtype float32 with range \[0.0, 1.0\]|Rescale"):
        from_arrays(np.linspace(-1, 1, 2 * 64, dtype=np.float32).reshape(2, 8, 8), y,
                    np.zeros((2, 8, 8)), y)
    with pytest.raises(DatasetError, match=r"\[N, H, W\] or \[N, H, W, C\]; got shape \(2, 8\)"):
        from_arrays(np.zeros((2, 8)), y, np.zeros((2, 8)), y)
    with pytest.raises(DatasetError, match=r"'label' has 3 entries but 'image' has 2"):
        Source({"image": np.zeros((2, 8, 8, 1), np.uint8), "label": np.zeros(3, np.int32)})


def test_labels_outside_the_classes_are_rejected_not_trained_on():
    x = np.zeros((4, 8, 8, 1), np.uint8)
    with pytest.raises(DatasetError, match=r"the train split has labels in \[-1, 2\] but the "
                                           r"3 class_names give 3 classes"):
        from_arrays(x, np.array([0, 1, 2, -1]), x, np.zeros(4, int), class_names=("a", "b", "c"))
    with pytest.raises(DatasetError, match=r"the test split has labels in \[0, 7\] but the "
                                           r"training labels \(no class_names given\) give 3"):
        from_arrays(x, np.array([0, 1, 2, 2]), x, np.array([0, 1, 7, 2]))


def _jpeg(color, mode="RGB", size=(8, 8), fmt="JPEG") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, fmt)
    return buf.getvalue()


@pytest.fixture
def folder(tmp_path):
    """A tiny ImageFolder: train/{cat,dog}, test/{cat,dog}, with one corrupt and one truncated
    JPEG, a README, a grayscale and an RGBA image in the RGB train split."""
    root = tmp_path / "pets"
    for split in ("train", "test"):
        for i, cls in enumerate(("cat", "dog")):
            d = root / split / cls
            d.mkdir(parents=True)
            for j in range(3):
                (d / f"{j}.jpg").write_bytes(_jpeg((80 * i + 20 * j, 10, 200)))
    bad = root / "train" / "cat"
    (bad / "corrupt.jpg").write_bytes(b"this is not a jpeg at all" * 10)
    good = _jpeg((1, 2, 3), size=(64, 64))
    (bad / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (bad / "README.txt").write_text("notes")
    (root / "train" / "dog" / "gray.png").write_bytes(_jpeg(128, "L", fmt="PNG"))
    (root / "train" / "dog" / "rgba.png").write_bytes(_jpeg((1, 2, 3, 4), "RGBA", fmt="PNG"))
    return root


def test_corrupt_and_truncated_jpegs_are_skipped_with_a_warning_naming_them(folder, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = load_folder(str(folder), cache_dir=str(tmp_path / "cache"))
    messages = [str(w.message) for w in caught]
    skipped = [m for m in messages if "unreadable" in m]
    assert len(skipped) == 1, messages
    assert "skipped 2 unreadable image(s)" in skipped[0]
    assert "corrupt.jpg" in skipped[0] and "truncated.jpg" in skipped[0]
    ignored = [m for m in messages if "README.txt" in m]
    assert ignored and "1 non-image file(s)" in ignored[0]
    converted = [m for m in messages if "converted" in m]
    assert converted and "converted 2 image(s)" in converted[0] and "to RGB" in converted[0]
    assert len(splits.train) == 3 + 3 + 2 and splits.train.image_shape == (8, 8, 3)
    assert splits.class_names == ("cat", "dog")


def test_strict_folder_raises_naming_the_unreadable_file(folder, tmp_path):
    with pytest.raises(DatasetError) as info:
        load_folder(str(folder), cache_dir=str(tmp_path / "cache"), strict=True)
    msg = str(info.value)
    assert "cannot decode image" in msg and "2 unreadable file(s)" in msg
    assert "corrupt.jpg" in msg or "truncated.jpg" in msg
    assert "config.data.strict=False" in msg


def test_empty_class_folder_and_mismatched_class_sets_are_named(folder, tmp_path):
    (folder / "train" / "bird").mkdir()
    with pytest.raises(DatasetError, match=r"class folder .*train/bird holds no images"):
        load_folder(str(folder), cache_dir=str(tmp_path / "cache"))
    (folder / "train" / "bird" / "0.jpg").write_bytes(_jpeg((5, 5, 5)))
    with pytest.raises(DatasetError) as info:
        load_folder(str(folder), cache_dir=str(tmp_path / "cache"))
    msg = str(info.value)
    assert "train and test class folders differ" in msg and "only in train: ['bird']" in msg
    assert "only in test: []" in msg and "same class sub-folders" in msg


def test_missing_folder_layout_is_explained(tmp_path):
    with pytest.raises(DatasetError, match=r"does not exist; expected <path>/train/<class>/\*.jpg"):
        load_folder(str(tmp_path / "nowhere"))


def test_tfds_dataset_not_available_offline_says_how_to_provide_it(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(OfflineError) as info:
        load_tfds("mnist", data_dir=str(tmp_path))
    msg = str(info.value)
    assert "tfds dataset 'mnist' is not prepared" in msg and str(tmp_path) in msg
    assert "downloads are off" in msg and "download the four MNIST .gz files" in msg
    assert "--config.data.download=True" in msg


# ----------------------------------------------------------------------------- weights


@pytest.fixture(scope="module")
def mobilenet_file(tmp_path_factory):
    """A synthetic torchvision mobilenet_v2 state_dict saved as .safetensors (14 MB)."""
    from safetensors.numpy import save_file

    from jaxcnn.pretrained.synthetic import synthetic_state_dict

    keys = json.loads((GOLDEN / "torchvision_keys.json").read_text())["mobilenet_v2"]
    path = tmp_path_factory.mktemp("weights") / "mobilenet_v2.safetensors"
    save_file(synthetic_state_dict(keys), str(path))
    return path


def test_truncated_safetensors_is_a_checkpoint_error_naming_the_file(mobilenet_file, tmp_path):
    from jaxcnn.pretrained import load

    data = mobilenet_file.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"Cannot read .*cut\.safetensors as safetensors"):
        load("mobilenet_v2", path=cut)


def test_weights_of_another_architecture_list_the_missing_and_unexpected_keys(mobilenet_file):
    from jaxcnn.pretrained import load

    with pytest.raises(CheckpointError) as info:
        load("resnet18", path=mobilenet_file)
    msg = str(info.value)
    assert msg.startswith("Cannot convert resnet18 weights: 102 model leaves, 262 source arrays")
    assert "unexpected keys in the source" in msg and "features.0.0.weight (32, 3, 3, 3)" in msg
    assert "Is the file for this architecture (and number of classes)?" in msg


def test_weights_file_with_a_wrong_hash_is_refused_before_use(tmp_path):
    from jaxcnn.pretrained import get_weights
    from jaxcnn.pretrained.hub import download

    entry = get_weights("resnet18", "IMAGENET1K_V1")
    (tmp_path / entry.filename).write_bytes(b"not the published file")
    with pytest.raises(CheckpointError) as info:
        download(entry, tmp_path)  # found in the cache: verified, never downloaded
    msg = str(info.value)
    assert entry.filename in msg and "is corrupt or truncated: its sha256 starts with" in msg
    assert f"expected {entry.sha256_prefix}" in msg and "download again" in msg


def test_unknown_weights_file_type_names_the_accepted_ones(tmp_path):
    from jaxcnn.pretrained import load

    odd = tmp_path / "w.h5"
    odd.write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"Unknown weights file type '.h5'.*\.safetensors"):
        load("resnet18", path=odd)


def test_pth_files_are_read_with_weights_only_so_no_code_runs(tmp_path):
    torch = pytest.importorskip("torch")
    from jaxcnn.pretrained.hub import read_state_dict

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "x": Evil()}, path)
    with pytest.raises(CheckpointError, match=r"Cannot read .*evil\.pth with torch\.load"):
        read_state_dict(path)
    assert not marker.exists()


def test_truncated_pth_is_a_checkpoint_error_naming_the_file(tmp_path):
    torch = pytest.importorskip("torch")
    from jaxcnn.pretrained.hub import read_state_dict

    path = tmp_path / "w.pth"
    torch.save({"conv1.weight": torch.ones(64, 3, 7, 7)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"Cannot read .*w\.pth with torch\.load"):
        read_state_dict(path)


def test_pth_of_another_architecture_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    from jaxcnn.pretrained import load

    path = tmp_path / "other.pth"
    torch.save({"features.0.weight": torch.ones(8, 3, 3, 3)}, path)
    with pytest.raises(CheckpointError,
                       match=r"(?s)resnet18 weights.*features\.0\.weight \(8, 3, 3, 3\)"):
        load("resnet18", path=path)


# ----------------------------------------------------------------------------- configs


class CompileCounter:
    """Counts XLA backend compiles while active (jax.monitoring duration events)."""

    EVENT = "/jax/core/compile/backend_compile_duration"

    def __init__(self):
        self.count = 0
        self.active = False
        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, event: str, duration: float, **kwargs) -> None:
        if self.active and event == self.EVENT:
            self.count += 1


_COMPILES = CompileCounter()


def fit_without_compiling(config, workdir):
    """fit(config, workdir); asserts that no XLA compile happened before it raised."""
    from jaxcnn.train import fit

    _COMPILES.count, _COMPILES.active = 0, True
    try:
        fit(config, workdir)
    finally:
        _COMPILES.active = False
        assert _COMPILES.count == 0, f"{_COMPILES.count} compiles before the config error"


def smoke():
    from train_helpers import tiny_config

    return tiny_config("lenet5")


def test_compile_counter_sees_compiles():
    _COMPILES.count, _COMPILES.active = 0, True
    jax.jit(lambda x: x * 3.0 + time.time_ns() % 7)(jnp.ones(3))
    _COMPILES.active = False
    assert _COMPILES.count >= 1


@pytest.mark.parametrize("key, value, expected", [
    ("optimizer.lrr", 0.1, r"unknown config key 'optimizer.lrr'. Did you mean optimizer.lr\?"),
    ("optimizer.lr", "fast", r"'optimizer.lr' must be float \(default 0.1\); got str 'fast'"),
    ("checkpoint.keep", 2.5, r"'checkpoint.keep' must be int \(default 3\); got float 2.5"),
    ("data.batch_size", 30, r"data.batch_size=30 must be a positive multiple of the number of "
                            r"devices \(4\).*use e.g. 28"),
    ("data.mean", (1.0, 2.0), r"data.mean \(1.0, 2.0\) and data.std \(127.5,\) need one value"),
    ("label_smoothing", 1.5, r"label_smoothing must be in \[0, 1\); got 1.5"),
])
def test_bad_config_fails_at_start_up_before_any_compile(key, value, expected, tmp_path):
    import ml_collections

    tree = smoke().to_dict()  # a plain dict: ConfigDict itself refuses some wrong types
    node = tree
    *parents, leaf = key.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = value
    config = ml_collections.ConfigDict(tree)
    with pytest.raises(ConfigError, match=expected):
        fit_without_compiling(config, tmp_path / "w")
    assert not (tmp_path / "w" / "checkpoints").exists()


def test_unknown_key_on_the_command_line_fails_before_jax_starts(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "train.py", "--config", "configs/smoke.py", "--workdir",
         str(tmp_path), "--config.optimizer.lrr=0.1"],
        cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("train.py: error: ConfigError: unknown config key in "
                           "--config.optimizer.lrr=0.1")
    assert 'Did you mean "lr"' in last
    assert not (tmp_path / "checkpoints").exists()
    assert time.perf_counter() - t0 < 60


# ----------------------------------------------------------------------------- similarity


def test_similarity_inputs_are_checked_with_the_fix():
    from jaxcnn.similarity import cosine, pairwise, topk

    with pytest.raises(InputError, match=r"cosine\(a, b\) needs two arrays of the same shape; "
                                         r"got \(3,\) and \(4,\)"):
        cosine(np.ones(3), np.ones(4))
    with pytest.raises(InputError, match=r"empty arrays of shape \(0,\)"):
        cosine(np.ones(0), np.ones(0))
    with pytest.raises(InputError, match=r"same vector length; got x \(2, 3\) and y \(2, 4\)"):
        pairwise(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(InputError, match=r"x is empty \(shape \(0, 3\)\)"):
        pairwise(np.ones((0, 3)))
    with pytest.raises(InputError,
                       match=r"rank-2 array \[count, dim\].*Add an axis with a\[None\]"):
        pairwise(np.ones(3))
    with pytest.raises(InputError, match=r"k=5 is larger than the database \(3 vectors\); "
                                         r"ask for k <= 3"):
        topk(np.ones((1, 2)), np.ones((3, 2)), k=5)
    with pytest.raises(InputError, match=r"k must be a positive integer; got 0"):
        topk(np.ones((1, 2)), np.ones((3, 2)), k=0)
    with pytest.raises(InputError, match=r"unknown similarity metric 'l3'"):
        pairwise(np.ones((2, 3)), metric="l3")


def test_index_built_with_another_model_is_refused(tmp_path):
    from jaxcnn.similarity.features import PixelExtractor
    from jaxcnn.similarity.index import build_index

    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(images / f"{i}.png")
    out = tmp_path / "index"
    build_index(images, out, PixelExtractor(4), progress=False)
    with pytest.raises(ConfigError) as info:
        build_index(images, out, PixelExtractor(8), progress=False)
    msg = str(info.value)
    assert "was built with" in msg and "dim=48" in msg and "dim=192" in msg
    assert "not comparable" in msg and "build a new index" in msg
