"""Days until each configured certificate expires (the first certificate in each file)."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from agent.collectors.der import CertificateError, first_certificate, not_after
from agent.collectors.labels import unique_labels
from agent.samples import Sample, labels

MAX_CERT_FILE_BYTES = 1 << 20
REFRESH_SECONDS = 60.0
"""How often each file is read again (a renewed certificate shows within this time)."""


def read_not_after(path: Path) -> float:
    """notAfter of the first certificate in ``path``; OSError or CertificateError otherwise."""
    if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO or device would block or never end
        raise CertificateError("not a regular file")
    with open(path, "rb") as f:
        data = f.read(MAX_CERT_FILE_BYTES + 1)
    if len(data) > MAX_CERT_FILE_BYTES:
        raise CertificateError("file larger than 1 MiB")
    return not_after(first_certificate(data))


def _reason(label: str, exc: Exception) -> str:
    if isinstance(exc, FileNotFoundError):
        detail = "file not found"
    elif isinstance(exc, PermissionError):
        detail = "file not readable (permission denied)"
    elif isinstance(exc, IsADirectoryError):
        detail = "is a directory"
    elif isinstance(exc, CertificateError):
        detail = f"not a readable certificate: {exc}"
    elif isinstance(exc, OSError):
        detail = f"file not readable ({exc.strerror or type(exc).__name__})"
    else:
        detail = type(exc).__name__
    return f"certificate {label}: {detail}; its days-left figure is absent"


class CertCollector:
    """cert_days_left{cert=<file base name>} for each configured file.

    Reasons name the certificate by its label (sanitised base name), never by its path.
    """

    name = "certs"

    def __init__(
        self,
        *,
        cert_files: Sequence[Path],
        clock: Callable[[], float] = time.time,
        refresh_seconds: float = REFRESH_SECONDS,
    ) -> None:
        paths = list(dict.fromkeys(Path(p) for p in cert_files))
        self._certs = list(zip(paths, unique_labels([p.name for p in paths]), strict=True))
        self._clock = clock
        self._refresh = refresh_seconds
        self._read_at: float | None = None
        self._not_after: dict[str, float] = {}
        self._problems: tuple[str, ...] = ()

    def problems(self) -> Sequence[str]:
        return self._problems

    def collect(self, now: float) -> Sequence[Sample]:
        if self._read_at is None or not 0 <= now - self._read_at < self._refresh:
            self._read_at = now
            found: dict[str, float] = {}
            problems: list[str] = []
            for path, label in self._certs:
                try:
                    found[label] = read_not_after(path)
                except (OSError, CertificateError) as exc:
                    problems.append(_reason(label, exc))
            self._not_after, self._problems = found, tuple(problems)
        wall = self._clock()
        return [
            Sample("cert_days_left", (expiry - wall) / 86400.0, labels(cert=label))
            for label, expiry in self._not_after.items()
        ]
