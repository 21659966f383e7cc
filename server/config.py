"""Server configuration (◆): pydantic-settings, env prefix ``ONECONNECT_SERVER_``, a TOML file.

Precedence: environment over the ``--config`` TOML file over defaults. Strict: unknown keys (in
the file or as ``ONECONNECT_SERVER_*`` variables) and bad values stop start-up naming the key.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from server.webhooks.ssrf import Network, parse_networks

ENV_PREFIX = "ONECONNECT_SERVER_"
DEFAULT_DATA_DIR = Path("data")


class ConfigError(Exception):
    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", frozen=True, validate_default=True
    )

    listen: str = Field(default="127.0.0.1:8080", description="host:port to serve on")
    data_dir: Path = Field(
        default=DEFAULT_DATA_DIR, description="Where the embedded SQLite database lives"
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default sqlite+aiosqlite:///<data_dir>/oneconnect.db. "
        "PostgreSQL: postgresql+asyncpg://user@host/db",
    )
    public_url: str | None = Field(
        default=None, description="The URL users and agents reach this server at"
    )
    webhook_allow_networks: list[str] = Field(
        default_factory=list, description="CIDRs exempt from the webhook SSRF block"
    )
    webhook_repeat_interval: float = Field(
        default=4 * 3600.0,
        ge=0,
        le=7 * 86400,
        description="Seconds between reminders of a still-firing alert; 0 turns them off",
    )
    webhook_timeout: float = Field(
        default=10.0, ge=0.1, le=60, description="Whole-request timeout of one delivery (s)"
    )
    webhook_connect_timeout: float = Field(
        default=5.0, ge=0.1, le=30, description="Connect timeout of one delivery (s)"
    )
    webhook_max_attempts: int = Field(
        default=8, ge=1, le=20, description="Attempts per delivery before it ends final"
    )
    webhook_retry_base: float = Field(
        default=1.0, ge=0.01, le=60, description="First retry delay (s), doubling each time"
    )
    webhook_retry_max: float = Field(
        default=300.0, ge=0.01, le=3600, description="Cap on retry delays and Retry-After (s)"
    )
    webhook_concurrency: int = Field(
        default=8, ge=1, le=64, description="Deliveries in flight per endpoint"
    )
    webhook_queue_limit: int = Field(
        default=10_000, ge=10, le=1_000_000, description="Pending deliveries per endpoint"
    )
    webhook_unhealthy_after: float = Field(
        default=600.0, ge=1, le=7 * 86400, description="Failing this long marks unhealthy (s)"
    )
    webhook_disable_after: float = Field(
        default=86400.0,
        ge=0,
        le=30 * 86400,
        description="Failing this long disables the endpoint (s); 0 never",
    )
    migrate_on_start: bool = Field(
        default=True, description="`run` applies pending migrations at start-up"
    )
    access_log: bool = Field(
        default=False, description="HTTP access log (never with client addresses)"
    )
    node_down_after: float = Field(
        default=3.0, ge=2, le=20, description="Missed intervals before a node is down"
    )
    start_grace_seconds: float = Field(
        default=60.0,
        ge=0,
        le=3600,
        description="After start-up, no node_down until this long has passed (no false storm)",
    )
    live_window_seconds: int = Field(default=900, ge=60, le=3600)
    max_body_bytes: int = Field(default=256 * 1024, ge=1024, le=16 * 1024 * 1024)
    session_hours: float = Field(default=12.0, gt=0, le=24 * 30)
    log_format: Literal["plain", "json"] = "plain"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings, init_settings)

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        parse_listen(value)
        return value

    @field_validator("webhook_repeat_interval")
    @classmethod
    def _check_repeat(cls, value: float) -> float:
        if 0 < value < 60:
            raise ValueError("must be 0 (off) or at least 60 seconds")
        return value

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL with a host")
        return value.rstrip("/")

    @field_validator("database_url")
    @classmethod
    def _check_db(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        return value

    @field_validator("webhook_allow_networks")
    @classmethod
    def _check_networks(cls, value: list[str]) -> list[str]:
        parse_networks(value)  # the SSRF guard's own parser: what passes here, it uses
        return value

    # -- derived ---------------------------------------------------------------------------
    def host_port(self) -> tuple[str, int]:
        return parse_listen(self.listen)

    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'oneconnect.db').resolve()}"

    def base_url(self) -> str:
        if self.public_url:
            return self.public_url
        host, port = self.host_port()
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}"

    def allow_networks(self) -> tuple[Network, ...]:
        return parse_networks(self.webhook_allow_networks)


class _ExactSettings(ServerSettings):
    """Validated like ServerSettings, from the given values only (no environment)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def exact_settings(**values: Any) -> ServerSettings:
    """Settings from exactly these values, validated, ignoring ONECONNECT_SERVER_* (the demo,
    tests, command-line overrides)."""
    return _ExactSettings(**values)


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", value
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value[:60]!r} is not host:port with a port in 0-65535")
    return host, int(port)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"{path}: config file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read config file: {exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: invalid TOML: {exc}"]) from None


def load_settings(config_file: Path | None = None, **overrides: Any) -> ServerSettings:
    """Parse once; raises ConfigError naming every bad or unknown key. ``overrides`` (from
    the command line) win over everything."""
    data = _read_toml(config_file) if config_file is not None else {}
    source = str(config_file) if config_file is not None else "config"
    known = set(ServerSettings.model_fields)
    errors = [
        f"{name}: unknown setting (known: {', '.join(sorted(known))})"
        for name in os.environ
        if name.upper().startswith(ENV_PREFIX) and name[len(ENV_PREFIX) :].lower() not in known
    ]
    errors += [f"{source}: key {key!r}: unknown setting" for key in data if key not in known]
    if errors:
        raise ConfigError(errors)
    try:
        settings = ServerSettings(**data)
        if overrides:
            settings = exact_settings(**{**settings.model_dump(), **overrides})
        return settings
    except ValidationError as exc:
        raise ConfigError(
            [
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']} "
                f"(from {ENV_PREFIX}{str(e['loc'][0]).upper() if e['loc'] else ''} or {source})"
                for e in exc.errors(include_url=False, include_input=False)
            ]
        ) from None
    except SettingsError as exc:
        raise ConfigError([f"environment: {exc}"]) from None
