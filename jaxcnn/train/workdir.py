"""The workdir of a training run as its writer sees it: created and probed for writing, held
by one run at a time (an fcntl lock the kernel drops when the holder dies, so it is never
stale), and bound to one config: resuming with another config is refused, naming every
changed key with both values, unless the change is allowed explicitly; allowed changes are
appended to WORKDIR/config_history.jsonl, never silently overwritten."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ml_collections

from jaxcnn.errors import CheckpointError, ConfigError, WorkdirInUseError
from jaxcnn.rundir import CHECKPOINT_DIR, CONFIG_FILE
from jaxcnn.train.config import default_config

LOCK_FILE = ".lock"
UNSET = "(unset)"  # a free-form key (model.kwargs.X) one of two configs does not set
HISTORY_FILE = "config_history.jsonl"
# Keys a resumed run may change without --allow_config_change: how long and how verbosely it
# runs, and where the data lives on this machine; none changes what is computed.
RESUMABLE = ("num_epochs", "progress", "log_every", "log.", "debug_nans",
             "checkpoint.async_save", "data.on_device", "data.cache_dir", "data.data_dir",
             "data.manual_dir", "data.download")  # "group." covers the whole group


def resumable(key: str) -> bool:
    """Whether `key` may change when a run is resumed (see RESUMABLE)."""
    return any(key == r or r.endswith(".") and key.startswith(r) for r in RESUMABLE)


def prepare_workdir(workdir: Path) -> None:
    """Create `workdir`, or raise CheckpointError naming it when it is not writable."""
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise CheckpointError(
            f"cannot write to workdir {workdir}: {err.strerror or err}. Choose a writable "
            "--workdir."
        ) from None


@contextlib.contextmanager
def lock_workdir(workdir: Path) -> Iterator[None]:
    """Hold an exclusive fcntl lock on WORKDIR/.lock (which records the holder's pid) while
    the block runs; only process 0 of a multi-process run takes it. A second run on the same
    workdir raises WorkdirInUseError at once, naming the holder's pid."""
    import fcntl

    import jax

    if jax.process_index() != 0:
        yield
        return
    fd = os.open(workdir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise WorkdirInUseError(
                f"workdir {workdir} in use by pid {holder}: another run trains there (two runs "
                "would interleave checkpoints and metrics.jsonl). Wait for it, stop it, or "
                "use another --workdir."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def committed_steps(workdir: Path) -> list[int]:
    """Steps with a committed checkpoint directory (orbax's temporaries carry a suffix)."""
    d = workdir / CHECKPOINT_DIR
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"a.b": value} of a config dict; unlike rundir.flat_dict a None value is kept (a
    config key set to None is a value to compare)."""
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tree}


def config_changes(saved: dict[str, Any], config: ml_collections.ConfigDict
                   ) -> dict[str, tuple[Any, Any]]:
    """{key: (saved value, new value)} of every key whose value differs between a saved
    config.json and `config` (a key one side lacks counts with its default, or UNSET)."""
    new = _flat(json.loads(config.to_json_best_effort()))
    old = _flat(saved)
    defaults = _flat(json.loads(default_config().to_json_best_effort()))
    changes = {}
    for key in sorted(set(new) | set(old)):
        before, after = (c.get(key, defaults.get(key, UNSET)) for c in (old, new))
        if before != after:
            changes[key] = (before, after)
    return changes


def check_config(workdir: Path, config: ml_collections.ConfigDict, *,
                 allow_change: bool = False) -> dict[str, tuple[Any, Any]]:
    """Compare `config` with the config.json of the run in `workdir` before anything is
    loaded: ConfigError naming every changed key and both values unless each change is in
    RESUMABLE or `allow_change`. Returns the changes ({} for a fresh workdir). A config.json
    without any checkpoint means the previous run stopped before its first checkpoint: that
    is said on stderr, and the run starts over."""
    path = workdir / CONFIG_FILE
    steps = committed_steps(workdir)
    if not path.is_file():
        return {}
    if not steps:
        when = datetime.datetime.fromtimestamp(path.stat().st_mtime).isoformat(timespec="seconds")
        print(f"note: {workdir} holds a run that stopped before its first checkpoint (config.json "
              f"of {when}, no checkpoint): starting from step 0.", file=sys.stderr, flush=True)
        return {}
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(
            f"{path} is not readable ({err}): the config of the run to resume is unknown. "
            "Restore it, or use a fresh --workdir.") from None
    changes = config_changes(saved, config)
    refused = {k: v for k, v in changes.items() if not resumable(k)}
    if refused and not allow_change:
        listed = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in refused.items())
        raise ConfigError(
            f"{workdir} holds a run (latest checkpoint step {steps[-1]}) trained with another "
            f"config; resuming would mix the two. Changed: {listed}. Rerun with the values of "
            "its config.json, use a fresh --workdir, or pass --allow_config_change "
            "(fit(..., allow_config_change=True)) to resume with the new values (recorded in "
            f"{HISTORY_FILE})."
        )
    return changes


def record_config(workdir: Path, config: ml_collections.ConfigDict,
                  changes: dict[str, tuple[Any, Any]], resumed_at: int | None) -> None:
    """Write the run's config to WORKDIR/config.json; when a resumed run changed it (see
    `check_config`), first append the changes to config_history.jsonl. Process 0 of a
    multi-process run writes; the others return."""
    from jaxcnn.train.distributed import is_writer

    if not is_writer():
        return
    if changes and resumed_at is not None:
        refused = [k for k in changes if not resumable(k)]
        entry = {"time": datetime.datetime.now().isoformat(timespec="seconds"),
                 "resumed_at_step": resumed_at,
                 "changes": {k: [old, new] for k, (old, new) in changes.items()},
                 "allowed_by": "--allow_config_change" if refused else "resumable keys"}
        with (workdir / HISTORY_FILE).open("a") as f:
            f.write(json.dumps(entry, sort_keys=True) + "\n")
    path = workdir / CONFIG_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(config.to_json_best_effort(indent=2, sort_keys=True))
    os.replace(tmp, path)
