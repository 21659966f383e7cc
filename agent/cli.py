"""``oneconnect-agent run|check|validate`` (◆)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from agent import __version__
from agent.config import AgentSettings, ConfigError, load_settings
from agent.logs import setup_logging
from agent.rules import RulesError, load_rules

EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oneconnect-agent",
        description="OneConnect Alert agent: VPN-node health in memory, alerts over a stream.",
    )
    parser.add_argument("--version", action="version", version=f"oneconnect-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("run", "run the agent in the foreground"),
        ("check", "print, as JSON, exactly what one cycle would send (after the privacy gate)"),
        ("validate", "validate the config and rules files, then exit"),
    ):
        cmd = sub.add_parser(name, help=text, description=text)
        cmd.add_argument("--config", type=Path, help="agent config file (TOML)")
        if name == "validate":
            cmd.add_argument(
                "--rules", type=Path, help="a rules file to validate (default: from config)"
            )
        if name == "check":
            cmd.add_argument(
                "--settle",
                type=float,
                default=1.0,
                help="seconds between the warm-up read and the cycle (rates need two reads)",
            )
    return parser


def _settings(config: Path | None) -> AgentSettings:
    try:
        return load_settings(config)
    except ConfigError as exc:
        print("oneconnect-agent: configuration error:", file=sys.stderr)
        for line in exc.errors:
            print(f"  {line}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = _settings(args.config)
    if args.command == "validate":
        rules_path = args.rules or settings.rules
        try:
            ruleset = load_rules(rules_path)
        except RulesError as exc:
            print(f"oneconnect-agent: invalid rules:\n{exc}", file=sys.stderr)
            return EXIT_CONFIG
        from agent.daemon import Agent

        try:  # everything `run` checks before it starts, without starting anything
            Agent(settings, rules=ruleset)
        except ValueError as exc:
            print(f"oneconnect-agent: configuration error: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        where = str(rules_path) if rules_path else "built-in defaults"
        print(f"config OK; rules OK ({where}): {len(ruleset.rules)} rules")
        return 0

    setup_logging(settings.log_format, settings.log_level)
    # Imported here so `validate` stays light.
    from agent.daemon import Agent, check_once

    try:
        agent = Agent(settings)
    except RulesError as exc:
        print(f"oneconnect-agent: invalid rules:\n{exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ValueError as exc:
        print(f"oneconnect-agent: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "check":
        result = asyncio.run(check_once(agent, settle=max(0.0, args.settle)))
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    return asyncio.run(agent.run())


if __name__ == "__main__":
    sys.exit(main())
