"""ResNet family: torchvision's structure and names, the cifar stem, the plain (skip=False)
networks, grouped / wide bottlenecks, torchvision's initialisation. Shapes and counts use
`jax.eval_shape`; the few numeric checks run one tiny compiled block."""

import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_testing import fast_jit, random_images

import jaxcnn
from jaxcnn.models import abstract_variables
from jaxcnn.models.layers import batch_norm
from jaxcnn.models.resnet import BasicBlock, Bottleneck, ResNet, _tiny_resnet, conv_layer


def _params(model, size=224, channels=3):
    return flax.traverse_util.flatten_dict(
        abstract_variables(model, (size, size, channels))["params"], sep="/"
    )


def _features(model, size, batch=1):
    variables = abstract_variables(model, (size, size, 3))
    x = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)
    feats = jax.eval_shape(lambda v, x: model.apply(v, x, method=model.features), variables, x)
    return {k: v.shape for k, v in feats.items()}


@pytest.mark.parametrize(
    "name, plain_drop",
    [
        # Projections of stages 2-4: conv1x1 (C_in * C_out) + BN (2 * C_out).
        ("resnet18", 64 * 128 + 256 + 128 * 256 + 512 + 256 * 512 + 1024),
        ("resnet34", 64 * 128 + 256 + 128 * 256 + 512 + 256 * 512 + 1024),
        # Bottlenecks also project in stage 1 (64 -> 256 channels).
        (
            "resnet50",
            64 * 256 + 512 + 256 * 512 + 1024 + 512 * 1024 + 2048 + 1024 * 2048 + 4096,
        ),
    ],
)
def test_plain_network_drops_exactly_the_projection_shortcuts(name, plain_drop):
    residual = _params(jaxcnn.create_model(name))
    plain = _params(jaxcnn.create_model(name, skip=False))
    shortcut = {k: v for k, v in residual.items() if "downsample" in k}
    assert shortcut and not any("downsample" in k for k in plain)
    assert set(plain) == set(residual) - set(shortcut)
    total = lambda p: sum(v.size for v in p.values())
    assert total(residual) - total(plain) == total(shortcut) == plain_drop


def test_cifar_stem_keeps_32x32_resolution_until_stage2():
    shapes = _features(jaxcnn.create_model("resnet18", stem="cifar", num_classes=10), 32)
    assert shapes["stem"] == (1, 32, 32, 64)
    assert shapes["stage1"] == (1, 32, 32, 64)
    assert shapes["stage2"] == (1, 16, 16, 128)
    assert shapes["stage3"] == (1, 8, 8, 256)
    assert shapes["stage4"] == (1, 4, 4, 512)
    assert shapes["pre_logits"] == (1, 512) and shapes["logits"] == (1, 10)
    # The stem conv is 3x3 (the ImageNet stem's is 7x7); parameter count otherwise equal.
    params = _params(jaxcnn.create_model("resnet18", stem="cifar"), size=32)
    assert params["conv1/kernel"].shape == (3, 3, 3, 64)


def test_imagenet_stem_and_bottleneck_feature_shapes():
    shapes = _features(jaxcnn.create_model("resnet50"), 224)
    assert shapes["stem"] == (1, 56, 56, 64)
    assert shapes["stage1"] == (1, 56, 56, 256)
    assert shapes["stage4"] == (1, 7, 7, 2048)
    assert shapes["pre_logits"] == (1, 2048)
    # Sizes that do not divide by 32 follow PyTorch's floor arithmetic: 225 -> 113 -> 57 -> ...
    assert _features(jaxcnn.create_model("resnet18"), 225)["stage4"] == (1, 8, 8, 512)


