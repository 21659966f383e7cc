"""The storage layer's records: frozen dataclasses the Store returns, and row converters.

Nothing here is secret: password hashes and token digests never leave the Store in a record.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from sqlalchemy import Row

from server.plans import Plan, get_plan
from server.storage.schema import accounts, api_keys, nodes

AnyRow: TypeAlias = Row[*tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class Account:
    id: str
    name: str
    email: str
    company: str | None
    plan: str
    created_at: float

    @property
    def plan_limits(self) -> Plan:
        return get_plan(self.plan)


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    account_id: str
    name: str
    prefix: str
    created_at: float


@dataclass(frozen=True, slots=True)
class Node:
    id: str
    account_id: str
    name: str
    token_prefix: str
    created_at: float
    enrolled_at: float | None


@dataclass(frozen=True, slots=True)
class NodeRef:
    """What ingest needs about a node: who owns it and the plan's shortest interval."""

    id: str
    account_id: str
    name: str
    min_interval: float


class Keep(enum.Enum):
    """Sentinel for "leave this field as it is" in updates where None is a value."""

    KEEP = 0


KEEP: Final = Keep.KEEP

ACCOUNT_COLS = (
    accounts.c.id,
    accounts.c.name,
    accounts.c.email,
    accounts.c.company,
    accounts.c.plan,
    accounts.c.created_at,
)
KEY_COLS = (
    api_keys.c.id,
    api_keys.c.account_id,
    api_keys.c.name,
    api_keys.c.prefix,
    api_keys.c.created_at,
)
NODE_COLS = (
    nodes.c.id,
    nodes.c.account_id,
    nodes.c.name,
    nodes.c.token_prefix,
    nodes.c.created_at,
    nodes.c.enrolled_at,
)
REF_COLS = (nodes.c.id, nodes.c.account_id, nodes.c.name, accounts.c.plan)


def account_of(row: AnyRow) -> Account:
    return Account(row.id, row.name, row.email, row.company, row.plan, row.created_at)


def key_of(row: AnyRow) -> ApiKey:
    return ApiKey(row.id, row.account_id, row.name, row.prefix, row.created_at)


def node_of(row: AnyRow) -> Node:
    return Node(row.id, row.account_id, row.name, row.token_prefix, row.created_at, row.enrolled_at)


def ref_of(row: AnyRow) -> NodeRef:
    return NodeRef(row.id, row.account_id, row.name, get_plan(row.plan).min_interval)


def normalise_email(email: str) -> str:
    return email.strip().lower()
