"""Who may do what with whose data: one table, used by the HTTP API, the live stream and the MQTT ACL.

=========  =======================================  ======================================================
role       data                                     permissions on that data
=========  =======================================  ======================================================
runner     itself                                   read, raw, live_raw, export, annotate, control (runner commands)
therapist  assigned runners                         read, live_raw, annotate, control (targets, limits, program...)
lab        sessions of granted studies: runner is   read, raw, live_raw, export (no control, no notes)
           a participant AND the session started
           inside its enrollment window; live/MQTT
           only for participants enrolled now
admin      all                                      everything, plus user and study administration
service    (MQTT only)                              no HTTP access
=========  =======================================  ======================================================

``raw`` is the stored raw archive (HTTP raw ranges); ``live_raw`` the live sample stream (WebSocket ``kinds=raw``,
MQTT ``+/raw``), which a therapist needs for the live acceleration trace without getting the archive.

Runner-level checks (:meth:`Access.sees`) decide whether a runner's name/profile is visible; every route that
returns session data must check the session itself (:meth:`Access.sees_session` with the session's
``started_unix_s``): for labs the two differ.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

from runform.server.mqtt import roles_for

from ._store import ROLE_ADMIN, ROLE_LAB, ROLE_RUNNER, ROLE_SERVICE, ROLE_THERAPIST, User, UserStore

__all__ = ["PERM_READ", "PERM_RAW", "PERM_LIVE_RAW", "PERM_EXPORT", "PERM_ANNOTATE", "PERM_CONTROL", "ROLE_PERMISSIONS",
           "Access", "access_for"]

PERM_READ, PERM_RAW, PERM_EXPORT, PERM_ANNOTATE, PERM_CONTROL = "read", "raw", "export", "annotate", "control"
PERM_LIVE_RAW = "live_raw"

ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    ROLE_RUNNER: frozenset({PERM_READ, PERM_RAW, PERM_LIVE_RAW, PERM_EXPORT, PERM_ANNOTATE, PERM_CONTROL}),
    ROLE_THERAPIST: frozenset({PERM_READ, PERM_LIVE_RAW, PERM_ANNOTATE, PERM_CONTROL}),
    ROLE_LAB: frozenset({PERM_READ, PERM_RAW, PERM_LIVE_RAW, PERM_EXPORT}),
    ROLE_ADMIN: frozenset({PERM_READ, PERM_RAW, PERM_LIVE_RAW, PERM_EXPORT, PERM_ANNOTATE, PERM_CONTROL}),
    ROLE_SERVICE: frozenset(),
}

Windows = Mapping[str, tuple[tuple[float, "float | None"], ...]]


@dataclass(frozen=True, slots=True)
class Access:
    """A user's rights, resolved once per request.

    ``runners``: runner names the user may see (None = every runner). ``windows`` (labs only, else None): runner
    -> enrollment windows ``(from_unix_s, to_unix_s | None)`` of the granted studies; a session is visible only
    if it started inside one. ``live`` (see :meth:`for_live`): runner-level checks also require the runner to be
    enrolled now (``clock``), for live data that has no stored session yet.
    """

    user: User
    runners: frozenset[str] | None
    windows: Windows | None = None
    live: bool = False
    clock: Callable[[], float] = time.time

    @property
    def is_admin(self) -> bool:
        return self.user.role == ROLE_ADMIN

    def enrolled_at(self, runner: str, t_unix_s: float) -> bool:
        """True if no window restricts ``runner`` or ``t_unix_s`` lies inside one of its windows."""
        if self.windows is None:
            return True
        return any(a <= t_unix_s and (b is None or t_unix_s < b) for a, b in self.windows.get(runner, ()))

    def sees(self, runner: str) -> bool:
        if not (self.runners is None or runner in self.runners):
            return False
        return not self.live or self.enrolled_at(runner, self.clock())

    def sees_session(self, runner: str, started_unix_s: float | None) -> bool:
        """May see the session of ``runner`` that started at ``started_unix_s`` (wall clock, unix seconds)."""
        if not (self.runners is None or runner in self.runners):
            return False
        if self.windows is None:
            return True
        return started_unix_s is not None and self.enrolled_at(runner, float(started_unix_s))

    def can(self, perm: str, runner: str) -> bool:
        return perm in ROLE_PERMISSIONS.get(self.user.role, frozenset()) and self.sees(runner)

    def can_session(self, perm: str, runner: str, started_unix_s: float | None) -> bool:
        return perm in ROLE_PERMISSIONS.get(self.user.role, frozenset()) and self.sees_session(runner, started_unix_s)

    def can_command(self, runner: str, command: str) -> bool:
        """May send ``command`` to ``runner``'s edge (admin acts with the service role's rights)."""
        if not self.can(PERM_CONTROL, runner):
            return False
        role = "service" if self.is_admin else self.user.role
        return role in roles_for(command)

    def filter(self, runners: Iterable[str]) -> list[str]:
        return [r for r in runners if self.sees(r)]

    def filter_sessions(self, sessions: Iterable) -> list:
        """The sessions (objects with ``runner_id`` and ``started_unix_s``) this user may see."""
        return [s for s in sessions if self.sees_session(s.runner_id, s.started_unix_s)]

    def for_live(self) -> "Access":
        """The same rights for live data: labs see only runners enrolled now (checked at each message)."""
        return dataclasses.replace(self, live=True)


def access_for(store: UserStore, user: User) -> Access:
    windows = store.lab_windows(user.name) if user.role == ROLE_LAB and not user.disabled else None
    runners = frozenset(windows) if windows is not None else store.visible_runners(user)
    return Access(user, runners, windows, clock=store.clock)
