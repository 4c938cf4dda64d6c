"""Helpers shared by the model tests: cheap variables and cheap compilation, so that the model
tests stay fast on a loaded 2-core CPU machine."""

import functools

import flax.linen as nn
import jax
import numpy as np

# LLVM optimisation level 0 compiles small graphs several times faster on CPU; the values the
# tests check do not depend on it.
FAST_COMPILE = {"xla_backend_optimization_level": 0}

fast_jit = functools.partial(jax.jit, compiler_options=FAST_COMPILE)


def numpy_variables(model: nn.Module, x: jax.ShapeDtypeStruct, seed: int = 0) -> dict:
    """He-normal kernels, zero biases, unit BN scales / variances and zero means, built in
    numpy from the abstract variables: no `model.init` compilation (threefry is slow to
    compile)."""
    rng = np.random.default_rng(seed)
    abstract = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)

    def make(path, leaf):
        name = path[-1].key
        if name == "kernel":
            fan_in = int(np.prod(leaf.shape[:-1]))
            return rng.normal(0.0, np.sqrt(2.0 / fan_in), leaf.shape).astype(np.float32)
        fill = 1.0 if name in ("scale", "var") else 0.0
        return np.full(leaf.shape, fill, np.float32)

    return jax.tree_util.tree_map_with_path(make, dict(abstract))


def random_images(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Standard-normal float32 images from numpy (no jax.random compilation)."""
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)
