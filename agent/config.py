"""Agent configuration (◆): pydantic-settings, env prefix ``ONECONNECT_AGENT_``, a TOML file.

Precedence: environment variables over the ``--config`` TOML file over defaults. Parsing is
strict and happens once, at start-up: an unknown key (in the file or as an
``ONECONNECT_AGENT_*`` variable) or a bad value stops the agent with a message naming the key.
Lists in environment variables are JSON: ``ONECONNECT_AGENT_VPN_PROCESSES='["openvpn"]'``.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    SecretStr,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

ENV_PREFIX = "ONECONNECT_AGENT_"
MAX_SERIES = 1900
"""Below the protocol's 2,000 samples per frame, leaving room for the agent's own."""
MAX_BUFFER_BYTES = 64 * 1024 * 1024
"""The ring buffer's bound may not exceed this (the systemd unit allows 128 MiB in all)."""
_PROCESS_NAME = re.compile(r"[A-Za-z0-9_.+-]{1,32}")
_IFNAME = re.compile(r"[A-Za-z0-9_.:-]{1,15}")
_PORT_SPEC = re.compile(r"(?:(tcp|udp|any)/)?([0-9]{1,5})")


class ConfigError(Exception):
    """Configuration that cannot start the agent. ``str()`` names every offending key."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        frozen=True,
        case_sensitive=False,
        validate_default=True,
    )

    server_url: str | None = Field(
        default=None,
        description="The server's base URL, http(s)://host:port; the stream URL is derived. "
        "Unset: the agent runs standalone and prints its alerts.",
    )
    token: SecretStr | None = Field(default=None, description="The node token from enrolment")
    interval: float = Field(default=5.0, ge=1, le=3600, description="Seconds between cycles")
    rules: Path | None = Field(default=None, description="Rules file (TOML)")
    metrics_listen: str | None = Field(
        default=None,
        description="host:port (or a port, bound on 127.0.0.1) for Prometheus text; off if unset",
    )
    vpn_processes: list[str] = Field(
        default_factory=list,
        description="VPN daemon process names; empty = watch known daemons once seen",
    )
    vpn_interfaces: list[str] = Field(
        default_factory=list, description="Tunnel interfaces that must be up (e.g. wg0, tun0)"
    )
    vpn_ports: list[StrictInt | str] = Field(
        default_factory=list,
        description='Local ports the VPN service listens on: 1194, "udp/51820", "tcp/443"',
    )
    cert_files: list[Path] = Field(
        default_factory=list, description="PEM certificate files whose expiry is watched"
    )
    buffer_seconds: int = Field(
        default=3600, ge=60, le=86400, description="History kept in RAM per series"
    )
    max_series: int = Field(
        default=512, ge=16, le=MAX_SERIES, description="Series kept in RAM (and sent per cycle)"
    )
    peer_k: int = Field(default=5, ge=2, le=100, description="Counts below this are sent as '<k'")
    outbox_size: int = Field(
        default=1000, ge=10, le=100000, description="Unacked alert events kept"
    )
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
        # The TOML file's content arrives as init kwargs; the environment wins over it.
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _check_buffer_bound(self) -> AgentSettings:
        slots = math.ceil(self.buffer_seconds / self.interval)
        bound = slots * (8 + 4 * self.max_series)  # agent.buffer.RingBuffer.bound_bytes
        if bound > MAX_BUFFER_BYTES:
            raise ValueError(
                f"buffer_seconds={self.buffer_seconds} at interval={self.interval:g} with "
                f"max_series={self.max_series} needs {bound // 2**20} MiB of RAM; the limit is "
                f"{MAX_BUFFER_BYTES // 2**20} MiB: lower buffer_seconds or max_series"
            )
        return self

    @field_validator("server_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https"):
            raise ValueError("must start with http:// or https://")
        if not parts.hostname:
            raise ValueError("has no host")
        if parts.username or parts.password:
            raise ValueError("must not contain credentials; use token")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or fragment")
        try:
            _ = parts.port
        except ValueError:
            raise ValueError("has an invalid port") from None
        return value.rstrip("/")

    @field_validator("vpn_processes")
    @classmethod
    def _check_processes(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _PROCESS_NAME.fullmatch(name):
                raise ValueError(f"{name[:40]!r} is not a process name ([A-Za-z0-9_.+-], ≤32)")
        return value

    @field_validator("vpn_interfaces")
    @classmethod
    def _check_interfaces(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _IFNAME.fullmatch(name):
                raise ValueError(f"{name[:40]!r} is not an interface name (≤15 characters)")
        return value

    @field_validator("vpn_ports")
    @classmethod
    def _check_ports(cls, value: list[int | str]) -> list[int | str]:
        for spec in value:
            parse_port(spec)
        return value

    @field_validator("metrics_listen")
    @classmethod
    def _check_listen(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parse_listen(value)
        return value

    @field_validator("cert_files")
    @classmethod
    def _check_certs(cls, value: list[Path]) -> list[Path]:
        for path in value:
            if not path.is_absolute():
                raise ValueError(f"{str(path)[:80]!r} must be an absolute path")
        return value

    # -- derived ---------------------------------------------------------------------------
    def ports(self) -> list[tuple[str, int]]:
        return [parse_port(spec) for spec in self.vpn_ports]

    def listen_address(self) -> tuple[str, int] | None:
        return None if self.metrics_listen is None else parse_listen(self.metrics_listen)


def parse_port(spec: int | str) -> tuple[str, int]:
    """``1194`` → ("any", 1194); ``"udp/51820"`` → ("udp", 51820)."""
    if isinstance(spec, bool):
        raise ValueError("a port must be a number or 'proto/number'")
    if isinstance(spec, int):
        proto, number = "any", spec
    else:
        match = _PORT_SPEC.fullmatch(spec.strip().lower())
        if not match:
            raise ValueError(f"{spec[:40]!r} is not a port: use 1194, 'udp/51820' or 'tcp/443'")
        proto, number = match.group(1) or "any", int(match.group(2))
    if not 1 <= number <= 65535:
        raise ValueError(f"port {number} is outside 1-65535")
    return proto, number


def parse_listen(value: str) -> tuple[str, int]:
    """``"9108"`` → ("127.0.0.1", 9108); ``"[::1]:9108"``; ``"0.0.0.0:9108"`` (explicit only)."""
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", value
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{value[:60]!r} is not host:port with a port in 1-65535")
    return host, int(port)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{path}: config file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read config file: {exc}"]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: invalid TOML: {exc}"]) from None


def load_settings(config_file: Path | None = None) -> AgentSettings:
    """Parse the configuration once (file and os.environ). Raises ConfigError naming every bad
    or unknown key."""
    env = os.environ
    data = _read_toml(config_file) if config_file is not None else {}
    source = str(config_file) if config_file is not None else "config"
    known = set(AgentSettings.model_fields)
    errors = [
        f"{name}: unknown setting (known: {', '.join(sorted(known))})"
        for name in env
        if name.upper().startswith(ENV_PREFIX) and name[len(ENV_PREFIX) :].lower() not in known
    ]
    errors += [
        f"{source}: key {key!r}: unknown setting (known: {', '.join(sorted(known))})"
        for key in data
        if key not in known
    ]
    if errors:
        raise ConfigError(errors)
    try:
        return AgentSettings(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None
    except SettingsError as exc:
        match = re.search(r'field "(\w+)"', str(exc))
        if match:
            name = f"{ENV_PREFIX}{match.group(1).upper()}"
            raise ConfigError(
                [f"{name}: not valid JSON; lists are JSON, e.g. {name}='[\"openvpn\"]'"]
            ) from None
        raise ConfigError([f"environment: {exc}"]) from None


def _describe(exc: ValidationError, source: str) -> list[str]:
    out = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = error["loc"]
        if not loc:  # a check across several keys; its message names them
            out.append(str(error["msg"]).removeprefix("Value error, "))
            continue
        key = str(loc[0])
        where = ".".join(str(p) for p in loc)
        origin = f"{ENV_PREFIX}{key.upper()} or {source}"
        out.append(f"{where}: {error['msg']} (from {origin})")
    return out
