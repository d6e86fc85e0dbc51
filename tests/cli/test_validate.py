"""`runform validate`: a data folder named explicitly must be one (no silent fallback to ../shared/data)."""
import os
import subprocess
import sys

import pytest


def validate(tmp_path, *args, env_data=None):
    env = {k: v for k, v in os.environ.items() if k != "RUNFORM_DATA"}
    if env_data is not None:
        env["RUNFORM_DATA"] = str(env_data)
    out = tmp_path / "report" / "accuracy.md"
    proc = subprocess.run([sys.executable, "-m", "runform.server.cli", "validate", "--out", str(out), *args],
                          capture_output=True, text=True, timeout=120, env=env, cwd=str(tmp_path))
    return proc, out


@pytest.mark.parametrize("how", ["missing_arg", "not_data_arg", "file_arg", "missing_env", "not_data_env"])
def test_named_data_folder_that_is_not_one_is_an_error(tmp_path, how):
    not_data = tmp_path / "some_folder"
    not_data.mkdir()
    (not_data / "trial.csv").write_text("time_s,acc_x_g\n")
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("x")
    missing = tmp_path / "does_not_exist"
    target = {"missing": missing, "not_data": not_data, "file": a_file}[how.rsplit("_", 1)[0]]
    if how.endswith("_arg"):
        proc, out = validate(tmp_path, "--data", str(target))
        source = "--data"
    else:
        proc, out = validate(tmp_path, env_data=target)
        source = "RUNFORM_DATA"
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert f"{source} '{target}'" in proc.stderr, proc.stderr
    why = {"missing": "does not exist", "not_data": "has no README.md", "file": "is not a directory"}
    assert why[how.rsplit("_", 1)[0]] in proc.stderr, proc.stderr
    assert not out.exists() and proc.stdout == ""  # nothing was validated against some other folder


def test_data_root_follows_the_named_folder(tmp_path, monkeypatch):
    from runform.server import validation as V

    data = tmp_path / "data"
    data.mkdir()
    (data / "README.md").write_text("shared data\n")
    monkeypatch.delenv("RUNFORM_DATA", raising=False)
    assert V.data_root(data) == data
    monkeypatch.setenv("RUNFORM_DATA", str(data))
    assert V.data_root() == data
    with pytest.raises(V.DataRootError, match="--data"):  # the argument wins over the environment
        V.data_root(tmp_path / "nope")
