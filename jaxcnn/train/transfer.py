"""Transfer learning as optimizer policy over `config.transfer` (big_vision's optax.py style):
frozen parameter groups, discriminative learning rates, frozen BatchNorm statistics.

Groups are the model family's own declaration (`group_matcher()` / `head_name` on the module
class, timm's `group_matcher`): stages in network order, the classifier head last. From
`config.transfer`:

- freeze = "full": everything trains; "linear_probe": only the head; "finetune_last": the
  last `last_stages` groups before the head, and the head.
- lr_slice = (lo, hi): fast.ai's discriminative rates, `slice(lo, hi)`: the trainable groups
  get rates spaced geometrically from lo (earliest) to hi (head), in place of optimizer.lr
  (the schedule's shape still applies).

Frozen groups are labelled "frozen" in an `optax.multi_transform` and get
`optax.set_to_zero()`: no update and no optimizer state. Their BatchNorm statistics are put
back after every step (`stats_filter`), whatever the `mutable` collections of the apply."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import jax
import optax

from jaxcnn.errors import ConfigError
from jaxcnn.models.layers import match_groups

FREEZE_POLICIES = ("full", "linear_probe", "finetune_last")

TxWrap = Callable[[optax.GradientTransformation, Any], optax.GradientTransformation]


def param_groups(model: Any, params: dict) -> list[tuple[str, list[str]]]:
    """[(group, [top-level modules])] in network order, the head last, as the model's
    family declares them (`model.group_matcher()`)."""
    matcher = getattr(model, "group_matcher", None)
    try:
        return match_groups(matcher(), list(params)) if matcher else _undeclared(model)
    except NotImplementedError:
        return _undeclared(model)


def _undeclared(model: Any) -> list:
    raise ConfigError(
        f"{type(model).__name__} declares no parameter groups (group_matcher), so "
        "config.transfer.freeze / lr_slice cannot apply to it; keep transfer.freeze='full' "
        "and transfer.lr_slice=()."
    )


def trainable_groups(config: Any, groups: Sequence[tuple[str, list[str]]]) -> list[str]:
    """Names of the groups that train under config.transfer.freeze."""
    policy, names = config.transfer.freeze, [g for g, _ in groups]
    if policy not in FREEZE_POLICIES:
        raise ConfigError(f"transfer.freeze must be one of {FREEZE_POLICIES}, got {policy!r}.")
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


def even_mults(lo: float, hi: float, n: int) -> list[float]:
    """fast.ai's even_mults: n values from lo to hi, evenly spaced in log scale."""
    if n == 1:
        return [hi]
    step = (hi / lo) ** (1 / (n - 1))
    return [lo * step**i for i in range(n)]


def group_rates(config: Any, trainable: Sequence[str]) -> dict[str, float]:
    """Per trainable group, the factor on optimizer.lr: 1, or fast.ai's slice(lo, hi)
    spaced geometrically from the earliest trainable group to the head."""
    lr_slice = tuple(config.transfer.lr_slice)
    if not lr_slice:
        return dict.fromkeys(trainable, 1.0)
    if len(lr_slice) != 2 or not 0 < lr_slice[0] <= lr_slice[1]:
        raise ConfigError(f"transfer.lr_slice must be (lo, hi) with 0 < lo <= hi, got {lr_slice}.")
    rates = even_mults(*lr_slice, len(trainable))
    return {g: r / config.optimizer.lr for g, r in zip(trainable, rates, strict=True)}


def uses_transfer(config: Any) -> bool:
    """Whether config.transfer changes anything (else the optimizer is left alone)."""
    transfer = config.get("transfer")
    return transfer is not None and (transfer.freeze != "full" or bool(tuple(transfer.lr_slice)))


def _module_labels(model: Any, params: dict, config: Any) -> tuple[dict[str, str], list]:
    groups = param_groups(model, params)
    trainable = set(trainable_groups(config, groups))
    labels = {m: (g if g in trainable else "frozen") for g, modules in groups for m in modules}
    return labels, groups


def make_tx_wrap(config: Any, model: Any) -> TxWrap | None:
    """The `wrap` of `make_optimizer`: multi_transform of the config's optimizer per
    trainable group (times its rate factor) and set_to_zero for frozen groups, then zero
    updates for the leaves the model itself keeps fixed (`model.frozen_params(params)`: a
    detector's frozen backbone layers, torchvision's `requires_grad_(False)`); None when
    neither applies."""
    policy = _policy_wrap(config, model) if uses_transfer(config) else None
    declared = getattr(model, "frozen_params", None)
    if policy is None and declared is None:
        return None

    def wrap(tx: optax.GradientTransformation, params: Any) -> optax.GradientTransformation:
        if policy is not None:
            tx = policy(tx, params)
        if declared is not None:  # no update, weight decay included
            tx = optax.chain(tx, optax.masked(optax.set_to_zero(), declared(params)))
        return tx

    return wrap


def _policy_wrap(config: Any, model: Any) -> TxWrap:
    """config.transfer's groups as an optax.multi_transform."""

    def wrap(tx: optax.GradientTransformation, params: Any) -> optax.GradientTransformation:
        labels, groups = _module_labels(model, params, config)
        trainable = [g for g, _ in groups if g in set(labels.values())]
        factors = group_rates(config, trainable)
        transforms: dict[str, optax.GradientTransformation] = {"frozen": optax.set_to_zero()}
        for group, factor in factors.items():
            transforms[group] = tx if factor == 1.0 else optax.chain(tx, optax.scale(factor))
        label_tree = {m: jax.tree.map(lambda _, g=labels[m]: g, sub) for m, sub in params.items()}
        frozen = [g for g, _ in groups if g not in factors]
        print(
            f"transfer: freeze={config.transfer.freeze}: training "
            + ", ".join(f"{g} (lr x{factors[g]:.3g})" for g in factors)
            + (f"; frozen: {', '.join(frozen)}" if frozen else ""),
            file=sys.stderr, flush=True,
        )  # fmt: skip
        return optax.multi_transform(transforms, label_tree)

    return wrap


def stats_filter(config: Any, model: Any, params: dict) -> Callable[[dict, dict], dict] | None:
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

