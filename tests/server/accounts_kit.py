"""Small helpers for HTTP tests: register an account, log in, read all rows of the database."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import aiohttp
from sqlalchemy import select

from server.storage.schema import metadata
from server.storage.store import Store

PASSWORD = "correct horse battery staple"


@dataclass(frozen=True)
class Registered:
    account: dict[str, Any]
    api_key: str
    email: str

    @property
    def id(self) -> str:
        return str(self.account["id"])

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


def unique_email(tag: str = "dev") -> str:
    return f"{tag}-{secrets.token_hex(4)}@example.com"


async def register(
    client: aiohttp.ClientSession,
    *,
    email: str | None = None,
    plan: str = "free",
    password: str = PASSWORD,
) -> Registered:
    email = email or unique_email()
    body = {"name": "Dev Eloper", "email": email, "password": password, "plan": plan}
    async with client.post("/api/v1/accounts", json=body) as response:
        data = await response.json()
        assert response.status == 201, data
    return Registered(data["account"], data["api_key"], email)


async def login(
    client: aiohttp.ClientSession, email: str, password: str = PASSWORD
) -> dict[str, Any]:
    async with client.post(
        "/api/v1/session", json={"email": email, "password": password}
    ) as response:
        data: dict[str, Any] = await response.json()
        assert response.status == 200, data
    return data


async def create_node(
    client: aiohttp.ClientSession, who: Registered, name: str = "vpn-1"
) -> dict[str, Any]:
    async with client.post("/api/v1/nodes", json={"name": name}, headers=who.headers) as r:
        data: dict[str, Any] = await r.json()
        assert r.status == 201, data
    return data


async def all_rows(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table (the schema's and alembic_version), for scans."""
    rows: dict[str, list[tuple[Any, ...]]] = {}
    async with store.engine.connect() as conn:
        for table in metadata.sorted_tables:
            rows[table.name] = [tuple(row) for row in await conn.execute(select(table))]
    return rows


async def text_in_database(store: Store, needle: str) -> bool:
    rows = await all_rows(store)
    return any(needle in str(value) for table in rows.values() for row in table for value in row)
