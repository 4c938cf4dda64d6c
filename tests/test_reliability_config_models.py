"""Start-up checks that stop silent wrong answers: config ranges (before anything compiles),
free-form `--config.model.kwargs.X=...` flags, model option types and ranges, options fixed by
an architecture, empty batches, LeNet applied at another size than it was initialized at,
16-bit images scaled (not clipped) to 8 bit, one-class folders and data.channels=2."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image
from train_helpers import tiny_config

from jaxcnn import create_model
from jaxcnn.data import load_folder
from jaxcnn.data.images import load_image
from jaxcnn.errors import ConfigError, InputError
from jaxcnn.models import model_options
from jaxcnn.train.config import (
    apply_free_form_flags,
    split_free_form_flags,
    validate_config,
)

ROOT = Path(__file__).resolve().parents[1]

# ----------------------------------------------------------------------------- config ranges


@pytest.mark.parametrize("key, value, expected", [
    ("log_every", 0, r"log_every must be >= 1 .*got 0"),  # was ZeroDivisionError after compiling
    ("data.crop_padding", -1, r"data.crop_padding must be >= 0"),
    ("seed", -1, r"seed must be in \[0, 2147483646\]"),
    ("data.image_size", -8, r"data.image_size must be >= 0"),
    ("optimizer.lr", -0.1, r"optimizer.lr must be >= 0.0 \(the peak learning rate\); got -0.1"),
    ("optimizer.lr", float("nan"), r"optimizer.lr must be >= 0.0 .*got nan"),
    ("optimizer.weight_decay", -1e-4, r"optimizer.weight_decay must be >= 0.0"),
    ("optimizer.clip_norm", -1.0, r"optimizer.clip_norm must be >= 0.0"),
    ("data.max_examples", -5, r"data.max_examples must be >= 0"),
    ("lr_find.steps", 1, r"lr_find.steps must be >= 2"),
    ("lr_find.steps", 0, r"lr_find.steps must be >= 2"),
    ("data.channels", 2, r"data.channels must be 1 \(grayscale\) or 3 \(RGB\); got 2"),
    ("data.cutout", -2, r"data.cutout must be >= 0"),
])
def test_out_of_range_config_values_are_named(key, value, expected):
    config = tiny_config("lenet5")
    *groups, leaf = key.split(".")
    node = config
    for g in groups:
        node = node[g]
    node[leaf] = value
    with pytest.raises(ConfigError, match=expected):
        validate_config(config)


def test_cutout_larger_than_a_fixed_image_size_is_refused():
    config = tiny_config("lenet5")
    config.data.image_size, config.data.cutout = 32, 33
    with pytest.raises(ConfigError, match="data.cutout=33 is larger than the 32x32 images"):
        validate_config(config)


def test_cutout_larger_than_the_native_size_fails_before_any_compile(tmp_path):
    from test_reliability_inputs import fit_without_compiling

    config = tiny_config("lenet5")
    config.data.cutout = 40  # digits are 32x32 natively (image_size=0)
    with pytest.raises(ConfigError, match="data.cutout=40 is larger than the 32x32 images"):
        fit_without_compiling(config, tmp_path / "w")


# ----------------------------------------------------------------------------- free-form flags


def test_free_form_flags_are_split_off_and_parsed_as_literals():
    argv = ["train.py", "--config", "c.py", "--config.model.kwargs.width=16",
            "--config.model.kwargs.stem", "cifar", "--config.optimizer.lr=0.1",
            "--config.model.kwargs.skip=false", "--config.task_kwargs.margin=0.5",
            "--config.model.kwargs.stage_sizes=(1, 1)"]
    rest, pairs = split_free_form_flags(argv)
    assert rest == ["train.py", "--config", "c.py", "--config.optimizer.lr=0.1"]
    config = ml_collections.ConfigDict({"model": {"kwargs": {}}, "task_kwargs": {}})
    config.lock()
    apply_free_form_flags(config, pairs)
    assert config.model.kwargs.to_dict() == {"width": 16, "stem": "cifar", "skip": False,
                                             "stage_sizes": (1, 1)}
    assert config.task_kwargs.margin == 0.5
    with pytest.raises(ConfigError, match="needs a value"):
        split_free_form_flags(["--config.model.kwargs.width"])


def test_model_kwargs_reach_the_model_from_the_command_line(tmp_path):
    # dropout=1.5 can only fail in create_model if the flag got through; it fails at start-up.
    proc = subprocess.run(
        [sys.executable, "train.py", "--config", "configs/smoke.py", "--workdir",
         str(tmp_path / "w"), "--config.model.name=small_cnn", "--config.model.kwargs.width=4",
         "--config.model.kwargs.dropout=1.5"],
        cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "train.py: error: ConfigError: create_model('small_cnn'): option dropout must be a "
        "dropout rate in [0, 1); got float 1.5.")


# ----------------------------------------------------------------------------- model options


@pytest.mark.parametrize("name, option, value, expected", [
    ("lenet5", "num_classes", -1, "num_classes must be an int >= 0 .*got int -1"),
    ("lenet5", "num_classes", 2.5, "num_classes must be an int >= 0 .*got float 2.5"),
    ("small_cnn", "width", 0, "width must be an int >= 1; got int 0"),
    ("resnet18", "in_channels", 0, "in_channels must be an int >= 1"),
    ("siamese", "embedding_dim", 0, "embedding_dim must be an int >= 1"),
    ("unet", "n_filters", 0, "n_filters must be an int >= 1"),
    ("mobilenet_v2", "width_mult", 0.0, "width_mult must be a positive multiplier"),
    ("small_cnn", "dropout", 1.5, r"dropout must be a dropout rate in \[0, 1\); got float 1.5"),
    ("resnet18", "skip", "no", "skip must be True or False; got str 'no'"),
    ("resnet18", "stem", 3, "stem must be a string"),
    ("googlenet", "aux_weight", float("inf"), "aux_weight must be a finite number"),
])
def test_model_options_are_checked_by_type_and_range(name, option, value, expected):
    with pytest.raises(ConfigError, match=rf"create_model\('{name}'\): option {expected}"):
        create_model(name, **{option: value})


@pytest.mark.parametrize("name, option, value", [
    ("resnet18", "stage_sizes", (1, 1)), ("vgg11", "cfg", (8, "M")),
    ("vgg11_bn", "batch_norm", False),
])
def test_options_fixed_by_the_architecture_are_not_listed_and_say_so(name, option, value):
    assert option not in model_options(name)
    with pytest.raises(ConfigError, match=rf"{option}=.* is fixed by the architecture {name} "
                                          "and cannot be overridden"):
        create_model(name, **{option: value})  # was a bare "got multiple values" TypeError


def test_valid_options_still_build():
    assert create_model("small_cnn", width=8, dropout=0.0, num_classes=0).width == 8
    assert create_model("resnet18", skip=False, num_classes=np.int64(5)).num_classes == 5
    assert create_model("siamese", embedding_dim=None).embedding_dim is None


@pytest.mark.parametrize("model, shape", [("lenet5", (0, 32, 32, 1)),
                                          ("small_cnn", (0, 32, 32, 3))])
def test_a_batch_of_zero_images_is_an_input_error(model, shape):
    net = create_model(model)
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    with pytest.raises(InputError, match=r"got an empty batch \(0, 32, 32, .\)\. Pass at least"):
        jax.eval_shape(lambda x: net.init(jax.random.key(0), x, train=True), x)


def test_lenet_initialized_at_32_and_applied_at_64_names_both_sizes():
    net = create_model("lenet5")
    variables = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, 32, 32, 1)))
    with pytest.raises(InputError, match=r"initialized at another input size: its fc1 layer "
                                         r"takes 120 features but input \(2, 64, 64, 1\) gives "
                                         r"9720"):
        jax.eval_shape(net.apply, variables, jnp.zeros((2, 64, 64, 1)))
    big = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, 64, 64, 1)))
    assert jax.eval_shape(net.apply, big, jnp.zeros((2, 64, 64, 1))).shape == (2, 10)


# ----------------------------------------------------------------------------- images


def _gradient16() -> np.ndarray:
    return (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520


@pytest.mark.parametrize("fmt", ["png", "tiff"])
def test_16_bit_images_are_scaled_to_8_bit_not_clipped_to_white(fmt, tmp_path):
    path = tmp_path / f"depth16.{fmt}"
    Image.fromarray(_gradient16()).save(path)
    assert Image.open(path).mode == "I;16"
    rgb = load_image(path)
    expected = np.round(_gradient16() / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(rgb[..., 0], expected)  # PIL's convert: 99.6% at 255
    assert (rgb == 255).mean() < 0.01


def test_16_bit_images_in_the_host_transforms_are_scaled(tmp_path):
    from jaxcnn.data.transforms import open_image, resize_center_crop

    path = tmp_path / "depth16.png"
    Image.fromarray(_gradient16()).save(path)
    out = resize_center_crop(open_image(path.read_bytes()), 64, 64, channels=1)
    np.testing.assert_array_equal(out[..., 0], np.round(_gradient16() / 257.0).astype(np.uint8))


def test_16_bit_images_in_a_folder_dataset_are_scaled(tmp_path):
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            Image.fromarray(_gradient16()).save(tmp_path / split / cls / "x.png")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "converted 2 image(s) ... I;16->L"
        splits = load_folder(str(tmp_path), channels=1, cache_dir=str(tmp_path / "cache"))
    expected = np.round(_gradient16() / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(splits.train.arrays["image"][0, ..., 0], expected)


def test_one_class_folder_warns_that_accuracy_will_mean_nothing(tmp_path):
    for split in ("train", "test"):
        (tmp_path / split / "only").mkdir(parents=True)
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / split / "only" / "x.png")
    with pytest.warns(UserWarning, match="single class folder \\('only'\\).*accuracy 1.0"):
        load_folder(str(tmp_path), cache_dir=str(tmp_path / "cache"))
