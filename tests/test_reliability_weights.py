"""Weight files checked against the architecture they are loaded as, and their values checked
as finite float weights: `pretrained.load(name, path=...)`, `jaxcnn convert`, msgpack files
of the wrong shape, and state_dicts with int/bool/complex/object/NaN arrays or int keys."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from flax import serialization

from jaxcnn.cli import main
from jaxcnn.errors import CheckpointError
from jaxcnn.models import abstract_variables, create_model
from jaxcnn.pretrained import convert, load, restore_variables, save_variables
from jaxcnn.pretrained.convert import identity, to_numpy
from jaxcnn.pretrained.hub import check_architecture


def _zeros(**kwargs):
    """LeNet-5's variables as zeros (eval_shape: nothing compiled)."""
    tree = abstract_variables(create_model("lenet5", **kwargs), (32, 32, 1))
    return jax.tree.map(lambda s: np.full(s.shape, 0.5, s.dtype), tree)


@pytest.fixture(scope="module")
def lenet_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("lenet")
    save_variables(_zeros(), out, {"model": "lenet5"})
    return out


def test_convert_of_a_lenet_as_mobilenet_v2_is_refused_and_writes_nothing(lenet_dir, tmp_path,
                                                                          capsys):
    out = tmp_path / "mb"
    assert main(["convert", "mobilenet_v2", "--from", str(lenet_dir), "--to", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"the weights at {lenet_dir} do not fit mobilenet_v2" in err
    assert "262 of its 262 leaves missing, e.g. params/" in err
    assert "10 leaves it does not have, e.g. params/conv1/bias (6,)" in err
    assert "pass the model name they were made for" in err
    assert not out.exists()  # no metadata claiming mobilenet_v2 with 61,706 parameters


def test_load_checks_the_tree_against_the_named_model(lenet_dir, tmp_path):
    assert set(load("lenet5", path=lenet_dir)["params"]) == {"conv1", "conv2", "conv3", "fc1",
                                                             "fc2"}
    with pytest.raises(CheckpointError, match="do not fit small_cnn"):
        load("small_cnn", path=lenet_dir / "variables.msgpack")
    three = tmp_path / "three"
    save_variables(_zeros(num_classes=3), three)
    variables = load("lenet5", path=three)  # another head size is the same architecture
    assert variables["params"]["fc2"]["kernel"].shape == (84, 3)
    assert check_architecture("lenet5", variables, "x") == 3


def test_one_shape_of_another_size_is_named_with_both_shapes(lenet_dir, tmp_path):
    variables = restore_variables(lenet_dir)
    variables["params"]["conv2"]["kernel"] = np.zeros((5, 5, 6, 17), np.float32)
    with pytest.raises(CheckpointError, match=r"1 of another shape, e.g. params/conv2/kernel "
                                              r"\(5, 5, 6, 17\) \(needs \(5, 5, 6, 16\)\)"):
        check_architecture("lenet5", variables, "here")


@pytest.mark.parametrize("tree, message", [
    ([np.zeros(3, np.float32)], "holds a list, not the {'params'"),
    (np.zeros(3, np.float32), "holds a ndarray, not the"),
    ({"weights": {}}, r"holds a dict with keys \['weights'\], not the"),
    ({"params": {1: np.zeros(3, np.float32)}}, r"params has non-string key\(s\) \[1\]"),
    ({"params": {"fc": {"kernel": np.ones((2, 2), np.int32)}}},
     "params/fc/kernel has dtype int32 .* weights must be real floating-point arrays"),
    ({"params": {"fc": {"kernel": np.ones((2, 2), bool)}}}, "fc/kernel has dtype bool"),
    ({"params": {"fc": {"kernel": np.ones((2, 2), np.complex64)}}}, "has dtype complex64"),
    ({"params": {"fc": {"kernel": np.array([[1.0, np.nan]], np.float32)}}},
     r"fc/kernel holds 1 NaN or infinite value\(s\) of 2"),
])
def test_msgpack_of_the_wrong_kind_is_a_checkpoint_error_naming_the_file(tree, message,
                                                                        tmp_path):
    file = tmp_path / "variables.msgpack"
    file.write_bytes(serialization.msgpack_serialize(tree))
    with pytest.raises(CheckpointError, match=message) as info:
        load("lenet5", path=file)
    assert str(file) in str(info.value)


def test_state_dict_with_bad_arrays_lists_every_one_and_non_string_keys_are_named():
    target = {"params": {"fc": {"kernel": np.zeros((2, 2)), "bias": np.zeros(2)}}}
    key_map = {"fc.weight": ("params/fc/kernel", identity), "fc.bias": ("params/fc/bias",
                                                                        identity)}
    with pytest.raises(CheckpointError) as info:
        convert({"fc.weight": np.ones((2, 2), np.int64),
                 "fc.bias": np.array([None, "x"], dtype=object)}, key_map, target)
    msg = str(info.value)
    assert "arrays that are not finite float weights (2)" in msg
    assert "fc.weight has dtype int64" in msg and "fc.bias has dtype object" in msg
    with pytest.raises(CheckpointError, match=r"1 key\(s\) are not strings \(0\)"):
        convert({0: np.zeros((2, 2)), "fc.bias": np.zeros(2)}, key_map, target)
    with pytest.raises(CheckpointError, match="w holds 1 NaN"):
        to_numpy(np.array([np.inf, 1.0]), "w")
    assert to_numpy(np.ones(2, np.float64)).dtype == np.float32


def test_a_flipped_bit_in_a_converted_weights_file_is_caught_by_its_sha256(lenet_dir, tmp_path):
    copy = tmp_path / "w"
    copy.mkdir()
    for name in ("variables.msgpack", "meta.json"):
        (copy / name).write_bytes((lenet_dir / name).read_bytes())
    assert len(json.loads((copy / "meta.json").read_text())["sha256"]) == 64
    blob = bytearray((copy / "variables.msgpack").read_bytes())
    blob[len(blob) // 2] ^= 0x10  # inside an array: still valid msgpack, other weights
    (copy / "variables.msgpack").write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="does not match the sha256 recorded in"):
        load("lenet5", path=copy)
