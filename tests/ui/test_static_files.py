"""The dashboards' static files: every referenced file exists, the vendored libraries match VERSIONS, and no
HTML carries inline scripts/styles (the server's CSP would block them)."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

STATIC = Path(__file__).resolve().parents[2] / "dashboards" / "static"


def test_references_exist_and_no_inline_code():
    pages = sorted(STATIC.rglob("*.html"))
    assert {p.parent.name for p in pages} >= {"therapist", "runner", "lab"}
    for page in pages:
        html = page.read_text()
        for ref in re.findall(r'(?:src|href)="([^"#?:]+)"', html):
            if ref.endswith("/"):
                ref += "index.html"
            assert (page.parent / ref).resolve().exists(), f"{page}: {ref} missing"
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), f"{page}: inline script"
        assert " style=" not in html and "<style" not in html, f"{page}: inline style"


def test_vendored_files_match_versions():
    vendor = STATIC / "vendor"
    lines = (vendor / "VERSIONS").read_text().splitlines()
    files = [ln.split() for ln in lines if ln.startswith("  ")]
    assert {f for f, _ in files} >= {"uPlot.iife.min.js", "uPlot.min.css", "uPlot.LICENSE"}
    for name, digest in files:
        assert hashlib.sha256((vendor / name).read_bytes()).hexdigest() == digest, name
