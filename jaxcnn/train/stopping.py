"""Decisions taken on a VALIDATION metric at the end of each epoch:

- early stopping, as Keras' `EarlyStopping(monitor, min_delta, patience, mode)`: an epoch
  improves when the metric beats the best so far by more than `min_delta`; training stops
  after `patience` epochs in a row without improvement (`config.early_stopping`);
- reduce-on-plateau, as torch's `ReduceLROnPlateau(mode, factor, patience, threshold,
  threshold_mode="rel", cooldown, min_lr)`: after more than `patience` epochs without a
  relative improvement of `rtol`, the learning rate is multiplied by `factor`, then
  `cooldown` epochs pass before the count restarts (`config.schedule.name="plateau"` with
  `schedule.plateau_metric` a "valid_" metric). The AlexNet (Krizhevsky et al., 2012,
  section 5) and ResNet (He et al., 2015, section 3.4) recipe "divide the learning rate by
  10 when the validation error plateaus" is factor 0.1 on valid_accuracy.

Their state is a small JSON dict saved in every checkpoint's metadata (`EpochControl.
state_dict`), and the learning-rate scale lives in the optimizer state
(`jaxcnn.train.optim.plateau_scale`), so a resumed run decides exactly as an uninterrupted
one."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

from jaxcnn.errors import ConfigError

MODES = ("min", "max")
# Metrics that are better when lower, whatever the task's own best metric is.
LOWER_IS_BETTER = ("loss", "mae", "mse", "rmse", "error")


def resolve_metric(metric: str, mode: str, task: Any, names: list[str] | None, key: str
                   ) -> tuple[str, str]:
    """(metric, mode): "" is the task's best metric; a "valid_" prefix is dropped; "" mode is
    the task's for its best metric, else "min" for losses and errors and "max" otherwise.
    ConfigError (naming `key`) when the validation metrics `names` (None: not known before
    the first evaluation) lack the metric."""
    given = metric
    metric = (metric or task.best_metric).removeprefix("valid_")
    if names is not None and metric not in names:
        raise ConfigError(
            f"{key}={given!r} is not a validation metric of the {task.name!r} task; choose "
            f"one of {sorted(names)} (with or without the 'valid_' prefix)."
        )
    if not mode:
        if metric == task.best_metric:
            mode = task.best_mode
        else:
            mode = "min" if any(w in metric for w in LOWER_IS_BETTER) else "max"
    if mode not in MODES:
        raise ConfigError(f"{key.rsplit('.', 1)[0]} mode must be 'min' or 'max'; got {mode!r}.")
    return metric, mode


@dataclasses.dataclass
class EarlyStopping:
    """Keras' EarlyStopping on `metric` (see the module docstring)."""

    metric: str
    mode: str
    patience: int
    min_delta: float = 0.0
    best: float | None = None
    best_epoch: int = 0
    wait: int = 0
    stopped_epoch: int = 0

    def update(self, epoch: int, value: float) -> bool:
        """Record epoch `epoch`'s `value`; True when training must stop now."""
        if self.stopped_epoch:
            return True
        sign = 1.0 if self.mode == "max" else -1.0
        if self.best is None or sign * (value - self.best) > abs(self.min_delta):
            self.best, self.best_epoch, self.wait = float(value), epoch, 0
        else:
            self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
        return bool(self.stopped_epoch)


@dataclasses.dataclass
class PlateauLR:
    """torch's ReduceLROnPlateau (threshold_mode "rel") on `metric`; `scale` multiplies the
    learning rate (see the module docstring)."""

    metric: str
    mode: str
    factor: float
    patience: int
    rtol: float = 1e-4
    cooldown: int = 0
    min_scale: float = 0.0
    scale: float = 1.0
    best: float | None = None
    num_bad: int = 0
    cooldown_left: int = 0

    def _better(self, value: float) -> bool:
        # torch's `is_better` with threshold_mode "rel", signs included.
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best * (1.0 - self.rtol)
        return value > self.best * (1.0 + self.rtol)

    def update(self, epoch: int, value: float) -> float:
        """Record epoch `epoch`'s `value`; the learning-rate scale for the next epoch."""
        if self._better(value):
            self.best, self.num_bad = float(value), 0
        else:
            self.num_bad += 1
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.num_bad = 0
        if self.num_bad > self.patience:
            self.scale = max(self.scale * self.factor, self.min_scale)
            self.cooldown_left, self.num_bad = self.cooldown, 0
        return self.scale


