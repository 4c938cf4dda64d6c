"""torchvision -> jaxcnn key maps, one rule per family, and `from_torchvision`.

jaxcnn's submodule names mirror torchvision's module paths (`layer1.0.conv1` is
`layer1_0/conv1`), so each key map is derived from the jaxcnn model's own variable tree:
every flax leaf names exactly one torchvision key, and `convert` then proves the two sets
are equal. What differs per family is only how a flax module path spells the torch one,
and which Linear layer follows a CHW flatten."""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Mapping
from typing import Any

from jaxcnn.errors import CheckpointError, UnknownModelError
from jaxcnn.pretrained.convert import (
    KeyMap,
    chw_to_hwc_dense_kernel,
    conv_kernel,
    convert,
    dense_kernel,
    flatten_tree,
    identity,
)

_INDEX = re.compile(r"_(\d+)$")  # a Sequential index: flax "layer1_0" is torch "layer1.0"


def _indexed(segment: str) -> str:
    return _INDEX.sub(r".\1", segment)


def _conv_bn_act(segment: str) -> str:
    """torchvision's Conv2dNormActivation is a Sequential (0: conv, 1: norm); jaxcnn's
    ConvBNAct names those children conv / bn."""
    return {"conv": "0", "bn": "1"}.get(segment, _indexed(segment))


_RCNN_MODULES = {
    "rpn_head": "rpn.head",
    "box_head": "roi_heads.box_head",
    "box_predictor": "roi_heads.box_predictor",
    "conv": "conv.0.0",  # RPNHead.conv: Sequential(Conv2dNormActivation(conv, no norm))
}
_FPN_BLOCK = re.compile(r"^(inner|layer)_blocks_(\d+)$")  # Sequential(Conv2dNormActivation)


def _rcnn_segment(segment: str) -> str:
    """Faster R-CNN's flax modules (backbone/body|fpn, rpn_head, box_head, box_predictor)
    spelled as torchvision's `backbone.body`, `backbone.fpn.inner_blocks.0.0`, `rpn.head`,
    `roi_heads.box_head`, `roi_heads.box_predictor`."""
    if segment in _RCNN_MODULES:
        return _RCNN_MODULES[segment]
    return _FPN_BLOCK.sub(r"\1_blocks.\2.0", segment) if _FPN_BLOCK.match(segment) \
        else _indexed(segment)


@dataclasses.dataclass(frozen=True)
class FamilyRule:
    """How one family's flax module paths spell torchvision's."""

    segment: Callable[[str], str] = _indexed
    # flax module path of a Linear that follows a CHW flatten -> (C, H, W) of that map
    chw_flatten: Mapping[str, tuple[int, int, int]] = dataclasses.field(default_factory=dict)
    # torchvision keys dropped in the pretrained configuration when the model has no leaf
    # for them (GoogLeNet's auxiliary classifiers)
    optional_prefixes: tuple[str, ...] = ()
    # create_model overrides giving the configuration the weights were trained in
    model_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # groups of torchvision keys a state_dict for this model must hold, by what they are; a
    # file lacking a whole group is for another architecture, and the error names the group
    required_groups: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def torch_module(self, flax_module: str) -> str:
        return ".".join(self.segment(s) for s in flax_module.split("/"))


RESNET = FamilyRule()
MOBILENET_V2 = FamilyRule(segment=_conv_bn_act)
# torchvision's VGG flattens a 512x7x7 map into classifier.0, AlexNet a 256x6x6 one into
# classifier.1 (the porting bug that cost other JAX ports 42 top-1 points on VGG-11).
VGG = FamilyRule(chw_flatten={"classifier_0": (512, 7, 7)})
ALEXNET = FamilyRule(chw_flatten={"classifier_1": (256, 6, 6)})
# torchvision builds the pretrained GoogLeNet with transform_input=True and drops the aux
# classifiers, which its file still holds (untrained with the model); with aux_logits=True
# they are converted too (their fc1 follows a 128x4x4 flatten).
GOOGLENET = FamilyRule(
    chw_flatten={"aux1/fc1": (128, 4, 4), "aux2/fc1": (128, 4, 4)},
    optional_prefixes=("aux1.", "aux2."),
    model_kwargs={"aux_logits": False, "transform_input": True},
)

# Detectors: FrozenBatchNorm2d vectors are in batch_stats; TwoMLPHead's fc6 follows the CHW
# flatten of the 256x7x7 RoI features. torchvision builds the COCO_V1 model with the frozen
# norms' eps set to 0 (`overwrite_eps(model, 0.0)`).
_RCNN_GROUPS = {"FPN": "backbone.fpn.", "RPN head": "rpn.head.", "RoI heads": "roi_heads."}
FASTERRCNN = FamilyRule(segment=_rcnn_segment, chw_flatten={"box_head/fc6": (256, 7, 7)},
                        model_kwargs={"norm_eps": 0.0}, required_groups=_RCNN_GROUPS)
FASTERRCNN_SMALL = FamilyRule(segment=_rcnn_segment, chw_flatten={"box_head/fc6": (256, 7, 7)},
                              required_groups=_RCNN_GROUPS)

