"""Properties every registered model must have, parametrized over `list_models()` so that a
new model is tested without new code. Shapes and parameter counts use `jax.eval_shape`
(no compute), so even ResNet-152 is checked in a fraction of a second."""

import functools

import jax
import jax.numpy as jnp
import pytest

import jaxcnn
from jaxcnn.models import abstract_variables, get_model_spec

# Parameter counts (the `params` collection) from the foundation issue, i.e. torchvision's.
EXPECTED_PARAMS = {
    "lenet5": 61_706,
    "fasterrcnn_resnet50_fpn": 41_755_286,  # FrozenBatchNorm2d vectors are buffers
    "fasterrcnn_resnet18_fpn": 28_730_006,  # resnet_fpn_backbone("resnet18") in FasterRCNN
    "alexnet_original": 62_378_344,
    "alexnet": 61_100_840,
    "vgg16": 138_357_544,
    "vgg19": 143_667_240,
    "vgg16_bn": 138_365_992,
    "googlenet": 13_004_888,  # with the aux heads (default); 6,624,904 without
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "wide_resnet50_2": 68_883_240,
    "resnext50_32x4d": 25_028_904,
    "mobilenet_v1": 4_231_976,
    "mobilenet_v2": 3_504_872,
    "conv_autoencoder": 140_594,  # + 256 BN statistics = Keras' 140,850 total
    "zfnet": 107_627_624,  # Zeiler & Fergus (2013), the 512/1024/512 model
}


@functools.cache
def _abstract(name: str, **overrides):
    """(model, abstract variables); cached because tracing ResNet-152 is the slow part."""
    model = jaxcnn.create_model(name, **overrides)
    return model, abstract_variables(model, get_model_spec(name).input_shape)


def _output_shape(name: str, batch: int = 2, **overrides):
    spec = get_model_spec(name)
    model, variables = _abstract(name, **overrides)
    x = jax.ShapeDtypeStruct((batch, *spec.input_shape), jnp.float32)
    return jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)


@pytest.mark.parametrize("name", jaxcnn.list_models())
def test_output_shape_matches_task(name):
    spec = get_model_spec(name)
    out = _output_shape(name)
    if spec.task == "classification":
        assert out.shape == (2, spec.num_classes)
        assert out.dtype == jnp.float32
    elif spec.task == "segmentation":
        assert out.shape == (2, *spec.input_shape[:2], spec.num_classes)
    elif spec.task == "reconstruction":
        assert out.shape == (2, *spec.input_shape)
    elif spec.task == "localization":
        assert out.logits.shape == (2, spec.num_classes) and out.boxes.shape == (2, 4)
    elif spec.task == "detection":
        assert out["boxes"].shape[::2] == (2, 4) and out["scores"].shape == out["labels"].shape
    else:
        assert out.ndim == 2 and out.shape[0] == 2


@pytest.mark.parametrize("name", jaxcnn.list_models(task="classification"))
def test_classifier_num_classes_override_and_features(name):
    spec = get_model_spec(name)
    assert _output_shape(name, num_classes=7).shape == (2, 7)
    pooled = _output_shape(name, num_classes=0)
    assert pooled.ndim == 2
    model, variables = _abstract(name)
    x = jax.ShapeDtypeStruct((1, *spec.input_shape), jnp.float32)
    feats = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=False, method=model.features), variables, x
    )
    assert "pre_logits" in feats and "logits" in feats
    assert feats["pre_logits"].shape[1:] == pooled.shape[1:]


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_param_count_matches_reference(name):
    _, variables = _abstract(name)
    assert jaxcnn.count_params(variables) == EXPECTED_PARAMS[name]


@pytest.mark.parametrize("name", jaxcnn.list_models())
def test_rejects_wrong_rank_channels_dtype_and_size(name):
    spec = get_model_spec(name)
    model, variables = _abstract(name)
    h, w, c = spec.input_shape
    bad_inputs = {
        "rank": jax.ShapeDtypeStruct((h, w, c), jnp.float32),
        "channels": jax.ShapeDtypeStruct((1, h, w, c + 1), jnp.float32),
        "dtype": jax.ShapeDtypeStruct((1, h, w, c), jnp.uint8),
        "size": jax.ShapeDtypeStruct(
            (1, spec.min_input_size - 1, spec.min_input_size - 1, c), jnp.float32
        ),
    }
    for problem, x in bad_inputs.items():
        with pytest.raises(jaxcnn.InputError) as info:
            jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
        assert "expect" in str(info.value) or "need" in str(info.value), problem


def test_unknown_model_lists_close_matches():
    with pytest.raises(jaxcnn.UnknownModelError, match="lenet5"):
        jaxcnn.create_model("lenet")


def test_unknown_option_is_named():
    with pytest.raises(jaxcnn.ConfigError, match="no_such_option"):
        jaxcnn.create_model("lenet5", no_such_option=3)


def test_count_params_ignores_batch_stats():
    params = {"w": jnp.zeros((3, 4))}
    assert jaxcnn.count_params({"params": params, "batch_stats": {"m": jnp.zeros(100)}}) == 12
