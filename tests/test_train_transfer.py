"""Transfer learning (jaxcnn.train.transfer): the families' group declarations, freeze
policies, discriminative rates, frozen BatchNorm statistics, optimizer state only for
trainable leaves, head replacement, the two-stage recipe, and the fixed-feature-extractor
scenario (embeddings -> linear and k-NN classifiers)."""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest
from train_helpers import tiny_config

from jaxcnn.errors import ConfigError
from jaxcnn.models import abstract_variables, create_model
from jaxcnn.pretrained.synthetic import synthetic_state_dict
from jaxcnn.similarity.features import extract_embeddings, fit_classifiers
from jaxcnn.train import default_config, fit, load_init_variables, setup
from jaxcnn.train.transfer import (
    group_rates,
    make_tx_wrap,
    param_groups,
    stats_filter,
    trainable_groups,
)


def _config(freeze: str = "full", last_stages: int = 1, lr_slice: tuple = ()):
    config = default_config()
    config.optimizer.name = "adam"
    config.optimizer.lr = 1e-3
    config.transfer.freeze = freeze
    config.transfer.last_stages = last_stages
    config.transfer.lr_slice = lr_slice
    return config


@pytest.fixture(scope="module")
def resnet18_abstract():
    model = create_model("resnet18", num_classes=10)
    return model, abstract_variables(model, (64, 64, 3))


def test_resnet_stages_and_policies(resnet18_abstract) -> None:
    model, variables = resnet18_abstract
    groups = param_groups(model, variables["params"])
    assert [g for g, _ in groups] == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
    assert dict(groups)["head"] == ["fc"] and dict(groups)["stem"] == ["bn1", "conv1"]
    assert trainable_groups(_config("linear_probe"), groups) == ["head"]
    assert trainable_groups(_config("finetune_last", 2), groups) == ["layer3", "layer4", "head"]
    assert len(trainable_groups(_config("full"), groups)) == 6
    with pytest.raises(ConfigError, match="last_stages=6"):
        trainable_groups(_config("finetune_last", 6), groups)
    with pytest.raises(ConfigError, match="transfer.freeze"):
        trainable_groups(_config("everything"), groups)
    # fast.ai slice(3e-5, 3e-4) over 3 groups: 3e-5, ~9.5e-5, 3e-4 (factors on lr=1e-3).
    rates = group_rates(_config(lr_slice=(3e-5, 3e-4)), ["layer3", "layer4", "head"])
    np.testing.assert_allclose([rates[g] * 1e-3 for g in ("layer3", "layer4", "head")],
                               [3e-5, np.sqrt(3e-5 * 3e-4), 3e-4], rtol=1e-9)  # fmt: skip


def test_optimizer_state_exists_only_for_trainable_leaves(resnet18_abstract) -> None:
    model, variables = resnet18_abstract
    params = variables["params"]
    config = _config("finetune_last", 1, lr_slice=(1e-4, 1e-3))
    tx = make_tx_wrap(config, model)(optax.adam(1e-3), params)
    state = jax.eval_shape(tx.init, params)
    sizes = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))
    trainable = sizes({k: v for k, v in params.items()
                       if k == "fc" or k.startswith("layer4")})  # fmt: skip
    assert 0 < trainable < sizes(params)
    # Adam keeps mu and nu per trainable value (plus scalar step counts), none for frozen.
    arrays = [x for x in jax.tree.leaves(state) if x.ndim > 0]
    assert sum(int(np.prod(x.shape)) for x in arrays) == 2 * trainable
    assert make_tx_wrap(_config("full"), model) is None  # nothing to change


def test_frozen_batch_norm_statistics_are_put_back(resnet18_abstract) -> None:
    model, variables = resnet18_abstract
    keep = stats_filter(_config("linear_probe"), model, variables["params"])
    old = jax.tree.map(lambda s: np.zeros(s.shape), variables["batch_stats"])
    new = jax.tree.map(lambda s: np.ones(s.shape), variables["batch_stats"])
    kept = keep(new, old)
    assert all((x == 0).all() for x in jax.tree.leaves(kept))
    assert stats_filter(_config("full"), model, variables["params"]) is None


