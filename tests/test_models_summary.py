"""`jaxcnn.summary` and `jaxcnn.receptive_field` against the course's tables and operation
counts, the papers' and torchvision's published costs, and XLA's cost analysis.

Big models are traced abstractly (no compute), so ResNet-152 costs a trace, not a forward
pass. torchvision's published costs (tests/golden/summary/torchvision_ops.json) come from
tests/golden/summary/make_ops_golden.py.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

import jaxcnn
from jaxcnn.cli import main
from jaxcnn.errors import InputError, UnknownModelError
from jaxcnn.models import abstract_variables, count_params, list_models
from jaxcnn.models.layers import ConvBNAct, flatten, max_pool
from jaxcnn.pretrained.torchvision import pretrained_model

TORCHVISION = json.loads(
    (Path(__file__).parent / "golden" / "summary" / "torchvision_ops.json").read_text()
)


@functools.cache
def summary_of(name: str, **overrides) -> jaxcnn.models.Summary:
    model = pretrained_model(name, **overrides) if name in TORCHVISION else jaxcnn.create_model(
        name, **overrides)  # fmt: skip
    return jaxcnn.summary(model, jaxcnn.get_model_spec(name).input_shape, training=False)


def xla_macs(model: nn.Module, input_shape: tuple[int, ...], compile: bool = True) -> float:
    """XLA's FLOPs / 2 for one inference forward pass, from `cost_analysis()`."""
    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
    lowered = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, x)
    cost = (lowered.compile() if compile else lowered).cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return cost["flops"] / 2


# ---------------------------------------------------------------- the course's tables


def test_alexnet_original_reproduces_the_course_table():
    """The course's single-tower AlexNet at 227x227: per-layer shapes and parameters, 249 MB.
    (jaxcnn follows the paper and normalizes before pooling; the course lists NORM after
    POOL. Shapes and parameters of the weighted layers are the same either way.)"""
    s = summary_of("alexnet_original")
    rows = {r.name: r for r in s}
    expected = {
        "conv1": ((55, 55, 96), 34_944), "conv2": ((27, 27, 256), 614_656),
        "conv3": ((13, 13, 384), 885_120), "conv4": ((13, 13, 384), 1_327_488),
        "conv5": ((13, 13, 256), 884_992), "fc6": ((4096,), 37_752_832),
        "fc7": ((4096,), 16_781_312), "fc8": ((1000,), 4_097_000),
    }  # fmt: skip
    for name, (shape, params) in expected.items():
        assert (rows[name].output_shape[1:], rows[name].params) == (shape, params), name
    pools = [r.output_shape[1:] for r in s if r.kind.startswith("max_pool 3x3/2")]
    assert pools == [(27, 27, 96), (13, 13, 256), (6, 6, 256)]  # MaxPool-3: 6x6x256
    assert [r.kind for r in s].count("LocalResponseNorm") == 2
    assert [r.kind for r in s if r.activations == 0] == ["flatten"]  # a view: no new values
    assert s.params == 62_378_344 == count_params(abstract_variables(
        jaxcnn.create_model("alexnet_original"), (227, 227, 3)))  # fmt: skip
    assert s.param_bytes == 249_513_376  # 4 bytes each: the course's "249 MB"
    assert "Parameters: 62,378,344 (249.5 MB)" in str(s)


VGG16_WEIGHTS = [
    1_728, 36_864, 73_728, 147_456, 294_912, 589_824, 589_824, 1_179_648, 2_359_296,
    2_359_296, 2_359_296, 2_359_296, 2_359_296, 102_760_448, 16_777_216, 4_096_000,
]  # fmt: skip


