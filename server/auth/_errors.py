"""Exception tree of runform.server.auth (bleak-style: fields, not just text)."""
from __future__ import annotations

__all__ = ["AuthError", "UserStoreError", "UnknownUserError", "UnknownStudyError", "AuthenticationError", "TokenError"]


class AuthError(Exception):
    """Base class. ``code`` is the machine-readable error code the API returns."""

    code = "auth_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class UserStoreError(AuthError, ValueError):
    """Invalid change to the user store (bad name/role, wrong role for an assignment...)."""

    code = "invalid_user_change"

    def __init__(self, message: str, *, user: str | None = None, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.user = user


class UnknownUserError(UserStoreError, KeyError):
    code = "unknown_user"

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class UnknownStudyError(UserStoreError, KeyError):
    code = "unknown_study"

    def __init__(self, message: str, *, study: str | None = None) -> None:
        super().__init__(message)
        self.study = study

    def __str__(self) -> str:
        return self.args[0]


class AuthenticationError(AuthError):
    """Wrong user name or password (deliberately does not say which)."""

    code = "invalid_credentials"


class TokenError(AuthError):
    """A bearer token or session cookie is missing, unknown, revoked or expired (``code`` says which)."""

    code = "invalid_token"
