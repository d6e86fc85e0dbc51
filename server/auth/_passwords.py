"""Password hashing: argon2id for logins (argon2-cffi), PBKDF2-SHA512 in Mosquitto's ``$7$`` format for MQTT.

Mosquitto 2.x verifies ``user:$7$<iterations>$<base64 salt(12 B)>$<base64 PBKDF2-SHA512(64 B)>`` lines of its
password file itself, so the server can write that file from its user store without ever keeping a plaintext
password (``mosquitto_passwd`` would need one). The iteration count is stored in each hash and is ours to choose:
the default 50 000 costs Mosquitto ~35 ms of CPU per CONNECT on this machine (``mosquitto_passwd`` uses 101).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

__all__ = ["hash_password", "verify_password", "needs_rehash", "mosquitto_hash", "verify_mosquitto_hash",
           "MQTT_PBKDF2_ITERATIONS", "MIN_PASSWORD_LENGTH", "check_password_policy"]

#: PBKDF2 iterations of the Mosquitto hash (stored per hash, so changing it affects only new/changed passwords).
MQTT_PBKDF2_ITERATIONS = 50_000
MIN_PASSWORD_LENGTH = 8
_MAX_PASSWORD_LENGTH = 1024

# argon2-cffi's defaults (RFC 9106 "low memory": t=3, m=64 MiB, p=4)
_hasher = PasswordHasher()
# a hash of a random password, verified against when the user does not exist (same time as a real check)
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def check_password_policy(password: str) -> None:
    """Raise ``ValueError`` (message never contains the password) if ``password`` is unacceptable."""
    if not isinstance(password, str):
        raise ValueError("password must be a string")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"password too short: at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > _MAX_PASSWORD_LENGTH:
        raise ValueError(f"password too long: at most {_MAX_PASSWORD_LENGTH} characters")
    if "\n" in password or "\r" in password or "\x00" in password:
        raise ValueError("password must be a single line without NUL characters")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """True if ``password`` matches; with ``stored_hash=None`` a dummy hash is checked (constant-ish time)."""
    if not isinstance(password, str) or len(password) > _MAX_PASSWORD_LENGTH:
        return False
    try:
        ok = _hasher.verify(stored_hash or _DUMMY_HASH, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
    return bool(ok and stored_hash)


def needs_rehash(stored_hash: str) -> bool:
    try:
        return _hasher.check_needs_rehash(stored_hash)
    except InvalidHashError:
        return True


def mosquitto_hash(password: str, iterations: int = MQTT_PBKDF2_ITERATIONS, salt: bytes | None = None) -> str:
    """The ``$7$`` PBKDF2-SHA512 hash Mosquitto 2.x reads from its password file."""
    salt = secrets.token_bytes(12) if salt is None else salt
    dk = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, int(iterations), 64)
    return f"$7${int(iterations)}${base64.b64encode(salt).decode()}${base64.b64encode(dk).decode()}"


def verify_mosquitto_hash(stored: str, password: str) -> bool:
    try:
        _, kind, it, salt_b64, dk_b64 = stored.split("$")
        if kind != "7":
            return False
        dk = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), base64.b64decode(salt_b64), int(it), 64)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(base64.b64encode(dk).decode(), dk_b64)
