"""Behaviour every model family must share (foundation issue, "Tests"): BatchNorm statistics,
dropout, jit and gradients, bf16 compute, overfitting a fixed batch. Run on tiny configurations
that still exercise each family's mechanism (basic and grouped bottleneck ResNets with both
stems, depthwise-separable and inverted-residual MobileNets, U-Net, the autoencoder's
setup-built BN, a Siamese wrapper). Each configuration is compiled once, with numpy-made
variables, and `jax.eval_shape` serves wherever only shapes, dtypes or errors matter, so the
file stays fast on a 2-core machine. (ResNet's skip=False and cifar-stem shapes are in
test_models_resnet.py.)"""

import functools

import flax.linen as nn
import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.core import FrozenDict
from model_testing import fast_jit, numpy_variables, random_images

from jaxcnn.models.autoencoder import ConvAutoencoder
from jaxcnn.models.mobilenet import MobileNetV1, MobileNetV2
from jaxcnn.models.resnet import Bottleneck, ResNet, _tiny_resnet
from jaxcnn.models.siamese import Siamese
from jaxcnn.models.unet import UNet

# Depthwise-separable blocks with and without stride; inverted residuals without expansion,
# with expansion and stride, and with the residual connection (second repeat).
TINY_V1 = ((8, 1), (16, 2), (16, 1))
TINY_V2 = ((1, 8, 1, 1), (6, 16, 2, 2))

# name -> (builder taking overrides, input shape (H, W, C))
CONFIGS = {
    "resnet_basic_cifar": (lambda **kw: _tiny_resnet(num_classes=4, **kw), (8, 8, 3)),
    "resnext_bottleneck_imagenet": (
        lambda **kw: ResNet(
            stage_sizes=(1, 1),
            block_cls=Bottleneck,
            num_filters=8,
            groups=2,
            width_per_group=16,
            num_classes=4,
            **kw,
        ),
        (16, 16, 3),
    ),  # fmt: skip
    "mobilenet_v1": (
        lambda **kw: MobileNetV1(blocks=TINY_V1, width_mult=0.125, num_classes=4, **kw),
        (32, 32, 3),
    ),
    "mobilenet_v2": (
        lambda **kw: MobileNetV2(
            inverted_residual_setting=TINY_V2, width_mult=0.25, num_classes=4, **kw
        ),
        (32, 32, 3),
    ),
    "unet": (lambda **kw: UNet(n_filters=2, num_classes=2, **kw), (16, 16, 3)),
    "conv_autoencoder": (lambda **kw: ConvAutoencoder(**kw), (28, 28, 1)),
    "siamese": (
        lambda **kw: Siamese(
            backbone="resnet18",
            backbone_kwargs=FrozenDict(num_filters=2, stem="cifar"),
            embedding_dim=3,
            **kw,
        ),
        (8, 8, 3),
    ),
}
COMPILED = sorted(CONFIGS)
WITH_DROPOUT = ["mobilenet_v2", "unet"]


