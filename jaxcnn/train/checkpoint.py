"""Checkpoints with orbax: a `CheckpointManager` in `workdir/checkpoints` that keeps the N
latest steps AND the best by a validation metric (preservation policies `LatestN` +
`BestN`), with the config and what the run resolved saved beside (`workdir/config.json`,
`workdir/run.json`; the layout, and reading it, is `jaxcnn.rundir`). Saves are atomic
(orbax writes a temporary directory and renames it), so a killed save is never taken for the
latest; a failed async save is re-raised as CheckpointError with the path and the reason."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh
from orbax.checkpoint import checkpoint_managers as ocm

from jaxcnn.data.pipeline import replicated
from jaxcnn.errors import CheckpointError
from jaxcnn.rundir import (
    CHECKPOINT_DIR,
    DATA_DIGESTS,
    DATA_ITEM,
    RUN_FILE,
    CheckpointDamage,
    damage_reason,
    data_file,
    data_file_digests,
    first_good,
    host_tree,
    item_handlers,
    restore_step,
    sealed_meta,
    unreadable_metrics,
)
from jaxcnn.train.distributed import is_writer
from jaxcnn.train.state import TrainState, flat_shapes, state_to_tree, tree_to_state

DAMAGED_DIR = "damaged_checkpoints"  # where a writer moves checkpoints it cannot restore


def check_same_structure(saved: dict[str, tuple], wanted: dict[str, tuple], where: str) -> None:
    """Raise CheckpointError naming the first path whose presence or shape differs; when the
    model's variables all match and only the optimizer state differs, say that."""
    differs = [p for p in set(saved) | set(wanted)
               if p not in saved or p not in wanted or tuple(saved[p][0]) != tuple(wanted[p][0])]
    if differs and all(p.startswith(("opt_state/", "slow/")) for p in differs):
        only_saved = sorted(p for p in differs if p not in wanted)[:2]
        only_wanted = sorted(p for p in differs if p not in saved)[:2]
        shapes = sorted(p for p in differs if p in saved and p in wanted)[:2]
        raise CheckpointError(
            f"{where} was written with another optimizer: the model's parameters match, its "
            f"optimizer state does not (checkpoint only: {only_saved}, this config only: "
            f"{only_wanted}, other shapes: {shapes}). Resume with the optimizer settings of "
            "the run (optimizer.*, schedule.name, transfer.freeze, lookahead), use a fresh "
            "--workdir, or "
            "start a new run from its weights with --config.init.path=WORKDIR."
        )
    # Parameters first: their optimizer moments mismatch too, but the parameter is the news.
    for path in sorted(set(saved) | set(wanted), key=lambda p: (not p.startswith("params/"), p)):
        if path not in saved:
            raise CheckpointError(
                f"{where} has no entry {path!r} (expected shape {wanted[path][0]}): it was "
                "written for another architecture. Use a fresh --workdir, or the same model."
            )
        if path not in wanted:
            raise CheckpointError(
                f"{where} holds {path!r} with shape {saved[path][0]} that the current model "
                "does not have: it was written for another architecture."
            )
        if tuple(saved[path][0]) != tuple(wanted[path][0]):
            raise CheckpointError(
                f"{where}: {path!r} has shape {tuple(saved[path][0])} in the checkpoint but "
                f"{tuple(wanted[path][0])} in the current model (another architecture or "
                "num_classes?). Use a fresh --workdir, or set config.init.reinit_head=True "
                "when loading initial weights."
            )


