"""`runform user ...` (real CLI process) and the server over TLS (uvicorn with a self-signed certificate)."""
from __future__ import annotations

import datetime
import ssl
import subprocess
import sys
import threading
import time

import httpx
import pytest

from runform.server.auth import UserStore, acl_text, password_file_text, verify_mosquitto_hash
from runform.server.broker import free_port

from .conftest import PASSWORD


def run_cli(*args, stdin=None):
    """The first call runs a real `runform` process; the rest call the same main() in-process (fast)."""
    global _first
    if _first:
        _first = False
        return subprocess.run([sys.executable, "-m", "runform.server.cli", *args], input=stdin,
                              capture_output=True, text=True, timeout=60)
    import contextlib
    import io
    from runform.server.cli import main
    out, err = io.StringIO(), io.StringIO()
    old = sys.stdin
    sys.stdin = io.StringIO(stdin or "")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(list(args))
            except SystemExit as exc:
                rc = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.stdin = old
    return subprocess.CompletedProcess(args, rc, out.getvalue(), err.getvalue())


_first = True


def test_user_cli_and_generated_broker_files(tmp_path):
    db = str(tmp_path / "u.db")
    assert run_cli("user", "--users", db, "add", "amy", "--role", "runner", "--password-stdin",
                   stdin="amy-secret-1\n").returncode == 0
    assert run_cli("user", "--users", db, "add", "tom", "--role", "therapist", "--password-stdin",
                   stdin="tom-secret-1\n").returncode == 0
    assert run_cli("user", "--users", db, "add", "lab1", "--role", "lab", "--password-stdin",
                   stdin="lab-secret-1\n").returncode == 0
    assert run_cli("user", "--users", db, "assign", "tom", "amy").returncode == 0
    assert run_cli("user", "--users", db, "study", "add", "s1", "--title", "Gait 2024").returncode == 0
    assert run_cli("user", "--users", db, "study", "enroll", "s1", "amy", "--from", "2024-01-01").returncode == 0
    assert run_cli("user", "--users", db, "grant", "lab1", "--study", "s1").returncode == 0
    bad = run_cli("user", "--users", db, "assign", "amy", "tom")  # wrong roles: clear error, exit 1
    assert bad.returncode == 1 and "role" in bad.stderr
    bad = run_cli("user", "--users", db, "add", "x", "--role", "runner", "--password-stdin", stdin="short\n")
    assert bad.returncode == 1 and "too short" in bad.stderr and "short\n" not in bad.stderr.replace("too short", "")
    bad = run_cli("user", "--users", db, "add", "status", "--role", "runner", "--no-password")
    assert bad.returncode == 1 and "reserved" in bad.stderr
    out = run_cli("user", "--users", db, "list").stdout
    assert "tom" in out and "amy" in out and "amy-secret" not in out
    assert run_cli("user", "--users", db, "passwd", "amy", "--password-stdin", stdin="amy-secret-2\n").returncode == 0
    s = UserStore(db)
    try:
        assert s.authenticate("amy", "amy-secret-2").role == "runner"
        pw = password_file_text(s)
        amy_hash = next(l.split(":", 1)[1] for l in pw.splitlines() if l.startswith("amy:"))
        assert verify_mosquitto_hash(amy_hash, "amy-secret-2") and not verify_mosquitto_hash(amy_hash, "amy-secret-1")
        assert "secret" not in pw
        acl = acl_text(s)
        assert "user tom\ntopic read runform/v1/amy/#\ntopic write runform/v1/amy/control/tom" in acl
        assert "user lab1\ntopic read runform/v1/amy/#" in acl
        lab_block = acl.split("user lab1")[1]
        assert "write" not in lab_block
    finally:
        s.close()


