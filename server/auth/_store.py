"""The user store: users, roles, therapist assignments, lab grants, login tokens, per-runner targets (SQLite).

One SQLite file (WAL) with its own tables, separate from the session store so that user data can be backed up,
moved or wiped on its own. Passwords are kept only as hashes: argon2id for logins, and Mosquitto's ``$7$``
PBKDF2-SHA512 for MQTT (see :mod:`._passwords`). Tokens are kept only as SHA-256 digests: a copy of the database
does not let anyone log in. Every change that affects broker access increments ``revision``; the server polls
it and regenerates the Mosquitto password file/ACL (:mod:`._mqtt`).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
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

from ._errors import AuthenticationError, TokenError, UnknownUserError, UserStoreError
from ._passwords import (MQTT_PBKDF2_ITERATIONS, check_password_policy, hash_password, mosquitto_hash,
                         needs_rehash, verify_password)

__all__ = ["ROLES", "ROLE_RUNNER", "ROLE_THERAPIST", "ROLE_LAB", "ROLE_ADMIN", "ROLE_SERVICE",
           "User", "TokenInfo", "UserStore", "open_user_store", "TOKEN_KIND_BEARER", "TOKEN_KIND_COOKIE"]

log = logging.getLogger("runform.auth")

ROLE_RUNNER, ROLE_THERAPIST, ROLE_LAB, ROLE_ADMIN, ROLE_SERVICE = "runner", "therapist", "lab", "admin", "service"
#: ``service`` = machine accounts (edge processes, the server's own MQTT client): MQTT only, no HTTP login.
ROLES = (ROLE_RUNNER, ROLE_THERAPIST, ROLE_LAB, ROLE_ADMIN, ROLE_SERVICE)
TOKEN_KIND_BEARER, TOKEN_KIND_COOKIE = "bearer", "cookie"
_TOKEN_PREFIX = "rft_"
_SCHEMA_VERSION = 1

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
CREATE TABLE IF NOT EXISTS grants (
    lab TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    runner TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    PRIMARY KEY (lab, runner)
);
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

    # ------------------------------------------------------------------ plumbing
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

    def grant(self, lab: str, runner: str) -> None:
        """Let ``lab`` read ``runner``'s data including raw samples and exports."""
        self._relate("grants", "lab", lab, ROLE_LAB, runner, True)
        log.info("lab %s granted runner %s", lab, runner)

    def revoke(self, lab: str, runner: str) -> None:
        self._relate("grants", "lab", lab, ROLE_LAB, runner, False)

    def assigned_runners(self, therapist: str) -> list[str]:
        return [r[0] for r in self._q("SELECT runner FROM assignments WHERE therapist=? ORDER BY runner",
                                      (therapist,))]

    def granted_runners(self, lab: str) -> list[str]:
        return [r[0] for r in self._q("SELECT runner FROM grants WHERE lab=? ORDER BY runner", (lab,))]

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
        if user.role == ROLE_LAB:
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
