"""Server logging: plain lines or JSON to stderr. No log line holds a client address, an API
key, a token or a password; the HTTP access log is off unless asked for, and then has no
client address."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Literal

ACCESS_LOG_FORMAT = '"%r" %s %b %Tfs'
"""aiohttp access-log format without %a / %{X-Forwarded-For}i: no client addresses."""


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(
    fmt: Literal["plain", "json"] = "plain",
    level: Literal["debug", "info", "warning", "error"] = "info",
) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    for name in ("oneconnect", "aiohttp.access", "aiohttp.server", "aiohttp.web"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False