def test_study_cli_round_trip(tmp_path):
    db = str(tmp_path / "u.db")

    def cli(*a, stdin=None):
        return run_cli("user", "--users", db, *a, stdin=stdin)

    def lab_block(store):
        return acl_text(store).split("user lab1\n")[1].split("\n\n")[0]
    assert cli("add", "amy", "--role", "runner", "--no-password").returncode == 0
    assert cli("add", "lab1", "--role", "lab", "--password-stdin", stdin="lab-secret-1\n").returncode == 0
    r = cli("study", "add", "s1", "--title", "Gait 2024")
    assert r.returncode == 0 and "s1" in r.stdout
    r = cli("study", "enroll", "s1", "amy", "--from", "2024-01-01T00:00:00Z", "--to", "2024-02-01")
    assert r.returncode == 0 and "[2024-01-01T00:00:00Z, 2024-02-01T00:00:00Z)" in r.stdout, r
    assert cli("grant", "lab1", "--study", "s1").returncode == 0
    s = UserStore(db)
    try:
        st = s.get_study("s1")
        assert st.title == "Gait 2024" and st.labs == ("lab1",)
        assert [(p.runner, p.enrolled_from_unix_s, p.enrolled_to_unix_s) for p in st.participants] == \
            [("amy", 1704067200.0, 1706745600.0)]
        assert "amy" not in lab_block(s)  # a past window: no live/MQTT access now
        assert cli("study", "enroll", "s1", "amy", "--from", "1704067200").returncode == 0  # unix s, open-ended
        assert s.lab_windows("lab1") == {"amy": ((1704067200.0, None),)}
        assert "topic read runform/v1/amy/#" in lab_block(s)
        out = cli("study", "list").stdout
        assert "s1  Gait 2024  labs: lab1" in out and "2024-01-01T00:00:00Z .. open" in out
        assert any(l.startswith("lab1") and l.rstrip().endswith("s1") for l in cli("list").stdout.splitlines())
        # refusals: clear message, exit 1 (argparse usage errors: 2), nothing changed
        for args, text in ((("study", "enroll", "s1", "amy", "--from", "yesterday"), "ISO 8601"),
                           (("study", "enroll", "s1", "amy", "--from", "2024-03-01", "--to", "2024-02-01"), "empty"),
                           (("study", "enroll", "nope", "amy"), "no study"),
                           (("study", "enroll", "s1", "lab1"), "role"),
                           (("grant", "lab1", "--study", "nope"), "no study"),
                           (("grant", "amy", "--study", "s1"), "role"),
                           (("study", "add", "s1"), "already exists"),
                           (("study", "add", "bad name"), "invalid study name")):
            r = cli(*args)
            assert r.returncode == 1 and text in r.stderr, (args, r)
        assert cli("grant", "lab1", "amy").returncode == 2  # the per-runner form is gone: --study is required
        assert s.lab_windows("lab1") == {"amy": ((1704067200.0, None),)}
        assert cli("revoke", "lab1", "--study", "s1").returncode == 0
        assert s.get_study("s1").labs == () and "amy" not in lab_block(s)
        assert cli("study", "unenroll", "s1", "amy").returncode == 0
        assert cli("study", "delete", "s1").returncode == 0
        assert s.list_studies() == [] and cli("study", "list").stdout.strip() == "no studies"
    finally:
        s.close()


def _self_signed(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cf, kf = tmp_path / "cert.pem", tmp_path / "key.pem"
    cf.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    kf.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    return cf, kf


def test_tls_and_secure_cookie(tmp_path, app_factory):
    import uvicorn
    cf, kf = _self_signed(tmp_path)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app_factory(), host="127.0.0.1", port=port, ssl_certfile=str(cf),
                                           ssl_keyfile=str(kf), log_level="warning", lifespan="on"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started
        with httpx.Client(base_url=f"https://localhost:{port}", verify=ssl.create_default_context(cafile=str(cf))) as c:
            assert c.get("/healthz").json()["ok"] is True
            r = c.post("/api/v1/auth/login", json={"username": "alice", "password": PASSWORD, "mode": "cookie"})
            assert r.status_code == 200
            sess = next(x for x in r.headers.get_list("set-cookie") if x.startswith("rf_session="))
            assert "Secure" in sess and "HttpOnly" in sess
            assert "max-age=31536000" in r.headers["strict-transport-security"]
        with pytest.raises(httpx.ConnectError):  # the cert is not trusted by default: TLS really is on
            httpx.get(f"https://localhost:{port}/healthz")
        with pytest.raises(httpx.HTTPError):  # and plain HTTP is not served on the TLS port
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=3)
    finally:
        server.should_exit = True
        th.join(10)