def _trained(workdir) -> dict:
    return jax.device_get(load_init_variables(str(workdir), None))


def _same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in
               zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))  # fmt: skip


def test_two_stage_head_then_finetune_with_frozen_stages(tmp_path) -> None:
    """Stage 1: linear probe (only the head moves; every other parameter and all BN
    statistics stay bit-identical). Stage 2 resumes from stage 1's checkpoint and fine-tunes
    the last stage + head at discriminative rates; stages 1-2 stay bit-identical."""
    config = tiny_config()  # small_cnn with BatchNorm: stage1..3 + fc
    config.num_epochs = 1
    config.data.max_examples = 64
    config.checkpoint.every_steps = 0
    config.transfer.freeze = "linear_probe"
    start = jax.device_get(setup(config).variables)
    fit(config, tmp_path / "head")
    head = _trained(tmp_path / "head")
    p0, p1 = start["params"], head["params"]
    assert not _same(p0["fc"], p1["fc"])
    assert _same({k: v for k, v in p0.items() if k != "fc"},
                 {k: v for k, v in p1.items() if k != "fc"})  # fmt: skip
    assert _same(start["batch_stats"], head["batch_stats"])

    config.transfer.freeze = "finetune_last"
    config.transfer.last_stages = 1
    config.transfer.lr_slice = (3e-4, 3e-3)
    config.init.path = str(tmp_path / "head")
    fit(config, tmp_path / "finetune")
    tuned = _trained(tmp_path / "finetune")
    p2 = tuned["params"]
    frozen = lambda tree: {k: v for k, v in tree.items() if k.startswith(("stage1", "stage2"))}
    assert _same(frozen(p1), frozen(p2)) and frozen(p2)
    assert _same(frozen(head["batch_stats"]), frozen(tuned["batch_stats"]))
    assert not _same(p1["fc"], p2["fc"])
    assert not _same(p1["stage3_conv1"], p2["stage3_conv1"])
    assert not _same(head["batch_stats"]["stage3_bn1"], tuned["batch_stats"]["stage3_bn1"])


def test_torchvision_weights_with_a_new_head(tmp_path, capfd) -> None:
    """"torchvision:NAME" loads the converted backbone; a 4-class model keeps every backbone
    leaf and a fresh head, said in one log line (no compile: shapes via eval_shape)."""
    from safetensors.numpy import save_file

    from jaxcnn.pretrained.torchvision import abstract_target
    from jaxcnn.train import merge_variables

    state = synthetic_state_dict(_torch_keys("resnet18"))
    file = tmp_path / "resnet18.safetensors"
    save_file(state, str(file))
    config = default_config()
    config.model.name = "resnet18"
    config.init.path = "torchvision:resnet18"
    config.init.extra.file = str(file)
    loaded = load_init_variables(config.init.path, config)
    target = abstract_target("resnet18", num_classes=4)
    fresh = jax.tree.map(lambda s: np.full(s.shape, 7.0, np.float32), target)
    merged = merge_variables(fresh, loaded, reinit_head=True, where=config.init.path)
    params = merged["params"]
    assert params["fc"]["kernel"].shape == (512, 4) and (params["fc"]["kernel"] == 7).all()
    np.testing.assert_array_equal(params["conv1"]["kernel"],
                                  state["conv1.weight"].transpose(2, 3, 1, 0))  # fmt: skip
    np.testing.assert_array_equal(merged["batch_stats"]["layer4_1"]["bn2"]["var"],
                                  state["layer4.1.bn2.running_var"])  # fmt: skip
    lines = [line for line in capfd.readouterr().err.splitlines() if "freshly init" in line]
    assert len(lines) == 1 and "params/fc/kernel (512, 4) (loaded: (512, 1000))" in lines[0]


