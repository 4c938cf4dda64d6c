"""Activations by name: each registered function equals its PyTorch formula, PReLU is a learned
parameter (torch's 0.25 start) that receives gradient, every family with an `activation`
option builds with it, and the defaults (torchvision's ReLU, LeNet's tanh) are unchanged."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict, unflatten_dict
from model_testing import fast_jit, numpy_variables, random_images

import jaxcnn
from jaxcnn.models import abstract_variables, get_model_spec, model_options
from jaxcnn.models.activations import get_activation, list_activations
from jaxcnn.models.layers import match_groups

X = np.linspace(-3.0, 3.0, 13, dtype=np.float32)
_erf = np.vectorize(math.erf)
# The formulas of torch.nn's modules at their default arguments.
REFERENCE = {
    "relu": lambda x: np.maximum(x, 0),
    "leaky_relu": lambda x: np.where(x > 0, x, 0.01 * x),
    "elu": lambda x: np.where(x > 0, x, np.expm1(x)),
    "silu": lambda x: x / (1 + np.exp(-x)),
    "swish": lambda x: x / (1 + np.exp(-x)),
    "gelu": lambda x: 0.5 * x * (1 + _erf(x / math.sqrt(2))),  # exact, as nn.GELU()
    "tanh": np.tanh,
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "relu6": lambda x: np.clip(x, 0, 6),
    "identity": lambda x: x,
}


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_activation_matches_torch_formula(name):
    np.testing.assert_allclose(get_activation(name)(jnp.asarray(X)), REFERENCE[name](X),
                               rtol=1e-5, atol=1e-6)


def test_every_registered_activation_has_a_reference():
    assert set(list_activations()) == set(REFERENCE) | {"prelu"}


def test_activation_arguments():
    np.testing.assert_allclose(get_activation("leaky_relu(negative_slope=0.2)")(X),
                               np.where(X > 0, X, 0.2 * X), rtol=1e-6)
    np.testing.assert_allclose(get_activation("elu(alpha=0.5)")(X),
                               np.where(X > 0, X, 0.5 * np.expm1(X)), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(get_activation("swish(beta=2.0)")(X), X / (1 + np.exp(-2 * X)),
                               rtol=1e-5, atol=1e-6)
    tanh_gelu = 0.5 * X * (1 + np.tanh(math.sqrt(2 / math.pi) * (X + 0.044715 * X**3)))
    np.testing.assert_allclose(get_activation("gelu(approximate=True)")(X), tanh_gelu,
                               rtol=1e-5, atol=1e-6)


def test_bad_activation_specs_are_explained():
    with pytest.raises(jaxcnn.ConfigError, match="unknown activation 'relux'.*leaky_relu"):
        get_activation("relux")
    with pytest.raises(jaxcnn.ConfigError, match="negative_slope"):
        get_activation("leaky_relu(slope=0.2)")
    with pytest.raises(jaxcnn.ConfigError, match="keyword"):
        get_activation("leaky_relu(0.2)")
    with pytest.raises(jaxcnn.ConfigError, match="unknown activation"):  # fails at creation
        jaxcnn.create_model("small_cnn", activation="swishh")


def _small(**kw):
    model = jaxcnn.create_model("lenet5", num_classes=3, **kw)
    x = random_images((2, 32, 32, 1))
    variables = numpy_variables(model, jax.ShapeDtypeStruct(x.shape, jnp.float32))
    return model, variables, x


def test_prelu_starts_at_torch_slope_and_is_one_learned_scalar():
    prelu = get_activation("prelu")
    variables = prelu.init(jax.random.key(0), jnp.asarray(X))
    assert jax.tree.map(float, dict(variables["params"])) == {"negative_slope": 0.25}
    np.testing.assert_allclose(prelu.apply(variables, X), np.where(X > 0, X, 0.25 * X))


def test_prelu_in_a_model_is_learned_one_per_layer_and_gets_gradient():
    model, variables, x = _small(activation="prelu")
    slopes = [k for k in flatten_dict(variables["params"]) if k[-1] == "negative_slope"]
    assert len(slopes) == 4  # one per layer but the last, as an nn.PReLU() after each

    @fast_jit
    def grads(variables):
        def loss(params):
            return jnp.sum(model.apply({**variables, "params": params}, x) ** 2)

        return jax.grad(loss)(variables["params"])

    with_slope = jax.tree_util.tree_map_with_path(
        lambda p, v: np.full_like(v, 0.25) if p[-1].key == "negative_slope" else v, variables)
    flat = flatten_dict(grads(with_slope))
    assert all(abs(float(flat[k])) > 0 for k in slopes)
    # A slope of 0 is ReLU: the same network output as activation="relu".
    relu = jaxcnn.create_model("lenet5", num_classes=3, activation="relu")
    no_slopes = unflatten_dict({k: v for k, v in flatten_dict(variables["params"]).items()
                                if k[-1] != "negative_slope"})
    outputs = fast_jit(lambda v, w: (model.apply(v, x), relu.apply(w, x)))(
        variables, {**variables, "params": no_slopes})
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-6)


def test_default_activation_output_is_unchanged():
    model, variables, x = _small()
    tanh = jaxcnn.create_model("lenet5", num_classes=3, activation="tanh")  # the paper's
    elu = jaxcnn.create_model("lenet5", num_classes=3, activation="elu")
    out, explicit, other = fast_jit(lambda v: (model.apply(v, x), tanh.apply(v, x),
                                               elu.apply(v, x)))(variables)
    np.testing.assert_array_equal(out, explicit)
    assert not np.allclose(out, other)
    assert jaxcnn.create_model("small_cnn").activation == "relu"


# The smallest model of each family with an `activation` option.
REPRESENTATIVES = ("lenet5", "small_cnn", "alexnet_original", "vgg11", "zfnet", "resnet18",
                   "googlenet", "unet")


def test_activation_option_covers_the_classic_families():
    with_option = {get_model_spec(n).family for n in jaxcnn.list_models()
                   if "activation" in model_options(n)}
    assert with_option == {get_model_spec(n).family for n in REPRESENTATIVES}


@pytest.mark.parametrize("name", REPRESENTATIVES)
def test_every_family_builds_with_a_learned_activation(name):
    spec = get_model_spec(name)
    base = jaxcnn.count_params(abstract_variables(jaxcnn.create_model(name), spec.input_shape))
    variables = abstract_variables(jaxcnn.create_model(name, activation="prelu"),
                                   spec.input_shape)
    slopes = [k for k in flatten_dict(variables["params"]) if k[-1] == "negative_slope"]
    assert slopes
    assert jaxcnn.count_params(variables) == base + len(slopes)
    model = jaxcnn.create_model(name, activation="prelu")
    if hasattr(model, "group_matcher"):  # freezing / per-stage rates still see every module
        groups = match_groups(model.group_matcher(), list(variables["params"]))
        assert sum(len(members) for _, members in groups) == len(variables["params"])


def test_cli_summary_builds_the_model_with_the_options_given(capsys):
    from jaxcnn.cli import main

    base = ["models", "small_cnn", "--summary", "--option", "width=8"]
    assert main(base + ["--option", "activation=leaky_relu(negative_slope=0.2)"]) == 0
    assert "Parameters: 18,626" in capsys.readouterr().out
    assert main(base + ["--option", "activation=prelu"]) == 0  # one learned slope per layer
    out = capsys.readouterr().out
    assert "Parameters: 18,632" in out and out.count("PReLU") == 6
    assert main(base + ["--option", "activation=swishh"]) == 1
    assert "unknown activation" in capsys.readouterr().err
    assert main(["models", "small_cnn", "--option", "width=8"]) == 1
    assert "--summary" in capsys.readouterr().err
