"""A training run directory, read-only: everything `jaxcnn.train.fit` leaves in a workdir,
for the code that uses a trained model (warm start, similarity, predict, siamese evaluation,
benchmarks) without importing the training package.

    WORKDIR/config.json          the config as run (`jaxcnn.train.fit` writes it)
    WORKDIR/run.json             what training resolved: model name and options, num_classes,
                                 input shape, mean/std, class names, the selection metric
    WORKDIR/checkpoints/STEP/    orbax checkpoints: item "state" (the TrainState as a dict of
                                 arrays) and item "meta" (JSON), validation metrics attached;
                                 a run on the host input pipeline adds item "data" (each
                                 process's pipeline state, data/process_I-of-N.json)

The best checkpoint is the one with the best validation metric (`run.json`'s best_metric
and best_mode; the latest one when no checkpoint has metrics).

Every checkpoint's meta carries the sha256 of each array of its state, written at save time
(`tree_digests`), and of each process's input-pipeline state file when the run streams its
data (`data_file_digests`); restoring recomputes them and checks the parameters and
BatchNorm statistics are finite (`restore_step`). A step that cannot be restored as saved
(garbled or missing meta, an emptied directory, a zeroed, deleted or bit-flipped array file,
an edited or missing pipeline state file) is a `CheckpointDamage` naming the step directory
and why, and every reader falls back to the next older good checkpoint, saying so."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from jaxcnn.errors import CheckpointError

CONFIG_FILE = "config.json"
RUN_FILE = "run.json"
CHECKPOINT_DIR = "checkpoints"
ITEM_NAMES = ("state", "meta")
DIGESTS = "digests"  # meta key: {"params/conv1/kernel": sha256 hex, ...}
META_DIGEST = "meta_sha256"  # meta key: sha256 of the rest of the meta (history, digests)
DATA_ITEM = "data"  # the item holding the host input pipeline's state, one file per process
DATA_DIGESTS = "data_sha256"  # meta key: {"process_0-of-2.json": sha256 hex of its bytes}
_FINITE = ("params/", "batch_stats/")  # restored model variables must be finite


class CheckpointDamage(CheckpointError):
    """A checkpoint step directory that cannot be restored as it was saved: `path`, `why`."""

    def __init__(self, path: Path, why: str):
        self.path, self.why = Path(path), why
        super().__init__(f"checkpoint {path} is damaged: {why}")


def flat_dict(tree: Any, sep: str = "/", prefix: str = "") -> dict[str, Any]:
    """{"a/b/c": leaf} of a nested dict (None is an empty subtree, as in jax and orbax)."""
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(flat_dict(v, sep, f"{prefix}{k}{sep}"))
        return out
    return {} if tree is None else {prefix[:-len(sep)]: tree}


def _sha256(leaf: Any) -> str:
    a = np.asarray(leaf)
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())  # (ascontiguousarray makes 0-d 1-d)
    h.update(np.ascontiguousarray(a).reshape(-1).view(np.uint8))  # hashlib drops the GIL
    return h.hexdigest()


def tree_digests(tree: dict[str, Any]) -> dict[str, str]:
    """sha256 of every array of a nested dict of host arrays (dtype, shape and bytes),
    keyed by path; written into a checkpoint's meta at save time."""
    flat = flat_dict(tree)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return dict(zip(flat, pool.map(_sha256, flat.values()), strict=True))


def sealed_meta(meta: dict[str, Any], tree: dict[str, Any]) -> dict[str, Any]:
    """`meta` with the digests of the host arrays `tree` and a sha256 of itself, as written
    into a checkpoint (`verify_meta` and `verify_tree` check them on restore)."""
    meta = {**meta, DIGESTS: tree_digests(tree)}
    return {**meta, META_DIGEST: _json_sha256(meta)}


def _json_sha256(meta: dict[str, Any]) -> str:
    body = {k: v for k, v in meta.items() if k != META_DIGEST}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def verify_meta(meta: dict[str, Any], path: Path) -> None:
    """CheckpointDamage unless a checkpoint's meta matches the sha256 written in it (meta
    written before it existed has none)."""
    if META_DIGEST in meta and meta[META_DIGEST] != _json_sha256(meta):
        raise CheckpointDamage(path, "its meta/metadata does not match the sha256 written with "
                                     "it (a changed byte that is still valid JSON)")


def data_file(process_index: int, process_count: int) -> str:
    """The name grain's orbax handler gives a process's input-pipeline state file."""
    return f"process_{process_index}-of-{process_count}.json"


