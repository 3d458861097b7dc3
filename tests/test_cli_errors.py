"""The `runs` CLI, run as a real process: passwords never printed, every failure one line
(never a traceback), and the options that reach stores in their own schema or key prefix."""

from __future__ import annotations

import hashlib
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from .kit_base import cli, server_or_skip
from .postgres_kit import DSN, admin
from .redis_kit import URL as REDIS_URL
from .redis_kit import fresh_prefix

SECRET = "hunter2-S3KRET"
BACKENDS = ["asyncio", "trio"]


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The one line a failed command printed (and nothing else, no traceback, no secret)."""
    assert done.returncode != 0
    assert SECRET not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def with_password(url: str, where: str) -> str:
    """``url`` with ``SECRET`` as its password, in the userinfo or in the query."""
    parts = urllib.parse.urlsplit(url)
    hostport = parts.netloc.rpartition("@")[2]
    if where == "userinfo":
        netloc = f"{parts.username or ''}:{SECRET}@{hostport}"
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    query = "&".join(q for q in (parts.query, f"password={SECRET}") if q)
    return urllib.parse.urlunsplit(parts._replace(query=query))


def label(tmp_path: Path) -> str:
    return hashlib.sha256(str(tmp_path).encode()).hexdigest()[:16]


@pytest.fixture
def postgres_schema(tmp_path: Path) -> Iterator[str]:
    """A schema of this test's own on the real server, dropped afterwards."""
    if urllib.parse.urlsplit(DSN).password:
        pytest.skip("the test server's DSN has a password of its own")
    schema = f"awaitly_cli_{label(tmp_path)}"
    try:
        anyio.run(admin, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    except OSError as exc:
        server_or_skip("PostgreSQL", DSN, exc)
    yield schema
    anyio.run(admin, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own on the real server, wiped afterwards."""
    if urllib.parse.urlsplit(REDIS_URL).password:
        pytest.skip("the test server's URL has a password of its own")
    yield from fresh_prefix("cli")


@pytest.mark.parametrize("where", ["userinfo", "query"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_missing_run_on_postgres_is_reported_without_the_password(
    postgres_schema: str, where: str, backend: str
) -> None:
    url = with_password(DSN, where)
    store = ["runs", "--backend", backend, "--store", url, "--schema", postgres_schema]
    for action in ("show", "delete", "cancel", "resume", "fork"):
        done = cli(*store, action, "missing")
        assert done.returncode == 1
        line = one_error_line(done)
        assert line.startswith("error: no run 'missing' in postgresql://")
        assert "***" in line
    done = cli("schedules", *store[1:], "pause", "nightly")
    assert done.returncode == 1
    assert one_error_line(done).startswith("error: no schedule 'nightly' in postgresql://")
    dry = cli(*store, "cancel", "--status", "running", "--dry-run")
    assert (dry.returncode, dry.stdout, dry.stderr) == (0, "no runs to cancel (dry run)\n", "")
    # The schema option really reaches the store: the tables were made there.
    listing = cli(*store, "list")
    assert (listing.returncode, listing.stdout) == (0, "no runs\n")


@pytest.mark.parametrize("where", ["userinfo", "query"])
def test_a_missing_run_on_redis_is_reported_without_the_password(
    redis_prefix: str, where: str
) -> None:
    url = with_password(REDIS_URL, where)
    for action in ("show", "delete", "cancel", "resume", "fork"):
        done = cli("runs", "--store", url, "--key-prefix", redis_prefix, action, "missing")
        assert done.returncode == 1
        assert one_error_line(done).startswith("error: no run 'missing' in redis://")
    done = cli("schedules", "--store", url, "--key-prefix", redis_prefix, "remove", "nightly")
    assert done.returncode == 1
    assert one_error_line(done).startswith("error: no schedule 'nightly' in redis://")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_store_url_from_the_environment_is_not_printed_either(
    redis_prefix: str, backend: str
) -> None:
    env = {"AWAITLY_STORE_URL": with_password(REDIS_URL, "userinfo")}
    done = cli("runs", "--backend", backend, "--key-prefix", redis_prefix, "show", "x", env=env)
    line = one_error_line(done)
    assert line.endswith("(from $AWAITLY_STORE_URL)")
    assert "redis://" in line

    env = {"AWAITLY_STORE_URL": f"postgresql://app:{SECRET}@db:5432x/orders"}
    line = one_error_line(cli("runs", "list", env=env))
    assert "port" in line
    assert line.endswith("(from $AWAITLY_STORE_URL)")


@pytest.mark.parametrize(
    ("url", "cause"),
    [
        # Nothing listens on port 1.
        (f"postgresql://postgres:{SECRET}@127.0.0.1:1/test", "Connect call failed"),
        (f"postgresql://postgres@127.0.0.1:1/test?password={SECRET}", "Connect call failed"),
        (f"redis://default:{SECRET}@127.0.0.1:1/0", "ConnectionError"),
        (f"redis://127.0.0.1:1/0?password={SECRET}", "ConnectionError"),
    ],
)
@pytest.mark.parametrize("backend", BACKENDS)
def test_an_unreachable_store_is_one_line(url: str, cause: str, backend: str) -> None:
    line = one_error_line(cli("runs", "--backend", backend, "--store", url, "list"))
    assert line.startswith("error: cannot open store ")
    assert "127.0.0.1:1" in line
    assert cause in line


def test_refused_credentials_are_one_line(postgres_schema: str, redis_prefix: str) -> None:
    # Trust authentication takes any password: a role or database that does not exist
    # is refused instead.  Redis refuses a user it does not know.
    parts = urllib.parse.urlsplit(DSN)
    hostport = parts.netloc.rpartition("@")[2]
    no_role = f"postgresql://nobody_{postgres_schema}:{SECRET}@{hostport}/test"
    no_db = with_password(
        urllib.parse.urlunsplit(parts._replace(path="/no_such_db_awaitly")), "query"
    )
    redis_parts = urllib.parse.urlsplit(REDIS_URL)
    stranger = urllib.parse.urlunsplit(
        redis_parts._replace(netloc=f"stranger:{SECRET}@{redis_parts.netloc}")
    )
    for url, option, cause in (
        (no_role, ["--schema", postgres_schema], "does not exist"),
        (no_db, ["--schema", postgres_schema], "does not exist"),
        (stranger, ["--key-prefix", redis_prefix], "AuthenticationError"),
    ):
        line = one_error_line(cli("runs", "--store", url, *option, "list"))
        assert line.startswith("error: cannot open store ")
        assert cause in line


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (f"mysql://app:{SECRET}@db/orders", "unknown store scheme 'mysql'"),
        (f"postgresql://app@db/orders?password={SECRET}&port=99999", "port"),
        ("postgresql://u@127.0.0.1:99999/db", "port"),
        ("postgresql://u@127.0.0.1:abc/db", "port"),
        (f"redis://:{SECRET}@cache:abc/0", "port"),
    ],
)
def test_a_malformed_url_is_one_line(url: str, message: str) -> None:
    line = one_error_line(cli("runs", "--store", url, "list"))
    assert line.startswith("error: invalid store URL ")
    assert message in line


def test_options_for_another_store_are_refused(tmp_path: Path) -> None:
    line = one_error_line(cli("runs", "--store", "redis://cache:6379/0", "--schema", "s", "list"))
    assert line == "error: --schema is for PostgreSQL stores only"
    line = one_error_line(
        cli("runs", "--store", "sqlite:///x.db", "--key-prefix", "p:", "list", cwd=tmp_path)
    )
    assert line == "error: --key-prefix is for Redis stores only"


def test_sqlite_paths_that_are_not_databases_are_one_line_naming_the_path(
    tmp_path: Path,
) -> None:
    (tmp_path / "folder.db").mkdir()
    (tmp_path / "notes.db").write_text("not a database\n" * 100)
    line = one_error_line(cli("runs", "--store", "sqlite:///folder.db", "list", cwd=tmp_path))
    assert "'folder.db'" in line
    assert "folder" in line
    line = one_error_line(cli("runs", "--store", "sqlite:///notes.db", "list", cwd=tmp_path))
    assert "'notes.db'" in line
    assert "not a database" in line
