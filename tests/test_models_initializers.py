"""Initializers by name, checked statistically on large kernels: uniform bounds are reached and
never exceeded (Xavier: sqrt(6/(fan_in+fan_out)), He: sqrt(6/fan_in)), standard deviations
match (Xavier normal sqrt(2/(fan_in+fan_out)), He normal sqrt(2/fan_in)), normal variants are
untruncated as in torch.nn.init, and the models' `kernel_init` / `bias_init` options apply them
while the defaults stay torchvision's."""

import math

import jax
import numpy as np
import pytest
from flax.traverse_util import flatten_dict
from model_testing import fast_jit

import jaxcnn
from jaxcnn.models.initializers import calculate_gain, get_initializer, list_initializers

SHAPE = (3, 3, 64, 128)  # an HWIO conv kernel: fan_in 576, fan_out 1152, 73,728 values
FAN_IN, FAN_OUT = 3 * 3 * 64, 3 * 3 * 128


def _sample(spec, shape=SHAPE, seed=0):
    return np.asarray(get_initializer(spec)(jax.random.key(seed), shape))


def _uniform_ok(w, limit):
    # Bounded by the limit, reaching it, and flat: std = limit / sqrt(3).
    assert np.abs(w).max() <= limit * (1 + 1e-6)
    assert np.abs(w).max() > 0.99 * limit
    assert abs(w.std() - limit / math.sqrt(3)) < 0.01 * limit
    assert abs(w.mean()) < 0.01 * limit


def _normal_ok(w, std):
    assert abs(w.std() - std) < 0.015 * std
    assert abs(w.mean()) < 0.02 * std
    # Untruncated, as torch: among 73,728 draws some exceed 3.5 std (truncation at 2 would not).
    assert np.abs(w).max() > 3.5 * std


@pytest.mark.parametrize("name", ["xavier_uniform", "glorot_uniform"])
def test_xavier_uniform_limit(name):
    _uniform_ok(_sample(name), math.sqrt(6 / (FAN_IN + FAN_OUT)))


def test_xavier_uniform_gain_and_dense_fans():
    w = _sample("xavier_uniform(gain=2.0)", shape=(300, 100))
    _uniform_ok(w, 2.0 * math.sqrt(6 / 400))


@pytest.mark.parametrize("name", ["xavier_normal", "glorot_normal"])
def test_xavier_normal_std(name):
    _normal_ok(_sample(name), math.sqrt(2 / (FAN_IN + FAN_OUT)))


@pytest.mark.parametrize("name", ["kaiming_normal", "he_normal"])
def test_he_normal_std_is_sqrt_2_over_fan_in(name):
    _normal_ok(_sample(name), math.sqrt(2 / FAN_IN))


def test_he_normal_fan_out_and_leaky_gain():
    _normal_ok(_sample("kaiming_normal(mode='fan_out')"), math.sqrt(2 / FAN_OUT))
    a = 0.2
    _normal_ok(_sample(f"kaiming_normal(a={a})"), math.sqrt(2 / (1 + a * a)) / math.sqrt(FAN_IN))
    _normal_ok(_sample("kaiming_normal(nonlinearity='tanh')"), (5 / 3) / math.sqrt(FAN_IN))


@pytest.mark.parametrize("name", ["kaiming_uniform", "he_uniform"])
def test_he_uniform_bound_is_sqrt_6_over_fan_in(name):
    _uniform_ok(_sample(name), math.sqrt(6 / FAN_IN))


def test_torch_default_is_uniform_one_over_sqrt_fan_in():
    _uniform_ok(_sample("torch_default"), 1 / math.sqrt(FAN_IN))


def test_normal_uniform_constant_zeros():
    _normal_ok(_sample("normal(std=0.02)"), 0.02)
    shifted = _sample("normal(mean=1.0, std=0.1)")
    assert abs(shifted.mean() - 1.0) < 0.002 and abs(shifted.std() - 0.1) < 0.0015
    w = _sample("uniform")
    assert w.min() >= -0.05 and w.max() <= 0.05 and w.max() - w.min() > 0.099
    w = _sample("uniform(low=0.0, high=1.0)")
    assert w.min() >= 0 and w.max() <= 1 and abs(w.mean() - 0.5) < 0.01
    np.testing.assert_array_equal(_sample("constant(value=0.1)", shape=(5,)),
                                  np.full(5, 0.1, np.float32))
    np.testing.assert_array_equal(_sample("zeros", shape=(4, 3)), np.zeros((4, 3)))
    np.testing.assert_array_equal(_sample("ones", shape=(2,)), np.ones(2))