def _torch_keys(name: str) -> list:
    import json
    from pathlib import Path

    table = json.loads((Path(__file__).parent / "golden" / "torchvision_keys.json").read_text())
    return table[name]


def test_fixed_feature_extractor_embeddings_and_classifiers(tmp_path) -> None:
    """Batched + sharded extraction equals a one-image-at-a-time loop; linear and k-NN
    classifiers on the embeddings of a separable toy set are accurate."""
    model = create_model("small_cnn", width=4, num_classes=0, in_channels=1)
    rng = np.random.default_rng(0)
    # Random variables of the right shapes without compiling an init (slow on CPU).
    shapes = abstract_variables(model, (16, 16, 1))
    variables = {
        "params": jax.tree.map(lambda s: 0.3 * rng.standard_normal(s.shape, np.float32),
                               shapes["params"]),
        "batch_stats": jax.tree.map(lambda s: np.ones(s.shape, np.float32),
                                    shapes["batch_stats"]),
    }  # fmt: skip
    labels = np.arange(60) % 2
    images = rng.integers(0, 60, (60, 16, 16, 1)) + 150 * labels[:, None, None, None]
    images = images.astype(np.uint8)
    emb = extract_embeddings(model, variables, images, mean=(127.5,), std=(127.5,),
                             batch_size=16, out=tmp_path / "emb.npy")  # fmt: skip
    assert emb.shape == (60, 16) and np.array_equal(np.load(tmp_path / "emb.npy"), emb)
    single = jax.jit(lambda x: model.apply(variables, (x - 127.5) / 127.5,
                                           method=model.features)["pre_logits"])  # fmt: skip
    one = np.concatenate([np.asarray(single(im[None].astype(np.float32))) for im in images[:5]])
    np.testing.assert_allclose(emb[:5], one, rtol=1e-5, atol=1e-5)
    scores = fit_classifiers(emb[:40], labels[:40], emb[40:], labels[40:], k=3)
    assert scores["linear_accuracy"] == 1.0 and scores["knn_accuracy"] == 1.0


@pytest.mark.parametrize("stage", ["head", "finetune"])
def test_two_stage_config_is_valid(stage: str) -> None:
    from configs import transfer_resnet18_cifar10
    from jaxcnn.train import validate_config

    config = transfer_resnet18_cifar10.get_config(stage)
    validate_config(config)
    assert config.transfer.freeze == {"head": "linear_probe", "finetune": "full"}[stage]


@pytest.mark.parametrize("name, kwargs, size", [
    ("lenet5", {}, 32), ("small_cnn", {"width": 4}, 32), ("alexnet", {}, 63),
    ("vgg11_bn", {}, 32), ("googlenet", {}, 32), ("mobilenet_v1", {"width_mult": 0.25}, 32),
    ("mobilenet_v2", {"width_mult": 0.25}, 32), ("resnet18", {}, 32),
])
def test_every_family_declares_groups_that_cover_its_modules_head_last(name, kwargs, size):
    """Each family's own declaration (group_matcher, head_name) places every top-level
    module in exactly one group, in network order, with the classifier head last."""
    model = create_model(name, **kwargs)
    params = abstract_variables(model, (size, size, 1 if name == "lenet5" else 3))["params"]
    groups = param_groups(model, params)
    placed = [m for _, modules in groups for m in modules]
    assert sorted(placed) == sorted(params) and len(set(placed)) == len(placed)
    assert groups[-1][0] == "head" and model.head_name in groups[-1][1]
    stages = [g for g, _ in groups if g.startswith(("stage", "layer"))]
    assert stages == sorted(stages, key=lambda g: int(g[5:])) and len(stages) >= 3


def test_models_without_groups_reject_freezing_with_a_config_error() -> None:
    model = create_model("unet", num_classes=1)
    with pytest.raises(ConfigError, match="declares no parameter groups"):
        param_groups(model, {"enc1": {}})
