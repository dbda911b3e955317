"""Structured logging (structlog) with a processor that keeps secrets out of every log line.

Cookies, tokens, passwords and API keys must never be logged. Code should not pass them in the first place;
`redact_secrets` is the net under that rule: it masks values of secret-named keys and cookie-shaped text.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_SECRET_KEYS = re.compile(r"cookie|password|passwd|secret|token|api_key|apikey|authorization", re.IGNORECASE)
# name=value pairs of the cookies that carry a login or a signing token.
_COOKIE_PAIR = re.compile(
    r"\b(_m_h5_tk(?:_enc)?|cookie2|sgcookie|_tb_token_|t|cna|XSRF-TOKEN|x5sec\w*|unb|havana_\w+|sg|csg|tracknick)"
    r"=([^;\s\"']+)"
)
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._\-]+")
REDACTED = "***"


def redact_text(text: str) -> str:
    """Mask cookie pairs and bearer tokens inside free text."""
    text = _COOKIE_PAIR.sub(lambda m: f"{m.group(1)}={REDACTED}", text)
    return _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)


def redact_secrets(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: secret-named keys are masked, text values are scrubbed of cookie pairs."""
    for key, value in list(event_dict.items()):
        if _SECRET_KEYS.search(key):
            event_dict[key] = REDACTED
        elif isinstance(value, str):
            event_dict[key] = redact_text(value)
    return event_dict


def configure_logging(*, level: str = "INFO", json: bool = False) -> None:
    """Route structlog (and the standard library's logging) to stderr, secrets redacted."""
    logging.basicConfig(format="%(message)s", stream=sys.stderr, level=level.upper())
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
