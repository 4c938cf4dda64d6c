"""Behaviour every model family must share (foundation issue, "Tests"): BatchNorm statistics,
dropout, jit and gradients, bf16 compute, overfitting a fixed batch. Run on tiny configurations
that still exercise each family's mechanism (basic and grouped bottleneck ResNets with both
stems, depthwise-separable and inverted-residual MobileNets, U-Net, the autoencoder's
setup-built BN, a Siamese wrapper), eagerly where no compilation is needed and with
`jax.eval_shape` where only dtypes matter."""

import flax.linen as nn
import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.core import FrozenDict

import jaxcnn
from jaxcnn.models.autoencoder import ConvAutoencoder
from jaxcnn.models.mobilenet import MobileNetV1, MobileNetV2
from jaxcnn.models.resnet import Bottleneck, ResNet, _tiny_resnet
from jaxcnn.models.siamese import Siamese
from jaxcnn.models.unet import UNet

# name -> (builder taking overrides, input shape (H, W, C))
CONFIGS = {
    "resnet_basic_cifar": (lambda **kw: _tiny_resnet(num_classes=4, **kw), (8, 8, 3)),
    "resnext_bottleneck_imagenet": (
        lambda **kw: ResNet(
            stage_sizes=(1, 1), block_cls=Bottleneck, num_filters=4, groups=2,
            width_per_group=8, num_classes=4, **kw,
        ),
        (16, 16, 3),
    ),  # fmt: skip
    "mobilenet_v1": (lambda **kw: MobileNetV1(width_mult=0.125, num_classes=4, **kw), (32, 32, 3)),
    "mobilenet_v2": (lambda **kw: MobileNetV2(width_mult=0.1, num_classes=4, **kw), (32, 32, 3)),
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
WITH_BN = sorted(CONFIGS)
WITH_DROPOUT = ["mobilenet_v2", "unet"]


def _setup(name: str, batch: int = 2, **overrides):
    build, shape = CONFIGS[name]
    model = build(**overrides)
    x = jax.random.normal(jax.random.key(1), (batch, *shape), jnp.float32)
    variables = model.init({"params": jax.random.key(0)}, x, train=False)
    return model, variables, x


def _leaves_equal(a, b) -> bool:
    return all(
        np.array_equal(u, v) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


@pytest.mark.parametrize("name", WITH_BN)
def test_batch_stats_change_only_in_training(name):
    model, variables, x = _setup(name)
    rngs = {"dropout": jax.random.key(2)}
    y_eval_1 = model.apply(variables, x, train=False)
    y_eval_2 = model.apply(variables, x, train=False)
    np.testing.assert_array_equal(y_eval_1, y_eval_2)  # eval is deterministic

    # Eval mode with batch_stats mutable must leave the statistics untouched.
    _, same = model.apply(variables, x, train=False, mutable=["batch_stats"])
    assert _leaves_equal(same["batch_stats"], variables["batch_stats"])

    _, updated = model.apply(variables, x, train=True, mutable=["batch_stats"], rngs=rngs)
    before = flax.traverse_util.flatten_dict(variables["batch_stats"])
    after = flax.traverse_util.flatten_dict(updated["batch_stats"])
    assert before.keys() == after.keys() and len(before) > 0
    # Every BN layer saw a batch: its variance estimate moved (a mean can stay 0 exactly
    # when a channel is dead), and some means moved.
    assert all(not np.allclose(before[k], after[k]) for k in before if k[-1] == "var")
    assert any(not np.allclose(before[k], after[k]) for k in before if k[-1] == "mean")

    # Training mode without mutable batch_stats cannot silently drop the update.
    with pytest.raises(Exception, match="batch_stats"):
        model.apply(variables, x, train=True, rngs=rngs)


@pytest.mark.parametrize("name", WITH_DROPOUT)
def test_dropout_only_in_training_with_rng(name):
    model, variables, x = _setup(name)
    apply = lambda seed: model.apply(
        variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(seed)}
    )[0]
    np.testing.assert_array_equal(apply(3), apply(3))  # the rng alone decides the mask
    assert not np.allclose(apply(3), apply(4))
    # Without dropout (rate 0) two rngs agree: the difference above is dropout's.
    quiet = CONFIGS[name][0](dropout=0.0)
    no_drop = [
        quiet.apply(
            variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(s)}
        )[0]
        for s in (3, 4)
    ]
    np.testing.assert_array_equal(*no_drop)
    with pytest.raises(Exception, match="dropout"):
        model.apply(variables, x, train=True, mutable=["batch_stats"])


@pytest.mark.parametrize("name", ["resnet_basic_cifar", "mobilenet_v2", "unet", "siamese"])
def test_jit_compiles_and_gradients_are_finite(name):
    model, variables, x = _setup(name)

    @jax.jit
    def loss_and_grads(params, batch_stats, x, rng):
        def loss_fn(params):
            y, new_state = model.apply(
                {"params": params, "batch_stats": batch_stats}, x, train=True,
                mutable=["batch_stats"], rngs={"dropout": rng},
            )  # fmt: skip
            return jnp.mean(jnp.square(y)), new_state

        return jax.value_and_grad(loss_fn, has_aux=True)(params)

    (loss, _), grads = loss_and_grads(
        variables["params"], variables["batch_stats"], x, jax.random.key(5)
    )
    assert np.isfinite(loss)
    leaves = jax.tree.leaves(grads)
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
    x = jax.random.normal(jax.random.key(0), (8, 8, 8, 3), jnp.float32)
    labels = jnp.arange(8) % 4
    variables = model.init(jax.random.key(1), x)
    tx = optax.adam(1e-2)

    @jax.jit
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
