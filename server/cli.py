"""``oneconnect-server run|demo|migrate`` (◆) and the operator's ``holds add|list|release``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from server import __version__, holds
from server.config import ConfigError, ServerSettings, load_settings
from server.logs import ACCESS_LOG_FORMAT, setup_logging

EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oneconnect-server",
        description="OneConnect Alert server: ingest, accounts, live state, alerts, API.",
    )
    parser.add_argument("--version", action="version", version=f"oneconnect-server {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="serve the API and the agents' stream")
    run.add_argument("--config", type=Path, help="server config file (TOML)")
    migrate = sub.add_parser("migrate", help="apply pending database migrations, then exit")
    migrate.add_argument("--config", type=Path, help="server config file (TOML)")
    demo = sub.add_parser(
        "demo",
        help="the whole system on this machine: server on SQLite, a demo account and node, "
        "a real agent; prints the URLs and the demo API key",
    )
    demo.add_argument("--data-dir", type=Path, default=Path("data/demo"))
    demo.add_argument("--port", type=int, default=8080, help="server port (0 = any free one)")
    demo.add_argument("--interval", type=float, default=2.0, help="the demo agent's interval")
    holds.add_parser(sub)
    return parser


def _settings(config: Path | None) -> ServerSettings:
    try:
        return load_settings(config)
    except ConfigError as exc:
        print("oneconnect-server: configuration error:", file=sys.stderr)
        for line in exc.errors:
            print(f"  {line}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def _check_extra() -> None:
    try:
        import sqlalchemy  # noqa: F401
    except ImportError:
        print(
            "oneconnect-server: the server's dependencies are not installed; "
            "install them with: pip install 'oneconnect-alert[server]'",
            file=sys.stderr,
        )
        raise SystemExit(EXIT_CONFIG) from None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _check_extra()
    if args.command == "demo":
        from server.demo import run_demo

        setup_logging("plain", "info")
        return asyncio.run(run_demo(args.data_dir, port=args.port, interval=args.interval))
    settings = _settings(args.config)
    setup_logging(settings.log_format, settings.log_level)
    if args.command == "migrate":
        from server.storage.migrate import migrate

        if settings.db_url().startswith("sqlite"):
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        applied = asyncio.run(migrate(settings.db_url()))
        print(f"migrated: {', '.join(applied)}" if applied else "database is up to date")
        return 0
    if args.command == "holds":
        return holds.run(args, settings.db_url())
    from aiohttp import web

    from server.app import create_app, own_the_collector

    host, port = settings.host_port()
    web.run_app(
        own_the_collector(create_app(settings)),
        host=host,
        port=port,
        access_log_format=ACCESS_LOG_FORMAT,
        access_log=logging.getLogger("aiohttp.access") if settings.access_log else None,
        print=lambda text: print(text.strip(), file=sys.stderr),
        shutdown_timeout=10,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
