"""jaxcnn's BatchNorm against PyTorch, running statistics included.

PyTorch normalizes a training batch with the biased variance but updates `running_var` with
the unbiased one (n / (n - 1), n values per channel of the GLOBAL batch); flax's
`nn.BatchNorm` updates it with the biased one. The expected numbers come from torch
(tests/golden/bn/bn_torch.npz, written by tests/golden/bn/make_bn_golden.py with the torch
venv); the inputs are rebuilt here with the same numpy seeds.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec
from model_testing import FAST_COMPILE

from jaxcnn.data.pipeline import batch_sharding, make_mesh
from jaxcnn.models.layers import BN_MOMENTUM, BatchNorm
from jaxcnn.pretrained import from_torchvision
from jaxcnn.pretrained.synthetic import synthetic_input, synthetic_state_dict
from jaxcnn.pretrained.torchvision import pretrained_model

GOLDEN = np.load(Path(__file__).parent / "golden" / "bn" / "bn_torch.npz")
KEYS = json.loads((Path(__file__).parent / "golden" / "torchvision_keys.json").read_text())
LESSON = np.array([[2, 1, 0], [4, 3, 4], [0, 2, 1], [3, 4, 0]], np.float32)  # as the script
STEPS = 3


def conv_inputs(n: int) -> list[np.ndarray]:
    """make_bn_golden.py's batches, in NHWC (the script transposes them to NCHW for torch)."""
    rng = np.random.default_rng(n)
    return [(rng.standard_normal((n, 5, 4, 3)) * 2 + 1).astype(np.float32) for _ in range(STEPS)]


def conv_variables() -> dict:
    rng = np.random.default_rng(99)
    gamma = rng.uniform(0.5, 1.5, 3).astype(np.float32)
    beta = rng.standard_normal(3).astype(np.float32)
    return {"params": {"scale": gamma, "bias": beta},
            "batch_stats": {"mean": np.zeros(3, np.float32), "var": np.ones(3, np.float32)}}