def data_file_digests(raw: bytes) -> dict[str, str]:
    """{file name: sha256} of every process's input-pipeline state file, `raw` being the
    bytes this process writes (gathered from all processes in a multi-process run: the
    collective runs where every process saves), for a checkpoint's meta (`verify_data`)."""
    import jax

    digest = np.frombuffer(hashlib.sha256(raw).digest(), np.uint8)
    n = jax.process_count()
    if n > 1:
        from jax.experimental import multihost_utils

        rows = np.asarray(multihost_utils.process_allgather(digest)).reshape(n, -1)
    else:
        rows = digest[None]
    return {data_file(i, n): bytes(row).hex() for i, row in enumerate(rows)}


def verify_data(meta: dict[str, Any], path: Path) -> None:
    """CheckpointDamage unless every input-pipeline state file the meta lists (all processes'
    files, so every process of a run takes the same decision) is present with the sha256
    written at save time (checkpoints without pipeline state list none)."""
    for name, want in sorted(meta.get(DATA_DIGESTS, {}).items()):
        f = path / DATA_ITEM / name
        try:
            got = hashlib.sha256(f.read_bytes()).hexdigest()
        except OSError as err:
            raise CheckpointDamage(path, f"its input-pipeline state {DATA_ITEM}/{name} is not "
                                         f"readable ({err.strerror or err})") from None
        if got != want:
            raise CheckpointDamage(path, f"its input-pipeline state {DATA_ITEM}/{name} differs "
                                         "from the sha256 written at save time (an edited or "
                                         "torn file)")


def host_tree(tree: Any) -> Any:
    """Host numpy copies of a tree of (replicated) jax arrays; with several processes each
    reads its own replica."""
    import jax

    def one(x: Any) -> np.ndarray:
        if isinstance(x, jax.Array) and not x.is_fully_addressable and x.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        return np.asarray(jax.device_get(x))

    return jax.tree.map(one, tree)


def verify_tree(tree: dict[str, Any], meta: dict[str, Any], path: Path) -> None:
    """CheckpointDamage unless the host arrays `tree` restored from `path` match the digests
    in `meta` (checkpoints written before digests existed have none) and the parameters and
    BatchNorm statistics are finite."""
    flat = flat_dict(tree)
    expected = meta.get(DIGESTS)
    if expected is not None:
        got = tree_digests(tree)
        bad = sorted(k for k in set(expected) | set(got) if expected.get(k) != got.get(k))
        if bad:
            raise CheckpointDamage(path, (
                f"{len(bad)} array(s) differ from the sha256 written at save time, e.g. "
                f"{', '.join(bad[:3])} (a flipped bit, a torn or edited file)"))
    nonfinite = [k for k, v in flat.items() if k.startswith(_FINITE)
                 and np.issubdtype(np.asarray(v).dtype, np.floating)
                 and not np.isfinite(v).all()]
    if nonfinite:
        raise CheckpointDamage(path, f"{', '.join(nonfinite[:3])} hold NaN or inf")


def damage_reason(err: BaseException, path: Path) -> str:
    """A one-line reason for an exception raised while reading the checkpoint at `path`: the
    innermost cause (tensorstore's "Error reading ... ZSTD ... failed" beneath orbax's
    wrapper), its file names relative to the step directory."""
    if isinstance(err, json.JSONDecodeError):
        return f"its meta/metadata is not valid JSON ({err.msg} at line {err.lineno})"
    if path.is_dir() and not any(path.iterdir()):
        return "the step directory is empty"
    chain = [err]
    while (nxt := chain[-1].__cause__ or chain[-1].__context__) is not None and len(chain) < 8:
        chain.append(nxt)
    inner = next((e for e in reversed(chain) if str(e).strip()), err)
    text = str(inner).strip().splitlines()[0].replace(f"{path}/", "").replace(str(path), ".")
    return f"{type(inner).__name__}: {text[:300].rstrip('. ')}"


def unreadable_metrics(directory: Path) -> list[Path]:
    """Step directories whose validation metrics (orbax's STEP/metrics/metrics) are not
    valid JSON: orbax cannot even open the checkpoint folder when it ranks steps by them."""
    bad = []
    for file in Path(directory).glob("*/metrics/metrics"):
        try:
            json.loads(file.read_text())
        except (OSError, UnicodeDecodeError, ValueError):
            bad.append(file.parent.parent)
    return sorted(bad)


