"""Shared by the reliability tests: run the real `python train.py` in a subprocess (with a
forced CPU device count, a compilation cache shared by the test session, and optional fault
injection from tests/faults), watch its output while it runs, and read saved checkpoints."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `from configs import smoke` in tests/reliability_config.py
CONFIG = str(ROOT / "tests" / "reliability_config.py")
FAULTS = str(ROOT / "tests" / "faults")
# Wall-clock values that legitimately differ between two runs of the same command.
TIMING_KEYS = {"train_seconds", "compile_seconds", "images_per_second", "wall_seconds",
               "workdir", "epoch_seconds"}


class Train:
    """`python train.py --config tests/reliability_config.py --workdir DIR ...` running in the
    background; stdout/stderr lines are collected by threads so a test can wait for one."""

    def __init__(self, workdir: Path, *flags: str, devices: int = 1, fault: str = "",
                 cache_dir: Path | None = None, config: str = CONFIG):
        env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAXCNN_FAULT")}
        env["JAX_PLATFORMS"] = "cpu"
        if devices > 1:
            env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
        if cache_dir is not None:
            # Every process compiles the same step: compile it once per test session.
            env["JAX_COMPILATION_CACHE_DIR"] = str(cache_dir)
            env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
            env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
        if fault:
            env["JAXCNN_FAULT"] = fault
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [FAULTS, env.get("PYTHONPATH")]))
        self.cmd = [sys.executable, "train.py", "--config", config, "--workdir", str(workdir),
                    *flags]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.out: list[str] = []
        self.err: list[str] = []
        self._new = threading.Condition()
        self._threads = [threading.Thread(target=self._pump, args=(s, buf), daemon=True)
                         for s, buf in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for t in self._threads:
            t.start()

    def _pump(self, stream, buf: list[str]) -> None:
        for line in stream:
            with self._new:
                buf.append(line)
                self._new.notify_all()

    def wait_for_stderr(self, text: str, timeout: float = 240) -> None:
        """Block until a stderr line contains `text` (fails if the process ends first)."""
        deadline = time.monotonic() + timeout
        with self._new:
            while not any(text in line for line in self.err):
                if self.proc.poll() is not None and not any(t.is_alive() for t in self._threads):
                    raise AssertionError(f"train.py ended (rc {self.proc.returncode}) before "
                                         f"printing {text!r}:\n{self.stderr[-3000:]}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"no {text!r} on stderr after {timeout} s")
                self._new.wait(0.05)

    def signal(self, sig: int) -> None:
        """Send `sig` (SIGKILL, SIGTERM) to the running train.py."""
        self.proc.send_signal(sig)

    def finish(self, timeout: float = 300) -> int:
        """Wait for the exit; returns the exit code (negative: killed by that signal)."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGKILL)
            raise
        for t in self._threads:
            t.join(10)
        self.seconds = time.monotonic() - self.started
        print(f"[{self.seconds:.1f} s] {' '.join(self.cmd[1:])} -> {rc}", file=sys.stderr)
        return rc

    @property
    def stdout(self) -> str:
        return "".join(self.out)

    @property
    def stderr(self) -> str:
        return "".join(self.err)

    def result(self) -> dict:
        """The final JSON line train.py prints on success."""
        return json.loads(self.out[-1])


def run_train(workdir: Path, *flags: str, **kwargs) -> Train:
    """Run train.py to completion."""
    t = Train(workdir, *flags, **kwargs)
    t.finish()
    return t


def complete_steps(workdir: Path) -> list[int]:
    """Steps whose checkpoint directory is committed (orbax renames temporaries at the end)."""
    d = Path(workdir) / "checkpoints"
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


def temp_dirs(workdir: Path) -> list[str]:
    """Uncommitted (temporary) checkpoint directories."""
    d = Path(workdir) / "checkpoints"
    return sorted(p.name for p in d.iterdir() if "tmp" in p.name) if d.is_dir() else []


def read_checkpoint(workdir: Path, step: int) -> dict[str, np.ndarray]:
    """Every array of checkpoint `step` as {"params/conv/kernel": host array}."""
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(read_only=True)
    with ocp.CheckpointManager(Path(workdir).absolute() / "checkpoints", options=options,
                               item_names=("state", "meta")) as mngr:
        tree = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    flat = jax.tree_util.tree_flatten_with_path(tree["state"])[0]
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in flat}


def epoch_records(workdir: Path) -> list[dict]:
    """metrics.jsonl without wall-clock fields."""
    lines = (Path(workdir) / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS}
            for line in lines if line.strip()]


def without_timing(result: dict) -> dict:
    """A train.py result dict without wall-clock fields."""
    return {k: v for k, v in result.items() if k not in TIMING_KEYS}
