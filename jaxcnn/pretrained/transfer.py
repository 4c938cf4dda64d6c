"""Transfer learning: freeze policies and discriminative learning rates over a network's
stages, frozen BatchNorm statistics, and the "torchvision:NAME" initial-weights loader.

Stages are groups of top-level modules, in network order, named like torchvision's
(`layer3_*` is ResNet's stage 3); the last group is the head. From `config.transfer`:

- freeze = "full": everything trains; "linear_probe": only the head; "finetune_last": the
  last `last_stages` stages and the head.
- lr_slice = (lo, hi): fast.ai's discriminative rates, `slice(lo, hi)`: the trainable groups
  get rates spaced geometrically from lo (earliest) to hi (head), in place of optimizer.lr
  (the schedule's shape still applies).

Frozen groups are labelled "frozen" in an `optax.multi_transform` and get
`optax.set_to_zero()`: no update and no optimizer state. Their BatchNorm statistics are put
back after every step (`stats_filter`), whatever the `mutable` collections of the apply."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import optax

from jaxcnn.errors import ConfigError

FREEZE_POLICIES = ("full", "linear_probe", "finetune_last")

_BLOCK = re.compile(r"^(layer\d+|inception\d)")
_INDEX = re.compile(r"_(\d+)$")


def _mobilenet_v2_stage(module: str) -> str:
    # Blocks features_1..17 end their resolution level after blocks 1, 3, 6, 13 and 17
    # (torchvision's strides); features_18 (the 1x1 conv to 1280) closes the last level.
    index = int(_INDEX.search(module).group(1))
    for stage, last in enumerate((1, 3, 6, 13, 18), start=1):
        if index <= last:
            return f"stage{stage}"
    raise AssertionError(module)


def _vgg_stage(module: str, model: Any) -> str:
    index = int(_INDEX.search(module).group(1))
    position, stage = 0, 1
    for v in model.cfg:  # walk torchvision's `features` indices as jaxcnn.models.vgg does
        if v == "M":
            position, stage = position + 1, stage + 1
            continue
        width = 3 if model.batch_norm else 2
        if position <= index < position + width:
            return f"stage{stage}"
        position += width
    raise AssertionError(module)


def _natural(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def head_module(params: dict) -> str:
    """The top-level module that makes the logits: the last fc* / classifier* / head* one
    in natural order (fc, classifier_6, fc2, fc8)."""
    candidates = [m for m in params if m.startswith(("fc", "classifier", "head"))]
    if not candidates:
        raise ConfigError(
            f"cannot tell the classifier head among the model's modules {sorted(params)}; "
            "transfer learning needs a module named fc*, classifier* or head*."
        )
    return max(candidates, key=_natural)


def stage_of(model: Any, module: str, head: str) -> str:
    """The stage group of top-level module `module` ("head" for the classifier)."""
    family = type(model).__name__
    if module == head or module.startswith("aux"):
        return "head"
    if family == "ResNet":
        return "stem" if module in ("conv1", "bn1") else _BLOCK.match(module).group(1)
    if family == "GoogLeNet":
        return "stem" if module.startswith("conv") else "stage" + module[len("inception")]
    if family == "MobileNetV2":
        return "stem" if module == "features_0" else _mobilenet_v2_stage(module)
    if family == "VGG":
        return "fc" if module.startswith("classifier") else _vgg_stage(module, model)
    if family == "AlexNet" and module.startswith("classifier"):
        return "fc"
    # Elsewhere: "stage2_conv1" and "block3_dw" group by their prefix, others stand alone.
    return re.sub(r"^((?:stage|layer|block)\d+)_.*$", r"\1", module)


def _group_order(group: str) -> tuple:
    # Network order: stem, numbered stages, the fully connected block (VGG/AlexNet's
    # classifier_0..4), then the head.
    rank = {"stem": 0, "fc": 2, "head": 3}.get(group, 1)
    return (rank, _natural(group))


def param_groups(model: Any, params: dict) -> list[tuple[str, list[str]]]:
    """[(group, [top-level modules])] in network order, the head last."""
    head = head_module(params)
    groups: dict[str, list[str]] = {}
    for module in sorted(params, key=_natural):
        groups.setdefault(stage_of(model, module, head), []).append(module)
    return sorted(groups.items(), key=lambda item: _group_order(item[0]))


def trainable_groups(config: Any, groups: Sequence[tuple[str, list[str]]]) -> list[str]:
    """Names of the groups that train under config.transfer.freeze."""
    policy, names = config.transfer.freeze, [g for g, _ in groups]
    if policy not in FREEZE_POLICIES:
        raise ConfigError(
            f"transfer.freeze must be one of {FREEZE_POLICIES}, got {policy!r}."
        )
    if policy == "full":
        return names
    if policy == "linear_probe":
        return ["head"]
    k = config.transfer.last_stages
    if not 1 <= k < len(names):
        raise ConfigError(
            f"transfer.last_stages={k}: the model has {len(names) - 1} stages before its head "
            f"({', '.join(names[:-1])}); choose 1..{len(names) - 1}, or freeze='full'."
        )
    return names[-k - 1 :]


def group_rates(config: Any, trainable: Sequence[str]) -> dict[str, float]:
    """Per trainable group, the factor on optimizer.lr: 1, or fast.ai's slice(lo, hi)
    spaced geometrically from the earliest trainable group to the head."""
    lr_slice = tuple(config.transfer.lr_slice)
    if not lr_slice:
        return dict.fromkeys(trainable, 1.0)
    if len(lr_slice) != 2 or not 0 < lr_slice[0] <= lr_slice[1]:
        raise ConfigError(
            f"transfer.lr_slice must be (lo, hi) with 0 < lo <= hi, got {lr_slice}."
        )
    rates = even_mults(*lr_slice, len(trainable))
    return {g: r / config.optimizer.lr for g, r in zip(trainable, rates, strict=True)}


def _module_labels(model: Any, params: dict, config: Any) -> tuple[dict[str, str], list]:
    groups = param_groups(model, params)
    trainable = set(trainable_groups(config, groups))
    labels = {m: (g if g in trainable else "frozen") for g, modules in groups for m in modules}
    return labels, groups


def uses_transfer(config: Any) -> bool:
    """Whether config.transfer changes anything (else the optimizer is left alone)."""
    transfer = config.get("transfer")
    return transfer is not None and (transfer.freeze != "full" or bool(tuple(transfer.lr_slice)))


def make_tx_wrap(config: Any, model: Any) -> Callable[[optax.GradientTransformation, Any],
                                                      optax.GradientTransformation] | None:
    """The `tx_wrap` for jaxcnn.train.fit: multi_transform of the config's optimizer per
    trainable group (times its rate factor) and set_to_zero for frozen groups."""
    if not uses_transfer(config):
        return None

    def wrap(tx: optax.GradientTransformation, params: Any) -> optax.GradientTransformation:
        labels, groups = _module_labels(model, params, config)
        trainable = [g for g, _ in groups if g in set(labels.values())]
        factors = group_rates(config, trainable)
        transforms: dict[str, optax.GradientTransformation] = {"frozen": optax.set_to_zero()}
        for group, factor in factors.items():
            transforms[group] = tx if factor == 1.0 else optax.chain(tx, optax.scale(factor))
        label_tree = {m: _label_subtree(sub, labels[m]) for m, sub in params.items()}
        frozen = [g for g, _ in groups if g not in factors]
        print(
            f"transfer: freeze={config.transfer.freeze}: training "
            + ", ".join(f"{g} (lr x{factors[g]:.3g})" for g in factors)
            + (f"; frozen: {', '.join(frozen)}" if frozen else ""),
            file=sys.stderr, flush=True,
        )  # fmt: skip
        return optax.multi_transform(transforms, label_tree)

    return wrap


def _label_subtree(tree: Any, label: str) -> Any:
    if isinstance(tree, dict) or hasattr(tree, "items"):
        return {k: _label_subtree(v, label) for k, v in tree.items()}
    return label


def stats_filter(config: Any, model: Any, params: dict
                 ) -> Callable[[dict, dict], dict] | None:  # fmt: skip
    """fn(new_batch_stats, old_batch_stats) -> batch_stats with the frozen groups' old
    statistics put back, or None when nothing is frozen."""
    if not uses_transfer(config):
        return None
    labels, _ = _module_labels(model, params, config)
    frozen = {m for m, label in labels.items() if label == "frozen"}
    if not frozen:
        return None

    def keep_frozen(new: dict, old: dict) -> dict:
        return {m: (old[m] if m in frozen else v) for m, v in new.items()}

    return keep_frozen


def count_trainable(config: Any, model: Any, params: dict) -> tuple[int, int]:
    """(trainable, total) parameter counts under config.transfer."""
    import jax

    labels, _ = _module_labels(model, params, config)
    total = trainable = 0
    for m, sub in params.items():
        n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(sub))
        total += n
        trainable += n if labels[m] != "frozen" else 0
    return trainable, total


def _torchvision_loader(name: str, config: Any) -> dict:
    """config.init.path = "torchvision:NAME": torchvision's weights (init.extra.weights,
    default IMAGENET1K_V1; init.extra.file: a local .pth / .safetensors / converted dir).
    A head of another size is replaced by a fresh one, with one log line (train.setup)."""
    from jaxcnn.pretrained.hub import load

    extra = config.init.extra
    return load(name, extra.get("weights", "IMAGENET1K_V1"), path=extra.get("file") or None)


def register_loader() -> None:
    """Register "torchvision:NAME" with jaxcnn.train.register_init_loader."""
    from jaxcnn.train.init import register_init_loader

    register_init_loader("torchvision")(_torchvision_loader)


def even_mults(lo: float, hi: float, n: int) -> list[float]:
    """fast.ai's even_mults: n values from lo to hi, evenly spaced in log scale."""
    if n == 1:
        return [hi]
    step = (hi / lo) ** (1 / (n - 1))
    return [lo * step**i for i in range(n)]