class Checkpointer:
    """Saves and restores TrainStates (plus a JSON `meta` dict) in `workdir/checkpoints`."""

    def __init__(self, workdir: str | os.PathLike, *, keep: int = 3, keep_best: bool = True,
                 best_metric: str = "accuracy", best_mode: str = "max",
                 async_save: bool = True, read_only: bool = False, data: bool = False):
        self.directory = Path(workdir).absolute() / CHECKPOINT_DIR
        self.read_only = read_only
        self.data = data  # checkpoints carry the host input pipeline's state
        self.best_metric = best_metric
        bad = unreadable_metrics(self.directory)
        for step_dir in bad:
            if read_only:
                keep_best = False  # orbax cannot rank the steps; take them newest first
            else:
                shutil.rmtree(step_dir / "metrics")
            print(f"checkpoint {step_dir}: its validation metrics (metrics/metrics) are not "
                  "readable; " + ("ranking checkpoints by recency." if read_only else
                                  "removed them (the step is kept, without metrics)."),
                  file=sys.stderr, flush=True)
        get = lambda m: float(m[best_metric])
        policies: list[Any] = [ocm.LatestN(n=keep)]
        if keep_best:
            policies.append(ocm.BestN(get_metric_fn=get, reverse=best_mode == "min", n=1,
                                      keep_checkpoints_without_metrics=False))
        options = ocp.CheckpointManagerOptions(
            preservation_policy=None if read_only else ocm.AnyPreservationPolicy(policies),
            best_fn=get if keep_best else None,
            best_mode=best_mode,
            keep_checkpoints_without_metrics=True,
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,
            create=not read_only,
            read_only=read_only,
            lightweight_initialize=read_only and bool(bad),  # orbax would fail on the metrics
        )
        try:
            self.manager = ocp.CheckpointManager(self.directory, options=options,
                                                 item_handlers=item_handlers(data))
        except OSError as err:
            raise CheckpointError(
                f"cannot use checkpoint directory {self.directory}: {err.strerror or err}"
            ) from None
        self._pending: int | None = None

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step (temporary dirs never count)."""
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        """The step with the best validation metric (the latest if none has metrics)."""
        return self.manager.best_step()

    def all_steps(self) -> list[int]:
        """Every complete checkpoint's step."""
        return list(self.manager.all_steps())

    def wait(self) -> None:
        """Block until the pending async save is on disk; re-raise its failure."""
        try:
            self.manager.wait_until_finished()
        except Exception as err:
            step = self._pending
            self._pending = None
            raise CheckpointError(
                f"saving checkpoint step {step} to {self.directory} failed: "
                f"{type(err).__name__}: {err}"
            ) from err
        self._pending = None

    def save(self, step: int, state: TrainState, meta: dict, metrics: dict | None = None,
             data: dict | None = None) -> None:
        """Save `state` at `step` (async); a failure of the previous save is raised here.
        `data`: this process's input-pipeline state (JSON), written by grain's handler while
        `save` runs, so it is the state of `step` even though the arrays are written later."""
        self.wait()
        if step in self.manager.all_steps():
            return
        tree = state_to_tree(state)
        pipeline = _PipelineState(data) if self.data else None
        if pipeline is not None:  # every process's pipeline state file is digested too
            meta = {**meta, DATA_DIGESTS: data_file_digests(pipeline.get_state())}
        # The digests of what is saved go into the same (atomic) checkpoint.
        meta = sealed_meta(meta, host_tree(tree))
        items = {"state": ocp.args.StandardSave(tree), "meta": ocp.args.JsonSave(meta)}
        if pipeline is not None:
            import grain

            items[DATA_ITEM] = grain.checkpoint.CheckpointSave(pipeline)
        try:
            self.manager.save(
                step,
                args=ocp.args.Composite(**items),
                metrics=metrics,
                force=True,
            )
        except Exception as err:
            raise CheckpointError(
                f"saving checkpoint step {step} to {self.directory} failed: "
                f"{type(err).__name__}: {err}"
            ) from err
        self._pending = step

    def read_data(self, step: int) -> dict | None:
        """This process's input-pipeline state saved with `step` (None when it has none: a
        checkpoint of an in-memory run, or of another process count)."""
        import grain
        from jax import process_count, process_index

        name = data_file(process_index(), process_count())
        if not self.data or not (self.directory / str(step) / DATA_ITEM / name).exists():
            return None
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(**{
                DATA_ITEM: grain.checkpoint.CheckpointRestore(_PipelineState())}))
        except Exception as err:
            raise CheckpointError(f"cannot read the input-pipeline state of checkpoint "
                                  f"{self.directory / str(step)}: {type(err).__name__}: {err}"
                                  ) from err
        return restored[DATA_ITEM].state

    def read_meta(self, step: int) -> dict:
        """The JSON `meta` dict saved with `step` (CheckpointDamage if unreadable)."""
        return restore_step(self.manager, self.directory, step)[1]

    def restore(self, step: int, target: TrainState, mesh: Mesh) -> tuple[TrainState, dict]:
        """(state, meta) of `step`, laid out replicated on `mesh` (any device count), after
        checking every path and shape against `target` (CheckpointError naming the first
        difference) and verifying the arrays against their digests (CheckpointDamage)."""
        path = self.directory / str(step)
        try:
            metadata = self.manager.item_metadata(step)["state"]
            saved = {k: (v[0], v[1]) for k, v in _metadata_shapes(metadata).items()}
        except Exception as err:
            raise CheckpointDamage(path, damage_reason(err, path)) from err
        if not saved:
            raise CheckpointDamage(path, "its state holds no arrays (an emptied directory?)")
        wanted_tree = state_to_tree(target)
        check_same_structure(saved, flat_shapes(wanted_tree), f"checkpoint {path}")
        rep = replicated(mesh)
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=rep), wanted_tree
        )
        tree, meta = restore_step(self.manager, self.directory, step,
                                  ocp.args.StandardRestore(abstract))
        return tree_to_state(target, tree), meta

    def restore_good(self, target: TrainState, mesh: Mesh, first: int | None = None
                     ) -> tuple[int, TrainState, dict] | None:
        """(step, state, meta) of the newest checkpoint that restores as saved, trying
        `first` before the others (None: no checkpoint). A damaged one is named with the
        reason and skipped; a writable Checkpointer also moves it to
        WORKDIR/damaged_checkpoints/ so that the run saves that step again."""
        steps = sorted(self.manager.all_steps(), reverse=True)
        if not steps:
            return None
        order = ([first] if first in steps else []) + [s for s in steps if s != first]
        moved = []

        def set_aside(err: CheckpointDamage) -> None:
            if self.read_only:
                return
            stamp = time.strftime("%Y%m%d-%H%M%S")
            dest = self.directory.parent / DAMAGED_DIR / f"{err.path.name}-{stamp}"
            dest.parent.mkdir(exist_ok=True)
            shutil.move(err.path, dest)
            moved.append(dest)
            print(f"moved the damaged checkpoint {err.path} to {dest}", file=sys.stderr,
                  flush=True)

        try:
            step, (state, meta) = first_good(order, lambda s: self.restore(s, target, mesh),
                                             self.directory, set_aside)
        finally:
            if moved:
                self.manager.reload()
        return step, state, meta

    def close(self) -> None:
        """Wait for pending saves (raising their failure) and release the manager."""
        try:
            self.wait()
        finally:
            self.manager.close()


