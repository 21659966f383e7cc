"""API keys and dashboard sessions: stored as SHA-256 digests only (see server.security)."""

from __future__ import annotations

from typing import Final

from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from server.errors import Conflict
from server.security import display_prefix, new_id, secret_digest
from server.storage.base import StoreBase, shielded
from server.storage.records import ACCOUNT_COLS, KEY_COLS, Account, ApiKey, account_of, key_of
from server.storage.schema import accounts, api_keys, sessions

MAX_API_KEYS: Final = 20
MAX_SESSIONS: Final = 20
"""Per account; logging in past this drops the oldest session."""


class CredentialStore(StoreBase):
    async def _insert_key(self, conn: AsyncConnection, key: ApiKey, secret: str) -> None:
        await conn.execute(
            insert(api_keys).values(
                id=key.id,
                account_id=key.account_id,
                name=key.name,
                prefix=key.prefix,
                key_hash=secret_digest(secret),
                created_at=key.created_at,
            )
        )

    @shielded
    async def create_api_key(self, account_id: str, *, name: str, key: str, now: float) -> ApiKey:
        """Store a new key (plain ``key`` in, digest stored). Conflict past MAX_API_KEYS."""
        record = ApiKey(new_id(), account_id, name, display_prefix(key), now)
        async with self._tx(write=True) as conn:
            await self._lock_account(conn, account_id)
            count = await conn.scalar(
                select(func.count())
                .select_from(api_keys)
                .where(api_keys.c.account_id == account_id)
            )
            if (count or 0) >= MAX_API_KEYS:
                raise Conflict(f"an account can have at most {MAX_API_KEYS} API keys")
            await self._insert_key(conn, record, key)
        return record

    @shielded
    async def api_keys(self, account_id: str) -> list[ApiKey]:
        async with self._tx() as conn:
            rows = await conn.execute(
                select(*KEY_COLS)
                .where(api_keys.c.account_id == account_id)
                .order_by(api_keys.c.created_at, api_keys.c.id)
            )
            return [key_of(row) for row in rows]

    @shielded
    async def delete_api_key(self, account_id: str, key_id: str) -> bool:
        """Revoke (delete) a key; False if it is not this account's."""
        async with self._tx(write=True) as conn:
            result = await conn.execute(
                delete(api_keys).where(api_keys.c.id == key_id, api_keys.c.account_id == account_id)
            )
        return result.rowcount > 0

    @shielded
    async def account_by_api_key(self, key: str) -> tuple[Account, str] | None:
        """The account a presented API key belongs to, and the key's id."""
        async with self._tx() as conn:
            row = (
                await conn.execute(
                    select(*ACCOUNT_COLS, api_keys.c.id.label("key_id"))
                    .join(api_keys, api_keys.c.account_id == accounts.c.id)
                    .where(api_keys.c.key_hash == secret_digest(key))
                )
            ).first()
        return (account_of(row), row.key_id) if row else None

    # -- dashboard sessions -----------------------------------------------------------------
    @shielded
    async def create_session(
        self, account_id: str, session_id: str, *, now: float, expires_at: float
    ) -> None:
        """Store a session (digest only). Expired sessions of every account are purged, and
        the account's oldest go past MAX_SESSIONS."""
        async with self._tx(write=True) as conn:
            await self._lock_account(conn, account_id)
            await conn.execute(delete(sessions).where(sessions.c.expires_at <= now))
            keep = (
                select(sessions.c.id_hash)
                .where(sessions.c.account_id == account_id)
                .order_by(sessions.c.created_at.desc(), sessions.c.id_hash)
                .limit(MAX_SESSIONS - 1)
            )
            await conn.execute(
                delete(sessions).where(
                    sessions.c.account_id == account_id,
                    sessions.c.id_hash.not_in(keep.scalar_subquery()),
                )
            )
            await conn.execute(
                insert(sessions).values(
                    id_hash=secret_digest(session_id),
                    account_id=account_id,
                    created_at=now,
                    expires_at=expires_at,
                )
            )

    @shielded
    async def session_account(self, session_id: str, now: float) -> tuple[Account, str] | None:
        """The account of a live session and the session's digest; None when unknown or
        expired (an expired one is deleted)."""
        digest = secret_digest(session_id)
        async with self._tx() as conn:
            row = (
                await conn.execute(
                    select(*ACCOUNT_COLS, sessions.c.expires_at)
                    .join(sessions, sessions.c.account_id == accounts.c.id)
                    .where(sessions.c.id_hash == digest)
                )
            ).first()
        if row is None:
            return None
        if row.expires_at <= now:
            await self.delete_session(session_id)
            return None
        return account_of(row), digest

    @shielded
    async def delete_session(self, session_id: str) -> None:
        async with self._tx(write=True) as conn:
            await conn.execute(
                delete(sessions).where(sessions.c.id_hash == secret_digest(session_id))
            )

    @shielded
    async def purge_sessions(self, now: float) -> int:
        """Delete every expired session; returns how many."""
        async with self._tx(write=True) as conn:
            result = await conn.execute(delete(sessions).where(sessions.c.expires_at <= now))
        return result.rowcount
