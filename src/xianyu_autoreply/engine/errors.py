"""Every error the engine raises of its own (the store's and the platform's pass through unchanged).

    EngineError                   the engine cannot do this now; nothing was changed
    ├── NotConnected              a manual send for an account without a live session (start it, or wait)
    └── NoEngine                  a live-session operation in a process that runs no engine (`serve --no-engine`)

An account the engine has not loaded is the store's `AccountNotFound`; bad input is an `InputError`.
"""

from __future__ import annotations


class EngineError(Exception):
    """The engine cannot do what was asked now; nothing was changed."""


class NotConnected(EngineError):
    """The account has no connected session, so nothing can be sent through it."""

    def __init__(self, account_id: str) -> None:
        super().__init__(f"account {account_id!r} is not connected")
        self.account_id = account_id


class NoEngine(EngineError):
    """This process runs no engine: trying a reply or sending needs the account's live session."""

    def __init__(self) -> None:
        super().__init__("this server runs without the engine (serve --no-engine)")
