"""CPU seconds of a process and its live descendants, read from /proc (Linux), so a
benchmark can charge the worker processes' time to the images they made."""

from __future__ import annotations

import os

_TICK = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def tree_cpu(pid: int | None = None) -> float:
    """user + system CPU seconds of `pid` (default: this process) and all live descendants."""
    todo, total = [pid or os.getpid()], 0.0
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime
        except OSError:
            continue
        todo += _children(p)
    return total
