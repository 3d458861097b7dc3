"""Checking store and Redis URLs before anything connects, without echoing secrets.

Every check raises ``ValueError`` whose message says what is wrong and never
quotes the URL itself (a caller adds the URL through
`awaitly_anyio._redact.redact_url` when it wants to name it), so a
message can go into a settings error about a secret variable as it is.
"""

from __future__ import annotations

import re
import urllib.parse

__all__ = ["STORE_SCHEMES", "check_postgres_dsn", "check_redis_url", "check_store_url"]

#: The schemes ``open_store`` knows (``postgres`` and ``rediss``/``unix`` are aliases).
STORE_SCHEMES = ("memory", "sqlite", "postgresql", "postgres", "redis", "rediss", "unix")

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]{0,30}")
_IPV6 = re.compile(r"\[[^\]]*\](?::(?P<port>.*))?")
_PORT_RULE = "a port is a whole number from 1 to 65535"


def scheme_of(url: object) -> str:
    """The lower-cased scheme of ``url``; ``ValueError`` if it has none."""
    if not isinstance(url, str):
        # ValueError, as for every other bad URL: callers catch one type.
        raise ValueError(f"a store URL is a string, not {type(url).__name__}")  # noqa: TRY004
    scheme, sep, _ = url.partition("://")
    if not sep or not _SCHEME.fullmatch(scheme):
        raise ValueError(
            "a store URL starts with its scheme and '://', as in 'sqlite:///runs.db',"
            " 'postgresql://user@host/db', 'redis://host:6379/0' or 'memory://'"
        )
    return scheme.lower()


def check_store_url(url: object) -> str:
    """Check a URL ``open_store`` would take; return its lower-cased scheme."""
    scheme = scheme_of(url)
    rest = str(url).partition("://")[2]
    if scheme == "memory":
        if rest not in ("", "/"):
            raise ValueError("memory:// takes no path")
    elif scheme == "sqlite":
        if not rest.startswith("/") or rest == "/":
            raise ValueError("a SQLite URL is sqlite:///relative.db or sqlite:////absolute/path.db")
    elif scheme in ("postgresql", "postgres"):
        check_postgres_dsn(f"{scheme}://{rest}")
    elif scheme in ("redis", "rediss", "unix"):
        check_redis_url(f"{scheme}://{rest}")
    else:
        raise ValueError(
            f"unknown store scheme {scheme!r} (known: memory, sqlite, postgresql, redis)"
        )
    return scheme


def _authority(url: str) -> str:
    """The ``user:password@hosts`` part of ``url`` (``ValueError`` if it cannot be split)."""
    try:
        return urllib.parse.urlsplit(url).netloc
    except ValueError:
        raise ValueError("its host part cannot be read (an unclosed '[' ?)") from None


def _hosts(url: str, what: str) -> list[str]:
    """The ``host[:port]`` specs of ``url``, the userinfo checked and dropped."""
    netloc = _authority(url)
    if netloc.count("@") > 1:
        raise ValueError(
            f"the {what} URL has more than one '@' before its host: write an '@' in the"
            " user name or password as %40"
        )
    if "@" not in netloc and "@" in urllib.parse.urlsplit(url).path:
        raise ValueError(
            f"the {what} URL has an '@' after its host: a '/' in the user name or"
            " password is written %2F (and '?' %3F, '#' %23)"
        )
    hosts = netloc.rpartition("@")[2]
    return hosts.split(",") if hosts else []


def _check_port(text: str | None, what: str) -> None:
    """Refuse a port that is not a number from 1 to 65535 (none or empty: the default)."""
    if not text:
        return
    text = urllib.parse.unquote(text)
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 65535):
        # The text itself is not shown: in a URL with an unencoded '/' in its
        # password, what looks like the port is part of the password.
        raise ValueError(f"the port of the {what} URL is not valid: {_PORT_RULE}")


def check_postgres_dsn(dsn: str) -> None:
    """Check what asyncpg would only find when connecting: the scheme, the ports (of
    every host, and a ``port=`` parameter) and the userinfo."""
    if not isinstance(dsn, str) or not dsn.startswith(("postgresql://", "postgres://")):
        raise ValueError("a PostgreSQL DSN starts with postgresql:// or postgres://")
    for spec in _hosts(dsn, "PostgreSQL"):
        if spec.startswith("["):
            found = _IPV6.fullmatch(spec)
            if found is None:
                raise ValueError("the PostgreSQL URL has a malformed IPv6 address")
            port = found["port"]
        else:
            port = spec.partition(":")[2]
        _check_port(port, "PostgreSQL")
    query = urllib.parse.urlsplit(dsn).query
    try:  # as strictly as asyncpg reads it
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise ValueError(
            "the query of the PostgreSQL URL is malformed: it is name=value pairs joined by '&'"
        ) from None
    for name, value in pairs:
        if name == "port":
            for part in value.split(","):
                _check_port(part, "PostgreSQL")


def check_redis_url(url: str) -> None:
    """Check a ``redis://``, ``rediss://`` or ``unix://`` URL as redis-py would read it,
    and what redis-py lets pass silently (a database that is not a number)."""
    if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("a Redis URL starts with redis://, rediss:// or unix://")
    hosts = _hosts(url, "Redis")
    parts = urllib.parse.urlsplit(url)
    if url.startswith("unix://"):
        if not parts.path:
            raise ValueError("a unix:// Redis URL names its socket: unix:///path/to/redis.sock")
    else:
        if len(hosts) > 1:
            raise ValueError("a Redis URL names one host")
        spec = hosts[0] if hosts else ""
        if spec.startswith("["):
            found = _IPV6.fullmatch(spec)
            if found is None:
                raise ValueError("the Redis URL has a malformed IPv6 address")
            port = found["port"]
        else:
            port = spec.partition(":")[2]
        _check_port(port, "Redis")
        database = parts.path.strip("/")
        if database and not (database.isascii() and database.isdigit()):
            raise ValueError("the database of a Redis URL (its path) is a number, as in /0")
    for name, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        if name == "db" and not (value.isascii() and value.isdigit()):
            raise ValueError("the db parameter of a Redis URL is a number")
