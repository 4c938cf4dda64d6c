"""The Keras-listing convolutional autoencoder: Keras' parameter numbers split into params and
BN statistics, the layer shapes of the listing, encode / decode / features consistency, and
the errors for a classifier head or a wrong image size."""

import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_testing import fast_jit, numpy_variables

import jaxcnn
from jaxcnn.models import abstract_variables, count_params


def _variables():
    return abstract_variables(jaxcnn.create_model("conv_autoencoder"), (28, 28, 1))


def test_counts_match_keras_summary():
    variables = _variables()
    stats = sum(v.size for v in jax.tree.leaves(variables["batch_stats"]))
    assert count_params(variables) == 140_594
    assert stats == 256  # two BN layers of 64 channels: moving mean and variance
    assert count_params(variables) + stats == 140_850  # Keras' "Total params"


def test_layers_follow_the_listing():
    params = flax.traverse_util.flatten_dict(_variables()["params"], sep="/")
    shapes = {k: v.shape for k, v in params.items() if k.endswith("kernel")}
    assert shapes == {
        "conv1/kernel": (3, 3, 1, 32),
        "conv2/kernel": (3, 3, 32, 64),
        "conv3/kernel": (3, 3, 64, 64),
        "code/kernel": (3 * 3 * 64, 49),  # flatten of the 3x3x64 map -> 49 = 7x7x1
        "deconv1/kernel": (3, 3, 1, 64),
        "deconv2/kernel": (3, 3, 64, 64),
        "deconv3/kernel": (3, 3, 64, 32),
        "output_conv/kernel": (3, 3, 32, 1),
    }
    assert params["bn1/scale"].shape == params["bn2/scale"].shape == (64,)


def test_features_shapes():
    model = jaxcnn.create_model("conv_autoencoder")
    x = jax.ShapeDtypeStruct((2, 28, 28, 1), jnp.float32)
    feats = jax.eval_shape(lambda v, x: model.apply(v, x, method=model.features), _variables(), x)
    assert {k: v.shape for k, v in feats.items()} == {
        "stage1": (2, 13, 13, 32),
        "stage2": (2, 5, 5, 64),
        "stage3": (2, 3, 3, 64),
        "code": (2, 49),
        "logits": (2, 28, 28, 1),
        "reconstruction": (2, 28, 28, 1),
    }


def test_encode_decode_compose_to_the_reconstruction():
    model = jaxcnn.create_model("conv_autoencoder")
    x = np.random.default_rng(0).uniform(size=(3, 28, 28, 1)).astype(np.float32)
    variables = numpy_variables(model, jax.ShapeDtypeStruct(x.shape, x.dtype))

    @fast_jit
    def run(v, x):
        code = model.apply(v, x, method=model.encode)
        return (
            model.apply(v, x),
            model.apply(v, code, method=model.decode),
            model.apply(v, x, method=model.features),
        )

    y, decoded, feats = run(variables, x)
    assert y.dtype == jnp.float32 and y.shape == x.shape
    assert np.all((np.asarray(y) >= 0) & (np.asarray(y) <= 1))
    np.testing.assert_allclose(decoded, y, rtol=1e-6)
    np.testing.assert_allclose(jax.nn.sigmoid(feats["logits"]), y, rtol=1e-6)
    assert np.all(np.asarray(feats["code"]) >= 0)  # relu code, as in the listing


def test_num_classes_must_stay_zero():
    assert jaxcnn.create_model("conv_autoencoder", num_classes=0).num_classes == 0
    with pytest.raises(jaxcnn.ConfigError, match="num_classes must be 0; got 10"):
        jaxcnn.create_model("conv_autoencoder", num_classes=10)


def test_wrong_image_or_code_size_is_rejected():
    model = jaxcnn.create_model("conv_autoencoder")
    variables = _variables()
    with pytest.raises(jaxcnn.InputError, match="exactly 28x28"):
        jax.eval_shape(model.apply, variables, jax.ShapeDtypeStruct((1, 32, 32, 1), jnp.float32))
    with pytest.raises(jaxcnn.InputError, match=r"\[batch, 49\]"):
        jax.eval_shape(
            lambda v, c: model.apply(v, c, method=model.decode),
            variables,
            jax.ShapeDtypeStruct((1, 7, 7, 1), jnp.float32),
        )
