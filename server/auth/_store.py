"""The user store: users, roles, therapist assignments, studies, login tokens, per-runner targets (SQLite).

One SQLite file (WAL) with its own tables, separate from the session store so that user data can be backed up,
moved or wiped on its own. Passwords are kept only as hashes: argon2id for logins, and Mosquitto's ``$7$``
PBKDF2-SHA512 for MQTT (see :mod:`._passwords`). Tokens are kept only as SHA-256 digests: a copy of the database
does not let anyone log in. Every change that affects broker access increments ``revision``; the server polls
it and regenerates the Mosquitto password file/ACL (:mod:`._mqtt`).

Studies are the unit labs are granted: a study has participants (runner + enrollment window
``[enrolled_from_unix_s, enrolled_to_unix_s)``, open-ended when ``enrolled_to_unix_s`` is None) and granted labs.
A lab sees a session only if its runner is a participant of a granted study and the session started inside that
participant's window (:meth:`UserStore.lab_windows`, :class:`._policy.Access`). Schema 2 replaced the per-runner
lab grants of schema 1: opening a schema-1 file migrates each granted runner into a study named after the runner
(window from 0 = the whole history, open-ended), granted to the same labs, so no lab loses or gains access.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import re
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from runform.server.broker import RESERVED_NAMES

from ._errors import AuthenticationError, TokenError, UnknownStudyError, UnknownUserError, UserStoreError
from ._passwords import (MQTT_PBKDF2_ITERATIONS, check_password_policy, hash_password, mosquitto_hash,
                         needs_rehash, verify_password)

__all__ = ["ROLES", "ROLE_RUNNER", "ROLE_THERAPIST", "ROLE_LAB", "ROLE_ADMIN", "ROLE_SERVICE",
           "User", "TokenInfo", "Study", "Participant", "UserStore", "open_user_store", "TOKEN_KIND_BEARER",
           "TOKEN_KIND_COOKIE", "MAX_STUDY_TITLE_LENGTH"]

log = logging.getLogger("runform.auth")

ROLE_RUNNER, ROLE_THERAPIST, ROLE_LAB, ROLE_ADMIN, ROLE_SERVICE = "runner", "therapist", "lab", "admin", "service"
#: ``service`` = machine accounts (edge processes, the server's own MQTT client): MQTT only, no HTTP login.
ROLES = (ROLE_RUNNER, ROLE_THERAPIST, ROLE_LAB, ROLE_ADMIN, ROLE_SERVICE)
TOKEN_KIND_BEARER, TOKEN_KIND_COOKIE = "bearer", "cookie"
_TOKEN_PREFIX = "rft_"
_SCHEMA_VERSION = 2
MAX_STUDY_TITLE_LENGTH = 200

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    pw_hash TEXT,
    mqtt_hash TEXT,
    disabled INTEGER NOT NULL DEFAULT 0,
    created_unix_s REAL NOT NULL,
    password_changed_unix_s REAL
);
CREATE TABLE IF NOT EXISTS assignments (
    therapist TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    runner TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    PRIMARY KEY (therapist, runner)
);
CREATE TABLE IF NOT EXISTS studies (
    name TEXT PRIMARY KEY,
    title TEXT NOT NULL DEFAULT '',
    created_unix_s REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS study_participants (
    study TEXT NOT NULL REFERENCES studies(name) ON DELETE CASCADE,
    runner TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    enrolled_from_unix_s REAL NOT NULL,
    enrolled_to_unix_s REAL,
    PRIMARY KEY (study, runner)
);
CREATE INDEX IF NOT EXISTS study_participants_runner ON study_participants(runner);
CREATE TABLE IF NOT EXISTS study_grants (
    study TEXT NOT NULL REFERENCES studies(name) ON DELETE CASCADE,
    lab TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    PRIMARY KEY (study, lab)
);
CREATE INDEX IF NOT EXISTS study_grants_lab ON study_grants(lab);
CREATE TABLE IF NOT EXISTS tokens (
    digest TEXT PRIMARY KEY,
    user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    csrf TEXT,
    created_unix_s REAL NOT NULL,
    expires_unix_s REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tokens_user ON tokens(user);
CREATE TABLE IF NOT EXISTS runner_settings (
    runner TEXT PRIMARY KEY REFERENCES users(name) ON DELETE CASCADE,
    targets_json TEXT NOT NULL DEFAULT '{}',
    program TEXT,
    set_by TEXT,
    set_unix_s REAL
);
"""


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: str
    disabled: bool = False
    created_unix_s: float = 0.0
    has_mqtt: bool = False


