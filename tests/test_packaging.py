"""The distribution installs under the `runform` namespace, as a regular wheel and as an editable install."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SUBPACKAGES = ["runform.dsp", "runform.firmware_bridge", "runform.firmware_bridge.protocols",
               "runform.server", "runform.server.cli", "runform.dashboards"]


def test_editable_install_maps_top_level_folders():
    code = "import runform.dsp, runform.firmware_bridge, runform.server, runform.dashboards; " \
           "print(runform.dsp.__file__); print(runform.firmware_bridge.__file__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=True).stdout
    dsp_file, fb_file = out.split()
    assert Path(dsp_file).resolve() == REPO / "dsp" / "__init__.py"
    assert Path(fb_file).resolve() == REPO / "firmware_bridge" / "__init__.py"


def test_no_top_level_names_that_could_collide():
    """Only the `runform` namespace is installed: no importable `dsp`, `server`, ... outside the repo."""
    code = "import importlib.util as u; print([m for m in ('dsp','server','firmware_bridge','dashboards') " \
           "if u.find_spec(m)])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.slow
def test_regular_wheel_install(tmp_path):
    wheel_dir = tmp_path / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheel_dir), str(REPO)], check=True, capture_output=True, text=True)
    wheel = next(wheel_dir.glob("runform-*.whl"))
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, text=True)
    assert not (site / "runform" / "__init__.py").exists()  # PEP 420 namespace
    env = {**os.environ, "PYTHONPATH": str(site)}
    code = ("import importlib, sys\n"
            f"mods = {SUBPACKAGES!r}\n"
            "for m in mods:\n"
            "    mod = importlib.import_module(m)\n"
            "    print(mod.__file__)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(tmp_path), env=env,
                         check=True).stdout.split()
    assert len(out) == len(SUBPACKAGES)
    assert all(Path(p).resolve().is_relative_to(site.resolve()) for p in out), out
    # package data travels with the wheel (return-to-run program files)
    assert list((site / "runform" / "server" / "programs").glob("*.toml"))
    # the console script of the wheel runs
    script = site / "bin" / "runform"
    assert script.exists()
    proc = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, env=env,
                          cwd=str(tmp_path))
    assert proc.returncode == 0 and "analyze" in proc.stdout
