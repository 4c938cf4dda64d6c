"""A training run directory, read-only: everything `jaxcnn.train.fit` leaves in a workdir,
for the code that uses a trained model (warm start, similarity, predict, siamese evaluation,
benchmarks) without importing the training package.

    WORKDIR/config.json          the config as run (`jaxcnn.train.fit` writes it)
    WORKDIR/run.json             what training resolved: model name and options, num_classes,
                                 input shape, mean/std, class names, the selection metric
    WORKDIR/checkpoints/STEP/    orbax checkpoints: item "state" (the TrainState as a dict of
                                 arrays) and item "meta" (JSON), validation metrics attached

The best checkpoint is the one with the best validation metric (`run.json`'s best_metric
and best_mode; the latest one when no checkpoint has metrics)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from jaxcnn.errors import CheckpointError

CONFIG_FILE = "config.json"
RUN_FILE = "run.json"
CHECKPOINT_DIR = "checkpoints"
ITEM_NAMES = ("state", "meta")


def item_handlers() -> dict[str, Any]:
    """The orbax handlers of a checkpoint's two items (declared up front, so a fresh manager
    can read metadata and restore)."""
    import orbax.checkpoint as ocp

    return {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}


def is_run_dir(path: str | os.PathLike) -> bool:
    """Whether `path` is a jaxcnn training workdir (a config.json or a checkpoints folder)."""
    p = Path(path).expanduser()
    return p.is_dir() and ((p / CHECKPOINT_DIR).is_dir() or (p / CONFIG_FILE).is_file())


class RunDir:
    """Read-only view of a training workdir."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).expanduser().absolute()  # orbax refuses relative paths
        if not self.path.is_dir():
            raise CheckpointError(
                f"no training workdir at {self.path}; pass the --workdir of a `jaxcnn train` run."
            )

    @property
    def checkpoint_dir(self) -> Path:
        """WORKDIR/checkpoints (or WORKDIR itself when given a checkpoints folder)."""
        if self.path.name == CHECKPOINT_DIR and not (self.path / CHECKPOINT_DIR).is_dir():
            return self.path
        return self.path / CHECKPOINT_DIR

    def _json(self, name: str) -> dict[str, Any] | None:
        path = self.path / name
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise CheckpointError(f"cannot read {path}: {err}") from err

    def config(self) -> dict[str, Any]:
        """The config the run trained with (config.json), as a dict."""
        config = self._json(CONFIG_FILE)
        if config is None:
            raise CheckpointError(
                f"{self.path} has no {CONFIG_FILE}: not a jaxcnn training workdir."
            )
        return config

    def info(self) -> dict[str, Any]:
        """What training resolved (run.json): model, model_kwargs, num_classes, input_shape,
        mean, std, class_names, task, best_metric, best_mode."""
        info = self._json(RUN_FILE)
        if info is None:
            raise CheckpointError(
                f"{self.path} has no {RUN_FILE}: it was not written by this version of "
                "jaxcnn's trainer (or training never started). Train again with `jaxcnn train`."
            )
        return info

    def _manager(self) -> Any:
        import orbax.checkpoint as ocp

        info = self._json(RUN_FILE) or {}
        metric, mode = info.get("best_metric"), info.get("best_mode", "max")
        options = ocp.CheckpointManagerOptions(
            read_only=True, create=False,
            best_fn=(lambda m: float(m[metric])) if metric else None, best_mode=mode,
        )
        try:
            return ocp.CheckpointManager(self.checkpoint_dir, options=options,
                                         item_handlers=item_handlers())
        except Exception as err:
            raise CheckpointError(f"cannot read the checkpoints in {self.checkpoint_dir}: "
                                  f"{type(err).__name__}: {err}") from err

    def steps(self) -> list[int]:
        """Every complete checkpoint's step, ascending."""
        if not self.checkpoint_dir.is_dir():
            return []
        with self._manager() as mngr:
            return sorted(mngr.all_steps())

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step (None: no checkpoint)."""
        steps = self.steps()
        return steps[-1] if steps else None

    def best_step(self) -> int | None:
        """The checkpoint with the best validation metric (the latest when none has one)."""
        if not self.checkpoint_dir.is_dir():
            return None
        with self._manager() as mngr:
            best = mngr.best_step()
            return mngr.latest_step() if best is None else best

    def _step(self, step: int | None) -> int:
        chosen = self.best_step() if step is None else step
        if chosen is None:
            raise CheckpointError(
                f"no checkpoint in {self.checkpoint_dir}; train first with --workdir {self.path}."
            )
        if chosen not in self.steps():
            raise CheckpointError(
                f"no checkpoint step {chosen} in {self.checkpoint_dir}; it holds {self.steps()}."
            )
        return chosen

    def meta(self, step: int | None = None) -> dict[str, Any]:
        """The JSON meta saved with checkpoint `step` (default: the best)."""
        import orbax.checkpoint as ocp

        step = self._step(step)
        with self._manager() as mngr:
            restored = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(restored["meta"])

    def restore_tree(self, step: int | None = None) -> tuple[int, dict[str, Any]]:
        """(step, the saved TrainState as a nested dict of host arrays) of checkpoint `step`
        (default: the best)."""
        import orbax.checkpoint as ocp

        step = self._step(step)
        try:
            with self._manager() as mngr:
                tree = mngr.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore()))
        except Exception as err:
            raise CheckpointError(f"cannot restore {self.checkpoint_dir / str(step)}: "
                                  f"{type(err).__name__}: {err}") from err
        return step, dict(tree["state"])

    def variables(self, step: int | None = None) -> tuple[int, dict[str, Any]]:
        """(step, {"params", "batch_stats"}) of checkpoint `step` (default: the best)."""
        step, state = self.restore_tree(step)
        return step, {"params": state["params"], "batch_stats": state.get("batch_stats") or {}}
