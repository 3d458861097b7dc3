"""Every ```python example in docs/*.md and README.md runs, on asyncio and on trio.

Convention for the examples: a block is a complete program.  If it defines
``async def main() -> None`` the harness calls ``anyio.run(main, backend=...)``
once per backend; a block without ``main`` is only executed.  Blocks under
``docs/`` never call ``anyio.run`` themselves (the README's may: its call is
intercepted and ``main`` is run by the harness instead).

Tags: a block fenced as ```` ```{.python .sqlite} ```` (the attribute form, which
pymdownx.superfences renders as Python; ```` ```python sqlite ```` is read too)
needs ``awaitly_anyio.stores.sqlite`` and is skipped when that module cannot be
imported; one tagged ``py311`` is skipped on Python 3.10.  Blocks tagged
``postgres`` or ``redis`` need that server (skipped when it is unreachable,
failed under ``CI=true``); they use the schema ``awaitly_docs`` or the key
prefix ``awaitly-docs:``, which the harness clears before and after.  A block
tagged ``no-run`` (a sketch needing services we do not run) is only compiled.

Each block runs as a fresh module (so dataclasses, attrs and cattrs resolve
its classes as usual), in a fresh temporary directory, with the default type
registry restored afterwards (so ``register_type`` in one run of an example
does not clash with the next).  Line numbers in tracebacks are those of the
Markdown file.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest

from awaitly_anyio.serialization import default_registry

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES_WITHOUT_EXAMPLES = {"reference.md", "comparison.md"}

# ```python, optionally followed by words (```python sqlite), or the attribute form that
# pymdownx.superfences renders: ```{.python .sqlite}.  The words/classes are the block's tags.
_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?:python(?P<info>[^\n`{]*)|\{[ \t]*\.python(?P<attrs>[^\n}]*)\})"
    r"[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
    re.MULTILINE | re.DOTALL,
)


@attrs.frozen
class Example:
    """One ```python block: where it is, its fence options and its code."""

    path: str  # relative to the repository root, e.g. "docs/steps.md"
    index: int  # 1-based among the file's python blocks
    line: int  # line of the opening fence
    tags: frozenset[str]
    code: str = attrs.field(repr=False)

    @property
    def id(self) -> str:
        return f"{self.path}:block{self.index}"


def _sources() -> list[Path]:
    return [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]


def _examples(path: Path) -> list[Example]:
    text = path.read_text(encoding="utf-8")
    found = []
    for index, match in enumerate(_FENCE.finditer(text), start=1):
        indent = match["indent"]
        lines = match["body"].splitlines()
        code = "\n".join(line.removeprefix(indent) for line in lines) + "\n"
        line = text.count("\n", 0, match.start()) + 1
        found.append(
            Example(
                path=path.relative_to(ROOT).as_posix(),
                index=index,
                line=line,
                tags=frozenset(
                    word.lstrip(".")
                    for word in f"{match['info'] or ''} {match['attrs'] or ''}".split()
                ),
                code=code,
            )
        )
    return found


EXAMPLES = [example for source in _sources() for example in _examples(source)]


def _sqlite_available() -> bool:
    try:
        importlib.import_module("awaitly_anyio.stores.sqlite")
    except ImportError:
        return False
    return True


@contextmanager
def _isolated_registry() -> Iterator[None]:
    """Undo every ``register_type`` an example makes (its classes are new on every run)."""
    by_name = dict(default_registry._by_name)
    by_type = dict(default_registry._by_type)
    try:
        yield
    finally:
        default_registry._by_name.clear()
        default_registry._by_name.update(by_name)
        default_registry._by_type.clear()
        default_registry._by_type.update(by_type)


def _execute(example: Example, backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    module_name = "docs_example_" + re.sub(r"\W", "_", example.id)
    module = types.ModuleType(module_name)
    module.__file__ = str(ROOT / example.path)
    monkeypatch.setitem(sys.modules, module_name, module)
    # Leading blank lines make traceback line numbers those of the Markdown file.
    source = "\n" * example.line + example.code
    code = compile(source, f"{example.path}:block {example.index}", "exec")
    calls: list[Callable[..., Any]] = []

    def record(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        calls.append(fn)

    # While the block's top level runs, `anyio.run(fn, ...)` only records `fn`.
    with monkeypatch.context() as patch:
        patch.setattr(anyio, "run", record)
        exec(code, module.__dict__)
    if example.path.startswith("docs/"):
        assert not calls, (
            f"{example.id} calls anyio.run itself; define `async def main() -> None` "
            f"and let the test harness run it"
        )
    main = module.__dict__.get("main")
    if main is None:
        return
    assert callable(main), f"{example.id}: `main` is not callable"
    anyio.run(main, backend=backend)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("example", EXAMPLES, ids=[example.id for example in EXAMPLES])
def test_example_runs(
    example: Example, backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if "sqlite" in example.tags and not _sqlite_available():
        pytest.skip("awaitly_anyio.stores.sqlite is not importable")
    if "py311" in example.tags and sys.version_info < (3, 11):
        pytest.skip("the example needs Python 3.11 (typing.assert_type)")
    monkeypatch.chdir(tmp_path)
    if "no-run" in example.tags:
        compile(example.code, example.id, "exec")
        return
    with _servers(example.tags), _isolated_registry(), _collector(example.tags, monkeypatch):
        _execute(example, backend, monkeypatch)


@contextmanager
def _collector(tags: frozenset[str], monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """For a block tagged ``otlp``: a local OTLP/HTTP receiver as
    ``OTEL_EXPORTER_OTLP_ENDPOINT``, which must have received spans by the end."""
    if "otlp" not in tags:
        yield
        return
    from .otlp_receiver import otlp_receiver, spans_received

    with otlp_receiver() as (url, received):
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
        yield
        assert spans_received(received), "the example exported no spans to the collector"


@contextmanager
def _servers(tags: frozenset[str]) -> Iterator[None]:
    """Clear the docs' PostgreSQL schema and Redis keys around a block that uses them."""
    from .kit_base import server_or_skip
    from .postgres_kit import DSN, admin
    from .redis_kit import URL, wipe

    def clear() -> None:
        if "postgres" in tags:
            anyio.run(admin, 'DROP SCHEMA IF EXISTS "awaitly_docs" CASCADE')
        if "redis" in tags:
            wipe("awaitly-docs:")

    try:
        clear()
    except Exception as exc:
        server_or_skip("PostgreSQL" if "postgres" in tags else "Redis", DSN or URL, exc)
    try:
        yield
    finally:
        clear()


def test_examples_were_found() -> None:
    assert EXAMPLES, "no ```python blocks found in docs/ or README.md"


