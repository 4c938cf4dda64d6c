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

from jaxcnn.errors import UnknownModelError
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
}  # fmt: skip

_LEAF = {  # (collection, flax leaf) -> torch parameter name
    ("params", "kernel"): "weight",
    ("params", "bias"): "bias",
    ("params", "scale"): "weight",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
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
    if rule.optional_prefixes:
        state_dict = {k: v for k, v in state_dict.items()
                      if k in key_map or not k.startswith(rule.optional_prefixes)}  # fmt: skip
    variables = convert(state_dict, key_map, target, strict=strict, what=f"{name} weights")
    variables.setdefault("batch_stats", {})
    return variables
