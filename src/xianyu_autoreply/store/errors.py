"""Every error the store raises.

    StoreError                    the store could not do what was asked; nothing was written
    ├── NotFound                  the account, user, order, rule or line does not exist
    │   ├── AccountNotFound
    │   └── UserNotFound
    ├── Conflict                  the write contradicts what is stored (duplicate id, an owner of accounts, ...)
    │   ├── VersionConflict       `expected_version` no longer matches: someone else wrote first
    │   ├── LastAdmin             the write would leave no enabled admin
    │   └── InvalidTransition     a stock line or delivery is not in the state the call requires
    ├── InvalidValue              a value the tables cannot hold (unknown enum, id too long, ...); also an
    │                             `InputError` (protocol), the root of every layer's bad-input errors
    ├── DatabaseError             the database failed (connection lost, locked, timed out); carries the cause
    └── SecretError               encryption setup or decryption failed
        ├── SecretKeyError        XAR_SECRET_KEY / secret.key is not a usable Fernet key
        └── DecryptionError       a stored secret does not open with any configured key

An invalid cookie is refused with the protocol's own `InvalidCookie` (an `InputError`), before anything is written.
`NotFound` and `Conflict` are not input errors: the input was well formed, the stored state says no.
Messages never contain a secret: they name the account, user or key position, not the value.
"""

from __future__ import annotations

from ..protocol.errors import InputError


class StoreError(Exception):
    """The store could not do what was asked; the transaction was rolled back."""


class NotFound(StoreError, LookupError):
    """The addressed row does not exist."""


class AccountNotFound(NotFound):
    """No account with this id."""

    def __init__(self, account_id: str) -> None:
        super().__init__(f"account {account_id!r} does not exist")
        self.account_id = account_id


class UserNotFound(NotFound):
    """No user with this name."""

    def __init__(self, username: str) -> None:
        super().__init__(f"user {username!r} does not exist")
        self.username = username


class Conflict(StoreError):
    """The write contradicts what is stored."""


class VersionConflict(Conflict):
    """The account changed since the caller read it (optimistic concurrency)."""

    def __init__(self, account_id: str, *, expected: int, actual: int) -> None:
        super().__init__(f"account {account_id!r} is at version {actual}, not the expected {expected}")
        self.account_id = account_id
        self.expected = expected
        self.actual = actual


class LastAdmin(Conflict):
    """Deleting, disabling or demoting this user would leave nobody able to administer the service."""


class InvalidTransition(Conflict):
    """A stock line or delivery is not in the state this call moves it from."""


class InvalidValue(StoreError, InputError):
    """A value the tables cannot hold."""


class DatabaseError(StoreError):
    """The database failed the operation; `__cause__` has the driver's error."""


class SecretError(StoreError):
    """Secret encryption cannot be set up or a secret cannot be opened."""


class SecretKeyError(SecretError):
    """The configured key material is not a usable Fernet key."""


class DecryptionError(SecretError):
    """A stored secret does not decrypt with any configured key."""
