"""Settings from the environment (`XAR_*`, nested with `__`), a `.env` file, and an optional TOML file.

Precedence: explicit overrides > environment > `.env` > the TOML file named by `XAR_CONFIG` > defaults.
A bad value is reported with the variable's name and the value given, never as a bare validation dump.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import orjson
from pydantic import (
    AliasChoices,
    BaseModel,
    Field,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .outbound import OutboundPolicy
from .runtime import EventLoopChoice

ENV_PREFIX = "XAR_"


class ConfigError(ValueError):
    """The configuration cannot be used; the message names each bad variable and its value."""


class PlatformSettings(BaseModel):
    """Where the platform is: the real hosts by default, the simulator in demos and tests."""

    ws_url: str = "wss://wss-goofish.dingtalk.com/"
    mtop_url: str = "https://h5api.m.goofish.com/h5/"
    passport_url: str = "https://passport.goofish.com/"

    @model_validator(mode="after")
    def _urls(self) -> PlatformSettings:
        for name, prefixes in (
            ("ws_url", ("ws://", "wss://")),
            ("mtop_url", ("http://", "https://")),
            ("passport_url", ("http://", "https://")),
        ):
            value = getattr(self, name)
            if not value.startswith(prefixes):
                raise ValueError(f"{name} must start with {' or '.join(prefixes)}")
            if name != "ws_url" and not value.endswith("/"):
                setattr(self, name, value + "/")
        return self


class SessionSettings(BaseModel):
    """Timing of one account's live connection (seconds)."""

    heartbeat_interval: PositiveFloat = 15.0
    heartbeat_timeout: PositiveFloat = 30.0
    token_refresh_interval: PositiveFloat = 3600.0
    message_expire: PositiveFloat = 300.0
    max_concurrent_messages: PositiveInt = 100


class ApiSettings(BaseModel):
    """The admin API: sign-in tokens, login throttling, server-sent events (seconds unless named otherwise).

    Login throttling (docs/security.md): failures are counted per (client address, username), per address and
    per username; past a free budget each further attempt waits `login_delay_base * 2**k`, at most
    `login_delay_cap`, and is refused (429) before the password is checked. No user is ever locked. The names
    of the lockout this replaced still work: LOGIN_MAX_FAILURES for LOGIN_FREE_FAILURES, LOCKOUT_SECONDS for
    LOGIN_DELAY_CAP, LOGIN_ATTEMPTS_PER_MINUTE for LOGIN_ADDRESS_FAILURES.
    """

    token_ttl: PositiveFloat = 12 * 3600.0  # bearer token and session cookie lifetime
    # Failed logins for one username from one address before that pair has to wait.
    login_free_failures: PositiveInt = Field(
        default=5, validation_alias=AliasChoices("login_free_failures", "login_max_failures")
    )
    # Failed logins from one address, whatever the usernames, before that address has to wait.
    login_address_failures: PositiveInt = Field(
        default=50, validation_alias=AliasChoices("login_address_failures", "login_attempts_per_minute")
    )
    # Failed logins for one username from all addresses after which every address gets a single free failure.
    login_user_failures: PositiveInt = 100
    login_delay_base: PositiveFloat = 1.0  # the first wait; each further failure doubles it
    login_delay_cap: PositiveFloat = Field(
        default=900.0, validation_alias=AliasChoices("login_delay_cap", "lockout_seconds")
    )
    login_forget_after: PositiveFloat = 3600.0  # a counter without a new failure for this long is forgotten
    cookie_secure: bool = False  # set the session cookie `Secure` (behind HTTPS)
    sse_heartbeat: PositiveFloat = 15.0  # comment line on an idle event stream, so proxies keep it open

    @model_validator(mode="after")
    def _login_delays(self) -> ApiSettings:
        if self.login_delay_cap < self.login_delay_base:
            raise ValueError("login_delay_cap must be at least login_delay_base")
        # Forgetting sooner than the longest wait would let a patient guesser start over instead of waiting.
        if self.login_forget_after < self.login_delay_cap:
            raise ValueError("login_forget_after must be at least login_delay_cap")
        return self


