"""Key locks in Postgres, for ``acquire_lock_step``: one holder per key across all workers."""

from __future__ import annotations

from hub.store.store import Store


class LockService:
    """Registered in every hub's container as ``locks``."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def acquire(self, key: str, owner: str, ttl_s: float | None = None) -> bool:
        """Take ``key`` for ``owner`` (idempotent for the same owner); False if held."""
        return await self._store.lock_acquire(key, owner, ttl_s)

    async def release(self, key: str, owner: str) -> None:
        """Release ``key`` if ``owner`` holds it (a no-op otherwise)."""
        await self._store.lock_release(key, owner)
