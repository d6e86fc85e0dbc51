"""runform.server.auth: users, roles, passwords, tokens, and the broker's credentials/ACL from the same store.

Roles: ``runner`` (own data), ``therapist`` (assigned runners: watch live, annotate, set targets/programs),
``lab`` (sessions of granted studies, inside each participant's enrollment window: raw data and exports),
``admin`` (everything), ``service`` (machine accounts, MQTT only).
See docs/security.md.
"""
from ._errors import AuthenticationError, AuthError, TokenError, UnknownStudyError, UnknownUserError, UserStoreError
from ._mqtt import (BrokerSync, StoreMosquittoBroker, access_spec_from_store, acl_text, password_file_text,
                    write_broker_files)
from ._passwords import (MIN_PASSWORD_LENGTH, MQTT_PBKDF2_ITERATIONS, check_password_policy, hash_password,
                         mosquitto_hash, verify_mosquitto_hash, verify_password)
from ._policy import (PERM_ANNOTATE, PERM_CONTROL, PERM_EXPORT, PERM_LIVE_RAW, PERM_RAW, PERM_READ,
                      ROLE_PERMISSIONS, Access, access_for)
from ._store import (MAX_STUDY_TITLE_LENGTH, ROLE_ADMIN, ROLE_LAB, ROLE_RUNNER, ROLE_SERVICE, ROLE_THERAPIST, ROLES,
                     TOKEN_KIND_BEARER, TOKEN_KIND_COOKIE, Participant, Study, TokenInfo, User, UserStore,
                     open_user_store)

__all__ = [
    "AuthError", "AuthenticationError", "TokenError", "UnknownStudyError", "UnknownUserError", "UserStoreError",
    "BrokerSync", "StoreMosquittoBroker", "access_spec_from_store", "acl_text", "password_file_text",
    "write_broker_files",
    "MIN_PASSWORD_LENGTH", "MQTT_PBKDF2_ITERATIONS", "check_password_policy", "hash_password", "mosquitto_hash",
    "verify_mosquitto_hash", "verify_password",
    "PERM_ANNOTATE", "PERM_CONTROL", "PERM_EXPORT", "PERM_LIVE_RAW", "PERM_RAW", "PERM_READ", "ROLE_PERMISSIONS", "Access",
    "access_for",
    "ROLE_ADMIN", "ROLE_LAB", "ROLE_RUNNER", "ROLE_SERVICE", "ROLE_THERAPIST", "ROLES", "TOKEN_KIND_BEARER",
    "TOKEN_KIND_COOKIE", "TokenInfo", "User", "UserStore", "open_user_store", "Study", "Participant",
    "MAX_STUDY_TITLE_LENGTH",
]