def test_lesson_batch_running_var_is_unbiased_as_in_torch():
    bn = BatchNorm(use_running_average=False, momentum=BN_MOMENTUM, epsilon=1e-5)
    variables = bn.init(jax.random.key(0), LESSON)
    y, updates = bn.apply(variables, LESSON, mutable=["batch_stats"])
    np.testing.assert_allclose(y, GOLDEN["lesson/y"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(updates["batch_stats"]["mean"], GOLDEN["lesson/running_mean"],
                               rtol=1e-6)
    np.testing.assert_allclose(updates["batch_stats"]["var"], GOLDEN["lesson/running_var"],
                               rtol=1e-6)
    np.testing.assert_allclose(updates["batch_stats"]["var"], [1.1917, 1.0667, 1.2583],
                               atol=5e-5)
    # flax's own BatchNorm gives the biased [1.1188, 1.025, 1.1688]: the bug this fixes.
    flax_bn = nn.BatchNorm(use_running_average=False, momentum=BN_MOMENTUM, epsilon=1e-5)
    _, flax_updates = flax_bn.apply(variables, LESSON, mutable=["batch_stats"])
    np.testing.assert_allclose(flax_updates["batch_stats"]["var"], [1.1188, 1.025, 1.1688],
                               atol=5e-5)


@pytest.mark.parametrize("n", [1, 2, 7])
def test_conv_batchnorm_matches_torch_over_steps_then_eval(n):
    bn = BatchNorm(momentum=BN_MOMENTUM, epsilon=1e-5)
    variables = conv_variables()
    train = jax.jit(lambda v, x: bn.apply(v, x, use_running_average=False,
                                          mutable=["batch_stats"]))
    for step, x in enumerate(conv_inputs(n)):
        y, updates = train(variables, x)
        variables = {**variables, **updates}
        np.testing.assert_allclose(y, GOLDEN[f"conv{n}/{step}/y"], rtol=1e-5, atol=1e-5)
        for ours, theirs in (("mean", "running_mean"), ("var", "running_var")):
            np.testing.assert_allclose(variables["batch_stats"][ours],
                                       GOLDEN[f"conv{n}/{step}/{theirs}"], rtol=1e-5, atol=1e-6)
    y = bn.apply(variables, x, use_running_average=True)
    np.testing.assert_allclose(y, GOLDEN[f"conv{n}/eval_y"], rtol=1e-5, atol=1e-5)


def _global_steps(step_fn) -> dict:
    variables = conv_variables()
    for x in conv_inputs(8):
        variables = {**variables, **step_fn(variables, x)}
    return variables["batch_stats"]


def _assert_global_stats(stats: dict) -> None:
    # n is 8 x 5 x 4 = 160 values per channel (the GLOBAL batch), not 2 x 5 x 4 per device:
    # the factors 160/159 and 40/39 differ by 2e-2 %, far above the tolerance.
    np.testing.assert_allclose(stats["var"], GOLDEN[f"conv8/{STEPS - 1}/running_var"],
                               rtol=2e-6)
    np.testing.assert_allclose(stats["mean"], GOLDEN[f"conv8/{STEPS - 1}/running_mean"],
                               rtol=1e-5, atol=1e-6)


def test_data_parallel_jit_uses_the_global_batch():
    """The trainer's layout: a jitted step on a batch sharded over the 4 devices."""
    mesh = make_mesh()
    assert mesh.size == 4
    bn = BatchNorm(use_running_average=False)
    step = jax.jit(lambda v, x: bn.apply(v, x, mutable=["batch_stats"])[1])
    _assert_global_stats(
        _global_steps(lambda v, x: step(v, jax.device_put(x, batch_sharding(mesh))))
    )


def test_data_parallel_shard_map_with_axis_name_uses_the_global_batch():
    mesh = make_mesh()
    bn = BatchNorm(use_running_average=False, axis_name="data")
    step = jax.jit(jax.shard_map(
        lambda v, x: bn.apply(v, x, mutable=["batch_stats"])[1],
        mesh=mesh, in_specs=(PartitionSpec(), PartitionSpec("data")), out_specs=PartitionSpec(),
    ))  # fmt: skip
    _assert_global_stats(_global_steps(step))


def test_variables_keep_flax_names_shapes_and_dtypes():
    """Checkpoints and converters see the same tree as with flax's nn.BatchNorm."""
    x = jnp.zeros((2, 4, 4, 6), jnp.bfloat16)
    ours = jax.eval_shape(lambda: BatchNorm(use_running_average=False).init(jax.random.key(0), x))
    theirs = jax.eval_shape(lambda: nn.BatchNorm(use_running_average=False)
                            .init(jax.random.key(0), x))  # fmt: skip
    assert jax.tree.structure(ours) == jax.tree.structure(theirs)
    assert jax.tree.leaves(ours) == jax.tree.leaves(theirs)


def test_eval_mode_is_bit_identical_to_flax_in_bfloat16():
    x = np.random.default_rng(0).normal(size=(2, 3, 3, 4)).astype(np.float32)
    variables = {"params": {"scale": np.linspace(0.5, 2, 4, dtype=np.float32),
                            "bias": np.linspace(-1, 1, 4, dtype=np.float32)},
                 "batch_stats": {"mean": np.full(4, 0.3, np.float32),
                                 "var": np.linspace(0.2, 3, 4, dtype=np.float32)}}  # fmt: skip
    for dtype in (jnp.float32, jnp.bfloat16):
        ours = BatchNorm(use_running_average=True, dtype=dtype).apply(variables, x.astype(dtype))
        theirs = nn.BatchNorm(use_running_average=True, dtype=dtype).apply(
            variables, x.astype(dtype)
        )
        assert ours.dtype == theirs.dtype == dtype
        np.testing.assert_array_equal(np.asarray(ours, np.float32), np.asarray(theirs, np.float32))


@functools.cache
def _finetuned_resnet18() -> tuple[dict, list[np.ndarray]]:
    """3 SGD steps of converted resnet18 as make_bn_golden.py's torch loop (64x64: at 32x32
    layer4's BatchNorms see 4 values per channel and amplify float noise chaotically)."""
    model = pretrained_model("resnet18")
    variables = from_torchvision("resnet18", synthetic_state_dict(KEYS["resnet18"]))
    tx = optax.sgd(0.002)  # FINETUNE_LR of make_bn_golden.py

    def step(params, stats, opt_state, x, labels):
        def loss_fn(params):
            logits, updates = model.apply({"params": params, "batch_stats": stats}, x,
                                          train=True, mutable=["batch_stats"])  # fmt: skip
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return loss, (logits, updates["batch_stats"])

        grads, (logits, stats) = jax.grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state)
        return optax.apply_updates(params, updates), stats, opt_state, logits

    params, stats = variables["params"], variables["batch_stats"]
    opt_state = tx.init(params)
    x0, l0 = _finetune_batch(0)
    compiled = jax.jit(step).lower(params, stats, opt_state, x0, l0).compile(FAST_COMPILE)
    logits_per_step = []
    for i in range(STEPS):
        x, labels = _finetune_batch(i)
        params, stats, opt_state, logits = compiled(params, stats, opt_state, x, labels)
        logits_per_step.append(np.asarray(logits))
    return jax.tree.map(np.asarray, stats), logits_per_step


def _finetune_batch(step: int) -> tuple[np.ndarray, np.ndarray]:
    x = synthetic_input(100 + step, (4, 3, 64, 64)).transpose(0, 2, 3, 1)
    return x, ((np.arange(4) * 37 + step * 11) % 1000).astype(np.int32)


def test_finetuning_converted_resnet18_gives_torchvisions_running_statistics():
    stats, logits = _finetuned_resnet18()
    for i in range(STEPS):  # the same weights step after step
        np.testing.assert_allclose(logits[i], GOLDEN[f"resnet18/{i}/logits"], rtol=1e-4,
                                   atol=1e-4)
    prefix = "resnet18/state/"
    state = synthetic_state_dict(KEYS["resnet18"])
    state.update({k[len(prefix):]: GOLDEN[k] for k in GOLDEN.files if k.startswith(prefix)})
    expected = from_torchvision("resnet18", state)["batch_stats"]
    assert jax.tree.structure(expected) == jax.tree.structure(stats)
    paths = jax.tree_util.tree_flatten_with_path(expected)[0]
    # mean and var of all 20 BatchNorms. layer4 runs at 2x2 for 64x64 inputs, so n = 16 values
    # per channel there: a biased update would be 1/15 x 0.1 = 0.7 % off, 60x the tolerance.
    assert len(paths) == 2 * 20
    for (path, want), got in zip(paths, jax.tree.leaves(stats), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5,
                                   err_msg=jax.tree_util.keystr(path))