RULES: dict[str, FamilyRule] = {
    **dict.fromkeys(
        ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "wide_resnet50_2",
         "resnext50_32x4d"], RESNET),
    "mobilenet_v2": MOBILENET_V2,
    **dict.fromkeys(
        ["vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn"],
        VGG),
    "alexnet": ALEXNET,
    "googlenet": GOOGLENET,
    "fasterrcnn_resnet50_fpn": FASTERRCNN,
    "fasterrcnn_resnet18_fpn": FASTERRCNN_SMALL,
}  # fmt: skip

_LEAF = {  # (collection, flax leaf) -> torch parameter name
    ("params", "kernel"): "weight",
    ("params", "bias"): "bias",
    ("params", "scale"): "weight",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
    ("batch_stats", "scale"): "weight",  # FrozenBatchNorm2d's fixed weight and bias
    ("batch_stats", "bias"): "bias",
}


def rule_for(name: str) -> FamilyRule:
    """The key-map rule of a model with torchvision weights."""
    try:
        return RULES[name]
    except KeyError:
        raise UnknownModelError(
            f"No torchvision key map for {name!r}; converters exist for: "
            f"{', '.join(sorted(RULES))}."
        ) from None


def key_map_for(name: str, target: Mapping) -> KeyMap:
    """{torchvision key: (flax path, transform)} for every leaf of the variable tree
    `target` of model `name`."""
    rule = rule_for(name)
    key_map: KeyMap = {}
    for path, leaf in flatten_tree(target).items():
        collection, *module, leaf_name = path.split("/")
        module_path = "/".join(module)
        torch_key = f"{rule.torch_module(module_path)}.{_LEAF[(collection, leaf_name)]}"
        transform = identity
        if leaf_name == "kernel":
            ndim = len(leaf.shape)
            if module_path in rule.chw_flatten:
                transform = chw_to_hwc_dense_kernel(*rule.chw_flatten[module_path])
            else:
                transform = conv_kernel if ndim == 4 else dense_kernel
        key_map[torch_key] = (path, transform)
    return key_map


def pretrained_model(name: str, **overrides: Any) -> Any:
    """`create_model(name)` in the configuration torchvision's weights were trained in
    (GoogLeNet: transform_input=True, no aux heads); `overrides` win."""
    from jaxcnn.models import create_model

    return create_model(name, **{**rule_for(name).model_kwargs, **overrides})


def abstract_target(name: str, **overrides: Any) -> dict:
    """Shapes of the pretrained model's variables (`jax.eval_shape`, nothing computed)."""
    return _abstract_target(name, tuple(sorted(overrides.items())))


@functools.cache
def _abstract_target(name: str, overrides: tuple) -> dict:
    from jaxcnn.models import abstract_variables, get_model_spec

    spec = get_model_spec(name)
    # Parameter shapes do not depend on the input size (adaptive pooling before every
    # classifier), so the smallest accepted input keeps tracing cheap.
    size = max(spec.min_input_size, 64)
    variables = abstract_variables(pretrained_model(name, **dict(overrides)),
                                   (size, size, spec.input_shape[-1]))  # fmt: skip
    return {k: v for k, v in variables.items() if k in ("params", "batch_stats")}


def _check_groups(name: str, rule: FamilyRule, state_dict: Mapping, key_map: KeyMap) -> None:
    """CheckpointError naming every key of each required group the state_dict lacks entirely
    (e.g. a classifier ResNet-50 given to the detector: no FPN, RPN or RoI-head keys)."""
    absent = [group for group, prefix in rule.required_groups.items()
              if not any(isinstance(k, str) and k.startswith(prefix) for k in state_dict)]
    if not absent:
        return
    lines = []
    for group in absent:
        keys = [k for k in key_map if k.startswith(rule.required_groups[group])]
        lines.append(f"{group} ({len(keys)} keys): " + ", ".join(keys))
    sample = ", ".join(list(state_dict)[:3])
    raise CheckpointError(
        f"Cannot convert {name} weights: the state_dict has no {', '.join(absent)} weights, "
        f"so it is not a {name} checkpoint (its first keys: {sample}; a classifier's "
        "state_dict lacks the detector's parts). Missing:\n  " + "\n  ".join(lines)
        + f"\nPass a {name} state_dict (e.g. torchvision's COCO weights: "
        f"jaxcnn.pretrained.load({name!r}))."
    )


def from_torchvision(
    name: str, state_dict: Mapping[str, Any], *, strict: bool = True, **model_kwargs: Any
) -> dict:
    """Convert a torchvision state_dict of model `name` (numpy arrays or torch tensors) into
    jaxcnn variables {"params", "batch_stats"} (numpy float32) for `pretrained_model(name,
    **model_kwargs)`. Strict: unexpected or missing keys and shape mismatches raise one
    CheckpointError listing all of them (`strict=False` tolerates unused source keys only).
    num_batches_tracked is ignored."""
    rule = rule_for(name)
    target = abstract_target(name, **model_kwargs)
    key_map = key_map_for(name, target)
    _check_groups(name, rule, state_dict, key_map)
    if rule.optional_prefixes:
        state_dict = {k: v for k, v in state_dict.items()
                      if k in key_map or not k.startswith(rule.optional_prefixes)}  # fmt: skip
    variables = convert(state_dict, key_map, target, strict=strict, what=f"{name} weights")
    variables.setdefault("batch_stats", {})
    return variables
