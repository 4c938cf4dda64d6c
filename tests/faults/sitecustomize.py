"""Fault injection for the reliability tests, inert unless JAXCNN_FAULT is set.

Put this directory on PYTHONPATH of a `python train.py ...` subprocess and set
  JAXCNN_FAULT=hold:STEP[:SECONDS]  the checkpoint save of STEP pauses (default: an hour) just
                            before orbax commits it (its data is in the temporary directory, not
                            yet renamed) and prints "JAXCNN_FAULT: holding save of step STEP" to
                            stderr, so a test can `kill -9` the process in the middle of that
                            save, or signal it while the save is pending;
  JAXCNN_FAULT=enospc:STEP  the save of STEP fails inside orbax's background commit with
                            OSError(ENOSPC, "No space left on device"), as a full disk does.
Only tests use it; jaxcnn itself has no test hooks. Python imports `sitecustomize` at start-up
from the first sys.path entry that has one, so this file shadows the system's (if any)."""

import errno
import os
import sys
import time

_FAULT = os.environ.get("JAXCNN_FAULT", "")


def _install(kind: str, step: str, seconds: float) -> None:
    from orbax.checkpoint._src.path import atomicity

    original = atomicity.AtomicRenameTemporaryPath.finalize

    async def finalize(self, *args, **kwargs):
        if self.get_final().name == step:
            if kind == "hold":
                print(f"JAXCNN_FAULT: holding save of step {step}", file=sys.stderr, flush=True)
                time.sleep(seconds)
            elif kind == "enospc":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.get()))
        return await original(self, *args, **kwargs)

    atomicity.AtomicRenameTemporaryPath.finalize = finalize


if _FAULT:
    _kind, _step, _seconds = (_FAULT.split(":") + ["3600"])[:3]
    if _kind not in ("hold", "enospc") or not _step.isdigit():
        raise SystemExit(f"JAXCNN_FAULT={_FAULT!r}: expected hold:STEP[:SECONDS] or enospc:STEP")
    _install(_kind, _step, float(_seconds))
