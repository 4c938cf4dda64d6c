"""GoogLeNet: parameter counts (torchvision 0.29's: 13,004,888 with the aux heads,
6,624,904 with `aux_logits=False`), ceil-mode feature sizes equal to torchvision's at odd
input sizes (measured once with forward hooks on torchvision's googlenet), aux heads only in
training, `transform_input` equal to torchvision's `_transform_input`, and the
torchvision-mirroring names the converters rely on."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict
from model_testing import fast_jit, numpy_variables, random_images

import jaxcnn
from jaxcnn.models import abstract_variables
from jaxcnn.models.googlenet import (
    INCEPTION_BLOCKS,
    Inception,
    InceptionAux,
    InceptionNaive,
    transform_input,
)
from jaxcnn.models.layers import AuxOutputs, adaptive_avg_pool


def _apply_shape(model, size, *, train, variables=None, method=None):
    if variables is None:
        variables = abstract_variables(model, (size, size, 3))
    x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
    kwargs = {"rngs": {"dropout": jax.random.key(0)}, "mutable": ["batch_stats"]} if train else {}

    def run(v, x):
        out = model.apply(v, x, train=train, method=method, **kwargs)
        return out[0] if train else out

    return jax.eval_shape(run, variables, x)


def test_googlenet_param_counts_match_torchvision():
    with_aux = abstract_variables(jaxcnn.create_model("googlenet"), (224, 224, 3))
    without = abstract_variables(jaxcnn.create_model("googlenet", aux_logits=False), (224, 224, 3))
    assert jaxcnn.count_params(with_aux) == 13_004_888
    assert jaxcnn.count_params(without) == 6_624_904
    aux = {k: v for k, v in with_aux["params"].items() if k.startswith("aux")}
    assert sorted(aux) == ["aux1", "aux2"]
    assert jaxcnn.count_params(aux) == 13_004_888 - 6_624_904


@pytest.mark.parametrize(
    ("size", "sides"),
    [  # torchvision: maxpool2, inception3b, maxpool3, inception4e, maxpool4, inception5b
        (15, (2, 2, 1, 1, 1, 1)),  # the smallest size torchvision's googlenet accepts
        (33, (4, 4, 2, 2, 1, 1)),
        (99, (12, 12, 6, 6, 3, 3)),  # floor-mode pools would give 11 after maxpool2
        (225, (28, 28, 14, 14, 7, 7)),
    ],
)
def test_googlenet_ceil_mode_sizes_match_torchvision(size, sides):
    model = jaxcnn.create_model("googlenet")
    feats = _apply_shape(model, size, train=False, method=model.features)
    names = ("stem", "inception3b", "inception4a", "inception4e", "inception5a", "inception5b")
    assert tuple(feats[n].shape[1] for n in names) == sides
    assert feats["inception5b"].shape[-1] == 1024
    assert feats["pre_logits"].shape == (2, 1024)


def test_aux_heads_run_only_in_training():
    model = jaxcnn.create_model("googlenet", num_classes=5)
    variables = abstract_variables(model, (32, 32, 3))  # eval-mode init builds the aux heads
    train_out = _apply_shape(model, 32, train=True, variables=variables)
    assert isinstance(train_out, AuxOutputs)
    assert train_out.logits.shape == (2, 5)
    assert [a.shape for a in train_out.aux_logits] == [(2, 5), (2, 5)]
    assert train_out.aux_weight == 0.3
    # Eval does not touch the aux heads: it runs without their variables.
    no_aux = {
        c: {k: v for k, v in t.items() if not k.startswith("aux")} for c, t in variables.items()
    }
    eval_out = _apply_shape(model, 32, train=False, variables=no_aux)
    assert eval_out.shape == (2, 5)
    feats = _apply_shape(model, 32, train=False, variables=no_aux, method=model.features)
    assert "aux1" not in feats and "aux2" not in feats


def test_without_aux_logits_training_returns_plain_logits():
    model = jaxcnn.create_model("googlenet", num_classes=5, aux_logits=False)
    out = _apply_shape(model, 32, train=True)
    assert isinstance(out, jax.ShapeDtypeStruct) and out.shape == (2, 5)


def test_transform_input_matches_torchvision_formula():
    """Expected values: torchvision's `GoogLeNet._transform_input` on the same pixels."""
    x = jnp.array([[[[-2.0, 0.0, 1.5], [0.25, -1.0, 3.0]]]], jnp.float32)  # 1x1x2x3 NHWC
    expected = [[-0.946, -0.088, 0.48699996], [0.0845, -0.536, 1.162]]
    np.testing.assert_allclose(transform_input(x)[0, 0], expected, rtol=1e-6, atol=1e-7)