class _PipelineState:
    """What grain's orbax handler saves and restores for us: one process's input-pipeline
    state as JSON bytes (its protocol for iterators that are not grain's own); the handler
    writes exactly these bytes, which the checkpoint's meta digests."""

    def __init__(self, state: dict | None = None):
        self.state = state

    def get_state(self) -> bytes:
        return json.dumps(self.state).encode()

    def set_state(self, raw: bytes) -> None:
        self.state = json.loads(raw)

    def start_prefetch(self) -> None:
        """Nothing to start: the pipeline is positioned by `StreamData.restore`."""


def _metadata_shapes(metadata: Any) -> dict[str, tuple]:
    """{"path": (shape, dtype)} from orbax's tree metadata."""
    tree = getattr(metadata, "tree", metadata)
    leaves = jax.tree_util.tree_flatten_with_path(
        tree, is_leaf=lambda x: hasattr(x, "shape") and hasattr(x, "dtype")
    )[0]
    out = {}
    for path, leaf in leaves:
        name = "/".join(str(getattr(p, "key", getattr(p, "idx", p))) for p in path)
        out[name] = (tuple(leaf.shape), str(leaf.dtype))
    return out


def _atomic_write(path: Path, text: str) -> Path:
    if not is_writer():  # one writer in a multi-process run: process 0
        return path
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def save_run_info(workdir: str | os.PathLike, info: dict[str, Any]) -> Path:
    """Write what the run resolved (`workdir/run.json`, read by `jaxcnn.rundir.RunDir.info`)."""
    return _atomic_write(Path(workdir) / RUN_FILE, json.dumps(info, indent=2, sort_keys=True))
