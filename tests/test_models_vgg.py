"""VGG: parameter counts of all eight variants (torchvision 0.29's, e.g. vgg16 138,357,544,
vgg19 143,667,240, vgg16_bn 138,365,992), stage sizes equal to torchvision's at odd input
sizes (measured once after each `MaxPool2d` of torchvision's vgg11), the torchvision
Sequential-index names, and BN/dropout/gradient behaviour on the tiny private variant."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict
from model_testing import fast_jit, numpy_variables, random_images

import jaxcnn
from jaxcnn.models import abstract_variables
from jaxcnn.models.vgg import _tiny_vgg

TORCHVISION_PARAMS = {
    "vgg11": 132_863_336,
    "vgg13": 133_047_848,
    "vgg16": 138_357_544,
    "vgg19": 143_667_240,
    "vgg11_bn": 132_868_840,
    "vgg13_bn": 133_053_736,
    "vgg16_bn": 138_365_992,
    "vgg19_bn": 143_678_248,
}


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMS))
def test_vgg_param_count_matches_torchvision(name):
    variables = abstract_variables(jaxcnn.create_model(name), (224, 224, 3))
    assert jaxcnn.count_params(variables) == TORCHVISION_PARAMS[name]


@pytest.mark.parametrize(
    ("size", "stages"),
    [(32, (16, 8, 4, 2, 1)), (33, (16, 8, 4, 2, 1)), (47, (23, 11, 5, 2, 1))],
)
def test_vgg_stage_sizes_match_torchvision_and_pool_adapts(size, stages):
    model = jaxcnn.create_model("vgg11")
    variables = abstract_variables(model, (size, size, 3))
    x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
    feats = jax.eval_shape(lambda v, x: model.apply(v, x, method=model.features), variables, x)
    assert tuple(feats[f"stage{i}"].shape[1] for i in range(1, 6)) == stages
    assert feats["stage5"].shape[-1] == 512
    assert feats["pre_logits"].shape == (2, 4096)
    assert feats["logits"].shape == (2, 1000)


def test_vgg16_bn_names_follow_torchvision_sequential_indices():
    variables = abstract_variables(jaxcnn.create_model("vgg16_bn"), (32, 32, 3))
    params = variables["params"]
    convs = sorted(
        int(k.split("_")[1]) for k in params if "features" in k and "kernel" in params[k]
    )
    # torchvision vgg16_bn: conv at i, BN at i + 1, ReLU i + 2, pools at 6, 13, 23, 33, 43
    assert convs == [0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40]
    assert set(variables["batch_stats"]) == {f"features_{i + 1}" for i in convs}
    assert {"classifier_0", "classifier_3", "classifier_6"} <= set(params)
    # NHWC flatten of the 7x7x512 pooled map: converters permute torch's CHW order
    assert params["classifier_0"]["kernel"].shape == (7 * 7 * 512, 4096)


def test_vgg16_names_without_bn():
    params = abstract_variables(jaxcnn.create_model("vgg16"), (32, 32, 3))["params"]
    expected = {f"features_{i}" for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)}
    assert set(params) == expected | {"classifier_0", "classifier_3", "classifier_6"}


def test_tiny_vgg_bn_statistics_dropout_and_gradients():
    """Real compute on 2x8x8 inputs: BN statistics move only in training, eval is
    deterministic, dropout needs and uses the rng, gradients are finite under jit."""
    model = _tiny_vgg(batch_norm=True, num_classes=3)
    x = jnp.asarray(random_images((2, 8, 8, 3)))
    variables = numpy_variables(model, jax.ShapeDtypeStruct(x.shape, x.dtype))
    apply_eval = fast_jit(model.apply)
    np.testing.assert_array_equal(apply_eval(variables, x), apply_eval(variables, x))

    @fast_jit
    def train_step(params, rng):
        def loss(params):
            logits, updated = model.apply(
                {"params": params, "batch_stats": variables["batch_stats"]},
                x,
                train=True,
                rngs={"dropout": rng},
                mutable=["batch_stats"],
            )
            return jnp.sum(logits**2), updated["batch_stats"]

        return jax.value_and_grad(loss, has_aux=True)(params)

    (loss_a, stats), grads = train_step(variables["params"], jax.random.key(3))
    (loss_b, _), _ = train_step(variables["params"], jax.random.key(4))
    assert loss_a != loss_b  # different dropout masks
    assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))
    before, after = flatten_dict(variables["batch_stats"]), flatten_dict(stats)
    assert all(not np.allclose(after[k], before[k]) for k in before)
    with pytest.raises(Exception, match="dropout"):
        jax.eval_shape(lambda v: model.apply(v, x, train=True, mutable=["batch_stats"]), variables)


def test_tiny_vgg_bf16_compute_keeps_fp32_params():
    model = _tiny_vgg(batch_norm=True, dtype=jnp.bfloat16)
    x = jax.ShapeDtypeStruct((2, 8, 8, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
    assert {p.dtype for p in jax.tree_util.tree_leaves(variables["params"])} == {
        jnp.dtype("float32")
    }
    out = jax.eval_shape(lambda v, x: model.apply(v, x), variables, x)
    assert out.dtype == jnp.float32
