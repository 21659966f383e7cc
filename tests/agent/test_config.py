"""Agent config: strict, parsed once, errors name the key; env wins over the TOML file."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import ConfigError, load_settings, parse_listen, parse_port

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.upper().startswith("ONECONNECT_AGENT_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def errors_of(path: Path | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    return str(info.value)


def test_defaults() -> None:
    settings = load_settings(None)
    assert settings.interval == 5.0
    assert settings.server_url is None
    assert settings.metrics_listen is None
    assert settings.peer_k == 5


def test_example_config_is_valid() -> None:
    settings = load_settings(REPO / "deploy/config/agent.example.toml")
    assert settings.server_url == "https://alerts.example.com"
    assert ("udp", 51820) in settings.ports()


def test_env_wins_over_file_and_lists_are_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, 'interval = 10\nvpn_processes = ["ocserv"]\n')
    monkeypatch.setenv("ONECONNECT_AGENT_INTERVAL", "2")
    monkeypatch.setenv("ONECONNECT_AGENT_VPN_PROCESSES", '["openvpn","charon"]')
    settings = load_settings(path)
    assert settings.interval == 2.0
    assert settings.vpn_processes == ["openvpn", "charon"]


def test_unknown_file_key_is_named(tmp_path: Path) -> None:
    text = errors_of(write(tmp_path, "intervall = 5\n"))
    assert "'intervall'" in text
    assert "unknown setting" in text


def test_unknown_env_key_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONECONNECT_AGENT_SEVER_URL", "http://x")
    assert "ONECONNECT_AGENT_SEVER_URL" in errors_of()


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("interval = 0.2", "interval"),
        ("interval = 'fast'", "interval"),
        ("interval = 99999", "interval"),
        ("server_url = 'ftp://x'", "server_url"),
        ("server_url = 'http://user:pw@x'", "server_url"),
        ("server_url = 'http://x:99999'", "server_url"),
        ("server_url = 'http://x/?a=1'", "server_url"),
        ("vpn_ports = ['udp/0']", "vpn_ports"),
        ("vpn_ports = ['sctp/5']", "vpn_ports"),
        ("vpn_ports = [true]", "vpn_ports"),
        ("vpn_processes = ['open vpn']", "vpn_processes"),
        ("vpn_interfaces = ['averyveryverylongname']", "vpn_interfaces"),
        ("cert_files = ['relative.crt']", "cert_files"),
        ("metrics_listen = 'localhost:http'", "metrics_listen"),
        ("peer_k = 1", "peer_k"),
        ("log_format = 'xml'", "log_format"),
        ("buffer_seconds = 10", "buffer_seconds"),
        ("max_series = 5000", "max_series"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, toml: str, key: str) -> None:
    assert errors_of(write(tmp_path, toml + "\n")).startswith(key)


def test_bad_env_json_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONECONNECT_AGENT_VPN_PROCESSES", '["openvpn"')
    assert errors_of().startswith("ONECONNECT_AGENT_VPN_PROCESSES: not valid JSON")


def test_buffer_bound_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONECONNECT_AGENT_BUFFER_SECONDS", "86400")
    monkeypatch.setenv("ONECONNECT_AGENT_MAX_SERIES", "1900")
    monkeypatch.setenv("ONECONNECT_AGENT_INTERVAL", "1")
    text = errors_of()
    assert "buffer_seconds=86400" in text
    assert "the limit is 64 MiB" in text


def test_bad_toml_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "interval = 5\nserver_url = \n")
    text = errors_of(path)
    assert str(path) in text
    assert "line 2" in text


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    assert "not found" in errors_of(tmp_path / "nope.toml")
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    assert "cannot read" in errors_of(binary)


def test_ports_and_listen_parsing() -> None:
    assert parse_port(1194) == ("any", 1194)
    assert parse_port("UDP/51820") == ("udp", 51820)
    assert parse_listen("9108") == ("127.0.0.1", 9108)
    assert parse_listen("[::1]:9108") == ("::1", 9108)
    assert parse_listen("0.0.0.0:9108") == ("0.0.0.0", 9108)
    with pytest.raises(ValueError, match="outside"):
        parse_port(70000)