@pytest.mark.parametrize(
    "page", sorted(p.name for p in DOCS.glob("*.md") if p.name not in PAGES_WITHOUT_EXAMPLES)
)
def test_every_page_has_an_example(page: str) -> None:
    assert _examples(DOCS / page), f"docs/{page} has no ```python example"


def test_every_page_is_in_the_nav() -> None:
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    missing = [p.name for p in DOCS.glob("*.md") if p.name not in nav]
    assert not missing, f"pages missing from mkdocs.yml nav: {missing}"


def test_doc_examples_pass_mypy_strict(tmp_path: Path) -> None:
    """The examples under docs/ are typed code: ``mypy --strict`` accepts every one of them
    (which is also what gives typing.md's ``assert_type`` calls their meaning)."""
    pytest.importorskip("mypy")
    files = []
    for example in EXAMPLES:
        if not example.path.startswith("docs/") or "no-run" in example.tags:
            continue
        module = tmp_path / (re.sub(r"\W", "_", example.id) + ".py")
        # Blank lines first, so mypy reports the line numbers of the Markdown file.
        module.write_text("\n" * example.line + example.code, encoding="utf-8")
        files.append(str(module))
    assert files
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(tmp_path / ".mypy_cache"),
            *files,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    report = done.stdout.replace(str(tmp_path) + "/", "") + done.stderr
    assert done.returncode == 0, f"mypy --strict rejects doc examples:\n{report}"
