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
