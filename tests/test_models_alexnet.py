"""AlexNet: parameter counts (torchvision's `alexnet`: 61,100,840, checked against
torchvision 0.29; the 2012 single-tower net: 62,378,344), stage sizes equal to torchvision's
at odd input sizes (measured once with forward hooks on `features[2]`, `[5]`, `[12]`), the
fixed 227x227 input of the original, and the torchvision-compatible parameter names."""

import jax
import jax.numpy as jnp
import pytest
from flax.traverse_util import flatten_dict

import jaxcnn
from jaxcnn.models import abstract_variables


def _features_shapes(model, size):
    variables = abstract_variables(model, (size, size, 3))
    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    return jax.eval_shape(
        lambda v, x: model.apply(v, x, train=False, method=model.features), variables, x
    )


def test_alexnet_param_count_matches_torchvision():
    variables = abstract_variables(jaxcnn.create_model("alexnet"), (224, 224, 3))
    assert jaxcnn.count_params(variables) == 61_100_840


def test_alexnet_original_param_count_matches_paper_table():
    variables = abstract_variables(jaxcnn.create_model("alexnet_original"), (227, 227, 3))
    assert jaxcnn.count_params(variables) == 62_378_344


@pytest.mark.parametrize(
    ("size", "stages"),
    [  # torchvision: sides after max-pool 1, 2, 3
        (63, (7, 3, 1)),  # torchvision's documented minimum size
        (100, (11, 5, 2)),
        (227, (27, 13, 6)),
    ],
)
def test_alexnet_stage_sizes_match_torchvision(size, stages):
    feats = _features_shapes(jaxcnn.create_model("alexnet"), size)
    got = tuple(feats[f"stage{i}"].shape[1] for i in (1, 2, 5))
    assert got == stages
    assert feats["pre_logits"].shape == (1, 4096)
    assert feats["logits"].shape == (1, 1000)


def test_alexnet_original_layer_sizes_follow_the_paper():
    feats = _features_shapes(jaxcnn.create_model("alexnet_original"), 227)
    assert feats["stage1"].shape == (1, 27, 27, 96)  # 55x55 conv1 output, pooled
    assert feats["stage2"].shape == (1, 13, 13, 256)
    assert feats["stage5"].shape == (1, 6, 6, 256)


@pytest.mark.parametrize("size", [226, 259])  # 227..258 give a 6x6 map
def test_alexnet_original_rejects_sizes_without_a_6x6_map(size):
    model = jaxcnn.create_model("alexnet_original")
    with pytest.raises(jaxcnn.InputError, match="227"):
        _features_shapes(model, size)


def test_alexnet_names_mirror_torchvision_state_dict():
    variables = abstract_variables(jaxcnn.create_model("alexnet"), (224, 224, 3))
    paths = {"/".join(k[:-1]) for k in flatten_dict(variables["params"])}
    expected = {f"features_{i}" for i in (0, 3, 6, 8, 10)} | {f"classifier_{i}" for i in (1, 4, 6)}
    assert paths == expected
    # NHWC flatten: the first FC takes 6*6*256 inputs (converters permute torch's CHW order)
    assert variables["params"]["classifier_1"]["kernel"].shape == (9216, 4096)