@dataclasses.dataclass
class EpochControl:
    """The epoch-end decisions a config asks for (either may be None)."""

    early_stopping: EarlyStopping | None = None
    plateau: PlateauLR | None = None

    @classmethod
    def from_config(cls, config: Any, task: Any,
                    names: Callable[[], list[str] | None]) -> EpochControl:
        """From config.early_stopping (on when patience > 0) and config.schedule (plateau on
        a "valid_" metric); `names()` gives the task's validation metrics (asked only when
        a decision is configured; None when they are known only after an evaluation)."""
        es_cfg, sched = config.early_stopping, config.schedule
        metric_names = functools.cache(names)  # traced once, and only when needed
        early = plateau = None
        if es_cfg.patience < 0 or es_cfg.min_delta < 0 or not math.isfinite(es_cfg.min_delta):
            raise ConfigError(
                f"early_stopping.patience must be >= 0 (0 = off) and min_delta >= 0; got "
                f"patience={es_cfg.patience}, min_delta={es_cfg.min_delta}."
            )
        if es_cfg.patience:
            metric, mode = resolve_metric(es_cfg.metric, es_cfg.mode, task, metric_names(),
                                          "early_stopping.metric")
            early = EarlyStopping(metric, mode, int(es_cfg.patience), float(es_cfg.min_delta))
        if sched.name == "plateau" and sched.plateau_metric != "train_loss":
            if not sched.plateau_metric.startswith("valid_"):
                shown = [f"valid_{n}" for n in sorted(metric_names() or ["<metric>"])]
                raise ConfigError(
                    f"schedule.plateau_metric must be 'train_loss' or a validation metric "
                    f"'valid_<name>' (one of {shown}); got {sched.plateau_metric!r}."
                )
            if not 0 < sched.factor < 1 or sched.patience < 0 or sched.cooldown < 0:
                raise ConfigError(
                    f"plateau needs 0 < schedule.factor < 1, patience >= 0 and cooldown >= 0; "
                    f"got factor={sched.factor}, patience={sched.patience}, "
                    f"cooldown={sched.cooldown}."
                )
            metric, mode = resolve_metric(sched.plateau_metric, sched.plateau_mode, task,
                                          metric_names(), "schedule.plateau_metric")
            lr = config.optimizer.lr
            plateau = PlateauLR(metric, mode, float(sched.factor), int(sched.patience),
                                float(sched.rtol), int(sched.cooldown),
                                float(sched.min_lr) / lr if lr > 0 else 0.0)
        return cls(early, plateau)

    def update(self, epoch: int, valid: dict[str, float]) -> tuple[bool, float | None]:
        """After epoch `epoch` (1-based) with validation metrics `valid`: (stop?, the new
        learning-rate scale or None when there is no plateau schedule)."""
        for part, key in ((self.plateau, "schedule.plateau_metric"),
                          (self.early_stopping, "early_stopping.metric")):
            if part is not None and part.metric not in valid:
                raise ConfigError(f"{key}: the validation metrics are {sorted(valid)}; there "
                                  f"is no {part.metric!r}.")
        scale = None
        if self.plateau is not None:
            scale = self.plateau.update(epoch, float(valid[self.plateau.metric]))
        stop = False
        if self.early_stopping is not None:
            stop = self.early_stopping.update(epoch, float(valid[self.early_stopping.metric]))
        return stop, scale

    @property
    def stopped_epoch(self) -> int:
        """The epoch early stopping ended training at (0: it did not)."""
        return self.early_stopping.stopped_epoch if self.early_stopping is not None else 0

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state for the checkpoint metadata."""
        return {name: dataclasses.asdict(part) for name, part in
                (("early_stopping", self.early_stopping), ("plateau", self.plateau))
                if part is not None}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Restore the counters saved by `state_dict` (the configured settings win)."""
        for name in ("early_stopping", "plateau"):
            part, state = getattr(self, name), saved.get(name)
            if part is None or not state:
                continue
            for field in ("best", "best_epoch", "wait", "stopped_epoch", "scale", "num_bad",
                          "cooldown_left"):
                if field in state and hasattr(part, field):
                    setattr(part, field, state[field])
