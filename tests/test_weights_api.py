"""The timm/torchvision-style weights API: `load_model` applies the options the weights
need (GoogLeNet's transform_input, no aux heads) and re-initializes a head of another size;
`list_models(pretrained=True)`; each spec's `pretrained_cfg` and `feature_info`."""

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import jaxcnn
from jaxcnn.models import feature_info, get_model_spec
from jaxcnn.pretrained import WEIGHTS, conv_kernel
from jaxcnn.pretrained.synthetic import synthetic_state_dict

KEYS = json.loads((Path(__file__).parent / "golden" / "torchvision_keys.json").read_text())


@pytest.fixture(scope="module")
def weight_file(tmp_path_factory):
    def make(name: str) -> tuple[Path, dict]:
        state = synthetic_state_dict(KEYS[name])
        path = tmp_path_factory.mktemp(name) / f"{name}.safetensors"
        save_file(state, str(path))
        return path, state

    return make


def test_googlenet_is_built_with_the_options_of_its_weights(weight_file):
    path, state = weight_file("googlenet")
    model, variables = jaxcnn.load_model("googlenet", weights=path)
    # torchvision builds the pretrained GoogLeNet with transform_input=True, no aux heads.
    assert model.transform_input and not model.aux_logits and model.num_classes == 1000
    np.testing.assert_array_equal(variables["params"]["conv1"]["conv"]["kernel"],
                                  conv_kernel(state["conv1.conv.weight"]))
    assert "aux1" not in variables["params"]


def test_another_num_classes_gets_a_fresh_head_and_keeps_the_backbone(weight_file, capfd):
    path, state = weight_file("resnet18")
    model, variables = jaxcnn.load_model("resnet18", weights=path, num_classes=4)
    params = variables["params"]
    assert model.num_classes == 4 and params["fc"]["kernel"].shape == (512, 4)
    assert np.isfinite(params["fc"]["kernel"]).all() and params["fc"]["kernel"].std() > 0
    np.testing.assert_array_equal(params["layer4_1"]["conv2"]["kernel"],
                                  conv_kernel(state["layer4.1.conv2.weight"]))
    np.testing.assert_array_equal(variables["batch_stats"]["bn1"]["var"],
                                  state["bn1.running_var"])
    assert "params/fc/kernel (512, 4) (loaded: (512, 1000))" in capfd.readouterr().err


def test_list_models_pretrained_are_those_with_registered_weights():
    with_weights = jaxcnn.list_models(pretrained=True)
    assert with_weights == sorted({w.model for w in WEIGHTS})
    assert "resnet18" in with_weights and "lenet5" not in with_weights
    assert set(with_weights) < set(jaxcnn.list_models())


def test_pretrained_cfg_and_feature_info():
    cfg = get_model_spec("resnet50").pretrained_cfg
    assert cfg["input_size"] == (224, 224, 3) and cfg["crop_pct"] == 224 / 256
    assert cfg["classifier"] == "fc" and cfg["first_conv"] == "conv1"
    assert get_model_spec("mobilenet_v2").pretrained_cfg["classifier"] == "classifier_1"
    lenet = get_model_spec("lenet5").pretrained_cfg
    assert lenet["mean"] == (0.0,) and lenet["std"] == (255.0,) and lenet["crop_pct"] == 1.0
    info = feature_info("resnet18")
    assert [f["module"] for f in info] == ["stem", "stage1", "stage2", "stage3", "stage4"]
    assert [f["num_chs"] for f in info] == [64, 64, 128, 256, 512]
    assert [f["reduction"] for f in info] == [4, 4, 8, 16, 32]
