"""AlexNet's crops and test-time evaluation: data.ten_crop averages the softmax of the four
corner and centre crops and their mirrors (returned as log-probabilities), data.tta=1
averages the logits of each image and its mirror; training crops data.crop_size of the
larger stored images and evaluation without test-time augmentation takes the centre crop;
the options that cannot work are refused before compiling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_testing import fast_jit
from train_helpers import tiny_config

import jaxcnn
from jaxcnn.data.augment import Augment, tta_logits
from jaxcnn.train import initial_state, make_optimizer, setup
from jaxcnn.train.run import Evaluator
from jaxcnn.train.steps import make_predict_step


def _linear(x):
    """A fixed 'model' with position-dependent weights, so crops and mirrors differ."""
    w = (jnp.arange(np.prod(x.shape[1:]), dtype=jnp.float32).reshape((1, *x.shape[1:])) % 7
         - 3)
    return jnp.stack([jnp.sum(x * w, axis=(1, 2, 3)), jnp.sum(x, axis=(1, 2, 3)),
                      -jnp.sum(x * w, axis=(1, 2, 3)) / 2], axis=-1) / 50


def test_flip_and_ten_crop_formulas():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 10, 9, 2)), jnp.float32)
    flip = tta_logits(_linear, x, 1)  # test-time flip averaging
    np.testing.assert_allclose(flip, (_linear(x) + _linear(x[:, :, ::-1])) / 2, rtol=1e-5)
    ten = Augment(crop_size=7, ten_crop=True).ten_crop_scores(_linear, x)
    ref = np.asarray(x)
    crops = []
    for img in (ref, ref[:, :, ::-1]):
        crops += [img[:, :7, :7], img[:, :7, 2:], img[:, 3:, :7], img[:, 3:, 2:],
                  img[:, 2:9, 1:8]]  # corners, then the centre (offsets round(1.5), round(1))
    probs = np.mean([jax.nn.softmax(_linear(jnp.asarray(c)), -1) for c in crops], axis=0)
    np.testing.assert_allclose(ten, np.log(probs), rtol=1e-5, atol=1e-6)


def _config(ten_crop):
    config = tiny_config("lenet5")
    config.data.image_size = 36  # stored 36x36, LeNet's 32x32 crops
    config.data.crop_size = 32
    config.data.flip = True
    config.data.ten_crop = ten_crop
    return config


def _predict(config):
    run = setup(config)
    tx, _ = make_optimizer(config, run.variables["params"], run.steps_per_epoch)
    state = initial_state(run, tx)
    predictor = Evaluator(run, make_predict_step(run.model, run.task, run.augment))
    batch = next(iter(predictor.batches("test")))
    return run, state, batch, np.asarray(predictor.call(state, batch))


def test_ten_crop_evaluation_of_a_model_equals_averaging_its_ten_patches():
    run, state, batch, logits = _predict(_config(True))
    images = np.asarray(run.augment(None, batch, train=False)["image"])  # 36x36, normalized
    assert images.shape[1:3] == (36, 36)
    apply = fast_jit(lambda v, x: run.model.apply(v, x))
    views = [images[:, a:a + 32, b:b + 32] for a, b in ((0, 0), (0, 4), (4, 0), (4, 4), (2, 2))]
    views += [v[:, :, ::-1] for v in views]
    probs = np.mean([jax.nn.softmax(apply(state.variables, jnp.asarray(v)), -1) for v in views],
                    axis=0)
    np.testing.assert_allclose(logits, np.log(probs), rtol=1e-4, atol=1e-5)
    # without test-time augmentation the eval step sees the centre 32x32 crop
    run, state, batch, plain = _predict(_config(False))
    centre = np.asarray(run.augment(None, batch, train=False)["image"])
    assert centre.shape[1:3] == (32, 32)
    np.testing.assert_allclose(centre, images[:, 2:34, 2:34], rtol=1e-6)
    np.testing.assert_allclose(plain, apply(state.variables, jnp.asarray(centre)), rtol=1e-4,
                               atol=1e-5)


def test_impossible_test_time_options_are_refused():
    config = _config(True)
    config.data.crop_size = 0
    with pytest.raises(jaxcnn.ConfigError, match="data.crop_size"):
        setup(config)
    config = _config(True)
    config.data.tta = 1
    with pytest.raises(jaxcnn.ConfigError, match="choose one"):
        setup(config)
    config = tiny_config("unet")
    config.data.tta = 1
    from jaxcnn.data import load_shapes

    shapes = load_shapes(16)
    with pytest.raises(jaxcnn.ConfigError, match="not class scores"):
        setup(config, data=shapes)
