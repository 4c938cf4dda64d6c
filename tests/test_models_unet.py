"""U-Net of the classic listing: parameter counts by a closed formula for every option, the
listing's default count, shapes of the encoder / decoder levels, logits vs probabilities, and
the multiple-of-16 rule."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_testing import fast_jit, numpy_variables, random_images

import jaxcnn
from jaxcnn.models import abstract_variables, count_params


def _conv_block(c_in: int, f: int, bn: bool) -> tuple[int, int]:
    """(params, BN statistics) of two 3x3 convs with bias, each optionally followed by BN."""
    params = 9 * c_in * f + f + 9 * f * f + f + (4 * f if bn else 0)
    return params, 4 * f if bn else 0


def _unet_counts(n: int, bn: bool, c_in: int, classes: int) -> tuple[int, int]:
    params = stats = 0
    for level in range(5):  # four encoder levels and the bottleneck
        f = n * 2**level
        p, s = _conv_block(c_in, f, bn)
        params, stats, c_in = params + p, stats + s, f
    for level in reversed(range(4)):
        f = n * 2**level
        params += 9 * c_in * f + f  # 3x3 stride-2 transposed conv
        p, s = _conv_block(2 * f, f, bn)  # after concatenation with the encoder feature
        params, stats, c_in = params + p, stats + s, f
    return params + n * classes + classes, stats


@pytest.mark.parametrize(
    "n_filters, batch_norm, in_channels, num_classes",
    [(16, True, 3, 1), (4, False, 1, 3), (8, True, 3, 2)],
)
def test_param_count_follows_the_listing(n_filters, batch_norm, in_channels, num_classes):
    model = jaxcnn.create_model(
        "unet",
        n_filters=n_filters,
        batch_norm=batch_norm,
        in_channels=in_channels,
        num_classes=num_classes,
    )
    variables = abstract_variables(model, (32, 32, in_channels))
    stats = sum(v.size for v in jax.tree.leaves(variables.get("batch_stats", {})))
    expected = _unet_counts(n_filters, batch_norm, in_channels, num_classes)
    assert (count_params(variables), stats) == expected
    assert ("batch_stats" in variables) == batch_norm


def test_default_unet_is_the_listings():
    model = jaxcnn.create_model("unet")
    assert (model.n_filters, model.batch_norm, model.dropout, model.num_classes) == (
        16,
        True,
        0.1,
        1,
    )
    variables = abstract_variables(model, (128, 128, 3))
    # Keras' summary of the listing at 128x128x3: 2,164,593 total, 2,944 non-trainable.
    assert count_params(variables) == 2_161_649
    assert sum(v.size for v in jax.tree.leaves(variables["batch_stats"])) == 2_944


def test_levels_and_logits_shapes_on_a_non_square_input():
    model = jaxcnn.create_model("unet", n_filters=4, num_classes=3)
    variables = abstract_variables(model, (32, 48, 3))
    x = jax.ShapeDtypeStruct((2, 32, 48, 3), jnp.float32)
    feats = jax.eval_shape(lambda v, x: model.apply(v, x, method=model.features), variables, x)
    for level in range(5):
        size = (32 // 2**level, 48 // 2**level)
        assert feats[f"stage{level + 1}"].shape == (2, *size, 4 * 2**level)
        if level < 4:
            assert feats[f"decoder{level + 1}"].shape == (2, *size, 4 * 2**level)
    assert feats["logits"].shape == (2, 32, 48, 3) and feats["logits"].dtype == jnp.float32


@pytest.mark.parametrize("size", [24, 40])
def test_sizes_that_are_not_multiples_of_16_are_rejected_with_a_fix(size):
    model = jaxcnn.create_model("unet")
    variables = abstract_variables(model, (32, 32, 3))
    x = jax.ShapeDtypeStruct((1, size, 32, 3), jnp.float32)
    fixed = -(-size // 16) * 16
    with pytest.raises(jaxcnn.InputError, match=f"multiples of 16.*{fixed}x32"):
        jax.eval_shape(model.apply, variables, x)


@pytest.mark.parametrize("num_classes", [1, 3])
def test_probabilities_are_the_listings_sigmoid_or_a_softmax(num_classes):
    model = jaxcnn.create_model(
        "unet", n_filters=1, batch_norm=False, dropout=0.0, num_classes=num_classes
    )
    x = random_images((1, 16, 16, 3))
    variables = numpy_variables(model, jax.ShapeDtypeStruct(x.shape, x.dtype))
    logits, probs = fast_jit(
        lambda v, x: (model.apply(v, x), model.apply(v, x, method=model.probabilities))
    )(variables, x)
    assert probs.shape == logits.shape == (1, 16, 16, num_classes)
    if num_classes == 1:
        np.testing.assert_allclose(probs, 1 / (1 + np.exp(-np.asarray(logits))), rtol=1e-5)
    else:
        np.testing.assert_allclose(np.sum(probs, axis=-1), 1.0, rtol=1e-5)
        np.testing.assert_array_equal(np.argmax(probs, -1), np.argmax(logits, -1))
