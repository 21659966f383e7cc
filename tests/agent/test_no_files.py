"""Privacy, tested: the real agent, streaming and firing alerts under strace, writes no file.

Any open for writing, create, rename, unlink, link, mkdir or truncate outside /dev and /proc
fails the test. (PYTHONDONTWRITEBYTECODE=1 is set as in the systemd unit, so the interpreter's
own bytecode cache is not mistaken for the agent's doing.)
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
from pathlib import Path

import pytest

from tests.agent.agent_process import FIRING_RULES, AgentProcess
from tests.agent.fake_server import FakeServer

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("strace") is None, reason="strace not installed"),
]

TRACED = (
    "open,openat,openat2,creat,rename,renameat,renameat2,unlink,unlinkat,link,linkat,"
    "symlink,symlinkat,mkdir,mkdirat,truncate,mknod,mknodat"
)
WRITE_FLAGS = re.compile(r"O_WRONLY|O_RDWR|O_CREAT|O_TRUNC|O_APPEND|O_TMPFILE")
PATH = re.compile(r'"((?:[^"\\]|\\.)*)"')
ALLOWED_PREFIXES = ("/dev/", "/proc/")


def violations(trace: str) -> list[str]:
    """Lines of an strace log that write, create, move or delete a file outside /dev and /proc
    (attempts that failed count too)."""
    bad = []
    for line in trace.splitlines():
        match = re.search(r"\b(\w+)\(", line)
        paths = PATH.findall(line)
        if not match or not paths:
            continue
        if match.group(1).startswith("open") and not WRITE_FLAGS.search(line):
            continue
        if all(p.startswith(ALLOWED_PREFIXES) for p in paths):
            continue
        bad.append(line.strip())
    return bad


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_violation_parser_catches_writes() -> None:
    trace = "\n".join(
        [
            '123 openat(AT_FDCWD, "/etc/passwd", O_RDONLY|O_CLOEXEC) = 3',
            '123 openat(AT_FDCWD, "/dev/null", O_WRONLY) = 4',
            '123 openat(AT_FDCWD, "/tmp/x", O_WRONLY|O_CREAT|O_TRUNC, 0666) = 5',
            '123 unlink("/tmp/y") = -1 ENOENT (No such file or directory)',
            '123 renameat2(AT_FDCWD, "/a", AT_FDCWD, "/b", 0) = 0',
        ]
    )
    assert len(violations(trace)) == 3


async def test_agent_writes_no_files(tmp_path: Path) -> None:
    trace_file = tmp_path / "trace.txt"
    rules = tmp_path / "rules.toml"
    rules.write_text(FIRING_RULES)
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    async with FakeServer(auto_ack=False) as server:
        agent = await AgentProcess.start(
            "run",
            env={
                "ONECONNECT_AGENT_SERVER_URL": server.url,
                "ONECONNECT_AGENT_TOKEN": "strace-token-0123456789",
                "ONECONNECT_AGENT_RULES": str(rules),
                "ONECONNECT_AGENT_METRICS_LISTEN": str(free_port()),
            },
            cwd=workdir,
            prefix=("strace", "-f", "-qq", "-e", f"trace={TRACED}", "-o", str(trace_file)),
        )
        try:
            await server.wait_for(lambda: len(server.metrics()) >= 4, timeout=30)
            await server.wait_for(lambda: len(server.alerts()) >= 1, timeout=10)
            server.auto_ack = True
            await server.drop()  # exercise reconnect and resend too
            await server.wait_for(lambda: len(server.acked) >= 1, timeout=15)
            await asyncio.sleep(1)
        finally:
            code = await agent.stop(timeout=30)
    assert code == 0, agent.stderr
    trace = trace_file.read_text()
    assert "openat(" in trace, "strace saw the agent open files at all"
    assert violations(trace) == []
    assert list(workdir.iterdir()) == []
