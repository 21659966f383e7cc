"""Run the real agent (`python -m agent.cli`) as a child process for whole-daemon tests."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

import psutil

FIRING_RULES = """
include_defaults = false

[[rule]]
name = "load_present"
metric = "load1"
op = ">="
threshold = 0
severity = "info"
summary = "load is {value:.2f}"
"""


def agent_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONECONNECT_AGENT_")}
    env.pop("NOTIFY_SOCKET", None)
    env.pop("WATCHDOG_USEC", None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["ONECONNECT_AGENT_INTERVAL"] = "1"
    env.update(extra or {})
    return env


class AgentProcess:
    """An agent child process with its stdout and stderr collected."""

    def __init__(self, proc: asyncio.subprocess.Process, wrapped: bool = False) -> None:
        self.proc = proc
        self.wrapped = wrapped
        self.stdout = ""
        self.stderr = ""

    @classmethod
    async def start(
        cls,
        *args: str,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        prefix: tuple[str, ...] = (),
    ) -> AgentProcess:
        proc = await asyncio.create_subprocess_exec(
            *prefix,
            sys.executable,
            "-m",
            "agent.cli",
            *(args or ("run",)),
            env=agent_env(env),
            cwd=cwd,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(proc, wrapped=bool(prefix))

    @property
    def pid(self) -> int:
        """The agent's pid; under a wrapper such as strace, the wrapper's child."""
        if not self.wrapped:
            return self.proc.pid
        children = psutil.Process(self.proc.pid).children()
        return children[0].pid if children else self.proc.pid

    def signal(self, sig: signal.Signals) -> None:
        os.kill(self.pid, sig)

    async def stop(self, timeout: float = 15.0) -> int:  # noqa: ASYNC109
        """SIGTERM, wait, collect output. Returns the exit code."""
        if self.proc.returncode is None:
            self.signal(signal.SIGTERM)
        return await self.wait(timeout)

    async def wait(self, timeout: float = 15.0) -> int:  # noqa: ASYNC109
        try:
            out, err = await asyncio.wait_for(self.proc.communicate(), timeout)
        except TimeoutError:
            self.proc.kill()
            out, err = await self.proc.communicate()
        self.stdout += out.decode(errors="replace")
        self.stderr += err.decode(errors="replace")
        assert self.proc.returncode is not None
        return self.proc.returncode

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.wait(5)
