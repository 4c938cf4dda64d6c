"""The installed package: every jaxcnn package is in the wheel's package list (configs/ as
jaxcnn.configs), and, from a wheel built and installed without the source tree (slow),
`jaxcnn train --config NAME` and `python -m jaxcnn.train` run from any directory."""

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_of_the_tree_is_in_the_wheel_list():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    tree = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "jaxcnn").rglob(
        "__init__.py")}
    assert tree | {"jaxcnn.configs"} == listed, "add new packages to [tool.setuptools] packages"
    assert setuptools["package-dir"] == {"jaxcnn.configs": "configs"}


@pytest.mark.slow
def test_wheel_installs_training_that_runs_from_any_directory(tmp_path):
    """Build the wheel, install it (no deps: they come from this environment, a venv with
    --system-site-packages) and train from an empty directory, where only the installed
    package (and its configs) can be imported."""
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)],
                   check=True, capture_output=True, timeout=600)
    wheel = next(dist.glob("jaxcnn-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                   check=True, timeout=300)
    py, exe = venv / "bin" / "python", venv / "bin" / "jaxcnn"
    # --system-site-packages reaches the base interpreter's packages, not this environment's
    # (itself a venv): point the new venv at them with a .pth file (no .pth of theirs runs,
    # so this environment's own editable jaxcnn stays out).
    site = subprocess.run([str(py), "-c", "import site; print(site.getsitepackages()[0])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    import site as this

    Path(site, "parent_env.pth").write_text("\n".join(this.getsitepackages()) + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
                   check=True, timeout=300)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XLA_FLAGS")}
    located = subprocess.run([str(py), "-c", "import jaxcnn, jaxcnn.configs.smoke as s; "
                              "print(jaxcnn.__file__, s.__file__)"], cwd=work, env=env,
                             capture_output=True, text=True, timeout=300)
    assert str(venv) in located.stdout and str(ROOT) not in located.stdout, located.stderr
    for cmd in ([str(exe), "train"], [str(py), "-m", "jaxcnn.train"]):
        proc = subprocess.run([*cmd, "--config", "smoke", "--workdir", "run",
                               "--config.num_epochs=1"], cwd=work, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        assert result["epochs"] == 1 and (work / "run" / "run.json").exists()
    assert subprocess.run([str(exe), "--version"], capture_output=True, text=True,
                          timeout=120).stdout.startswith("jaxcnn ")
