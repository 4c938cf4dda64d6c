"""Weight averaging of the model variables (params and BatchNorm statistics): an exponential
moving average, and lookahead (Zhang et al., "Lookahead Optimizer: k steps forward, 1 step
back", 2019) with airbench94's decay schedule (airbench 0.1.8, utils.py `LookaheadState`,
lines 193-201, and its use in `train`, lines 285-329): every `period` steps the slow copy
moves towards the trained ("fast") weights, `slow <- decay * slow + (1 - decay) * fast`,
and training continues from the slow copy (`fast <- slow`); after the last step the
weights are the slow copy."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp


def ema_update(average: Any, new: Any, decay: jax.Array | float) -> Any:
    """`decay * average + (1 - decay) * new` on every floating leaf (PyTorch's
    `average.lerp_(new, 1 - decay)`); integer leaves (counters) take the new value."""

    def one(a: jax.Array, b: jax.Array) -> jax.Array:
        if not jnp.issubdtype(jnp.result_type(a), jnp.floating):
            return b
        return (a + (1.0 - decay) * (b - a)).astype(jnp.result_type(a))

    return jax.tree.map(one, average, new)


@dataclasses.dataclass(frozen=True)
class Lookahead:
    """airbench's lookahead: a sync every `period` optimizer steps with
    `decay(t) = base * (t / total_steps) ** power` (t = steps done, so the early syncs keep
    almost nothing of the slow copy and the late ones average over many steps), and a final
    `fast <- slow` at `total_steps`. airbench94: period 5, base 0.95**5, power 3."""

    total_steps: int
    period: int = 5
    base: float = 0.95**5
    power: float = 3.0

    def decay(self, step: jax.Array | int) -> jax.Array:
        """The decay of the sync after `step` optimizer steps."""
        t = jnp.asarray(step, jnp.float32) / self.total_steps
        return self.base * t**self.power

    def __call__(self, slow: Any, fast: Any, step: jax.Array | int) -> tuple[Any, Any]:
        """(slow, fast) after optimizer step number `step` (1-based: steps done), traceable."""
        step = jnp.asarray(step)
        sync = (step % self.period) == 0
        synced = ema_update(slow, fast, self.decay(step))
        slow = jax.tree.map(lambda s, n: jnp.where(sync, n, s), slow, synced)
        reset = sync | (step >= self.total_steps)
        fast = jax.tree.map(lambda f, s: jnp.where(reset, s, f), fast, slow)
        return slow, fast


def lookahead_from_config(config: Any, total_steps: int) -> Lookahead | None:
    """`Lookahead` from `config.lookahead` over a run of `total_steps` (None when period 0)."""
    look = config.lookahead
    if not look.period:
        return None
    return Lookahead(total_steps, int(look.period), float(look.base), float(look.power))