def restore_step(manager: Any, directory: Path, step: int, state_args: Any = None,
                 ) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(state tree, meta without its digests) of checkpoint `step` through the orbax
    `manager` (state_args: an orbax StandardRestore, e.g. with a sharded target; the state
    is not read when it is None), verified against its digests (the state's arrays and the
    input-pipeline state files with it); CheckpointDamage otherwise."""
    import orbax.checkpoint as ocp

    path = directory / str(step)
    args = {"meta": ocp.args.JsonRestore()}
    if state_args is not None:
        args["state"] = state_args
    try:
        restored = manager.restore(step, args=ocp.args.Composite(**args))
        meta = restored["meta"]
        if not isinstance(meta, dict):
            raise CheckpointDamage(path, f"its meta is a {type(meta).__name__}, not a dict")
        verify_meta(meta, path)
        if state_args is not None:
            verify_data(meta, path)
        tree = dict(restored["state"]) if state_args is not None else None
    except CheckpointDamage:
        raise
    except Exception as err:  # orbax / tensorstore / json raise many unrelated types
        raise CheckpointDamage(path, damage_reason(err, path)) from err
    if tree is not None:
        verify_tree(host_tree(tree), meta, path)
    return tree, {k: v for k, v in meta.items() if k not in (DIGESTS, META_DIGEST, DATA_DIGESTS)}


def first_good(candidates: list[int], restore: Callable[[int], Any], directory: Path,
               on_damage: Callable[[CheckpointDamage], None] | None = None) -> tuple[int, Any]:
    """(step, restore(step)) of the first candidate step that restores; each damaged one is
    reported (a warning naming its directory and why, then `on_damage`) and skipped. All
    damaged: CheckpointError listing them."""
    damaged = []
    for step in candidates:
        try:
            return step, restore(step)
        except CheckpointDamage as err:
            damaged.append(err)
            later = "the next older one" if step != candidates[-1] else "none is left"
            warnings.warn(f"{err}; using {later}.", stacklevel=3)
            if on_damage is not None:
                on_damage(err)
    raise CheckpointError(
        f"no usable checkpoint in {directory}: " + "; ".join(str(e) for e in damaged)
        + ". Train again with a fresh --workdir (the damaged steps are kept for inspection)."
    )


def item_handlers(data: bool = False) -> dict[str, Any]:
    """The orbax handlers of a checkpoint's items (declared up front, so a fresh manager can
    read metadata and restore): "state" and "meta", and with `data` the host input
    pipeline's iterator state ("data": grain's handler, one JSON file per process)."""
    import orbax.checkpoint as ocp

    handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
    if data:
        import grain

        handlers["data"] = grain.checkpoint.CheckpointHandler()
    return handlers


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
        bad = unreadable_metrics(self.checkpoint_dir)
        if bad and metric:
            warnings.warn(
                f"the validation metrics of {', '.join(map(str, bad))} are not readable: the "
                "checkpoints are taken newest first instead of best first.", stacklevel=3)
            metric = None
        options = ocp.CheckpointManagerOptions(
            read_only=True, create=False,
            best_fn=(lambda m: float(m[metric])) if metric else None, best_mode=mode,
            lightweight_initialize=bool(bad),  # orbax would read (and fail on) every metric
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

    def _candidates(self, step: int | None) -> list[int]:
        """The steps to try: `step` alone when given; else the best, then the others newest
        first (a damaged best falls back to the next older good checkpoint)."""
        steps = self.steps()
        if step is not None:
            if step not in steps:
                raise CheckpointError(
                    f"no checkpoint step {step} in {self.checkpoint_dir}; it holds {steps}.")
            return [step]
        best = self.best_step()
        if best is None:
            raise CheckpointError(
                f"no checkpoint in {self.checkpoint_dir}; train first with --workdir {self.path}."
            )
        return [best] + sorted((s for s in steps if s != best), reverse=True)

    def restore(self, step: int | None = None) -> tuple[int, dict[str, Any], dict[str, Any]]:
        """(step, the saved TrainState as a nested dict of arrays, its meta) of checkpoint
        `step` (default: the best good one; damaged ones are skipped with a warning naming
        them), verified against the digests written at save time."""
        import orbax.checkpoint as ocp

        candidates = self._candidates(step)
        with self._manager() as mngr:
            restore = lambda s: restore_step(mngr, self.checkpoint_dir, s,
                                             ocp.args.StandardRestore())
            if step is not None:  # an explicit step is never swapped for another
                return step, *restore(step)
            step, (tree, meta) = first_good(candidates, restore, self.checkpoint_dir)
        return step, tree, meta

    def meta(self, step: int | None = None) -> dict[str, Any]:
        """The JSON meta saved with checkpoint `step` (default: the best good one)."""
        return self.restore(step)[2]

    def restore_tree(self, step: int | None = None) -> tuple[int, dict[str, Any]]:
        """(step, the saved TrainState as a nested dict of host arrays) of checkpoint `step`
        (default: the best good one)."""
        step, tree, _ = self.restore(step)
        return step, tree

    def variables(self, step: int | None = None) -> tuple[int, dict[str, Any]]:
        """(step, {"params", "batch_stats"}) of checkpoint `step` (default: the best good
        one)."""
        step, state = self.restore_tree(step)
        return step, {"params": state["params"], "batch_stats": state.get("batch_stats") or {}}