class ClusterSettings(BaseModel):
    """Scale-out (`xianyu-autoreply worker`, DESIGN §4): bucket leases on PostgreSQL; see docs/scale-out.md.

    Every node of one database must use the same `buckets`. A node stops its sessions `lease_margin` seconds
    before its lease could expire, so the margin must cover a session's close and an event-loop stall.
    """

    node_id: str = ""  # empty: "<hostname>-<pid>"
    buckets: int = Field(default=1024, ge=1, le=65536)
    lease_ttl: PositiveFloat = 15.0  # renewed every (lease_ttl - lease_margin) / 3
    lease_margin: PositiveFloat = 3.0
    command_poll: PositiveFloat = 5.0  # commands are also polled, in case a NOTIFY was missed

    @model_validator(mode="after")
    def _margin(self) -> ClusterSettings:
        if self.lease_margin >= self.lease_ttl * 2 / 3:
            raise ValueError("lease_margin must be shorter than two thirds of lease_ttl")
        return self


class OutboundSettings(BaseModel):
    """What the URLs account owners choose (webhooks, notifications, AI base URLs, proxies) may reach; see
    outbound.py and docs/security.md. Administrators only: owners cannot change it.

    Public addresses only by default. `allow_private` opens every address class (loopback, private, link-local,
    ...; cloud metadata addresses stay closed); `allow` opens exactly the networks (CIDR) and host names it lists,
    given as a JSON list or comma-separated (`XAR_OUTBOUND__ALLOW=127.0.0.1/32,ollama.lan`).
    """

    allow_private: bool = False
    allow: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator("allow", mode="before")
    @classmethod
    def _entries(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    return orjson.loads(text)
                except orjson.JSONDecodeError as exc:
                    raise ValueError(f"not a JSON list: {exc}") from None
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("allow", mode="after")
    @classmethod
    def _valid(cls, value: list[str]) -> list[str]:
        OutboundPolicy.from_entries(value)  # raises ValueError naming the entry that is neither CIDR nor name
        return [entry.strip() for entry in value if entry.strip()]


class Settings(BaseSettings):
    """Every setting of the service; see DESIGN.md §2 for the contract."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
    )

    data_dir: Path = Path("./data")
    database_url: str = ""
    secret_key: SecretStr | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    admin_username: str = "admin"
    admin_password: SecretStr | None = None
    # `auto`: uvloop when installed (the `speed` extra), else the standard loop; see runtime.py.
    event_loop: EventLoopChoice = "auto"
    platform: PlatformSettings = PlatformSettings()
    session: SessionSettings = SessionSettings()
    cluster: ClusterSettings = ClusterSettings()
    api: ApiSettings = ApiSettings()
    outbound: OutboundSettings = OutboundSettings()

    @model_validator(mode="after")
    def _default_database(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite+aiosqlite:///{self.data_dir / 'xianyu.db'}"
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, dotenv_settings]
        toml_path = os.environ.get(f"{ENV_PREFIX}CONFIG")
        if toml_path:
            path = Path(toml_path)
            if not path.is_file():
                raise ConfigError(f"{ENV_PREFIX}CONFIG: no such file {toml_path!r}")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


def _variable(loc: tuple[int | str, ...]) -> str:
    return ENV_PREFIX + "__".join(str(part).upper() for part in loc if part != "__root__")


def load_settings(**overrides: Any) -> Settings:
    """Load the settings, or raise `ConfigError` naming each bad variable and the value it had."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            value = err.get("input")
            shown = "" if isinstance(value, dict) else f" (got {value!r})"
            lines.append(f"{_variable(err['loc'])}: {err['msg']}{shown}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None
    except ValueError as exc:  # a TOML file that does not parse
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{ENV_PREFIX}CONFIG: {exc}") from exc
