"""Shared fixtures. Area-specific fixtures live in tests/<area>/conftest.py."""
import os
from pathlib import Path

import pytest


def _data_root():
    env = os.environ.get("RUNFORM_DATA")
    for c in ([Path(env)] if env else []) + [Path(__file__).resolve().parents[2] / "shared" / "data"]:
        if c.is_dir():
            return c
    return None


@pytest.fixture(scope="session")
def shared_data():
    root = _data_root()
    if root is None:
        pytest.skip("real recordings not found: set RUNFORM_DATA or place shared/data beside the checkout")
    return root
