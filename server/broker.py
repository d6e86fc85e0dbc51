"""MQTT broker management: config generation, users/ACL, start/stop/restart, embedded fallback.

The default broker is Mosquitto (Debian ``mosquitto`` 2.0.x) run as a child process with a config file we
generate in a working directory. Everything about who may do what is a *pure function* of an access spec::

    {"users": [{"name": "alice", "password": "...", "role": "runner"},
               {"name": "pt-jo", "password": "...", "role": "therapist", "runners": ["alice"]},
               {"name": "edge", "password": "...", "role": "service"}]}

so the server can later generate the spec from its user store and call :func:`generate_acl` unchanged.

Roles and what the generated ACL allows (topic tree: see docs/mqtt.md):

- ``runner`` (a runner's own phone/edge): read ``runform/v1/{name}/#``; write only the data topics of its own
  subtree (``+/raw``, ``+/steps``, ``metrics``, ``cues``, ``status``, ``control/reply``, ``program``; never
  ``plan``, which only service users write) and its own command topic
  ``runform/v1/{name}/control/{name}``.
- ``therapist``: read ``runform/v1/{runner}/#`` for each assigned runner, write only
  ``runform/v1/{runner}/control/{therapist}``. Commands therefore carry the broker-verified issuer in the topic.
- ``service`` (the edge process, the server): read and write ``runform/v1/#``.
- anonymous clients are refused (``allow_anonymous false``).

Mosquitto 2.0.11 facts that shape this module (measured, /work/shared/reference/mqtt.md):
the websockets listener binds all interfaces unless ``socket_domain ipv4`` is set; ``max_queued_messages``
defaults to 1000 and silently drops QoS1 beyond that (and a subscriber that stops reading costs the broker up to
``max_queued_messages`` x message size: ``max_queued_bytes`` bounds that); SIGTERM right after the first port
opens can kill the process before it saved its DB, so readiness waits for *every* listener.

Embedded fallback (no Mosquitto installed, e.g. ``make demo`` on a machine without apt): ``iotcore`` (pip,
bundles the rumqttd broker) with a generated TOML config. It was the only pip broker that passed v5 + v3.1.1,
QoS1, retained, will, sessions, user properties and message expiry in the measurements; amqtt speaks
MQTT 3.1.1 only (no message expiry, which the cue contract needs) and mqttools has QoS0 only. Its limits:
no password/ACL enforcement in our config (it listens on loopback only and says so in the log), nothing
survives a restart.
"""
from __future__ import annotations

import json
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

__all__ = [
    "BrokerError", "AccessSpecError", "BrokerUser", "AccessSpec", "ROLES", "RESERVED_NAMES",
    "generate_acl", "generate_mosquitto_conf", "free_port", "mosquitto_available", "iotcore_available",
    "MosquittoBroker", "EmbeddedBroker", "start_broker", "wait_for_port",
]

log = logging.getLogger("runform.broker")

TOPIC_ROOT = "runform/v1"
ROLES = ("runner", "therapist", "service")
#: Names that are topic levels of the contract; a user with such a name would make topics ambiguous.
RESERVED_NAMES = frozenset({"raw", "steps", "metrics", "cues", "status", "control", "reply", "+", "#"})
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class BrokerError(RuntimeError):
    """The broker could not be configured, started or stopped. ``log_tail`` holds its last log lines."""

    def __init__(self, message: str, *, log_tail: str = "") -> None:
        super().__init__(message + (f"\n--- broker log tail ---\n{log_tail}" if log_tail else ""))
        self.log_tail = log_tail


class AccessSpecError(ValueError):
    """The user/role spec is invalid; ``user`` names the offending entry (or None)."""

    def __init__(self, message: str, user: str | None = None) -> None:
        super().__init__(message)
        self.user = user


@dataclass(frozen=True)
class BrokerUser:
    name: str
    password: str
    role: str
    runners: tuple[str, ...] = ()


