"""init.reinit_layers: warm-started weights are kept except the named top-level modules,
which get their fresh initialization even where the loaded shapes fit (a new head of several
layers), and a pattern that names nothing is explained."""

import jax
import numpy as np
import pytest
from train_helpers import tiny_config

import jaxcnn
from jaxcnn.train import setup
from jaxcnn.train.warmstart import reinit_layers


def test_named_layers_are_reinitialized_the_rest_loaded():
    config = tiny_config("lenet5")
    run = setup(config)
    fresh = jax.device_get(run.variables)
    loaded = jax.tree.map(lambda x: np.asarray(x) + 1.0, fresh)  # "pretrained" weights
    config.init.reinit_layers = ("fc[12]",)  # LeNet-5's two fully connected layers
    merged = jax.device_get(setup(config, data=run.splits, init_variables=loaded).variables)
    for name in ("conv1", "conv2", "conv3"):
        np.testing.assert_array_equal(merged["params"][name]["kernel"],
                                      loaded["params"][name]["kernel"])
    for name in ("fc1", "fc2"):
        np.testing.assert_array_equal(merged["params"][name]["kernel"],
                                      fresh["params"][name]["kernel"])
    with pytest.raises(jaxcnn.ConfigError, match="matches no top-level module.*fc2"):
        reinit_layers(fresh, loaded, ("classifier_6",))
    config.init.reinit_layers = ("fc2",)
    with pytest.raises(jaxcnn.ConfigError, match="init.path"):
        setup(config)
