"""The distribution installs under the `runform` namespace, as a regular wheel and as an editable install."""
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOP_LEVEL = {"dsp": "runform.dsp", "firmware_bridge": "runform.firmware_bridge", "server": "runform.server",
             "dashboards": "runform.dashboards"}
# Child-process prelude: drop the venv's editable finder (meta path finder, namespace path hook and its
# sys.path placeholder), so that only real files on sys.path can satisfy `import runform...`. Third-party
# dependencies stay importable from the venv's site-packages.
NO_EDITABLE = (
    "import sys\n"
    "sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, '__module__', '').startswith('__editable__')]\n"
    "sys.path_hooks[:] = [h for h in sys.path_hooks if not getattr(h, '__module__', '').startswith('__editable__')]\n"
    "sys.path[:] = [p for p in sys.path if '__editable__' not in p and p not in ('', '.')]\n"
    "sys.path_importer_cache.clear()\n"
    "for name in [m for m in sys.modules if m == 'runform' or m.startswith('runform.')]:\n"
    "    del sys.modules[name]\n"
)


def declared_packages() -> list[str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]


def test_every_package_folder_is_declared():
    """A folder with __init__.py that pyproject does not list would be missing from the wheel."""
    found = set()
    for folder, name in TOP_LEVEL.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder).parts
            if "__pycache__" in rel or "node_modules" in rel:
                continue
            found.add(".".join((name, *rel)))
    assert found <= set(declared_packages()), sorted(found - set(declared_packages()))


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
    mods = declared_packages() + ["runform.server.cli"]
    code = (NO_EDITABLE +
            "import importlib, json\n"
            "site = sys.argv[1]\n"
            "if site: sys.path.insert(0, site)\n"
            "out = {}\n"
            "for m in json.loads(sys.argv[2]):\n"
            "    try:\n"
            "        out[m] = importlib.import_module(m).__file__\n"
            "    except ImportError as exc:\n"
            "        out[m] = 'ImportError: ' + str(exc)\n"
            "print(json.dumps({'files': out, 'runform_path': list(sys.modules['runform'].__path__)\n"
            "                  if 'runform' in sys.modules else []}))\n")

    def import_all(site_dir: str) -> dict:
        proc = subprocess.run([sys.executable, "-c", code, site_dir, json.dumps(mods)], capture_output=True,
                              text=True, cwd=str(tmp_path), env={**os.environ, "PYTHONPATH": ""}, check=True)
        return json.loads(proc.stdout)

    # the check can fail: without the wheel's files nothing of runform is importable
    bare = import_all("")
    assert all(f.startswith("ImportError") for f in bare["files"].values()), bare
    res = import_all(str(site))
    bad = {m: f for m, f in res["files"].items() if not (f and Path(f).resolve().is_relative_to(site.resolve()))}
    assert not bad, bad  # every declared package comes from the wheel, none from the checkout
    assert [Path(p).resolve() for p in res["runform_path"]] == [(site / "runform").resolve()]
    # package data travels with the wheel (return-to-run program files)
    assert list((site / "runform" / "server" / "programs").glob("*.toml"))
    # the console script of the wheel runs
    script = site / "bin" / "runform"
    assert script.exists()
    proc = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, env=env,
                          cwd=str(tmp_path))
    assert proc.returncode == 0 and "analyze" in proc.stdout