def test_names_mirror_torchvision_state_dict():
    variables = abstract_variables(jaxcnn.create_model("googlenet"), (224, 224, 3))
    branches = ("branch1", "branch2_0", "branch2_1", "branch3_0", "branch3_1", "branch4_1")
    expected = {"conv1", "conv2", "conv3", "aux1/conv", "aux2/conv"} | {
        f"inception{block}/{branch}" for block, _ in INCEPTION_BLOCKS for branch in branches
    }
    stats = flatten_dict(variables["batch_stats"])
    assert {"/".join(k[:-2]) for k in stats} == expected  # 59 BasicConv2d, as torchvision
    assert {k[-2:] for k in stats} == {("bn", "mean"), ("bn", "var")}
    params = variables["params"]
    # torchvision's "5x5" branch is 3x3 (pytorch/vision#906): [32, 16, 3, 3] in torch
    assert params["inception3a"]["branch3_1"]["conv"]["kernel"].shape == (3, 3, 16, 32)
    assert "bias" not in params["conv1"]["conv"]
    # NHWC flatten of the aux 4x4x128 map: converters permute torch's CHW order
    assert params["aux1"]["fc1"]["kernel"].shape == (2048, 1024)
    assert params["aux2"]["fc2"]["kernel"].shape == (1024, 1000)
    assert params["fc"]["kernel"].shape == (1024, 1000)


class _Conv1Input(Exception):
    """Carries the array `conv1` was called with, stopping the forward pass there."""


def _stop_at_conv1(next_fun, args, kwargs, context):
    if context.module.name == "conv1" and context.method_name == "__call__":
        raise _Conv1Input(args[0])
    return next_fun(*args, **kwargs)


@pytest.mark.parametrize("flag", [False, True])
def test_transform_input_field_transforms_what_conv1_sees(flag):
    model = jaxcnn.create_model("googlenet", transform_input=flag)
    x = jnp.asarray(random_images((1, 15, 15, 3)))
    with nn.intercept_methods(_stop_at_conv1), pytest.raises(_Conv1Input) as info:
        model.apply({}, x)
    np.testing.assert_array_equal(info.value.args[0], transform_input(x) if flag else x)


def test_googlenet_training_forward_on_a_tiny_input():
    """Real compute at the minimum 15x15 with 3 classes: training gives finite main and aux
    logits and moves the BN statistics."""
    model = jaxcnn.create_model("googlenet", num_classes=3)
    x = jnp.asarray(random_images((2, 15, 15, 3)))
    variables = numpy_variables(model, jax.ShapeDtypeStruct(x.shape, x.dtype))

    @fast_jit
    def run(variables, x):
        rngs = {"dropout": jax.random.key(0)}
        out, state = model.apply(variables, x, train=True, rngs=rngs, mutable=["batch_stats"])
        return out, state["batch_stats"]

    out, stats = run(variables, x)
    assert all(np.all(np.isfinite(a)) for a in (out.logits, *out.aux_logits))
    before, after = flatten_dict(variables["batch_stats"]), flatten_dict(stats)
    assert not np.allclose(after[("conv1", "bn", "mean")], before[("conv1", "bn", "mean")])
    assert not np.allclose(
        after[("aux2", "conv", "bn", "var")], before[("aux2", "conv", "bn", "var")]
    )


