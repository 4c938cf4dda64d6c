"""Optimizers and learning-rate schedules from config, as small optax factories composed
with `optax.chain`: clip -> [coupled L2] -> scale_by_<optimizer> -> [decoupled decay] ->
-lr(step) [-> reduce-on-plateau]. Weight decay is a masked transform (no decay on biases
and norm scales), never a term added to the loss. Parameter groups (`optimizer.groups`,
regexes over parameter paths) get their own rate and decay scales and can be frozen after
some epochs, each group an `optax.multi_transform` branch.

Seam for transfer learning: `make_optimizer(config, params, ..., wrap=)` receives the params
tree, so a caller can build per-group optimizers (freezing with `optax.set_to_zero`,
discriminative learning rates) with `optax.multi_transform` and labels over the same tree."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
import optax.contrib

from jaxcnn.errors import ConfigError

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad")
SCHEDULES = ("constant", "step", "cosine", "warmup_cosine", "onecycle", "plateau", "triangle")


def decay_mask(params: Any, decay_all: bool = False) -> Any:
    """True for leaves that get weight decay: kernels (ndim >= 2), not biases or norm
    scales (ndim < 2), following the timm / big_vision convention."""
    return jax.tree.map(lambda p: bool(decay_all or p.ndim >= 2), params)


def make_schedule(sched: Any, lr: float, steps_per_epoch: int, num_epochs: float
                  ) -> optax.Schedule:
    """The learning rate as a function of the global step (epochs given in config)."""
    total = max(1, math.ceil(steps_per_epoch * num_epochs))
    warmup = int(round(sched.warmup_epochs * steps_per_epoch))
    name = sched.name
    if name in ("constant", "plateau"):
        base = optax.constant_schedule(lr)
    elif name == "step":
        boundaries = {int(m * steps_per_epoch): sched.gamma for m in sched.milestones}
        base = optax.piecewise_constant_schedule(lr, boundaries)
    elif name == "cosine":
        base = optax.cosine_decay_schedule(lr, total, alpha=sched.end_factor)
    elif name == "warmup_cosine":
        warmup = max(warmup, 1)  # a warm-up as long as the run still ends in one decay step
        return optax.warmup_cosine_decay_schedule(
            0.0, lr, warmup, max(total, warmup + 1), end_value=lr * sched.end_factor
        )
    elif name == "triangle":
        return triangle_schedule(lr, math.ceil(steps_per_epoch * num_epochs), sched.start_factor,
                                 sched.pct_start, sched.end_factor)
    elif name == "onecycle":
        return optax.cosine_onecycle_schedule(
            total, lr, pct_start=sched.pct_start, div_factor=sched.div_factor,
            final_div_factor=sched.final_div_factor,
        )
    else:
        raise ConfigError(f"unknown schedule.name {name!r}; choose one of {SCHEDULES}.")
    if warmup and name != "warmup_cosine":
        return optax.join_schedules(
            [optax.linear_schedule(0.0, lr, warmup), lambda s: base(s + warmup)], [warmup]
        )
    return base


def _scale_by(opt: Any) -> optax.GradientTransformation:
    name = opt.name
    if name == "sgd":
        if not opt.momentum:
            return optax.identity()
        # optax.trace is PyTorch's SGD momentum buffer (v = m v + g; nesterov: g + m v).
        return optax.trace(decay=opt.momentum, nesterov=opt.nesterov)
    if name in ("adam", "adamw"):
        return optax.scale_by_adam(b1=opt.b1, b2=opt.b2, eps=opt.eps)
    if name == "rmsprop":
        # PyTorch RMSprop: eps outside the sqrt, zero-initialized average, optional momentum.
        tx = optax.scale_by_rms(decay=opt.decay, eps=opt.eps, initial_scale=0.0,
                                eps_in_sqrt=False)
        return optax.chain(tx, optax.trace(decay=opt.momentum)) if opt.momentum else tx
    if name == "adagrad":
        return optax.scale_by_rss(initial_accumulator_value=opt.initial_accumulator, eps=opt.eps)
    raise ConfigError(f"unknown optimizer.name {name!r}; choose one of {OPTIMIZERS}.")


def make_optimizer(
    config: Any,
    params: Any,
    steps_per_epoch: int,
    *,
    schedule: optax.Schedule | None = None,
    wrap: Callable[[optax.GradientTransformation, Any], optax.GradientTransformation]
    | None = None,
) -> tuple[optax.GradientTransformationExtraArgs, optax.Schedule]:
    """(transformation, schedule) for `config.optimizer` / `config.schedule`. The returned
    transformation accepts `update(..., value=loss)` (used by reduce-on-plateau)."""
    opt, sched = config.optimizer, config.schedule
    if schedule is None:
        schedule = make_schedule(sched, opt.lr, steps_per_epoch, config.num_epochs)
    mask = decay_mask(params, opt.decay_all)
    parts: list[optax.GradientTransformation] = []
    if opt.clip_norm:
        parts.append(optax.clip_by_global_norm(opt.clip_norm))
    if opt.clip_value:
        parts.append(optax.clip(opt.clip_value))
    groups = dict(opt.get("groups", {}) or {})
    if groups:
        parts.append(_grouped(opt, groups, params, mask, schedule, steps_per_epoch))
    else:
        parts += _update_rule(opt, mask, schedule)
    if sched.name == "plateau" and sched.get("plateau_metric", "train_loss") == "train_loss":
        # Plateau judged on the training loss averaged over one epoch of steps, in the step.
        parts.append(optax.contrib.reduce_on_plateau(
            factor=sched.factor, patience=sched.patience, rtol=sched.rtol,
            cooldown=sched.cooldown, accumulation_size=steps_per_epoch,
        ))
    elif sched.name == "plateau":
        # Plateau judged on a validation metric at epoch ends (jaxcnn.train.stopping).
        parts.append(plateau_scale())
    tx = optax.chain(*parts)
    if wrap is not None:
        tx = wrap(tx, params)
    return optax.with_extra_args_support(tx), schedule


def _update_rule(opt: Any, mask: Any, schedule: optax.Schedule, lr_scale: float = 1.0,
                 weight_decay_scale: float = 1.0) -> list[optax.GradientTransformation]:
    """[coupled L2] -> scale_by_<optimizer> -> [decoupled decay] -> -lr(step) * lr_scale."""
    parts = []
    decay = opt.weight_decay * weight_decay_scale
    decoupled = opt.decoupled or opt.name == "adamw"
    if decay and not decoupled:
        parts.append(optax.add_decayed_weights(decay, mask))  # torch's L2 in the gradient
    parts.append(_scale_by(opt))
    if decay and decoupled:
        parts.append(optax.add_decayed_weights(decay, mask))  # Loshchilov & Hutter
    rate = schedule if lr_scale == 1.0 else (lambda step: schedule(step) * lr_scale)
    parts.append(optax.scale_by_learning_rate(rate))
    return parts


def _grouped(opt: Any, groups: dict, params: Any, mask: Any, schedule: optax.Schedule,
             steps_per_epoch: int) -> optax.GradientTransformation:
    """One update rule per parameter group (`optimizer.groups`), the rest "default": its own
    learning-rate and weight-decay scales, and optionally frozen after some epochs
    (airbench94: BatchNorm biases at 64x the rate with 1/64 the L2 coefficient, so the same
    decay per step; the whitening kernel frozen; its bias frozen after 3 epochs)."""
    if "default" in groups:
        raise ConfigError("optimizer.groups may not be named 'default' (the ungrouped rest).")
    labels = param_labels(params, {name: g["pattern"] for name, g in groups.items()})
    rules = {"default": optax.chain(*_update_rule(opt, mask, schedule))}
    for name, g in groups.items():
        parts = _update_rule(opt, mask, schedule, float(g.get("lr_scale", 1.0)),
                             float(g.get("weight_decay_scale", 1.0)))
        if "freeze_after_epochs" in g:
            steps = int(round(float(g["freeze_after_epochs"]) * steps_per_epoch))
            parts.append(optax.set_to_zero() if steps == 0 else freeze_after(steps))
        rules[name] = optax.chain(*parts)
    return optax.multi_transform(rules, labels)
class PlateauScaleState(NamedTuple):
    """The learning-rate factor that a validation plateau schedule sets between epochs."""

    scale: jax.Array


def plateau_scale() -> optax.GradientTransformation:
    """Multiply the updates by a factor kept in the optimizer state (so it is checkpointed
    and resumes exactly); `set_plateau_scale` changes it between epochs, from the host."""

    def init(params: Any) -> PlateauScaleState:
        del params
        return PlateauScaleState(jnp.ones((), jnp.float32))

    def update(updates: Any, state: PlateauScaleState, params: Any = None
               ) -> tuple[Any, PlateauScaleState]:
        del params
        return jax.tree.map(lambda u: u * state.scale.astype(u.dtype), updates), state

    return optax.GradientTransformation(init, update)


def set_plateau_scale(opt_state: Any, scale: float, sharding: Any = None) -> Any:
    """`opt_state` with the factor of its `plateau_scale` state set to `scale` (placed with
    `sharding`, the replicated layout of the train state)."""
    value = jnp.asarray(scale, jnp.float32)
    if sharding is not None:
        value = jax.device_put(value, sharding)
    return jax.tree.map(
        lambda s: PlateauScaleState(value) if isinstance(s, PlateauScaleState) else s,
        opt_state, is_leaf=lambda s: isinstance(s, PlateauScaleState))


def current_lr(schedule: optax.Schedule, opt_state: Any, step: int) -> float:
    """The learning rate in effect at `step`, including a reduce-on-plateau scale."""
    lr = float(schedule(step))
    kinds = (optax.contrib.ReduceLROnPlateauState, PlateauScaleState)
    for leaf in jax.tree_util.tree_leaves(opt_state, is_leaf=lambda s: isinstance(s, kinds)):
        if isinstance(leaf, kinds):
            lr *= float(jnp.asarray(leaf.scale))
    return lr


def triangle_schedule(peak_value: float, total_steps: int, start_factor: float,
                      peak_fraction: float, end_factor: float) -> optax.Schedule:
    """Piecewise-linear warm-up and decay: `start_factor * peak_value` at step 0, the peak at
    step `int(peak_fraction * total_steps)`, `end_factor * peak_value` at `total_steps`
    (airbench 0.1.8 `triangle`, utils.py lines 273-282: airbench94 uses 0.2, 0.23, 0.07)."""
    xp = jnp.asarray([0.0, float(int(peak_fraction * total_steps)), float(total_steps)])
    fp = jnp.asarray([start_factor, 1.0, end_factor]) * peak_value
    return lambda step: jnp.interp(jnp.asarray(step, jnp.float32), xp, fp)


def param_labels(params: Any, rules: dict[str, str], default: str = "default") -> Any:
    """A tree of group labels for `optax.multi_transform`: each leaf takes the first label
    whose regular expression matches (`re.search`) its "/"-joined path
    ("block1/norm1/bias"), else `default`."""
    import re

    compiled = [(label, re.compile(pattern)) for label, pattern in rules.items()]

    def label(path: tuple, _: Any) -> str:
        name = "/".join(str(getattr(p, "key", getattr(p, "idx", p))) for p in path)
        return next((lab for lab, rx in compiled if rx.search(name)), default)

    return jax.tree_util.tree_map_with_path(label, params)


class FreezeAfterState(NamedTuple):
    """Steps counted by `freeze_after`."""

    count: jax.Array


def freeze_after(steps: int) -> optax.GradientTransformation:
    """Pass updates through for the first `steps` steps, then zeros: a parameter group that
    trains for a while and is then frozen (airbench94's whitening bias, trained for 3 epochs:
    `requires_grad = epoch < whiten_bias_epochs`, utils.py line 303)."""

    def init(params: Any) -> FreezeAfterState:
        del params
        return FreezeAfterState(jnp.zeros((), jnp.int32))

    def update(updates: Any, state: FreezeAfterState, params: Any = None
               ) -> tuple[Any, FreezeAfterState]:
        del params
        live = state.count < steps
        updates = jax.tree.map(lambda u: jnp.where(live, u, jnp.zeros_like(u)), updates)
        return updates, FreezeAfterState(optax.safe_increment(state.count))

    return optax.GradientTransformation(init, update)