def test_calculate_gain_matches_torch_table():
    assert calculate_gain("relu") == pytest.approx(math.sqrt(2))
    assert calculate_gain("tanh") == pytest.approx(5 / 3)
    assert calculate_gain("leaky_relu", 0.2) == pytest.approx(math.sqrt(2 / 1.04))
    assert calculate_gain("sigmoid") == 1.0


def test_bad_initializer_specs_are_explained():
    with pytest.raises(jaxcnn.ConfigError, match="unknown initializer.*xavier_uniform"):
        get_initializer("xavier")
    with pytest.raises(jaxcnn.ConfigError, match="takes"):
        get_initializer("normal(sigma=1)")
    with pytest.raises(jaxcnn.ConfigError, match="fan_in"):
        get_initializer("kaiming_normal(mode='fan_avg')")
    with pytest.raises(jaxcnn.ConfigError, match="bias vector"):
        get_initializer("xavier_uniform", bias=True)
    assert "he_normal" in list_initializers()


def _kernels(model, shape):
    variables = fast_jit(model.init)(jax.random.key(0), np.zeros((1, *shape), np.float32))
    flat = flatten_dict(variables["params"])
    return ({k: np.asarray(v) for k, v in flat.items() if k[-1] == "kernel"},
            {k: np.asarray(v) for k, v in flat.items() if k[-1] == "bias"})


def test_model_kernel_and_bias_init_options_apply_to_every_layer():
    model = jaxcnn.create_model("small_cnn", width=16, batch_norm=False,
                                kernel_init="xavier_uniform", bias_init="constant(value=0.1)")
    kernels, biases = _kernels(model, (32, 32, 3))
    assert len(kernels) == 7 and len(biases) == 7
    for w in kernels.values():
        fan_in = int(np.prod(w.shape[:-1]))
        fan_out = int(np.prod(w.shape[:-2])) * w.shape[-1]
        assert np.abs(w).max() <= math.sqrt(6 / (fan_in + fan_out)) * (1 + 1e-6)
    assert all(np.all(b == np.float32(0.1)) for b in biases.values())
    with pytest.raises(jaxcnn.ConfigError, match="bias vector"):  # at creation, not tracing
        jaxcnn.create_model("lenet5", bias_init="he_normal")
    with pytest.raises(jaxcnn.ConfigError, match="unknown initializer"):
        jaxcnn.create_model("vgg11", kernel_init="he_normall")


def test_vgg_default_init_stays_torchvision_and_override_replaces_it():
    from jaxcnn.models.vgg import _tiny_vgg

    kernels, _ = _kernels(_tiny_vgg(cfg=(64, "M"), hidden=64, in_channels=64), (8, 8, 64))
    conv = kernels[("features_0", "kernel")]  # torchvision: kaiming_normal_, fan_out
    assert abs(conv.std() - math.sqrt(2 / (9 * 64))) < 0.03 * math.sqrt(2 / (9 * 64))
    fc = kernels[("classifier_0", "kernel")]  # torchvision: N(0, 0.01)
    assert abs(fc.std() - 0.01) < 0.0005
    kernels, _ = _kernels(_tiny_vgg(cfg=(64, "M"), hidden=64, in_channels=64,
                                    kernel_init="normal(std=0.05)"),
                          (8, 8, 64))
    for w in kernels.values():
        assert abs(w.std() - 0.05) < 0.1 * 0.05


def test_shared_conv_block_and_googlenet_take_initializers_by_name():
    from jaxcnn.models.layers import ConvBNAct

    block = ConvBNAct(256, 3, norm=None, kernel_init="he_normal")
    variables = fast_jit(block.init)(jax.random.key(0), np.zeros((1, 8, 8, 64), np.float32))
    _normal_ok(np.asarray(variables["params"]["conv"]["kernel"]), math.sqrt(2 / FAN_IN))
    with pytest.raises(jaxcnn.ConfigError, match="unknown initializer"):  # at construction
        ConvBNAct(8, kernel_init="he_normall")
    seen = []

    def record(key, shape, dtype=np.float32):  # an initializer is also any callable
        seen.append(tuple(shape))
        return jax.numpy.zeros(shape, dtype)

    model = jaxcnn.create_model("googlenet", num_classes=3, kernel_init=record)
    abstract = jax.eval_shape(model.init, jax.random.key(0),
                              jax.ShapeDtypeStruct((1, 15, 15, 3), np.float32))
    kernels = [v.shape for k, v in flatten_dict(abstract["params"]).items() if k[-1] == "kernel"]
    assert len(kernels) == 64 and sorted(seen) == sorted(kernels)  # every conv and dense
