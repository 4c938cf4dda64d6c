"""Property-based robustness: hypothesis drives public functions with random shapes, dtypes
and values; every call either returns finite, well-formed results or raises a documented
jaxcnn error (a JaxcnnError subclass) with a non-empty message. Never an exception from deep
inside XLA, never a silent NaN. Profiles: "dev" (default, 12 examples per property) and "ci"
(HYPOTHESIS_PROFILE=ci: 30, derandomized)."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from jaxcnn import create_model
from jaxcnn.data import from_arrays
from jaxcnn.errors import JaxcnnError

settings.register_profile("dev", max_examples=12, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", max_examples=30, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
# CI (CI=true) runs the derandomized profile, so a landing never depends on luck.
_DEFAULT_PROFILE = "ci" if os.environ.get("CI") else "dev"
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or _DEFAULT_PROFILE)

DTYPES = st.sampled_from(["float32", "float16", "bfloat16", "int32", "uint8", "bool"])


def documented(call):
    """Run `call`; return (result, None) or (None, error) for a documented error with a
    message. Anything else propagates and fails the test."""
    try:
        return call(), None
    except JaxcnnError as err:
        assert str(err).strip(), f"{type(err).__name__} without a message"
        return None, err


@given(shape=st.lists(st.integers(0, 40), min_size=1, max_size=5), dtype=DTYPES,
       model=st.sampled_from(["lenet5", "small_cnn"]))
def test_models_accept_or_explain_any_input_shape_and_dtype(shape, dtype, model):
    net = create_model(model, num_classes=3)
    x = jax.ShapeDtypeStruct(tuple(shape), jnp.dtype(dtype))
    out, err = documented(lambda: jax.eval_shape(
        lambda x: net.apply(net.init(jax.random.key(0), x), x), x))
    if err is None:
        assert out.shape == (shape[0], 3) and out.dtype == jnp.float32
    else:
        assert "expects" in str(err) or "needs" in str(err)


finite_f32 = st.floats(-(2.0**100), 2.0**100, allow_nan=False, width=32)


@given(a=hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=6),
                    elements=finite_f32),
       b_shape=st.one_of(st.none(), hnp.array_shapes(min_dims=1, max_dims=3, min_side=0,
                                                      max_side=6)),
       scale=st.sampled_from([0.0, 1e-30, 1.0, 1e30]),
       dtype=st.sampled_from(["float32", "float16", "int32", "uint8"]))
@settings(max_examples=6)  # eager metrics compile each op per new shape: ~1 s per example
def test_similarity_metrics_are_finite_and_in_range_or_raise(a, b_shape, scale, dtype):
    from jaxcnn.similarity import METRICS

    rng = np.random.default_rng(a.size)
    b = a * scale if b_shape is None else rng.standard_normal(b_shape).astype(np.float32)
    if dtype != "float32":
        a = np.clip(a, 0, 255).astype(dtype)
        b = np.clip(b, 0, 255).astype(dtype)
    for name in ("cosine", "ncc"):
        out, err = documented(lambda name=name: METRICS[name].fn(a, b))
        if err is None:
            assert np.isfinite(float(out)) and -1.0 <= float(out) <= 1.0, (name, a, b)
    small = np.clip(a, -1e6, 1e6), np.clip(b, -1e6, 1e6)  # distances may overflow float32
    for name in ("l1", "mse"):
        out, err = documented(lambda name=name: METRICS[name].fn(*small))
        if err is None:
            assert np.isfinite(float(out)) and float(out) >= 0.0, name


@given(n=st.integers(0, 5), m=st.integers(0, 5), d=st.integers(0, 4), d2=st.integers(0, 4),
       k=st.integers(-1, 7), metric=st.sampled_from(["cosine", "ncc", "l1", "mse"]),
       zero_rows=st.booleans())
@settings(max_examples=8)
def test_pairwise_and_topk_return_finite_scores_or_raise(n, m, d, d2, k, metric, zero_rows):
    from jaxcnn.similarity import pairwise, topk

    rng = np.random.default_rng(n * 100 + m * 10 + d)
    x = rng.standard_normal((n, d)).astype(np.float32)
    y = rng.standard_normal((m, d2)).astype(np.float32)
    if zero_rows and n and m:
        x[0] = 0.0
        y[-1] = 0.0
    out, err = documented(lambda: np.asarray(pairwise(x, y, metric)))
    if err is None:
        assert out.shape == (n, m) and np.all(np.isfinite(out))
    res, err = documented(lambda: topk(x, y, k, metric))
    if err is None:
        scores, idx = map(np.asarray, res)
        assert scores.shape == idx.shape == (n, k) and np.all(np.isfinite(scores))
        assert np.all((idx >= 0) & (idx < m))


@given(images=hnp.arrays(st.sampled_from([np.uint8, np.float32, np.float64, np.int64]),
                         hnp.array_shapes(min_dims=1, max_dims=5, min_side=1, max_side=5)),
       nan=st.booleans())
def test_from_arrays_accepts_valid_images_or_names_the_problem(images, nan):
    if nan and np.issubdtype(images.dtype, np.floating) and images.size:
        images = images.copy()
        images.flat[images.size // 2] = np.nan
    labels = np.zeros(len(images), np.int32)
    splits, err = documented(lambda: from_arrays(images, labels, images, labels))
    if err is None:
        arr = splits.train.arrays["image"]
        assert arr.dtype == np.uint8 and arr.ndim == 4 and len(arr) == len(images)
    elif nan and np.issubdtype(images.dtype, np.floating):
        assert "NaN" in str(err) or "range" in str(err) or "shape" in str(err)


@given(image=hnp.arrays(st.sampled_from([np.uint8, np.float32, np.int32, np.bool_]),
                        hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=9)),
       size=st.integers(1, 12), channels=st.sampled_from([1, 3]))
def test_transform_returns_finite_model_inputs_or_raises(image, size, channels):
    from jaxcnn.data.transforms import EvalTransform

    prep = EvalTransform((size, size), channels=channels, mean=(127.5,), std=(127.5,))
    out, err = documented(lambda: prep(image))
    if err is None:
        assert out.shape == (size, size, channels) and out.dtype == np.float32
        assert np.all(np.isfinite(out))


@pytest.mark.parametrize("std", [(0.0,), (-1.0,)])
def test_zero_or_negative_normalization_std_is_a_config_error(std):
    from train_helpers import tiny_config

    from jaxcnn.errors import ConfigError
    from jaxcnn.train.config import validate_config

    config = tiny_config("lenet5")
    config.data.std = std
    with pytest.raises(ConfigError, match=r"data.std .* must be positive"):
        validate_config(config)
