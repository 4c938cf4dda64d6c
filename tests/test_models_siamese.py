"""The siamese wrapper: one set of backbone weights for both inputs, embedding shapes and
projection, `pair` equal to two separate calls, and the configuration errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.core import FrozenDict
from model_testing import fast_jit, numpy_variables, random_images

import jaxcnn
from jaxcnn.models import abstract_variables, count_params

RESNET18_FC = 512 * 1000 + 1000


def test_default_wraps_resnet18_features_with_one_set_of_weights():
    model = jaxcnn.create_model("siamese")
    variables = abstract_variables(model, (64, 64, 3))
    assert set(variables["params"]) == {"encoder"}
    assert count_params(variables) == 11_689_512 - RESNET18_FC  # resnet18 without its fc
    x = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)
    out = jax.eval_shape(model.apply, variables, x)
    assert out.shape == (2, 512) and out.dtype == jnp.float32
    z1, z2 = jax.eval_shape(
        lambda v, a, b: model.apply(v, a, b, method=model.pair), variables, x, x
    )
    assert z1.shape == z2.shape == (2, 512)


def test_projection_and_backbone_options():
    model = jaxcnn.create_model(
        "siamese",
        backbone="mobilenet_v2",
        backbone_kwargs=FrozenDict(width_mult=0.5),
        embedding_dim=64,
        dtype=jnp.bfloat16,
    )
    variables = abstract_variables(model, (64, 64, 3))
    assert set(variables["params"]) == {"encoder", "projection"}
    assert variables["params"]["projection"]["kernel"].shape == (1280, 64)
    out = jax.eval_shape(model.apply, variables, jax.ShapeDtypeStruct((3, 64, 64, 3), jnp.float32))
    assert out.shape == (3, 64) and out.dtype == jnp.float32


def test_pair_equals_two_separate_calls_with_shared_weights():
    model = jaxcnn.create_model(
        "siamese", backbone_kwargs=FrozenDict(num_filters=2, stem="cifar"), embedding_dim=5
    )
    x1, x2 = random_images((3, 16, 16, 3), seed=1), random_images((3, 16, 16, 3), seed=2)
    variables = numpy_variables(model, jax.ShapeDtypeStruct(x1.shape, x1.dtype))

    @fast_jit
    def run(v, x1, x2):
        return (
            model.apply(v, x1, x2, method=model.pair),
            model.apply(v, x1),
            model.apply(v, x2),
            model.apply(v, x1, x1[:, :8, :8], method=model.pair),  # sides of different sizes
        )

    (z1, z2), e1, e2, (same1, small) = run(variables, x1, x2)
    np.testing.assert_allclose(z1, e1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(z2, e2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(same1, e1, rtol=1e-5, atol=1e-6)
    assert small.shape == (3, 5) and not np.allclose(z1, z2)


def test_configuration_errors_are_explained():
    with pytest.raises(jaxcnn.ConfigError, match="embedding_dim=8"):
        jaxcnn.create_model("siamese", num_classes=8)
    with pytest.raises(jaxcnn.ConfigError, match="classification backbone"):
        jaxcnn.create_model("siamese", backbone="unet")
    with pytest.raises(jaxcnn.UnknownModelError, match="resnet18"):
        jaxcnn.create_model("siamese", backbone="resnet_18")
    model = jaxcnn.create_model("siamese")
    variables = abstract_variables(model, (64, 64, 3))
    with pytest.raises(jaxcnn.InputError, match="same number of images"):
        jax.eval_shape(
            lambda v, a, b: model.apply(v, a, b, method=model.pair),
            variables,
            jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32),
            jax.ShapeDtypeStruct((3, 64, 64, 3), jnp.float32),
        )


def test_learned_similarity_head_is_a_dense_layer_on_the_l1_distance():
    """Koch et al. (2015), eq. (1): p = sigmoid(sum_j alpha_j |z1_j - z2_j| + b)."""
    model = jaxcnn.create_model("siamese", backbone="small_cnn",
                                backbone_kwargs=FrozenDict(width=4), embedding_dim=6,
                                similarity_head=True)
    x = random_images((4, 16, 16, 3), seed=3)
    variables = numpy_variables(model, jax.ShapeDtypeStruct(x.shape, x.dtype))
    assert variables["params"]["similarity_fc"]["kernel"].shape == (6, 1)
    head = variables["params"]["similarity_fc"]
    head = {"kernel": np.linspace(-1, 1, 6, dtype=np.float32)[:, None],
            "bias": np.array([0.3], np.float32)}
    variables = {**variables, "params": {**variables["params"], "similarity_fc": head}}

    @fast_jit
    def run(v, x):
        return (model.apply(v, x), model.apply(v, x[:2], x[2:], method=model.similarity),
                model.apply(v, x, method=model.pairwise_similarity))

    z, pairs, table = run(variables, x)
    expected = np.abs(z[:2] - z[2:]) @ head["kernel"][:, 0] + 0.3
    np.testing.assert_allclose(pairs, expected, rtol=1e-5, atol=1e-6)
    assert table.shape == (4, 4)
    np.testing.assert_allclose(table, table.T, rtol=1e-6)
    np.testing.assert_allclose(np.diag(table), 0.3, rtol=1e-6)  # |z - z| = 0
    np.testing.assert_allclose(table[[0, 1], [2, 3]], pairs, rtol=1e-5, atol=1e-6)
    plain = jaxcnn.create_model("siamese", backbone="small_cnn")
    with pytest.raises(jaxcnn.ConfigError, match="similarity_head=True"):
        jax.eval_shape(lambda v, z: plain.apply(v, z, z, method=plain.compare),
                       abstract_variables(plain, (16, 16, 3)),
                       jax.ShapeDtypeStruct((2, 512), jnp.float32))