# ------------------------------------------------------------- issue 14: the paper's variants


def test_inception_modules_of_the_paper_on_28x28x256():
    """Figure 2: the naive module (1x1 128, 3x3 192, 5x5 96 and the pool's 256 channels) is
    672 deep; the reduced module with inception (3b)'s widths and a TRUE 5x5 is 480 deep.
    Parameters: conv weights + biases of the paper's plain conv + ReLU layers."""
    x = jax.ShapeDtypeStruct((1, 28, 28, 256), jnp.float32)
    naive = InceptionNaive(128, 192, 96)
    v = jax.eval_shape(naive.init, jax.random.key(0), x)
    assert jax.eval_shape(naive.apply, v, x).shape == (1, 28, 28, 672)
    assert jaxcnn.count_params(v) == (256 * 128 + 128) + (9 * 256 * 192 + 192) + (
        25 * 256 * 96 + 96)
    assert v["params"]["branch3"]["conv"]["kernel"].shape == (5, 5, 256, 96)
    reduced = Inception(128, 128, 192, 32, 96, 64)
    v = jax.eval_shape(reduced.init, jax.random.key(0), x)
    assert jax.eval_shape(reduced.apply, v, x).shape == (1, 28, 28, 480)
    assert v["params"]["branch3_1"]["conv"]["kernel"].shape == (5, 5, 32, 96)
    assert jaxcnn.count_params(v) == 388_736


def test_googlenet_paper_options_true_5x5_and_aux_pool_5x5_stride_3():
    model = jaxcnn.create_model("googlenet", inception_5x5=True, aux_pool="paper")
    variables = abstract_variables(model, (224, 224, 3))
    params = variables["params"]
    for block, channels in INCEPTION_BLOCKS:
        assert params[f"inception{block}"]["branch3_1"]["conv"]["kernel"].shape == (
            5, 5, channels[3], channels[4])
    # 16 more weights per (5x5 reduce, 5x5) filter pair than torchvision's 3x3 branch
    extra = 16 * sum(c[3] * c[4] for _, c in INCEPTION_BLOCKS)
    assert jaxcnn.count_params(variables) == 13_004_888 + extra == 13_385_816
    assert params["aux1"]["fc1"]["kernel"].shape == (2048, 1024)  # 14x14 -> 4x4 either way
    with pytest.raises(jaxcnn.ConfigError, match="aux_pool"):
        jaxcnn.create_model("googlenet", aux_pool="max")
    with pytest.raises(jaxcnn.InputError, match="5x5"):  # 33x33 input: 2x2 maps at 4a
        _apply_shape(jaxcnn.create_model("googlenet", aux_pool="paper"), 33, train=True)


class _Probe(nn.Module):
    """Stands in for the aux head's 1x1 conv and records what it receives."""

    features: int
    kernel_size: int = 1
    strides: int = 1

    @nn.compact
    def __call__(self, x):
        self.sow("intermediates", "pooled", x)
        return jnp.zeros(x.shape[:-1] + (self.features,), x.dtype)


@pytest.mark.parametrize("pool", ["adaptive", "paper"])
def test_aux_head_pools_as_chosen(pool):
    x = jnp.asarray(random_images((1, 14, 14, 2)))
    head = InceptionAux(3, conv=_Probe, pool=pool)
    abstract = jax.eval_shape(lambda x: head.init(jax.random.key(0), x, train=False), x)
    variables = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), abstract)
    _, state = fast_jit(lambda v, x: head.apply(v, x, train=False, mutable=["intermediates"]))(
        variables, x)
    pooled = state["intermediates"]["conv"]["pooled"][0]
    expected = nn.avg_pool(x, (5, 5), (3, 3)) if pool == "paper" else adaptive_avg_pool(x, (4, 4))
    np.testing.assert_allclose(pooled, expected, rtol=1e-6)
    assert pooled.shape == (1, 4, 4, 2)