def test_vgg16_weights_and_memory_match_the_course_table():
    s = summary_of("vgg16")
    assert [r.weights for r in s if r.weights] == VGG16_WEIGHTS  # biases not included
    assert s.params == 138_357_544  # biases included
    # The course's memory column: INPUT, then per block the convs and the pool, then the FCs.
    blocks = [(224, 64, 2), (112, 128, 2), (56, 256, 3), (28, 512, 3), (14, 512, 3)]
    course_memory = [224 * 224 * 3]
    for side, depth, convs in blocks:
        course_memory += [side * side * depth] * convs + [(side // 2) ** 2 * depth]
    course_memory += [4096, 4096, 1000]
    assert [r.activations for r in s if r.activations] == course_memory
    # The rows sum to 15,237,608 values (61 MB at 4 bytes); the lecture's "TOTAL memory: 24M"
    # does not follow from its own rows.
    assert s.activations_per_image == sum(course_memory) == 15_237_608
    assert s.activation_bytes_per_image == 60_950_432


def test_conv_autoencoder_matches_keras_param_column():
    s = summary_of("conv_autoencoder")
    keras = [320, 18_496, 36_928, 28_273, 640, 256, 36_928, 256, 18_464, 289]
    assert [r.params + r.state for r in s if r.params + r.state] == keras  # Keras counts BN stats
    kinds = [r.kind.split(" ")[0] for r in s]
    assert kinds == ["input", "Conv", "max_pool", "Conv", "max_pool", "Conv", "flatten", "Dense",
                     "reshape", "ConvTranspose", "BatchNorm", "ConvTranspose", "BatchNorm",
                     "ConvTranspose", "Conv"]  # fmt: skip
    assert s.params + s.state == 140_850


# ---------------------------------------------------------------- published costs


PAPER_GMACS = {"resnet18": 1.8, "resnet34": 3.6, "resnet50": 3.8, "resnet101": 7.6,
               "resnet152": 11.3}  # He et al. 2015, Table 1 ("FLOPs" that are multiply-adds)


def test_resnet_macs_match_the_paper_v1_and_torchvision_v1_5():
    """The paper's ResNet puts a bottleneck's stride on its first 1x1 conv (v1); torchvision
    moved it to the 3x3 (v1.5), which costs more: ResNet-50 4.1 G instead of 3.8 G."""
    for name, paper in PAPER_GMACS.items():
        s = summary_of(name, stride_in_1x1=True)
        assert abs(s.macs_per_image / 1e9 - paper) < 0.07, (name, s.macs_per_image)
    assert summary_of("resnet50", stride_in_1x1=True).macs == 3_857_973_248
    assert summary_of("resnet18").macs == summary_of("resnet18", stride_in_1x1=True).macs
    v15 = summary_of("resnet50")
    assert v15.macs == 4_089_184_256
    assert round(v15.macs / 1e9, 3) == TORCHVISION["resnet50"]["gmacs"]
    assert v15.params == summary_of("resnet50", stride_in_1x1=True).params


@pytest.mark.parametrize("name", ["alexnet", "vgg16", "mobilenet_v2", "googlenet"])
def test_macs_and_params_match_torchvisions_published_numbers(name):
    s = summary_of(name)
    assert round(s.macs / 1e9, 3) == TORCHVISION[name]["gmacs"]
    assert s.params == TORCHVISION[name]["num_params"]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_every_torchvision_model_matches_its_published_numbers(name):
    test_macs_and_params_match_torchvisions_published_numbers(name)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_macs_agree_with_xla_cost_analysis(name):
    """XLA skips convolution taps that fall in the padding and adds BN, ReLU and additions as
    FLOPs: it agrees with the padding-free count to ~1 %, with the papers' count to a few %."""
    s = summary_of(name)
    xla = xla_macs(jaxcnn.create_model(name), (224, 224, 3))
    assert abs(xla / s.macs_unpadded - 1) < 0.02
    assert abs(xla / s.macs - 1) < 0.08
    assert s.macs_unpadded < s.macs


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_is_summarised_exactly(name):
    """All parameters and statistics attributed to rows; MACs as XLA counts them."""
    spec = jaxcnn.get_model_spec(name)
    model = jaxcnn.create_model(name)
    s = jaxcnn.summary(model, spec.input_shape, training=False)
    variables = abstract_variables(model, spec.input_shape)
    assert s.params == count_params(variables)
    assert s.state == sum(x.size for k, v in variables.items() if k != "params"
                          for x in jax.tree.leaves(v))  # fmt: skip
    # XLA adds elementwise FLOPs (BN, activations: 5 % of MobileNetV2's small conv count).
    assert 0.995 < xla_macs(model, spec.input_shape, compile=False) / s.macs_unpadded < 1.08


@pytest.mark.parametrize("name", ["lenet5", "small_cnn", "unet", "siamese"])
def test_small_models_attribute_every_variable_and_show_their_pools(name):
    spec = jaxcnn.get_model_spec(name)
    model = jaxcnn.create_model(name)
    s = jaxcnn.summary(model, spec.input_shape, training=False)
    variables = abstract_variables(model, spec.input_shape)
    assert s.params == count_params(variables)
    assert s.state == sum(x.size for x in jax.tree.leaves(variables.get("batch_stats", {})))
    pools = {"lenet5": ("avg_pool 2x2/2", 2), "small_cnn": ("max_pool 2x2/2", 3),
             "unet": ("max_pool 2x2/2", 4), "siamese": ("max_pool 3x3/2", 1)}[name]  # fmt: skip
    assert [r.kind for r in s].count(pools[0]) == pools[1]


# ---------------------------------------------------------------- the course's op counts


def macs_of(layers: list, input_shape: tuple[int, ...]) -> list[int]:
    """Per-conv MACs of a stack of layers, through `jaxcnn.summary`."""
    return [r.macs for r in jaxcnn.summary(layers, input_shape, training=False) if r.macs]


def conv(features: int, kernel: int, **kw) -> ConvBNAct:
    """A bias-free conv + ReLU from the shared block (multiplies only, as the lesson)."""
    return ConvBNAct(features, kernel, norm=None, **kw)


def test_1x1_reduction_before_a_5x5_conv():
    # 14x14x480 -> 5x5 conv, 48 filters (GoogLeNet 4a's 5x5 branch), with and without a 1x1
    # reduction to 16 channels first.
    assert sum(macs_of([conv(48, 5)], (14, 14, 480))) == 112_896_000
    assert sum(macs_of([conv(16, 1), conv(48, 5)], (14, 14, 480))) == 5_268_480


class LessonInception(nn.Module):
    """The lesson's Inception module on 28x28x256, with a TRUE 5x5 branch (jaxcnn's GoogLeNet
    keeps torchvision's 3x3 there): naive (1x1, 3x3, 5x5 convs and a 3x3 max-pool side by
    side) or with 1x1 reductions before the 3x3 and 5x5 and after the pool."""

    reduced: bool

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        pool = max_pool(x, 3, 1, padding=1)
        if not self.reduced:
            return jnp.concatenate([conv(128, 1)(x), conv(192, 3)(x), conv(96, 5)(x), pool], -1)
        return jnp.concatenate([
            conv(128, 1)(x), conv(192, 3)(conv(64, 1)(x)), conv(96, 5)(conv(64, 1)(x)),
            conv(64, 1)(pool),
        ], -1)  # fmt: skip


def test_naive_and_reduced_inception_module_operation_counts():
    naive = jaxcnn.summary(LessonInception(reduced=False), (28, 28, 256), training=False)
    assert naive.rows[-1].kind == "concat" and naive.rows[-1].output_shape == (1, 28, 28, 672)
    assert naive.macs == 854_196_224
    reduced = jaxcnn.summary(LessonInception(reduced=True), (28, 28, 256), training=False)
    assert reduced.rows[-1].output_shape == (1, 28, 28, 480)
    line_items = sorted(r.macs for r in reduced if r.macs)
    assert line_items == sorted([25_690_112, 12_845_056, 86_704_128, 12_845_056, 120_422_400,
                                 12_845_056])  # fmt: skip
    assert sum(line_items) == reduced.macs == 271_351_808


def test_depthwise_separable_versus_standard_convolution():
    # The lesson's 5x5x3 input -> 128 channels with 3x3 kernels ("same" padding).
    assert macs_of([conv(128, 3)], (5, 5, 3)) == [86_400]
    assert macs_of([conv(3, 3, groups=3), conv(128, 1)], (5, 5, 3)) == [675, 9_600]  # 10,275


def test_global_average_pooling_versus_a_fully_connected_layer():
    fc = jaxcnn.summary([flatten, nn.Dense(1024, use_bias=False)], (7, 7, 1024), training=False)
    assert fc.params == 51_380_224
    gap = jaxcnn.summary([lambda x: jnp.mean(x, axis=(1, 2))], (7, 7, 1024), training=False)
    assert gap.params == 0 and gap.rows[-1].kind == "global_avg_pool"
    assert gap.rows[-1].output_shape == (1, 1024)


# ---------------------------------------------------------------- receptive fields


def test_stacked_3x3_convs_see_5x5_and_7x7_for_fewer_parameters():
    three = jaxcnn.receptive_field([conv(64, 3) for _ in range(3)], (32, 32, 64))
    assert [r.receptive_field for r in three] == [(1, 1), (3, 3), (5, 5), (7, 7)]
    seven = jaxcnn.receptive_field([conv(64, 7)], (32, 32, 64))
    assert seven[-1].receptive_field == (7, 7)
    stack = jaxcnn.summary([conv(64, 3) for _ in range(3)], (32, 32, 64), training=False)
    single = jaxcnn.summary([conv(64, 7)], (32, 32, 64), training=False)
    assert (stack.params, single.params) == (27 * 64**2, 49 * 64**2)  # 110,592 vs 200,704


def test_receptive_field_jump_and_start_with_stride_and_padding():
    # Two 3x3 convs, stride 2, padding 1 on 5x5 (Dang Ha The Hien's worked example).
    rf = jaxcnn.receptive_field([conv(4, 3, strides=2), conv(4, 3, strides=2)], (5, 5, 1))
    assert [(r.output_shape[1], r.receptive_field[0], r.jump[0], r.start[0]) for r in rf] == [
        (5, 1, 1, 0.5), (3, 3, 2, 0.5), (2, 7, 4, 0.5)]  # fmt: skip
    unpadded = jaxcnn.receptive_field([conv(4, 3, padding=0)], (5, 5, 1))
    assert unpadded[-1].start == (1.5, 1.5)  # the first output is centred on pixel 1


def test_dilated_convs_grow_the_field_exponentially():
    rf = jaxcnn.receptive_field([conv(4, 3, dilation=d) for d in (1, 2, 4)], (32, 32, 1))
    assert [r.receptive_field[0] for r in rf] == [1, 3, 7, 15]
    assert all(r.output_shape[1:3] == (32, 32) for r in rf)  # same padding at any dilation


def test_receptive_fields_of_classic_networks():
    # Araujo et al. 2019 (Distill), Table 1: AlexNet 195, VGG-16 212 (last pooling layers).
    alex = [r for r in jaxcnn.receptive_field("alexnet_original") if r.kind.startswith("max")]
    assert alex[-1].receptive_field == (195, 195) and alex[-1].jump == (32, 32)
    vgg = [r for r in jaxcnn.receptive_field("vgg16") if r.kind.startswith("max")]
    assert vgg[-1].receptive_field == (212, 212)


# ---------------------------------------------------------------- API, CLI, memory


def test_batch_size_dtype_and_training_footprint():
    one = jaxcnn.summary("lenet5", training=False)
    three = jaxcnn.summary("lenet5", batch_size=3, training=False)
    assert three.rows[1].output_shape[0] == 3
    assert (three.macs, three.activations) == (3 * one.macs, 3 * one.activations)
    assert three.macs_per_image == one.macs_per_image
    half = jaxcnn.summary(jaxcnn.create_model("lenet5", dtype=jnp.bfloat16), (32, 32, 1),
                          training=False)  # fmt: skip
    assert half.dtype == "bfloat16" and half.activation_bytes == 2 * half.activations
    # A Dense layer keeps its input for the weight gradient: 1024 floats per image; its 4 M
    # parameters cancel out of the per-image footprint.
    dense = jaxcnn.summary(nn.Dense(4096), (1024,))
    assert dense.training_bytes_per_image == 1024 * 4
    assert dense.param_bytes == 4 * (1024 * 4096 + 4096)


def test_summary_errors_name_the_problem():
    with pytest.raises(InputError, match="input_shape"):
        jaxcnn.summary(nn.Dense(3))
    with pytest.raises(InputError, match="batch_size"):
        jaxcnn.summary("lenet5", batch_size=0)
    with pytest.raises(UnknownModelError, match="alexnet"):
        jaxcnn.summary("alexnett")
    with pytest.raises(InputError, match="227x227"):
        jaxcnn.summary("alexnet_original", (100, 100, 3))


def test_cli_prints_the_summary_and_receptive_fields(capsys):
    assert main(["models", "lenet5", "--summary", "--receptive-field"]) == 0
    out = capsys.readouterr().out
    assert "Parameters: 61,706" in out and "avg_pool 2x2/2" in out and "flatten" in out
    assert "MACs per image" in out and "receptive field" in out
    assert main(["models", "--summary"]) == 1
    assert "need a model name" in capsys.readouterr().err
    assert main(["models", "lenet5", "--summary", "--input-shape", "32x32"]) == 1
    assert "H,W,C" in capsys.readouterr().err
