"""Nothing bypasses the privacy gate: a scan of the agent package's source.

Every call that can put bytes on the network (websocket sends, HTTP responses with a body,
raw socket writes) must sit in one of the reviewed places below, each of which sends only what
came out of ``PrivacyGate``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import agent

PACKAGE = Path(agent.__file__).parent
SEND_METHODS = {
    "send_str",
    "send_bytes",
    "send_json",
    "send_frame",
    "write",
    "sendto",
    "sendall",
    "send",
    "sendmsg",
    "write_eof",
}
# (module, function) → why it may send.
ALLOWED = {
    ("stream.py", "_send"): "the stream's single send method; gates every message",
    ("systemd.py", "notify"): "READY=1/WATCHDOG=1 to the local systemd socket; fixed strings",
    ("daemon.py", "publish"): "standalone mode prints gated alert events to stdout",
    ("cli.py", "main"): "`check` prints the gated messages of one cycle to stdout",
}


def _calls() -> list[tuple[str, str, str, int]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for func in ast.walk(tree):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(func):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in SEND_METHODS
                ):
                    found.append((path.name, func.name, node.func.attr, node.lineno))
    return found


def test_every_network_send_is_in_a_reviewed_place() -> None:
    offenders = [c for c in _calls() if (c[0], c[1]) not in ALLOWED]
    assert offenders == [], f"sends outside the reviewed places: {offenders}"


def test_the_stream_send_method_exists_and_gates() -> None:
    source = (PACKAGE / "stream.py").read_text()
    tree = ast.parse(source)
    (send,) = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == "_send"
    ]
    body = ast.unparse(send)
    assert "gate" in body, "the stream's _send must call the privacy gate"


def test_exposition_serves_only_gated_samples() -> None:
    daemon = ast.unparse(ast.parse((PACKAGE / "daemon.py").read_text()))
    assert "self.exposition.update(self.gate.filter_samples(" in daemon
    assert daemon.count("self.exposition.update(") == 1
