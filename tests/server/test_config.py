"""Server config: strict, parsed once, errors name the key; env wins over the TOML file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from server.config import ConfigError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("ONECONNECT_SERVER_"):
            monkeypatch.delenv(name)


def errors_of(path: Path | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    return str(info.value)


def test_defaults_are_loopback_and_embedded_sqlite() -> None:
    settings = load_settings()
    assert settings.host_port() == ("127.0.0.1", 8080)
    assert settings.db_url().startswith("sqlite+aiosqlite:///")
    assert settings.db_url().endswith("data/oneconnect.db")
    assert settings.webhook_allow_networks == []
    assert settings.access_log is False


def test_env_wins_over_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "server.toml"
    path.write_text('listen = "127.0.0.1:9000"\nwebhook_allow_networks = ["127.0.0.0/8"]\n')
    monkeypatch.setenv("ONECONNECT_SERVER_LISTEN", "127.0.0.1:9100")
    settings = load_settings(path)
    assert settings.host_port() == ("127.0.0.1", 9100)
    assert [str(n) for n in settings.allow_networks()] == ["127.0.0.0/8"]


def test_overrides_win_over_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONECONNECT_SERVER_LISTEN", "127.0.0.1:9100")
    assert load_settings(listen="127.0.0.1:9200").host_port() == ("127.0.0.1", 9200)


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('listen = "nowhere"', "listen"),
        ('database_url = "mysql://x"', "database_url"),
        ('public_url = "ftp://x"', "public_url"),
        ('webhook_allow_networks = ["10.0.0.0/33"]', "webhook_allow_networks"),
        ('webhook_allow_networks = ["10.1.2.3/8"]', "webhook_allow_networks"),  # host bits
        ("webhook_repeat_interval = 30", "webhook_repeat_interval"),  # 0 or >= 60
        ("webhook_max_attempts = 0", "webhook_max_attempts"),
        ("webhook_disable_after = -1", "webhook_disable_after"),
        ("node_down_after = 1", "node_down_after"),
        ('log_format = "xml"', "log_format"),
        ("max_body_bytes = 10", "max_body_bytes"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, toml: str, key: str) -> None:
    path = tmp_path / "server.toml"
    path.write_text(toml + "\n")
    assert errors_of(path).startswith(key)


def test_unknown_keys_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "server.toml"
    path.write_text("lisen = 1\n")
    assert "'lisen'" in errors_of(path)
    path.write_text("")
    monkeypatch.setenv("ONECONNECT_SERVER_DATABASE", "x")
    assert "ONECONNECT_SERVER_DATABASE" in errors_of(path)


def test_bad_toml_is_named(tmp_path: Path) -> None:
    path = tmp_path / "server.toml"
    path.write_text("listen = \n")
    assert str(path) in errors_of(path)
    assert "not found" in errors_of(tmp_path / "missing.toml")


def test_readme_documents_every_server_setting() -> None:
    from server.config import ServerSettings

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert [k for k in ServerSettings.model_fields if f"`{k}`" not in readme] == []
