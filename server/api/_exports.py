"""Adapter from the API's export route to ``runform.server.exports.export_session``."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ._errors import ApiError

#: file formats -> suffix of the single file written; the others write a directory, sent as a zip
_FILE_SUFFIX = {"hdf5": ".h5", "fit": ".fit"}


def available_formats() -> tuple[str, ...]:
    try:
        from runform.server.exports import FORMATS
    except ImportError:
        return ()
    return tuple(FORMATS)


def run_export(store: Any, session_id: str, tmpdir: Path, fmt: str) -> Path:
    """Export into ``tmpdir`` and return ONE file to send (directories are zipped)."""
    from runform.server.exports import ExportError, export_session
    if fmt in _FILE_SUFFIX:
        out = tmpdir / f"{session_id}{_FILE_SUFFIX[fmt]}"
    else:
        out = tmpdir / f"{session_id}-{fmt}"
    try:
        files = export_session(store, session_id, fmt, out)
    except ExportError as exc:
        raise ApiError(422, "export_failed", str(exc)) from None
    if out.is_dir():
        return Path(shutil.make_archive(str(out), "zip", root_dir=out))
    if out.is_file():
        return out
    files = [Path(f) for f in (files or []) if Path(f).is_file()]
    if len(files) == 1:
        return files[0]
    if not files:
        raise ApiError(500, "export_failed", f"exporter {fmt!r} wrote no file")
    d = tmpdir / f"{session_id}-{fmt}-files"
    d.mkdir()
    for f in files:
        shutil.copy2(f, d / f.name)
    return Path(shutil.make_archive(str(d), "zip", root_dir=d))
