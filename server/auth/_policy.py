"""Who may do what with whose data: one table, used by the HTTP API, the live stream and the MQTT ACL.

=========  ====================  =====================================================================
role       runners               permissions on those runners
=========  ====================  =====================================================================
runner     itself                read, raw, export, annotate, control (the commands a runner may send)
therapist  assigned runners      read, annotate, control (targets, limits, program, pause/resume...)
lab        granted runners       read, raw, export (no control, no notes)
admin      all                   everything, plus user administration
service    (MQTT only)           no HTTP access
=========  ====================  =====================================================================
"""
from __future__ import annotations

from dataclasses import dataclass

from runform.server.mqtt import roles_for

from ._store import ROLE_ADMIN, ROLE_LAB, ROLE_RUNNER, ROLE_SERVICE, ROLE_THERAPIST, User, UserStore

__all__ = ["PERM_READ", "PERM_RAW", "PERM_EXPORT", "PERM_ANNOTATE", "PERM_CONTROL", "ROLE_PERMISSIONS",
           "Access", "access_for"]

PERM_READ, PERM_RAW, PERM_EXPORT, PERM_ANNOTATE, PERM_CONTROL = "read", "raw", "export", "annotate", "control"

ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    ROLE_RUNNER: frozenset({PERM_READ, PERM_RAW, PERM_EXPORT, PERM_ANNOTATE, PERM_CONTROL}),
    ROLE_THERAPIST: frozenset({PERM_READ, PERM_ANNOTATE, PERM_CONTROL}),
    ROLE_LAB: frozenset({PERM_READ, PERM_RAW, PERM_EXPORT}),
    ROLE_ADMIN: frozenset({PERM_READ, PERM_RAW, PERM_EXPORT, PERM_ANNOTATE, PERM_CONTROL}),
    ROLE_SERVICE: frozenset(),
}


@dataclass(frozen=True, slots=True)
class Access:
    """A user's rights, resolved once per request (``runners`` None = every runner)."""

    user: User
    runners: frozenset[str] | None

    @property
    def is_admin(self) -> bool:
        return self.user.role == ROLE_ADMIN

    def sees(self, runner: str) -> bool:
        return self.runners is None or runner in self.runners

    def can(self, perm: str, runner: str) -> bool:
        return perm in ROLE_PERMISSIONS.get(self.user.role, frozenset()) and self.sees(runner)

    def can_command(self, runner: str, command: str) -> bool:
        """May send ``command`` to ``runner``'s edge (admin acts with the service role's rights)."""
        if not self.can(PERM_CONTROL, runner):
            return False
        role = "service" if self.is_admin else self.user.role
        return role in roles_for(command)

    def filter(self, runners) -> list[str]:
        return [r for r in runners if self.sees(r)]


def access_for(store: UserStore, user: User) -> Access:
    return Access(user, store.visible_runners(user))