@dataclass(frozen=True, slots=True)
class Participant:
    """A runner enrolled in a study: sessions started in ``[enrolled_from_unix_s, enrolled_to_unix_s)`` belong to
    the study (``enrolled_to_unix_s`` None = still enrolled)."""

    study: str
    runner: str
    enrolled_from_unix_s: float
    enrolled_to_unix_s: float | None = None

    def contains(self, t_unix_s: float) -> bool:
        return self.enrolled_from_unix_s <= t_unix_s and (self.enrolled_to_unix_s is None
                                                           or t_unix_s < self.enrolled_to_unix_s)

    def to_dict(self) -> dict:
        return {"runner": self.runner, "enrolled_from_unix_s": self.enrolled_from_unix_s,
                "enrolled_to_unix_s": self.enrolled_to_unix_s}


@dataclass(frozen=True, slots=True)
class Study:
    name: str
    title: str = ""
    created_unix_s: float = 0.0
    participants: tuple[Participant, ...] = ()
    labs: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"name": self.name, "title": self.title, "created_unix_s": self.created_unix_s,
                "participants": [p.to_dict() for p in self.participants], "labs": list(self.labs)}


@dataclass(frozen=True, slots=True)
class TokenInfo:
    user: User
    kind: str
    csrf: str | None
    created_unix_s: float
    expires_unix_s: float
    digest: str


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