@dataclass(frozen=True)
class AccessSpec:
    """Users and roles; build with :meth:`from_dict` / :meth:`from_json` (validated)."""

    users: tuple[BrokerUser, ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "AccessSpec":
        if not isinstance(data, Mapping) or not isinstance(data.get("users", []), list):
            raise AccessSpecError('access spec must be an object {"users": [...]}')
        users: list[BrokerUser] = []
        seen: set[str] = set()
        for i, u in enumerate(data.get("users", [])):
            if not isinstance(u, Mapping):
                raise AccessSpecError(f"users[{i}] must be an object, got {type(u).__name__}")
            name, password, role = u.get("name"), u.get("password"), u.get("role")
            if not isinstance(name, str) or not _NAME_RE.match(name):
                raise AccessSpecError(
                    f"users[{i}].name {name!r} invalid: 1-64 chars of letters, digits, '_', '.', '-'", user=str(name))
            if name in RESERVED_NAMES:
                raise AccessSpecError(f"users[{i}].name {name!r} is a reserved topic level", user=name)
            if name in seen:
                raise AccessSpecError(f"duplicate user {name!r}", user=name)
            seen.add(name)
            if not isinstance(password, str) or not password or "\n" in password:
                raise AccessSpecError(f"user {name!r}: password must be a non-empty single-line string", user=name)
            if role not in ROLES:
                raise AccessSpecError(f"user {name!r}: role {role!r} not one of {ROLES}", user=name)
            runners = u.get("runners", [])
            if not isinstance(runners, list) or not all(isinstance(r, str) and _NAME_RE.match(r) for r in runners):
                raise AccessSpecError(f"user {name!r}: runners must be a list of runner names", user=name)
            if role != "therapist" and runners:
                raise AccessSpecError(f"user {name!r}: only therapists have assigned runners", user=name)
            users.append(BrokerUser(name, password, role, tuple(runners)))
        return cls(tuple(users))

    @classmethod
    def from_json(cls, path_or_text: str | os.PathLike) -> "AccessSpec":
        p = Path(path_or_text)
        text = p.read_text() if (not str(path_or_text).lstrip().startswith("{") and p.exists()) else str(path_or_text)
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise AccessSpecError(f"access spec is not valid JSON: {exc}") from exc

    def user(self, name: str) -> BrokerUser | None:
        for u in self.users:
            if u.name == name:
                return u
        return None

    def may_control(self, issuer: str, runner: str) -> bool:
        """True if ``issuer`` may send commands to ``runner`` (used by the edge as a second check)."""
        u = self.user(issuer)
        if u is None:
            return False
        return (u.role == "service" or (u.role == "therapist" and runner in u.runners)
                or (u.role == "runner" and u.name == runner))

    @classmethod
    def demo(cls, runners: Iterable[str] = ("runner1",), password: str = "runform") -> "AccessSpec":
        """A spec for demos/tests: one service user ``edge``, one runner user per runner, therapist ``pt``."""
        runners = list(runners)
        users = [{"name": "edge", "password": password, "role": "service"}]
        users += [{"name": r, "password": password, "role": "runner"} for r in runners]
        users.append({"name": "pt", "password": password, "role": "therapist", "runners": runners})
        return cls.from_dict({"users": users})


def generate_acl(spec: AccessSpec) -> str:
    """Mosquitto ACL text for ``spec`` (pure function; deterministic order)."""
    lines = ["# generated by runform.server.broker.generate_acl -- do not edit", "# anonymous: no access", ""]
    for u in spec.users:
        lines.append(f"user {u.name}")
        if u.role == "service":
            lines.append(f"topic readwrite {TOPIC_ROOT}/#")
        elif u.role == "runner":
            base = f"{TOPIC_ROOT}/{u.name}"
            lines.append(f"topic read {base}/#")
            for t in ("+/raw", "+/steps", "metrics", "cues", "status", "control/reply", "program",
                      f"control/{u.name}"):
                lines.append(f"topic write {base}/{t}")
        elif u.role == "therapist":
            for r in u.runners:
                lines.append(f"topic read {TOPIC_ROOT}/{r}/#")
                lines.append(f"topic write {TOPIC_ROOT}/{r}/control/{u.name}")
        lines.append("")
    return "\n".join(lines)


def generate_mosquitto_conf(
    workdir: Path, *, port: int, ws_port: int | None = None, persistence: bool = False,
    max_queued_messages: int = 10000, run_as: str | None = None, have_users: bool = True,
    extra: Iterable[str] = (), max_queued_bytes: int = 16 * 1024 * 1024,
) -> str:
    """The mosquitto.conf text (listeners on 127.0.0.1 only)."""
    workdir = Path(workdir)
    lines = [
        "# generated by runform.server.broker -- do not edit",
        "per_listener_settings false",
        "allow_anonymous false",
    ]
    if have_users:
        lines += [f"password_file {workdir / 'passwd'}", f"acl_file {workdir / 'acl'}"]
    if run_as:
        lines.append(f"user {run_as}")
    lines += [
        f"persistence {'true' if persistence else 'false'}",
        f"persistence_location {workdir / 'data'}/",
        # default 1000 drops QoS1 silently for slow subscribers; bounded, but larger
        f"max_queued_messages {int(max_queued_messages)}",
        # ... and bytes: a subscriber that stops reading (a phone in a tunnel, a hung dashboard) costs the broker
        # at most this much; beyond it the broker drops that client's messages (logged), nobody else's
        f"max_queued_bytes {int(max_queued_bytes)}",
        # cues are small QoS0 messages: with Nagle on, a cue behind an unacknowledged message waits for the
        # subscriber's delayed ACK (up to 40 ms on Linux) before the broker sends it
        "set_tcp_nodelay true",
        "log_dest stderr",
        "log_type error", "log_type warning", "log_type notice", "log_type information",
        "connection_messages true",
        "log_timestamp true",
        *[str(x) for x in extra],  # global options (e.g. "queue_qos0_messages true") before the listeners
        f"listener {int(port)} 127.0.0.1",
    ]
    if ws_port is not None:
        # 2.0.11 binds the ws listener to all interfaces without socket_domain ipv4 (mosquitto #3045)
        lines += [f"listener {int(ws_port)} 127.0.0.1", "socket_domain ipv4", "protocol websockets"]
    return "\n".join(lines) + "\n"


def free_port(host: str = "127.0.0.1") -> int:
    """A currently free TCP port on ``host`` (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_port(port: int, host: str = "127.0.0.1", timeout_s: float = 5.0, proc: subprocess.Popen | None = None) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.01)
    return False


def _find(cmd: str) -> str | None:
    return shutil.which(cmd) or next((p for p in (f"/usr/sbin/{cmd}", f"/usr/bin/{cmd}") if os.access(p, os.X_OK)), None)


def mosquitto_available() -> bool:
    return _find("mosquitto") is not None and _find("mosquitto_passwd") is not None


def iotcore_available() -> bool:
    try:
        import iotcore  # noqa: F401
    except ImportError:
        return False
    return True


class _ProcessBroker:
    """Common start/stop/restart for a broker child process."""

    kind = "?"
    host = "127.0.0.1"

    def __init__(self, workdir: str | os.PathLike, *, port: int | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._port_given = bool(port)
        self.port = int(port) if port else free_port()
        self._proc: subprocess.Popen | None = None
        self._log_file = None
        self.log_path = self.workdir / f"{self.kind}.log"

    # subclasses: _command(), _ports(), _prepare()
    def _command(self) -> list[str]:
        raise NotImplementedError

    def _ports(self) -> list[int]:
        return [self.port]

    def _prepare(self) -> None:
        pass

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def start(self, timeout_s: float = 10.0) -> "_ProcessBroker":
        if self.running:
            return self
        self._prepare()
        self._log_file = open(self.log_path, "ab")
        self._proc = subprocess.Popen(self._command(), stdout=self._log_file, stderr=subprocess.STDOUT,
                                      stdin=subprocess.PIPE, cwd=self.workdir, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        for p in self._ports():  # every listener, not just the first (early SIGTERM can lose the DB)
            if not wait_for_port(p, self.host, max(0.1, deadline - time.monotonic()), self._proc):
                rc = self._proc.poll()
                self.kill()
                raise BrokerError(f"{self.kind} did not start listening on {self.host}:{p} (exit code {rc})",
                                  log_tail=self.log_tail())
        log.info("%s pid %d listening on %s:%s", self.kind, self._proc.pid, self.host, self._ports())
        return self

    def stop(self, timeout_s: float = 5.0) -> int | None:
        """SIGTERM (clean shutdown, persistence DB written), SIGKILL after ``timeout_s``. Returns the exit code."""
        if self._proc is None:
            return None
        proc, self._proc = self._proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self._close_io(proc)
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL: a crash (nothing saved)."""
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        self._close_io(proc)

    def _close_io(self, proc: subprocess.Popen) -> None:
        if proc.stdin:
            try:
                proc.stdin.close()
            except OSError:
                pass
        if self._log_file:
            self._log_file.close()
            self._log_file = None

    def pause(self) -> None:
        """SIGSTOP the broker (a hung/slow broker for overload tests); :meth:`resume` continues it."""
        if self.running:
            os.kill(self._proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.running:
            os.kill(self._proc.pid, signal.SIGCONT)

    def restart(self, down_s: float = 0.0, *, crash: bool = False) -> "_ProcessBroker":
        """Stop (or kill with ``crash=True``), stay down ``down_s`` seconds, start on the same port(s)."""
        self.kill() if crash else self.stop()
        if down_s > 0:
            time.sleep(down_s)
        return self.start()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"


class MosquittoBroker(_ProcessBroker):
    """Mosquitto in a child process with a generated config in ``workdir``.

    Parameters
    ----------
    workdir : directory for mosquitto.conf, passwd, acl, data/ and mosquitto.log
    access : users/roles; ``None`` -> :meth:`AccessSpec.demo`
    port : TCP port on 127.0.0.1 (None: a free one)
    websockets : also open a websockets listener on 127.0.0.1 (``ws_port``)
    persistence : keep retained messages / sessions across a clean restart
    """

    kind = "mosquitto"

    def __init__(self, workdir: str | os.PathLike, access: AccessSpec | None = None, *, port: int | None = None,
                 websockets: bool = False, ws_port: int | None = None, persistence: bool = False,
                 max_queued_messages: int = 10000, max_queued_bytes: int = 16 * 1024 * 1024,
                 extra_conf: Iterable[str] = ()) -> None:
        super().__init__(workdir, port=port)
        self.extra_conf = list(extra_conf)
        if not mosquitto_available():
            raise BrokerError("mosquitto is not installed (Debian: apt-get install mosquitto mosquitto-clients)")
        self.access = access if access is not None else AccessSpec.demo()
        self.ws_port = (int(ws_port) if ws_port else free_port()) if websockets else None
        self.persistence = persistence
        self.max_queued_messages = max_queued_messages
        self.max_queued_bytes = max_queued_bytes
        self.conf_path = self.workdir / "mosquitto.conf"

    def _ports(self) -> list[int]:
        return [self.port] + ([self.ws_port] if self.ws_port else [])

    def _prepare(self) -> None:
        (self.workdir / "data").mkdir(exist_ok=True)
        # run as the invoking user: as root mosquitto would drop to user 'mosquitto', which cannot enter
        # private (0700) temp directories; the files below are ours anyway
        run_as = pwd.getpwuid(os.geteuid()).pw_name
        self.write_files(run_as=run_as)

    def write_files(self, run_as: str | None = None) -> None:
        """Write mosquitto.conf, acl and a hashed password file (``mosquitto_passwd -U``)."""
        acl = self.workdir / "acl"
        acl.write_text(generate_acl(self.access))
        pw = self.workdir / "passwd"
        fd = os.open(pw, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            for u in self.access.users:
                f.write(f"{u.name}:{u.password}\n")
        res = subprocess.run([_find("mosquitto_passwd"), "-U", str(pw)], capture_output=True, text=True)
        if res.returncode != 0:
            raise BrokerError(f"mosquitto_passwd -U failed: {res.stderr.strip() or res.stdout.strip()}")
        self.conf_path.write_text(generate_mosquitto_conf(
            self.workdir, port=self.port, ws_port=self.ws_port, persistence=self.persistence,
            max_queued_messages=self.max_queued_messages, run_as=run_as, have_users=True,
            extra=self.extra_conf, max_queued_bytes=self.max_queued_bytes))

    def _command(self) -> list[str]:
        return [_find("mosquitto"), "-c", str(self.conf_path)]

    def start(self, timeout_s: float = 10.0) -> "MosquittoBroker":
        try:
            return super().start(timeout_s)
        except BrokerError as exc:
            if "Address already in use" in exc.log_tail and not self._port_given:
                self.port = free_port()  # lost the race for the free port: pick another one once
                return super().start(timeout_s)
            raise


class EmbeddedBroker(_ProcessBroker):
    """rumqttd (via the ``iotcore`` wheel) in a child process; v5 and v3.1.1 listeners on 127.0.0.1.

    No authentication or ACL is enforced: use only on a single machine for demos.
    """

    kind = "iotcore"

    def __init__(self, workdir: str | os.PathLike, access: AccessSpec | None = None, *, port: int | None = None,
                 v311_port: int | None = None, **_ignored: Any) -> None:
        super().__init__(workdir, port=port)
        if not iotcore_available():
            raise BrokerError("embedded broker needs the 'iotcore' package (pip install iotcore)")
        self.v311_port = int(v311_port) if v311_port else free_port()
        self.access = access
        self.conf_path = self.workdir / "rumqttd.toml"

    def _ports(self) -> list[int]:
        return [self.port, self.v311_port]

    def _prepare(self) -> None:
        conn = ("connection_timeout_ms = 60000\nmax_payload_size = 1048576\nmax_inflight_count = 500\n"
                "dynamic_filters = true\n")
        self.conf_path.write_text(
            "# generated by runform.server.broker (embedded fallback, no auth)\n"
            "id = 0\n\n[router]\nid = 0\nmax_connections = 10010\nmax_outgoing_packet_count = 1000\n"
            "max_segment_size = 104857600\nmax_segment_count = 10\n\n"
            f'[v5.1]\nname = "v5-1"\nlisten = "127.0.0.1:{self.port}"\nnext_connection_delay_ms = 1\n'
            f"    [v5.1.connections]\n{conn}\n"
            f'[v4.1]\nname = "v4-1"\nlisten = "127.0.0.1:{self.v311_port}"\nnext_connection_delay_ms = 1\n'
            f"    [v4.1.connections]\n{conn}")
        log.warning("embedded broker (rumqttd via iotcore): NO authentication/ACL; loopback only")

    def _command(self) -> list[str]:
        return [sys.executable, "-m", "iotcore", "--config", str(self.conf_path), "--log-level", "WARNING"]


def start_broker(workdir: str | os.PathLike, access: AccessSpec | None = None, *, prefer: str = "auto",
                 **kwargs: Any) -> _ProcessBroker:
    """Start Mosquitto if installed (``prefer='auto'|'mosquitto'``), else the embedded fallback."""
    if prefer == "mosquitto" or (prefer == "auto" and mosquitto_available()):
        return MosquittoBroker(workdir, access, **kwargs).start()
    if prefer in ("auto", "embedded"):
        if not iotcore_available():
            raise BrokerError("no MQTT broker available: install mosquitto (apt-get install mosquitto) "
                              "or the embedded fallback (pip install iotcore)")
        kwargs.pop("websockets", None), kwargs.pop("persistence", None), kwargs.pop("ws_port", None)
        return EmbeddedBroker(workdir, access, **kwargs).start()
    raise ValueError(f"prefer must be 'auto', 'mosquitto' or 'embedded', got {prefer!r}")
