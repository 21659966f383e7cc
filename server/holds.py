"""``oneconnect-server holds add|list|release``: legal holds on an account's data — the
operator's tool; no API route can add, change or release a hold.

    oneconnect-server holds add --account <id or e-mail> --kind dispute --reason TEXT \\
        --categories registration,plan [--until 2027-01-31] [--config server.toml]
    oneconnect-server holds list [--account <id or e-mail>] [--all] [--json]
    oneconnect-server holds release <hold id>

Kinds: dispute (unresolved), credit (outstanding), legal, tax, audit (retention duties), fraud
(prevention); categories: ``server.storage.categories``. ``--until`` is a UTC date: the hold
ends at the end of that day; without it the hold lasts until released. A hold keeps nothing
while the account exists (the account has its data); when the account is deleted, the hold's
categories are copied and the rest is deleted. A deleted account is named by its id (its
e-mail address is gone): a hold added then keeps only copies of what another active hold still
keeps. ``list`` shows active holds unless ``--all``; the reason is shown to operators only,
never in the API or the export. Exit codes: 0 done, 2 a usage error (unknown account, kind or
category, a date in the past, a hold not active), 1 storage unreachable.

The database is the server's (``--config`` / ``ONECONNECT_SERVER_DATABASE_URL``, as for
``migrate``), and must be migrated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from server.errors import ApiError, Unavailable
from server.storage.categories import CATEGORIES, HOLD_KINDS

if TYPE_CHECKING:
    from server.storage.deletion import Hold
    from server.storage.store import Store

EXIT_UNAVAILABLE = 1
EXIT_USAGE = 2
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class UsageError(Exception):
    """A wrong argument: printed, exit code 2."""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``holds`` command and its subcommands, on the server's command line."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, help="server config file (TOML)")
    holds = sub.add_parser(
        "holds",
        help="legal holds on an account's data (operator only)",
        description=_description(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = holds.add_subparsers(dest="holds_command", required=True)
    add = actions.add_parser("add", parents=[common], help="put a hold on an account's data")
    add.add_argument("--account", required=True, help="account id, or a live account's e-mail")
    add.add_argument("--kind", required=True, help=", ".join(HOLD_KINDS))
    add.add_argument("--reason", required=True, help="why (operators only; up to 500 chars)")
    add.add_argument("--categories", required=True, help=",".join(CATEGORIES))
    add.add_argument("--until", help="YYYY-MM-DD (UTC): ends at the end of that day")
    listing = actions.add_parser("list", parents=[common], help="show holds")
    listing.add_argument("--account", help="account id or e-mail address")
    listing.add_argument("--all", action="store_true", help="also released and ended holds")
    listing.add_argument("--json", action="store_true", help="JSON instead of text")
    release = actions.add_parser("release", parents=[common], help="end a hold now")
    release.add_argument("hold_id")


def _description() -> str:
    kinds = "\n".join(f"  {name:<18} {words}" for name, words in HOLD_KINDS.items())
    categories = "\n".join(f"  {name:<18} {words}" for name, words in CATEGORIES.items())
    return (
        "Legal holds keep part of an account's data past its deletion; only this command\n"
        "manages them. --until YYYY-MM-DD ends a hold at the end of that day (UTC); without\n"
        "it the hold lasts until released. Exit codes: 0 done, 2 usage error, 1 storage\n"
        f"unreachable.\n\nkinds:\n{kinds}\n\ncategories:\n{categories}"
    )


def run(args: argparse.Namespace, database_url: str, *, out: TextIO = sys.stdout) -> int:
    """Run one ``holds`` subcommand against ``database_url``; returns the exit code."""
    try:
        _check_database(database_url)
        return asyncio.run(_run(args, database_url, out))
    except UsageError as exc:
        print(f"oneconnect-server holds: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Unavailable:
        print(
            "oneconnect-server holds: storage is not reachable (check database_url; the "
            "database must be migrated: oneconnect-server migrate)",
            file=sys.stderr,
        )
        return EXIT_UNAVAILABLE
    except ApiError as exc:  # NotFound, Conflict, Unprocessable from the store
        message = exc.message
        if isinstance(exc.field, str) and message.startswith(f"{exc.field}:"):
            message = f"--{message}"
        print(f"oneconnect-server holds: {message}", file=sys.stderr)
        return EXIT_USAGE


def _check_database(url: str) -> None:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        path = Path(parsed.database)
        if not path.exists():
            raise UsageError(f"no database at {path} (run oneconnect-server migrate first)")


def parse_until(text: str | None, now: float) -> float | None:
    """The end of day ``text`` (UTC) as a timestamp; UsageError if malformed or past."""
    if text is None:
        return None
    try:
        if not _DATE.fullmatch(text):
            raise ValueError
        day = date.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--until: {text!r} is not a date like 2027-01-31") from None
    ends_at = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC).timestamp()
    if ends_at <= now:
        raise UsageError(f"--until: {text} is in the past")
    return ends_at


def parse_categories(text: str) -> list[str]:
    chosen = [c.strip() for c in text.split(",") if c.strip()]
    unknown = [c for c in chosen if c not in CATEGORIES]
    if unknown:
        raise UsageError(
            f"--categories: unknown {', '.join(map(repr, unknown))}; "
            f"choose from {', '.join(CATEGORIES)}"
        )
    if not chosen:
        raise UsageError(f"--categories: choose one or more of {', '.join(CATEGORIES)}")
    return chosen


def _check_kind(kind: str) -> str:
    if kind not in HOLD_KINDS:
        raise UsageError(f"--kind: unknown {kind!r}; choose from {', '.join(HOLD_KINDS)}")
    return kind


async def _run(args: argparse.Namespace, url: str, out: TextIO) -> int:
    from server.storage.store import Store  # the server's dependencies, checked by the CLI

    now = time.time()
    if args.holds_command == "add":  # check everything before opening the database
        kind = _check_kind(args.kind)
        categories = parse_categories(args.categories)
        ends_at = parse_until(args.until, now)
    store = await Store.open(url)
    try:
        if args.holds_command == "add":
            hold = await store.add_hold(
                args.account,
                kind=kind,
                reason=args.reason,
                categories=categories,
                ends_at=ends_at,
                now=now,
            )
            _print_added(hold, categories, out)
        elif args.holds_command == "list":
            found = await store.holds(args.account, include_inactive=args.all, now=now)
            _print_list(found, now, as_json=args.json, out=out)
        else:
            await _release(store, args.hold_id, now, out)
    finally:
        await store.close()
    return 0


async def _release(store: Store, hold_id: str, now: float, out: TextIO) -> None:
    hold, deletion = await store.release_hold(hold_id, now=now)
    print(f"hold {hold.id} released", file=out)
    if deletion == "completed":
        print(f"account {hold.account_id}: deleted; no data of it is left", file=out)
    elif deletion == "held":
        print(f"account {hold.account_id}: deleted; other holds still keep data", file=out)


def _when(ts: float | None, default: str = "-") -> str:
    if ts is None:
        return default
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _print_added(hold: Hold, asked: list[str], out: TextIO) -> None:
    print(f"hold {hold.id} added", file=out)
    print(
        f"  account     {hold.account_id}{' (deleted)' if hold.account_deleted else ''}", file=out
    )
    print(f"  kind        {hold.kind}", file=out)
    print(f"  categories  {', '.join(hold.categories)}", file=out)
    print(f"  ends        {_when(hold.ends_at, 'when released')}", file=out)
    lost = [c for c in asked if c not in hold.categories]
    if lost:
        print(f"  not held any more (already deleted): {', '.join(lost)}", file=out)


def hold_json(hold: Hold, now: float) -> dict[str, Any]:
    return {
        "id": hold.id,
        "account_id": hold.account_id,
        "account_deleted": hold.account_deleted,
        "kind": hold.kind,
        "reason": hold.reason,
        "categories": list(hold.categories),
        "held": list(hold.held),
        "state": hold.state(now),
        "created_at": hold.created_at,
        "ends_at": hold.ends_at,
        "released_at": hold.released_at,
    }


def _print_list(found: list[Hold], now: float, *, as_json: bool, out: TextIO) -> None:
    if as_json:
        json.dump([hold_json(h, now) for h in found], out, indent=2)
        print(file=out)
        return
    if not found:
        print("no holds", file=out)
        return
    for hold in found:
        deleted = " (deleted; keeps: " + (", ".join(hold.held) or "nothing") + ")"
        print(
            f"{hold.id}  {hold.kind:<8} {hold.state(now):<8} "
            f"account {hold.account_id}{deleted if hold.account_deleted else ''}",
            file=out,
        )
        print(f"    categories  {', '.join(hold.categories)}", file=out)
        print(f"    created     {_when(hold.created_at)}", file=out)
        print(f"    ends        {_when(hold.ends_at, 'when released')}", file=out)
        if hold.released_at is not None:
            print(f"    released    {_when(hold.released_at)}", file=out)
        print(f"    reason      {hold.reason}", file=out)
