"""Converted torchvision weights reproduce torchvision's eval-mode outputs.

Golden files (tests/golden/, written by tests/golden/make_golden.py with torchvision) hold
the logits and stage outputs of torchvision models whose weights were drawn from each
parameter's name with `jaxcnn.pretrained.synthetic`; here the same weights are rebuilt with
numpy, converted with `from_torchvision`, and compared stage by stage. Every model with
torchvision weights also passes a strict conversion of its full torchvision key list."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxcnn.errors import CheckpointError
from jaxcnn.pretrained import from_torchvision, list_weights
from jaxcnn.pretrained.synthetic import synthetic_input, synthetic_state_dict
from jaxcnn.pretrained.torchvision import pretrained_model

GOLDEN = Path(__file__).parent / "golden"
KEYS: dict[str, list] = json.loads((GOLDEN / "torchvision_keys.json").read_text())
# One golden file per converted classifier; other goldens (ops, transforms) live beside them.
CLASSIFIERS = {w.split(".")[0] for w in list_weights()}
PARITY_MODELS = sorted(p.stem for p in GOLDEN.glob("*.npz") if p.stem in CLASSIFIERS)
MAX_STAGE_VALUES = 1024  # as in make_golden.py
# XLA's backend optimizations do not change float32 conv results beyond rounding but cost
# most of the compile time; these tests compile each network once per resolution.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def subsample_index(size: int) -> np.ndarray:
    return np.unique(np.linspace(0, size - 1, min(size, MAX_STAGE_VALUES)).astype(np.int64))


@functools.cache
def converted(name: str) -> dict:
    return from_torchvision(name, synthetic_state_dict(KEYS[name]))


def test_golden_files_cover_every_family() -> None:
    models = {m.split(".")[0] for m in list_weights()}
    assert set(KEYS) == models  # a key list for every model with weights
    families = {"resnet18", "resnet50", "wide_resnet50_2", "resnext50_32x4d", "vgg11",
                "vgg11_bn", "alexnet", "googlenet", "mobilenet_v2"}  # fmt: skip
    assert families <= set(PARITY_MODELS)
    total = sum(p.stat().st_size for p in GOLDEN.iterdir())
    assert total < 3_000_000, f"golden files grew to {total} bytes"


@pytest.mark.parametrize("name", PARITY_MODELS)
def test_converted_weights_match_torchvision_layer_by_layer(name: str) -> None:
    golden = np.load(GOLDEN / f"{name}.npz")
    model = pretrained_model(name)
    variables = converted(name)
    forward = jax.jit(lambda v, x: model.apply(v, x, method=model.features))
    resolutions = sorted({key.split("/")[0] for key in golden.files})
    assert len(resolutions) >= 1
    for tag in resolutions:
        h, w = map(int, tag.split("x"))
        x = synthetic_input(int(golden[f"{tag}/seed"]), (2, 3, h, w)).transpose(0, 2, 3, 1)
        outputs = forward.lower(variables, x).compile(FAST_COMPILE)(variables, x)
        stages = sorted({k.split("/")[1] for k in golden.files
                         if k.startswith(f"{tag}/") and k.endswith("/shape")})  # fmt: skip
        assert stages, "no stage outputs in the golden file"
        for stage in stages:  # in network order is not needed: every one must match
            want = golden[f"{tag}/{stage}/values"]
            got = np.asarray(outputs[stage])
            assert got.shape == tuple(golden[f"{tag}/{stage}/shape"]), (tag, stage)
            got = got.reshape(-1)[subsample_index(got.size)]
            tol = 1e-4 * max(1.0, float(np.abs(want).max()))
            np.testing.assert_allclose(got, want, rtol=0, atol=tol, err_msg=f"{tag} {stage}")
        want = golden[f"{tag}/logits"]
        got = np.asarray(outputs["logits"])
        diff = float(np.abs(got - want).max())
        bound = 1e-4 * max(1.0, float(np.abs(want).max()))
        assert diff <= bound, f"{name} {tag}: max |logit diff| {diff:.3g} > {bound:.3g}"
        assert np.array_equal(got.argmax(-1), want.argmax(-1))


@pytest.mark.parametrize("name", sorted(KEYS))
def test_strict_conversion_of_the_full_torchvision_key_list(name: str) -> None:
    # Zero-strided arrays of the real shapes: every key and shape is checked, nothing big
    # is allocated.
    state = {k: np.broadcast_to(np.float32(1), shape) for k, shape in KEYS[name]}
    state.update({k: np.int64(0) for k, _ in KEYS[name] if k.endswith("num_batches_tracked")})
    variables = from_torchvision(name, state)
    # Every number lands somewhere (detectors keep FrozenBatchNorm2d's weight and bias, which
    # are torch buffers, in batch_stats).
    n_values = sum(np.size(x) for x in jax.tree.leaves(variables))
    torch_values = sum(int(np.prod(s)) for k, s in KEYS[name]
                       if not k.endswith("num_batches_tracked")
                       and not k.startswith(("aux1.", "aux2.")))  # fmt: skip
    assert n_values == torch_values
    del state[KEYS[name][0][0]]
    with pytest.raises(CheckpointError, match="missing keys"):
        from_torchvision(name, state)


def test_googlenet_keeps_aux_heads_when_asked() -> None:
    state = {k: np.broadcast_to(np.float32(1), s) for k, s in KEYS["googlenet"]}
    with_aux = from_torchvision("googlenet", state, aux_logits=True)
    assert with_aux["params"]["aux1"]["fc1"]["kernel"].shape == (2048, 1024)
    assert "aux1" not in from_torchvision("googlenet", state)["params"]
