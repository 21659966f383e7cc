"""Deploy files: the hardened systemd unit verifies cleanly; example configs are valid."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import load_settings
from agent.rules import load_rules

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy/systemd/oneconnect-agent.service"


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_verifies_with_empty_stderr(tmp_path: Path) -> None:
    # systemd-analyze checks that ExecStart's binary exists; on a machine where the agent is
    # not installed in /usr/local/bin we point ExecStart at this environment's interpreter and
    # change nothing else.
    text = UNIT.read_text()
    installed = Path("/usr/local/bin/oneconnect-agent")
    if not installed.exists():
        text = text.replace(str(installed), sys.executable)
    unit = tmp_path / UNIT.name
    unit.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.stderr == ""
    assert result.returncode == 0


def test_unit_is_hardened() -> None:
    s = unit_settings()
    assert s["Type"] == ["notify"]
    assert s["NoNewPrivileges"] == ["yes"]
    assert s["ProtectSystem"] == ["strict"]
    assert s["ProtectHome"] == ["yes"]
    assert s["DynamicUser"] == ["yes"]
    assert "ReadWritePaths" not in s, "the agent writes no files"
    assert "StateDirectory" not in s
    assert "LogsDirectory" not in s
    assert "CacheDirectory" not in s
    assert set(s["CapabilityBoundingSet"][0].split()) == {"CAP_NET_ADMIN", "CAP_DAC_READ_SEARCH"}
    assert s["AmbientCapabilities"] == s["CapabilityBoundingSet"]
    assert "PYTHONDONTWRITEBYTECODE=1" in s["Environment"][0]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]


def test_example_agent_config_and_rules_validate() -> None:
    settings = load_settings(REPO / "deploy/config/agent.example.toml")
    assert settings.interval == 5
    assert load_rules(REPO / "deploy/config/rules.example.toml").rules
    demo = load_settings(REPO / "deploy/config/demo.toml")
    assert demo.rules is not None
    assert load_rules(REPO / demo.rules).rules


def test_readme_lists_every_metric_and_setting() -> None:
    from agent.config import AgentSettings
    from agent.metrics import METRICS

    readme = (REPO / "README.md").read_text()
    assert [m for m in METRICS if f"| `{m}` |" not in readme] == []
    assert [k for k in AgentSettings.model_fields if f"| `{k}` |" not in readme] == []