class UserStore:
    """Users/roles/assignments/tokens in one SQLite file. Thread-safe (one connection, one lock).

    Parameters
    ----------
    path : the SQLite file (created with mode 0600), or ``":memory:"``
    clock : wall-clock function (seconds); tests pass a controllable one to expire tokens
    mqtt_iterations : PBKDF2 iterations of new Mosquitto hashes
    """

    def __init__(self, path: str | os.PathLike, *, clock: Callable[[], float] = time.time,
                 mqtt_iterations: int = MQTT_PBKDF2_ITERATIONS) -> None:
        self.path = str(path)
        self.clock = clock
        self.mqtt_iterations = int(mqtt_iterations)
        if self.path != ":memory:":
            p = Path(self.path)
            p.parent.mkdir(parents=True, exist_ok=True)
            if not p.exists():
                os.close(os.open(p, os.O_WRONLY | os.O_CREAT, 0o600))
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10.0)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("PRAGMA foreign_keys = ON")
            if self.path != ":memory:":
                self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.executescript(_SCHEMA)
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(_SCHEMA_VERSION),))
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('revision', '0')")
        self._migrate()

    # ------------------------------------------------------------------ plumbing
    @property
    def schema_version(self) -> int:
        return int(self._q("SELECT value FROM meta WHERE key='schema_version'")[0][0])

    def _migrate(self) -> None:
        """Schema 1 -> 2: per-runner lab grants become one study per granted runner (see the module docstring)."""
        with self._tx() as db:
            has_grants = db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='grants'").fetchone()
            if not has_grants:
                db.execute("UPDATE meta SET value=? WHERE key='schema_version' AND CAST(value AS INTEGER) < ?",
                           (str(_SCHEMA_VERSION), _SCHEMA_VERSION))
                return
            rows = db.execute("SELECT lab, runner FROM grants ORDER BY runner, lab").fetchall()
            now = self.clock()
            for runner in sorted({r["runner"] for r in rows}):
                db.execute("INSERT OR IGNORE INTO studies(name, title, created_unix_s) VALUES (?,?,?)",
                           (runner, f"all sessions of {runner} (per-runner lab grant, migrated)", now))
                db.execute("INSERT OR IGNORE INTO study_participants VALUES (?,?,?,NULL)", (runner, runner, 0.0))
            for r in rows:
                db.execute("INSERT OR IGNORE INTO study_grants(study, lab) VALUES (?,?)", (r["runner"], r["lab"]))
            db.execute("DROP TABLE grants")
            db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(_SCHEMA_VERSION),))
            self._bump(db)
        if rows:
            log.warning("user store %s: %d per-runner lab grant(s) migrated into %d study(ies) named after the "
                        "runners (whole history, open-ended)", self.path, len(rows), len({r["runner"] for r in rows}))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "UserStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _tx(self):
        store = self

        class _Tx:
            def __enter__(self_inner):
                store._lock.acquire()
                store._db.execute("BEGIN IMMEDIATE")
                return store._db

            def __exit__(self_inner, et, ev, tb):
                try:
                    store._db.execute("ROLLBACK" if et else "COMMIT")
                finally:
                    store._lock.release()
        return _Tx()

    def _q(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    @staticmethod
    def _bump(db: sqlite3.Connection) -> None:
        db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'revision'")

    @property
    def revision(self) -> int:
        """Increments on every change that affects broker access (users, passwords, roles, assignments)."""
        return int(self._q("SELECT value FROM meta WHERE key='revision'")[0][0])

    @staticmethod
    def _user(row: sqlite3.Row) -> User:
        return User(row["name"], row["role"], bool(row["disabled"]), float(row["created_unix_s"]),
                    row["mqtt_hash"] is not None)

    @staticmethod
    def check_name(name: str) -> str:
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise UserStoreError(f"invalid user name {name!r}: 1-64 characters of letters, digits, '_', '.', '-', "
                                 "starting with a letter or digit", user=str(name), code="invalid_name")
        if name in RESERVED_NAMES or name in ("reply",):
            raise UserStoreError(f"user name {name!r} is a reserved MQTT topic level", user=name, code="invalid_name")
        return name

    # ------------------------------------------------------------------ users
    def add_user(self, name: str, role: str, password: str | None = None, *, mqtt: bool = True) -> User:
        """Create a user. Without ``password`` the user cannot log in until :meth:`set_password`."""
        self.check_name(name)
        if role not in ROLES:
            raise UserStoreError(f"role {role!r} is not one of {', '.join(ROLES)}", user=name, code="invalid_role")
        pw_hash = mqtt_hash = None
        if password is not None:
            check_password_policy(password)
            pw_hash = hash_password(password)
            mqtt_hash = mosquitto_hash(password, self.mqtt_iterations) if mqtt else None
        now = self.clock()
        with self._tx() as db:
            if db.execute("SELECT 1 FROM users WHERE name=?", (name,)).fetchone():
                raise UserStoreError(f"user {name!r} already exists", user=name, code="user_exists")
            db.execute("INSERT INTO users(name, role, pw_hash, mqtt_hash, created_unix_s, password_changed_unix_s) "
                       "VALUES (?,?,?,?,?,?)", (name, role, pw_hash, mqtt_hash, now, now if password else None))
            self._bump(db)
        log.info("user %s added (role %s)", name, role)
        return self.get_user(name)

    def get_user(self, name: str) -> User:
        rows = self._q("SELECT * FROM users WHERE name=?", (name,))
        if not rows:
            raise UnknownUserError(f"no user {name!r}", user=name)
        return self._user(rows[0])

    def find_user(self, name: str) -> User | None:
        try:
            return self.get_user(name)
        except UnknownUserError:
            return None

    def list_users(self, role: str | None = None) -> list[User]:
        if role is None:
            return [self._user(r) for r in self._q("SELECT * FROM users ORDER BY name")]
        return [self._user(r) for r in self._q("SELECT * FROM users WHERE role=? ORDER BY name", (role,))]

    def set_password(self, name: str, password: str, *, mqtt: bool = True) -> None:
        """Change a password; every token of the user is revoked."""
        check_password_policy(password)
        pw_hash = hash_password(password)
        mqtt_hash = mosquitto_hash(password, self.mqtt_iterations) if mqtt else None
        with self._tx() as db:
            if not db.execute("SELECT 1 FROM users WHERE name=?", (name,)).fetchone():
                raise UnknownUserError(f"no user {name!r}", user=name)
            db.execute("UPDATE users SET pw_hash=?, mqtt_hash=?, password_changed_unix_s=? WHERE name=?",
                       (pw_hash, mqtt_hash, self.clock(), name))
            db.execute("DELETE FROM tokens WHERE user=?", (name,))
            self._bump(db)
        log.info("password of user %s changed; its tokens were revoked", name)

    def set_disabled(self, name: str, disabled: bool = True) -> None:
        with self._tx() as db:
            cur = db.execute("UPDATE users SET disabled=? WHERE name=?", (int(bool(disabled)), name))
            if cur.rowcount == 0:
                raise UnknownUserError(f"no user {name!r}", user=name)
            if disabled:
                db.execute("DELETE FROM tokens WHERE user=?", (name,))
            self._bump(db)
        log.info("user %s %s", name, "disabled" if disabled else "enabled")

    def delete_user(self, name: str) -> None:
        with self._tx() as db:
            if db.execute("DELETE FROM users WHERE name=?", (name,)).rowcount == 0:
                raise UnknownUserError(f"no user {name!r}", user=name)
            self._bump(db)
        log.info("user %s deleted", name)

    def mqtt_credentials(self) -> list[tuple[str, str, str]]:
        """``(name, role, mosquitto_hash)`` for every enabled user that has MQTT access."""
        return [(r["name"], r["role"], r["mqtt_hash"]) for r in
                self._q("SELECT name, role, mqtt_hash FROM users WHERE disabled=0 AND mqtt_hash IS NOT NULL "
                        "ORDER BY name")]

    # ------------------------------------------------------------------ relations
    def _relate(self, table: str, col: str, who: str, who_role: str, runner: str, add: bool) -> None:
        with self._tx() as db:
            row = db.execute("SELECT role FROM users WHERE name=?", (who,)).fetchone()
            if row is None:
                raise UnknownUserError(f"no user {who!r}", user=who)
            if row["role"] != who_role:
                raise UserStoreError(f"{who!r} has role {row['role']!r}, not {who_role!r}", user=who,
                                     code="wrong_role")
            r = db.execute("SELECT role FROM users WHERE name=?", (runner,)).fetchone()
            if r is None:
                raise UnknownUserError(f"no user {runner!r}", user=runner)
            if r["role"] != ROLE_RUNNER:
                raise UserStoreError(f"{runner!r} has role {r['role']!r}, not 'runner'", user=runner,
                                     code="wrong_role")
            if add:
                db.execute(f"INSERT OR IGNORE INTO {table}({col}, runner) VALUES (?,?)", (who, runner))
            else:
                db.execute(f"DELETE FROM {table} WHERE {col}=? AND runner=?", (who, runner))
            self._bump(db)

    def assign(self, therapist: str, runner: str) -> None:
        """Let ``therapist`` see/annotate/coach ``runner``."""
        self._relate("assignments", "therapist", therapist, ROLE_THERAPIST, runner, True)
        log.info("runner %s assigned to therapist %s", runner, therapist)

    def unassign(self, therapist: str, runner: str) -> None:
        self._relate("assignments", "therapist", therapist, ROLE_THERAPIST, runner, False)

    def assigned_runners(self, therapist: str) -> list[str]:
        return [r[0] for r in self._q("SELECT runner FROM assignments WHERE therapist=? ORDER BY runner",
                                      (therapist,))]

    # ------------------------------------------------------------------ studies
    @staticmethod
    def check_study_name(name: str) -> str:
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise UserStoreError(f"invalid study name {name!r}: 1-64 characters of letters, digits, '_', '.', "
                                 "'-', starting with a letter or digit", code="invalid_name")
        return name

    @staticmethod
    def _check_title(title: str) -> str:
        if not isinstance(title, str) or len(title) > MAX_STUDY_TITLE_LENGTH or any(c in title for c in "\r\n\x00"):
            raise UserStoreError(f"study title must be one line of at most {MAX_STUDY_TITLE_LENGTH} characters",
                                 code="invalid_title")
        return title

    def add_study(self, name: str, title: str = "") -> Study:
        self.check_study_name(name)
        self._check_title(title)
        with self._tx() as db:
            if db.execute("SELECT 1 FROM studies WHERE name=?", (name,)).fetchone():
                raise UserStoreError(f"study {name!r} already exists", code="study_exists")
            db.execute("INSERT INTO studies(name, title, created_unix_s) VALUES (?,?,?)", (name, title, self.clock()))
        log.info("study %s added", name)
        return self.get_study(name)

    def set_study_title(self, name: str, title: str) -> Study:
        self._check_title(title)
        with self._tx() as db:
            if db.execute("UPDATE studies SET title=? WHERE name=?", (title, name)).rowcount == 0:
                raise UnknownStudyError(f"no study {name!r}", study=name)
        return self.get_study(name)

    def delete_study(self, name: str) -> None:
        """Delete a study with its enrollments and grants (sessions are not touched)."""
        with self._tx() as db:
            if db.execute("DELETE FROM studies WHERE name=?", (name,)).rowcount == 0:
                raise UnknownStudyError(f"no study {name!r}", study=name)
            self._bump(db)
        log.info("study %s deleted", name)

    def _study_from(self, db, row) -> Study:
        parts = tuple(Participant(row["name"], p["runner"], float(p["enrolled_from_unix_s"]),
                                  None if p["enrolled_to_unix_s"] is None else float(p["enrolled_to_unix_s"]))
                      for p in db.execute("SELECT * FROM study_participants WHERE study=? ORDER BY runner",
                                          (row["name"],)))
        labs = tuple(r[0] for r in db.execute("SELECT lab FROM study_grants WHERE study=? ORDER BY lab",
                                              (row["name"],)))
        return Study(row["name"], row["title"], float(row["created_unix_s"]), parts, labs)

    def get_study(self, name: str) -> Study:
        with self._lock:
            row = self._db.execute("SELECT * FROM studies WHERE name=?", (name,)).fetchone()
            if row is None:
                raise UnknownStudyError(f"no study {name!r}", study=name)
            return self._study_from(self._db, row)

    def find_study(self, name: str) -> Study | None:
        try:
            return self.get_study(name)
        except UnknownStudyError:
            return None

    def list_studies(self, names: Iterable[str] | None = None) -> list[Study]:
        """Every study (or those in ``names``), by name, with participants and granted labs."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM studies ORDER BY name").fetchall()
            want = None if names is None else set(names)
            return [self._study_from(self._db, r) for r in rows if want is None or r["name"] in want]

    def _check_role(self, db, name: str, role: str) -> None:
        r = db.execute("SELECT role FROM users WHERE name=?", (name,)).fetchone()
        if r is None:
            raise UnknownUserError(f"no user {name!r}", user=name)
        if r["role"] != role:
            raise UserStoreError(f"{name!r} has role {r['role']!r}, not {role!r}", user=name, code="wrong_role")

    def enroll(self, study: str, runner: str, from_unix_s: float | None = None,
               to_unix_s: float | None = None) -> Participant:
        """Enroll ``runner`` in ``study`` for sessions started in ``[from_unix_s, to_unix_s)`` (default: from now,
        open-ended). Enrolling again replaces the window (e.g. set ``to_unix_s`` when the runner leaves)."""
        start = self.clock() if from_unix_s is None else from_unix_s
        for what, v in (("enrolled_from_unix_s", start), ("enrolled_to_unix_s", to_unix_s)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
                raise UserStoreError(f"{what} must be a finite number (unix seconds)", user=runner,
                                     code="invalid_window")
        if to_unix_s is not None and to_unix_s <= start:
            raise UserStoreError(f"enrollment window is empty: enrolled_to_unix_s {to_unix_s} <= "
                                 f"enrolled_from_unix_s {start}", user=runner, code="invalid_window")
        with self._tx() as db:
            if not db.execute("SELECT 1 FROM studies WHERE name=?", (study,)).fetchone():
                raise UnknownStudyError(f"no study {study!r}", study=study)
            self._check_role(db, runner, ROLE_RUNNER)
            db.execute("INSERT OR REPLACE INTO study_participants VALUES (?,?,?,?)",
                       (study, runner, float(start), None if to_unix_s is None else float(to_unix_s)))
            self._bump(db)
        log.info("runner %s enrolled in study %s [%s, %s)", runner, study, start, to_unix_s)
        return Participant(study, runner, float(start), None if to_unix_s is None else float(to_unix_s))

    def unenroll(self, study: str, runner: str) -> None:
        """Remove ``runner`` from ``study`` altogether (to keep the past sessions in it, :meth:`enroll` again
        with ``to_unix_s`` instead)."""
        with self._tx() as db:
            if not db.execute("SELECT 1 FROM studies WHERE name=?", (study,)).fetchone():
                raise UnknownStudyError(f"no study {study!r}", study=study)
            if db.execute("DELETE FROM study_participants WHERE study=? AND runner=?", (study, runner)).rowcount == 0:
                raise UserStoreError(f"{runner!r} is not a participant of study {study!r}", user=runner,
                                     code="not_enrolled")
            self._bump(db)
        log.info("runner %s removed from study %s", runner, study)

    def grant_study(self, lab: str, study: str) -> None:
        """Let ``lab`` read (incl. raw samples and exports) the sessions of ``study``."""
        with self._tx() as db:
            if not db.execute("SELECT 1 FROM studies WHERE name=?", (study,)).fetchone():
                raise UnknownStudyError(f"no study {study!r}", study=study)
            self._check_role(db, lab, ROLE_LAB)
            db.execute("INSERT OR IGNORE INTO study_grants(study, lab) VALUES (?,?)", (study, lab))
            self._bump(db)
        log.info("lab %s granted study %s", lab, study)

    def revoke_study(self, lab: str, study: str) -> None:
        with self._tx() as db:
            if not db.execute("SELECT 1 FROM studies WHERE name=?", (study,)).fetchone():
                raise UnknownStudyError(f"no study {study!r}", study=study)
            self._check_role(db, lab, ROLE_LAB)
            db.execute("DELETE FROM study_grants WHERE study=? AND lab=?", (study, lab))
            self._bump(db)
        log.info("lab %s no longer granted study %s", lab, study)

    def grant(self, lab: str, runner: str) -> None:
        """Shortcut for a whole-history grant of one runner: the study named after ``runner`` (created if
        needed, ``runner`` enrolled from 0, open-ended) granted to ``lab`` -- what schema-1 grants became."""
        with self._tx() as db:
            self._check_role(db, lab, ROLE_LAB)
            self._check_role(db, runner, ROLE_RUNNER)
            db.execute("INSERT OR IGNORE INTO studies(name, title, created_unix_s) VALUES (?,?,?)",
                       (runner, f"all sessions of {runner}", self.clock()))
            db.execute("INSERT OR IGNORE INTO study_participants VALUES (?,?,?,NULL)", (runner, runner, 0.0))
            db.execute("INSERT OR IGNORE INTO study_grants(study, lab) VALUES (?,?)", (runner, lab))
            self._bump(db)
        log.info("lab %s granted study %s (all sessions of runner %s)", lab, runner, runner)

    def revoke(self, lab: str, runner: str) -> None:
        """Undo :meth:`grant` (revokes the study named after ``runner``)."""
        self.revoke_study(lab, runner)

    def granted_studies(self, lab: str) -> list[str]:
        return [r[0] for r in self._q("SELECT study FROM study_grants WHERE lab=? ORDER BY study", (lab,))]

    def runner_studies(self, runner: str) -> list[str]:
        return [r[0] for r in self._q("SELECT study FROM study_participants WHERE runner=? ORDER BY study",
                                      (runner,))]

    def lab_windows(self, lab: str) -> dict[str, tuple[tuple[float, float | None], ...]]:
        """Runner -> enrollment windows ``(from_unix_s, to_unix_s | None)`` over the studies granted to ``lab``."""
        out: dict[str, list] = {}
        for r in self._q("SELECT p.runner, p.enrolled_from_unix_s, p.enrolled_to_unix_s FROM study_participants p "
                         "JOIN study_grants g ON g.study = p.study WHERE g.lab=? "
                         "ORDER BY p.runner, p.enrolled_from_unix_s", (lab,)):
            out.setdefault(r[0], []).append((float(r[1]), None if r[2] is None else float(r[2])))
        return {k: tuple(v) for k, v in out.items()}

    def granted_runners(self, lab: str) -> list[str]:
        """Participants (any window) of the studies granted to ``lab``."""
        return sorted(self.lab_windows(lab))

    def enrolled_runners(self, lab: str, at_unix_s: float | None = None) -> list[str]:
        """Participants of ``lab``'s granted studies enrolled at ``at_unix_s`` (default now): live/MQTT access."""
        t = self.clock() if at_unix_s is None else at_unix_s
        return sorted(r for r, ws in self.lab_windows(lab).items()
                      if any(a <= t and (b is None or t < b) for a, b in ws))

    def access_epoch(self, at_unix_s: float | None = None) -> tuple[int, int]:
        """``(revision, enrollment boundaries passed)``: changes on every store change AND whenever the clock
        crosses the start or end of an enrollment window (what live/MQTT access depends on)."""
        t = self.clock() if at_unix_s is None else at_unix_s
        with self._lock:
            rev = int(self._db.execute("SELECT value FROM meta WHERE key='revision'").fetchone()[0])
            n = self._db.execute("SELECT (SELECT COUNT(*) FROM study_participants WHERE enrolled_from_unix_s <= ?)"
                                 " + (SELECT COUNT(*) FROM study_participants WHERE enrolled_to_unix_s <= ?)",
                                 (t, t)).fetchone()[0]
        return rev, int(n)

    def visible_runners(self, user: User) -> frozenset[str] | None:
        """Runner names ``user`` may see; ``None`` = all (admin)."""
        if user.disabled:
            return frozenset()
        if user.role == ROLE_ADMIN:
            return None
        if user.role == ROLE_RUNNER:
            return frozenset({user.name})
        if user.role == ROLE_THERAPIST:
            return frozenset(self.assigned_runners(user.name))
        if user.role == ROLE_LAB:  # participants of granted studies; sessions are filtered by window (Access)
            return frozenset(self.granted_runners(user.name))
        return frozenset()

    def runner_names(self) -> list[str]:
        return [u.name for u in self.list_users(ROLE_RUNNER)]

    # ------------------------------------------------------------------ authentication
    def authenticate(self, name: str, password: str) -> User:
        """Check a password; raises :class:`AuthenticationError` (same message for every failure)."""
        rows = self._q("SELECT * FROM users WHERE name=?", (name,)) if isinstance(name, str) else []
        row = rows[0] if rows else None
        stored = row["pw_hash"] if row is not None else None
        ok = verify_password(stored, password)  # runs the hash even for unknown users (timing)
        if not ok or row is None or row["disabled"] or row["role"] == ROLE_SERVICE:
            raise AuthenticationError("invalid user name or password")
        if needs_rehash(stored):
            with self._tx() as db:
                db.execute("UPDATE users SET pw_hash=? WHERE name=?", (hash_password(password), name))
        return self._user(row)

    def issue_token(self, user: User | str, kind: str = TOKEN_KIND_BEARER, ttl_s: float = 12 * 3600) -> tuple[str, TokenInfo]:
        """A new random token (returned once, stored as its SHA-256) with a CSRF token for cookie sessions."""
        name = user.name if isinstance(user, User) else user
        if kind not in (TOKEN_KIND_BEARER, TOKEN_KIND_COOKIE):
            raise ValueError(f"token kind {kind!r}")
        token = _TOKEN_PREFIX + secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(24) if kind == TOKEN_KIND_COOKIE else None
        now = self.clock()
        digest = _digest(token)
        with self._tx() as db:
            db.execute("DELETE FROM tokens WHERE expires_unix_s <= ?", (now,))  # purge on the way
            db.execute("INSERT INTO tokens VALUES (?,?,?,?,?,?)", (digest, name, kind, csrf, now, now + ttl_s))
        return token, TokenInfo(self.get_user(name), kind, csrf, now, now + ttl_s, digest)

    def validate_token(self, token: str | None, kind: str | None = None) -> TokenInfo:
        """The token's user and metadata; :class:`TokenError` with ``code`` missing/invalid/expired/disabled."""
        if not token:
            raise TokenError("authentication required", code="unauthenticated")
        if not token.startswith(_TOKEN_PREFIX) or len(token) > 200:
            raise TokenError("invalid token", code="invalid_token")
        rows = self._q("SELECT t.*, u.name AS uname, u.role, u.disabled, u.created_unix_s AS ucreated, u.mqtt_hash "
                       "FROM tokens t JOIN users u ON u.name = t.user WHERE t.digest=?", (_digest(token),))
        if not rows:
            raise TokenError("invalid or revoked token", code="invalid_token")
        r = rows[0]
        if kind is not None and r["kind"] != kind:
            raise TokenError("invalid token", code="invalid_token")
        if r["expires_unix_s"] <= self.clock():
            raise TokenError("token expired; log in again", code="token_expired")
        if r["disabled"]:
            raise TokenError("account disabled", code="invalid_token")
        user = User(r["uname"], r["role"], False, float(r["ucreated"]), r["mqtt_hash"] is not None)
        return TokenInfo(user, r["kind"], r["csrf"], r["created_unix_s"], r["expires_unix_s"], r["digest"])

    def revoke_token(self, token: str) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM tokens WHERE digest=?", (_digest(token),)).rowcount > 0

    def revoke_tokens(self, name: str) -> int:
        with self._tx() as db:
            return db.execute("DELETE FROM tokens WHERE user=?", (name,)).rowcount

    @staticmethod
    def csrf_matches(info: TokenInfo, presented: str | None) -> bool:
        return bool(info.csrf and presented and hmac.compare_digest(info.csrf.encode(), presented.encode()))

    # ------------------------------------------------------------------ per-runner coaching settings
    def set_runner_settings(self, runner: str, *, targets: dict | None = None, program: str | None = None,
                            set_by: str) -> dict:
        with self._tx() as db:
            r = db.execute("SELECT role FROM users WHERE name=?", (runner,)).fetchone()
            if r is None or r["role"] != ROLE_RUNNER:
                raise UnknownUserError(f"no runner {runner!r}", user=runner)
            cur = db.execute("SELECT * FROM runner_settings WHERE runner=?", (runner,)).fetchone()
            tj = json.loads(cur["targets_json"]) if cur else {}
            prog = cur["program"] if cur else None
            if targets:
                tj.update(targets)
            if program is not None:
                prog = program or None
            db.execute("INSERT OR REPLACE INTO runner_settings VALUES (?,?,?,?,?)",
                       (runner, json.dumps(tj, sort_keys=True), prog, set_by, self.clock()))
        return self.runner_settings(runner)

    def runner_settings(self, runner: str) -> dict:
        rows = self._q("SELECT * FROM runner_settings WHERE runner=?", (runner,))
        if not rows:
            return {"runner": runner, "targets": {}, "program": None, "set_by": None, "set_unix_s": None}
        r = rows[0]
        return {"runner": runner, "targets": json.loads(r["targets_json"]), "program": r["program"],
                "set_by": r["set_by"], "set_unix_s": r["set_unix_s"]}


def open_user_store(path: str | os.PathLike, **kwargs) -> UserStore:
    return UserStore(path, **kwargs)