def test_submodule_names_mirror_torchvision_state_dict():
    r18 = _params(jaxcnn.create_model("resnet18"))
    assert r18["conv1/kernel"].shape == (7, 7, 3, 64)
    assert r18["bn1/scale"].shape == (64,)
    assert r18["layer1_0/conv1/kernel"].shape == (3, 3, 64, 64)
    assert r18["layer4_1/bn2/bias"].shape == (512,)
    assert r18["layer2_0/downsample_0/kernel"].shape == (1, 1, 64, 128)
    assert r18["layer2_0/downsample_1/scale"].shape == (128,)
    assert not any(k.startswith("layer1_0/downsample") for k in r18)
    assert r18["fc/kernel"].shape == (512, 1000)
    r50 = _params(jaxcnn.create_model("resnet50"))
    assert r50["layer1_0/downsample_0/kernel"].shape == (1, 1, 64, 256)
    assert r50["layer3_5/conv3/kernel"].shape == (1, 1, 256, 1024)
    # v1.5: the stride-2 conv of a bottleneck is its 3x3.
    assert r50["layer2_0/conv2/kernel"].shape == (3, 3, 128, 128)
    stats = flax.traverse_util.flatten_dict(
        abstract_variables(jaxcnn.create_model("resnet18"), (224, 224, 3))["batch_stats"], sep="/"
    )
    assert {"bn1/mean", "bn1/var", "layer2_0/downsample_1/var"} <= set(stats)


def test_grouped_and_wide_bottleneck_widths():
    resnext = _params(jaxcnn.create_model("resnext50_32x4d"))
    assert resnext["layer1_0/conv2/kernel"].shape == (3, 3, 4, 128)  # 32 groups of 4
    assert resnext["layer4_0/conv2/kernel"].shape == (3, 3, 32, 1024)
    wide = _params(jaxcnn.create_model("wide_resnet50_2"))
    assert wide["layer1_0/conv2/kernel"].shape == (3, 3, 128, 128)
    assert wide["layer1_0/conv3/kernel"].shape == (1, 1, 128, 256)


def test_basic_block_rejects_groups_and_unknown_stem_is_named():
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    with pytest.raises(jaxcnn.ConfigError, match="Bottleneck"):
        jax.eval_shape(lambda x: ResNet(stage_sizes=(1,), groups=2).init(jax.random.key(0), x), x)
    with pytest.raises(jaxcnn.ConfigError, match="cifar"):
        jax.eval_shape(lambda x: _tiny_resnet(stem="tiny").init(jax.random.key(0), x), x)


def test_min_input_size_depends_on_the_stem():
    for stem, ok, bad in (("imagenet", 32, 31), ("cifar", 8, 7)):
        model = jaxcnn.create_model("resnet18", stem=stem)
        assert model.min_input_size == ok
        variables = abstract_variables(model, (ok, ok, 3))
        with pytest.raises(jaxcnn.InputError, match=f"at least {ok}x{ok}"):
            jax.eval_shape(
                model.apply,
                variables,
                jax.ShapeDtypeStruct((1, bad, bad, 3), jnp.float32),
            )


@pytest.mark.parametrize("block_cls", [BasicBlock, Bottleneck])
def test_identity_shortcut_carries_the_input_and_plain_block_does_not(block_cls):
    # With every weight of the residual branch zero (BN scale 0 -> branch output 0), a
    # residual block returns relu(x) and a plain block returns relu(0) = 0.
    filters = 4
    channels = filters * block_cls.expansion
    x = np.abs(random_images((2, 4, 4, channels)))
    outputs = {}
    for skip in (True, False):
        block = block_cls(
            filters=filters,
            conv=lambda *a, **k: conv_layer(*a, dtype=jnp.float32, param_dtype=jnp.float32, **k),
            norm=batch_norm(False, dtype=jnp.float32, param_dtype=jnp.float32),
            skip=skip,
        )
        abstract = jax.eval_shape(block.init, jax.random.key(0), x)
        zeros = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), abstract)
        zeros["batch_stats"] = jax.tree.map(np.ones_like, zeros["batch_stats"])
        outputs[skip] = fast_jit(block.apply)(zeros, x)
    np.testing.assert_allclose(outputs[True], x, atol=1e-6)
    np.testing.assert_array_equal(outputs[False], np.zeros_like(x))


def test_initialisation_follows_torchvision():
    # kaiming_normal_(mode="fan_out", nonlinearity="relu"): std sqrt(2 / (k * k * C_out)).
    conv = conv_layer(256, 3, dtype=jnp.float32, param_dtype=jnp.float32, name="conv")
    variables = fast_jit(conv.init)(jax.random.key(0), jnp.zeros((1, 4, 4, 64)))
    kernel = np.asarray(variables["params"]["kernel"])
    assert abs(kernel.std() / np.sqrt(2.0 / (9 * 256)) - 1) < 0.02
    assert abs(kernel.mean()) < 1e-3
