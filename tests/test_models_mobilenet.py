"""MobileNet v1 (the paper's body table) and v2 (torchvision's): structure, names, width
multipliers against torchvision's counts, resolution stages, and the residual rule of the
inverted residual block."""

import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_testing import fast_jit, random_images

import jaxcnn
from jaxcnn.models import abstract_variables, count_params
from jaxcnn.models.layers import batch_norm
from jaxcnn.models.mobilenet import V1_BLOCKS, InvertedResidual, make_divisible


def _params(model):
    return flax.traverse_util.flatten_dict(
        abstract_variables(model, (224, 224, 3))["params"], sep="/"
    )


def _feature_shapes(model, size=224):
    variables = abstract_variables(model, (size, size, 3))
    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    feats = jax.eval_shape(lambda v, x: model.apply(v, x, method=model.features), variables, x)
    return {k: v.shape for k, v in feats.items()}


def test_make_divisible_matches_torchvision():
    # Values of torchvision.models._utils._make_divisible(value, 8).
    assert make_divisible(32 * 1.0) == 32
    assert make_divisible(32 * 0.5) == 16
    assert make_divisible(24 * 0.35) == 8
    assert make_divisible(32 * 0.35) == 16  # rounding down to 8 would lose more than 10%
    assert make_divisible(1280 * 1.4) == 1792


@pytest.mark.parametrize("width_mult, expected", [(0.5, 1_968_680), (1.4, 6_108_776)])
def test_mobilenet_v2_width_multiplier_counts_match_torchvision(width_mult, expected):
    # torchvision 0.29: sum(p.numel() for p in mobilenet_v2(width_mult=w).parameters()).
    model = jaxcnn.create_model("mobilenet_v2", width_mult=width_mult)
    assert count_params(abstract_variables(model, (224, 224, 3))) == expected


def test_mobilenet_v1_follows_the_body_table():
    params = _params(jaxcnn.create_model("mobilenet_v1"))
    assert params["stem/conv/kernel"].shape == (3, 3, 3, 32)
    channels = 32
    for i, (out, _) in enumerate(V1_BLOCKS, start=1):
        assert params[f"block{i}_dw/conv/kernel"].shape == (3, 3, 1, channels)  # depthwise
        assert params[f"block{i}_pw/conv/kernel"].shape == (1, 1, channels, out)
        assert params[f"block{i}_pw/bn/scale"].shape == (out,)
        channels = out
    assert params["fc/kernel"].shape == (1024, 1000)
    assert len(V1_BLOCKS) == 13 and sum(s == 2 for _, s in V1_BLOCKS) == 4
    half = jaxcnn.create_model("mobilenet_v1", width_mult=0.5)
    assert _params(half)["block13_pw/conv/kernel"].shape == (1, 1, 512, 512)


@pytest.mark.parametrize("name, last", [("mobilenet_v1", 1024), ("mobilenet_v2", 1280)])
def test_stages_are_resolution_levels(name, last):
    shapes = _feature_shapes(jaxcnn.create_model(name))
    assert shapes["stem"][1:3] == (112, 112)
    for k, size in enumerate((112, 56, 28, 14, 7), start=1):
        assert shapes[f"stage{k}"][1:3] == (size, size)
    assert shapes["stage5"][-1] == last and shapes["pre_logits"] == (1, last)


def test_mobilenet_v2_names_mirror_torchvision_state_dict():
    params = _params(jaxcnn.create_model("mobilenet_v2"))
    assert params["features_0/conv/kernel"].shape == (3, 3, 3, 32)
    assert params["features_0/bn/scale"].shape == (32,)
    # features.1 has no expansion: conv.0 = depthwise ConvBNAct, conv.1 = project, conv.2 = BN
    assert params["features_1/conv_0/conv/kernel"].shape == (3, 3, 1, 32)
    assert params["features_1/conv_1/kernel"].shape == (1, 1, 32, 16)
    assert params["features_1/conv_2/scale"].shape == (16,)
    # features.2: conv.0 expand, conv.1 depthwise, conv.2 project, conv.3 BN
    assert params["features_2/conv_0/conv/kernel"].shape == (1, 1, 16, 96)
    assert params["features_2/conv_1/conv/kernel"].shape == (3, 3, 1, 96)
    assert params["features_2/conv_2/kernel"].shape == (1, 1, 96, 24)
    assert params["features_2/conv_3/bias"].shape == (24,)
    assert params["features_17/conv_2/kernel"].shape == (1, 1, 960, 320)
    assert params["features_18/conv/kernel"].shape == (1, 1, 320, 1280)
    assert params["classifier_1/kernel"].shape == (1280, 1000)
    assert not any(k.startswith("features_19") for k in params)
    assert jaxcnn.create_model("mobilenet_v2").dropout == 0.2


@pytest.mark.parametrize(
    "in_features, strides, residual", [(8, 1, True), (8, 2, False), (4, 1, False)]
)
def test_inverted_residual_adds_the_input_only_at_stride_1_and_same_width(
    in_features, strides, residual
):
    # With the block's weights zero (BN scale 0), its branch outputs 0: the output is the input
    # where torchvision's `use_res_connect` holds, zero elsewhere.
    norm = batch_norm(False, dtype=jnp.float32, param_dtype=jnp.float32)
    block = InvertedResidual(out_features=8, strides=strides, expand_ratio=6, norm=norm)
    x = random_images((1, 4, 4, in_features))
    abstract = jax.eval_shape(block.init, jax.random.key(0), x)
    zeros = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), abstract)
    zeros["batch_stats"] = jax.tree.map(np.ones_like, zeros["batch_stats"])
    y = np.asarray(fast_jit(block.apply)(zeros, x))
    assert y.shape == (1, 4 // strides, 4 // strides, 8)
    np.testing.assert_allclose(y, x if residual else np.zeros_like(y), atol=1e-6)
