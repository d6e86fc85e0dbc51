"""Mosquitto password file + ACL generated from the user store (a thin adapter over ``runform.server.broker``).

``broker.generate_acl`` (pure) knows the roles runner / therapist / service; this adapter maps the store's roles
onto it and adds what it lacks:

- ``lab``: read-only ``runform/v1/{runner}/#`` for each participant of its granted studies who is enrolled NOW
  (no control topic): the files change when enrollment changes and when an enrollment window opens or closes;
- ``admin``: the ``service`` rule (read/write ``runform/v1/#``);
- passwords: the store keeps Mosquitto ``$7$`` hashes, so the password file is written from them directly
  (``MosquittoBroker.write_files`` needs plaintext passwords and runs ``mosquitto_passwd -U``);
- disabled users and users without MQTT access are left out of both files.

Files are replaced atomically (write to a temp file, ``os.replace``); Mosquitto re-reads both on SIGHUP, and
:class:`BrokerSync` sends it when the store's ``access_epoch`` changes: its ``revision`` (any change, also from
the CLI ``runform user ...`` in another process: the server polls) or the number of enrollment window boundaries
the clock has passed (a window opening or closing with no change to the store).
"""
from __future__ import annotations

import logging
import os
import pwd
import signal
import threading
from pathlib import Path
from typing import Callable

from runform.server.broker import (TOPIC_ROOT, AccessSpec, BrokerUser, MosquittoBroker, generate_acl,
                                   generate_mosquitto_conf)

from ._store import ROLE_ADMIN, ROLE_LAB, ROLE_RUNNER, ROLE_SERVICE, ROLE_THERAPIST, UserStore

__all__ = ["access_spec_from_store", "acl_text", "password_file_text", "write_broker_files", "BrokerSync",
           "StoreMosquittoBroker"]

log = logging.getLogger("runform.auth.mqtt")
_PLACEHOLDER = "-"  # generate_acl never reads passwords; AccessSpec needs a non-empty one


def access_spec_from_store(store: UserStore) -> AccessSpec:
    """The store's MQTT users as a broker ``AccessSpec`` (labs are not representable there: see :func:`acl_text`)."""
    users: list[BrokerUser] = []
    for name, role, _hash in store.mqtt_credentials():
        if role == ROLE_RUNNER:
            users.append(BrokerUser(name, _PLACEHOLDER, "runner"))
        elif role == ROLE_THERAPIST:
            users.append(BrokerUser(name, _PLACEHOLDER, "therapist", tuple(store.assigned_runners(name))))
        elif role in (ROLE_SERVICE, ROLE_ADMIN):
            users.append(BrokerUser(name, _PLACEHOLDER, "service"))
    return AccessSpec(tuple(users))


def acl_text(store: UserStore) -> str:
    text = generate_acl(access_spec_from_store(store))
    labs = [n for n, role, _ in store.mqtt_credentials() if role == ROLE_LAB]
    extra = ["# labs: read-only access to the participants of granted studies enrolled now "
             "(runform.server.auth adapter)"]
    now = store.clock()
    for lab in labs:
        extra.append(f"user {lab}")
        extra += [f"topic read {TOPIC_ROOT}/{r}/#" for r in store.enrolled_runners(lab, now)]
        extra.append("")
    return text.rstrip("\n") + "\n\n" + "\n".join(extra) + "\n"


def password_file_text(store: UserStore) -> str:
    return "".join(f"{name}:{h}\n" for name, _role, h in store.mqtt_credentials())


def _atomic_write(path: Path, text: str, mode: int = 0o600) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_broker_files(store: UserStore, workdir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``passwd`` and ``acl`` into ``workdir`` (atomically, mode 0600); returns their paths."""
    d = Path(workdir)
    d.mkdir(parents=True, exist_ok=True)
    pw, acl = d / "passwd", d / "acl"
    _atomic_write(pw, password_file_text(store))
    _atomic_write(acl, acl_text(store))
    return pw, acl


class BrokerSync:
    """Regenerates the broker files when the user store changes and tells Mosquitto (SIGHUP).

    ``pid`` is an int or a callable returning the broker's pid (None: only write the files). Call :meth:`sync`
    directly, or :meth:`start` a polling thread (``interval_s``) that notices changes made by other processes.
    """

    def __init__(self, store: UserStore, workdir: str | os.PathLike, pid: int | Callable[[], int | None] | None = None,
                 *, interval_s: float = 1.0) -> None:
        self.store = store
        self.workdir = Path(workdir)
        self._pid = pid
        self.interval_s = interval_s
        self.revision: int | None = None
        self.boundaries: int | None = None  # enrollment window boundaries passed at the last sync
        self.reloads = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _pid_now(self) -> int | None:
        return self._pid() if callable(self._pid) else self._pid

    def sync(self, force: bool = False) -> bool:
        """Write the files and SIGHUP the broker if the store changed or an enrollment window opened/closed (or
        ``force``); True if it did."""
        rev, passed = self.store.access_epoch()
        if not force and rev == self.revision and passed == self.boundaries:
            return False
        write_broker_files(self.store, self.workdir)
        self.revision, self.boundaries = rev, passed
        pid = self._pid_now()
        if pid:
            try:
                os.kill(pid, signal.SIGHUP)
                self.reloads += 1
                log.info("broker files regenerated (user store revision %d); SIGHUP sent to pid %d", rev, pid)
            except ProcessLookupError:
                log.warning("broker pid %d is gone; files written, no reload", pid)
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sync()
            except Exception:  # keep polling; the next change retries
                log.exception("broker file sync failed")

    def start(self) -> "BrokerSync":
        self.sync(force=True)
        self._thread = threading.Thread(target=self._run, name="runform-broker-sync", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)


class StoreMosquittoBroker(MosquittoBroker):
    """:class:`~runform.server.broker.MosquittoBroker` whose users/ACL come from a :class:`UserStore`.

    :meth:`reload` (or a :class:`BrokerSync` from :meth:`sync`) applies store changes without a restart.
    """

    def __init__(self, workdir: str | os.PathLike, store: UserStore, **kwargs) -> None:
        super().__init__(workdir, AccessSpec(()), **kwargs)
        self.store = store
        self._sync: BrokerSync | None = None

    def write_files(self, run_as: str | None = None) -> None:
        write_broker_files(self.store, self.workdir)
        self.conf_path.write_text(generate_mosquitto_conf(
            self.workdir, port=self.port, ws_port=self.ws_port, persistence=self.persistence,
            max_queued_messages=self.max_queued_messages, run_as=run_as, have_users=True,
            extra=self.extra_conf))

    def reload(self) -> bool:
        """Regenerate passwd/acl from the store and SIGHUP Mosquitto (now, even if nothing changed)."""
        return self.sync_helper().sync(force=True)

    def sync_helper(self, interval_s: float = 1.0) -> BrokerSync:
        if self._sync is None:
            self._sync = BrokerSync(self.store, self.workdir, lambda: self.pid if self.running else None,
                                    interval_s=interval_s)
        return self._sync

    def _prepare(self) -> None:
        (self.workdir / "data").mkdir(exist_ok=True)
        self.write_files(run_as=pwd.getpwuid(os.geteuid()).pw_name)
        self.sync_helper().revision, self.sync_helper().boundaries = self.store.access_epoch()

    def stop(self, timeout_s: float = 5.0):
        if self._sync is not None:
            self._sync.stop()
        return super().stop(timeout_s)
