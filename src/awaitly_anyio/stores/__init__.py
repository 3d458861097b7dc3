"""The snapshot stores that ship with awaitly-anyio, and `open_store`.

Each store lives in its own module and imports its driver only when used, so
``from awaitly_anyio.stores import SQLiteStore`` costs nothing extra.  Every one is
the same store front over a row driver of its database.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._store import QueueStore

if TYPE_CHECKING:
    from .memory import MemoryStore
    from .postgres import PostgresStore
    from .redis import RedisStore
    from .sqlite import SQLiteStore

__all__ = ["MemoryStore", "PostgresStore", "RedisStore", "SQLiteStore", "open_store"]


def open_store(url: str, **options: Any) -> QueueStore:
    """Open the store a URL names; use it with ``async with``.

    - ``memory://``: `MemoryStore`
    - ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``:
      `SQLiteStore`
    - ``postgresql://user@host:5432/db``: `PostgresStore`
      (needs the ``postgres`` extra)
    - ``redis://host:6379/0``: `RedisStore` (needs the
      ``redis`` extra)

    Every one of them is a `QueueStore` (and so a `MailboxStore`, a `LeaseStore`,
    a `CheckpointStore` and a `SnapshotStore`), which is the declared return type:
    the store can be given to ``recover``, ``enqueue``, ``send`` and a durable ``run``
    as it is.

    ``options`` go to the store's constructor.  Raises ``ValueError`` for a URL
    with an unknown scheme, without a path, or malformed (a port that is not a
    number from 1 to 65535, an unencoded ``@`` or ``/`` in a password...); the
    message names the URL with its password and secret parameters masked.
    Nothing connects here: connection errors come when the store is first used.
    """
    from .._redact import redact_url
    from .._store_url import check_store_url

    try:
        scheme = check_store_url(url)
    except ValueError as exc:
        raise ValueError(f"invalid store URL {redact_url(url)}: {exc}") from None
    rest = url.partition("://")[2]
    if scheme == "memory":
        from .memory import MemoryStore

        return MemoryStore(**options)
    if scheme == "sqlite":
        from .sqlite import SQLiteStore

        return SQLiteStore(rest[1:], **options)
    if scheme in ("postgresql", "postgres"):
        from .postgres import PostgresStore

        return PostgresStore(f"{scheme}://{rest}", **options)
    from .redis import RedisStore

    return RedisStore(f"{scheme}://{rest}", **options)


def __getattr__(name: str) -> Any:
    if name == "MemoryStore":
        from .memory import MemoryStore

        return MemoryStore
    if name == "SQLiteStore":
        from .sqlite import SQLiteStore

        return SQLiteStore
    if name == "PostgresStore":
        from .postgres import PostgresStore

        return PostgresStore
    if name == "RedisStore":
        from .redis import RedisStore

        return RedisStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
