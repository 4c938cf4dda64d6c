"""Every experiment in configs/ builds and passes the start-up validation (keys, types,
ranges, and the augmentation / test-time / schedule combinations), so a typo in a config
file fails here rather than at the start of a long run."""

import importlib
import sys
from pathlib import Path

import pytest

from jaxcnn.train.config import validate_config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CONFIGS = sorted(p.stem for p in (ROOT / "configs").glob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("name", CONFIGS)
def test_config_validates(name):
    module = importlib.import_module(f"configs.{name}")
    validate_config(module.get_config())


def test_every_ablation_variant_validates_and_changes_one_choice():
    sys.path.insert(0, str(ROOT / "bench"))
    from ablations import GROUPS

    module = importlib.import_module("configs.ablations_cifar10_subset")
    base = module.get_config()
    for variant in {v for group in GROUPS.values() for v in group}:
        config = module.get_config(variant)
        validate_config(config)
    stop = module.get_config("early_stop=3")  # a setting that overfits, stopped on valid_loss
    assert (stop.early_stopping.metric, stop.early_stopping.patience) == ("valid_loss", 3)
    assert (stop.num_epochs, stop.data.flip, stop.data.crop_padding) == (25, False, 0)
    assert module.get_config("act=elu").model.kwargs.activation == "elu"
    assert base.model.kwargs.to_dict().get("activation") is None
    with pytest.raises(ValueError, match="key=value"):
        module.get_config("act")