def _leaves_equal(a, b) -> bool:
    return all(
        np.array_equal(u, v) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


@functools.cache
def _run(name: str):
    """Model, variables, input and one compiled function giving everything the BN, dropout
    and gradient tests look at (one compilation per configuration)."""
    build, shape = CONFIGS[name]
    model = build()
    x = jnp.asarray(random_images((4, *shape), seed=1))
    variables = numpy_variables(model, jax.ShapeDtypeStruct(x.shape, x.dtype))

    @fast_jit
    def run(variables, x, rng):
        params, batch_stats = variables["params"], variables["batch_stats"]
        y_eval, eval_state = model.apply(variables, x, train=False, mutable=["batch_stats"])

        def loss_fn(params):
            y, state = model.apply(
                {"params": params, "batch_stats": batch_stats}, x, train=True,
                mutable=["batch_stats"], rngs={"dropout": rng},
            )  # fmt: skip
            return jnp.mean(jnp.square(y)), (y, state["batch_stats"])

        (loss, (y_train, train_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        return {
            "y_eval": y_eval,
            "eval_stats": eval_state["batch_stats"],
            "y_train": y_train,
            "train_stats": train_stats,
            "loss": loss,
            "grads": grads,
        }

    return model, variables, x, run


@pytest.mark.parametrize("name", COMPILED)
def test_batch_stats_change_only_in_training(name):
    model, variables, x, run = _run(name)
    out, again = run(variables, x, jax.random.key(2)), run(variables, x, jax.random.key(2))
    np.testing.assert_array_equal(out["y_eval"], again["y_eval"])  # eval is deterministic
    # Eval mode with batch_stats mutable leaves the statistics untouched.
    assert _leaves_equal(out["eval_stats"], variables["batch_stats"])
    before = flax.traverse_util.flatten_dict(variables["batch_stats"])
    after = flax.traverse_util.flatten_dict(out["train_stats"])
    assert before.keys() == after.keys() and len(before) > 0
    # Every BN layer saw a batch: its variance estimate moved (a mean can stay 0 exactly
    # when a channel is dead), and some means moved.
    assert all(not np.allclose(before[k], after[k]) for k in before if k[-1] == "var")
    assert any(not np.allclose(before[k], after[k]) for k in before if k[-1] == "mean")
    # Training mode without mutable batch_stats cannot silently drop the update.
    abstract_x = jax.ShapeDtypeStruct(x.shape, x.dtype)
    with pytest.raises(Exception, match="batch_stats"):
        jax.eval_shape(
            lambda v, x: model.apply(v, x, train=True, rngs={"dropout": jax.random.key(0)}),
            variables,
            abstract_x,
        )


@pytest.mark.parametrize("name", WITH_DROPOUT)
def test_dropout_only_in_training_with_rng(name):
    model, variables, x, run = _run(name)
    first, same, other = (run(variables, x, jax.random.key(s)) for s in (3, 3, 4))
    np.testing.assert_array_equal(first["y_train"], same["y_train"])  # the rng decides
    assert not np.allclose(first["y_train"], other["y_train"])
    np.testing.assert_array_equal(first["y_eval"], other["y_eval"])  # eval ignores the rng
    with pytest.raises(Exception, match="dropout"):
        jax.eval_shape(
            lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]),
            variables,
            jax.ShapeDtypeStruct(x.shape, x.dtype),
        )


@pytest.mark.parametrize("name", COMPILED)
def test_jit_compiles_and_gradients_are_finite(name):
    _, variables, x, run = _run(name)
    out = run(variables, x, jax.random.key(5))
    assert np.isfinite(out["loss"]) and out["loss"] > 0
    leaves = jax.tree.leaves(out["grads"])
    assert len(leaves) == len(jax.tree.leaves(variables["params"]))
    assert all(np.isfinite(g).all() for g in leaves)
    assert any(np.abs(g).max() > 0 for g in leaves)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_bf16_compute_keeps_fp32_params_and_outputs(name):
    build, shape = CONFIGS[name]
    model = build(dtype=jnp.bfloat16)
    x = jax.ShapeDtypeStruct((2, *shape), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
    assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    out, state = jax.eval_shape(
        lambda v, x: model.apply(
            v, x, capture_intermediates=lambda mdl, _: isinstance(mdl, nn.Conv | nn.BatchNorm)
        ),
        variables,
        x,
    )
    assert out.dtype == jnp.float32
    activations = jax.tree.leaves(state["intermediates"])
    assert len(activations) > 2
    assert {a.dtype for a in activations} == {jnp.dtype(jnp.bfloat16)}


def test_small_resnet_overfits_a_fixed_batch():
    model = _tiny_resnet(num_classes=4)
    x = jnp.asarray(random_images((8, 8, 8, 3)))
    labels = jnp.arange(8) % 4
    variables = numpy_variables(model, jax.ShapeDtypeStruct(x.shape, x.dtype))
    tx = optax.adam(1e-2)

    @fast_jit
    def step(params, batch_stats, opt_state):
        def loss_fn(params):
            logits, new_state = model.apply(
                {"params": params, "batch_stats": batch_stats}, x, train=True,
                mutable=["batch_stats"],
            )  # fmt: skip
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return loss, new_state["batch_stats"]

        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), batch_stats, opt_state, loss

    params, batch_stats = variables["params"], variables["batch_stats"]
    opt_state = tx.init(params)
    losses = []
    for _ in range(40):
        params, batch_stats, opt_state, loss = step(params, batch_stats, opt_state)
        losses.append(float(loss))
    assert losses[0] > 1.0  # about log(4) at initialisation
    assert losses[-1] < 0.05, losses[-10:]
