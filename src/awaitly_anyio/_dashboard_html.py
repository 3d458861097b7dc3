"""The dashboard's HTML: escaping, masking of values that look like secrets, the page
frame and the pieces the pages share.  Pure functions returning text; the app
(`awaitly_anyio.dashboard`) reads the store and calls them.

Every text that comes from a store or a caller goes through `esc` (``html.escape``
with quotes) before it reaches the page, and through `masked` first when it is a
value (an input, a result, metadata, a step's value).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from html import escape
from typing import Any, cast
from urllib.parse import urlencode

import attrs

from ._redact import _SECRET_NAME, MASK, redact_text

__all__ = ["esc", "masked", "page", "shown_value", "when"]

_SECRET_KEY = re.compile(_SECRET_NAME, re.I)
# Strings that are secrets whatever their key: API keys of well-known forms, bearer
# tokens, JSON web tokens, PEM private keys.
_SECRET_VALUE = re.compile(
    r"(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{8,}"
    r"|gh[pousr]_[A-Za-z0-9]{20,}"
    r"|xox[abpr]-[A-Za-z0-9-]{10,}"
    r"|AKIA[0-9A-Z]{16}"
    r"|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/=-]{16,}"
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----"
)
_DEPTH = 20  # nesting shown; deeper is elided
_ITEMS = 200  # items of one container shown


_SPECIAL = re.compile("[&<>\"']")


def esc(text: object) -> str:
    """``text`` (``str()`` of it) escaped for HTML text and quoted attributes."""
    text = str(text)
    # Most stored texts hold nothing to escape: a search is cheaper than five replaces.
    return escape(text, quote=True) if _SPECIAL.search(text) else text


def masked(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON-able data with what looks like a secret replaced by ``***``:
    the value of a key named like a secret (``password``, ``api_key``, ``token``,
    ``authorization``...), strings of known secret forms (API keys, JWTs, bearer
    tokens, private keys), and the passwords and secret parameters of URLs."""
    if depth > _DEPTH:
        return "…"
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        if _SECRET_VALUE.search(value):
            return MASK
        return redact_text(value)
    if isinstance(value, Mapping):
        mapping = cast("Mapping[object, Any]", value)
        out: dict[str, Any] = {}
        for n, (key, item) in enumerate(mapping.items()):
            if n >= _ITEMS:
                out["…"] = f"{len(mapping) - _ITEMS} more"
                break
            name = str(key)
            secret = _SECRET_KEY.fullmatch(name) is not None
            out[redact_text(name)] = MASK if secret else masked(item, depth + 1)
        return out
    if isinstance(value, list | tuple | set | frozenset):
        items = list(cast("Iterable[Any]", value))
        shown = [masked(item, depth + 1) for item in items[:_ITEMS]]
        if len(items) > _ITEMS:
            shown.append(f"… {len(items) - _ITEMS} more")
        return shown
    kind: type[object] = type(cast("object", value))
    if attrs.has(kind):
        try:
            fields = attrs.asdict(value, recurse=False)
        except Exception:
            fields = None
        if fields is not None:
            return {type(value).__name__: masked(fields, depth + 1)}
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return MASK if _SECRET_VALUE.search(text) else redact_text(text)


def shown_value(value: Any) -> str:
    """``value`` masked, as indented JSON text (not yet escaped)."""
    return json.dumps(masked(value), indent=2, ensure_ascii=False, default=str)


def when(value: datetime | None) -> str:
    """A time as ``2026-01-02 03:04:05Z`` (UTC), ``-`` for none."""
    if value is None:
        return "-"
    if value.tzinfo is not timezone.utc:
        value = value.astimezone(timezone.utc)
    return value.isoformat(" ", "seconds")[:19] + "Z"  # (strftime costs twice as much)


def href(base: str, path: str, **query: object) -> str:
    """A link to ``path`` of the app mounted at ``base``, with ``query`` (``None`` values
    left out), escaped for an attribute."""
    params = {k: str(v) for k, v in query.items() if v is not None and v != ""}
    url = f"{base}{path}"
    if params:
        url += "?" + urlencode(params)
    return esc(url)


_NAV = (
    ("runs", "/runs", "Runs"),
    ("waiting", "/waiting", "Waiting"),
    ("queues", "/queues", "Queues"),
    ("schedules", "/schedules", "Schedules"),
    ("health", "/health", "Health"),
)


def page(
    *,
    base: str,
    title: str,
    heading: str,
    active: str,
    body: Iterable[str],
    app_title: str,
    store_name: str,
    actions: bool,
    notice: str | None = None,
) -> bytes:
    """A whole page: the frame (navigation, the store's masked name, the mode) around
    ``body`` (HTML already escaped)."""
    nav = "".join(
        f'<a href="{href(base, path)}"{" class=active" if name == active else ""}>{label}</a>'
        for name, path, label in _NAV
    )
    mode = "actions enabled" if actions else "read-only"
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        '<meta name=viewport content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)} · {esc(app_title)}</title>",
        f'<link rel=stylesheet href="{href(base, "/static/dashboard.css")}">',
        f'<script src="{href(base, "/static/dashboard.js")}" defer></script>',
        "</head><body>",
        f'<header><a class=brand href="{href(base, "/runs")}">{esc(app_title)}</a>',
        f"<nav>{nav}</nav>",
        f'<span class=store title="store">{esc(store_name)} ·',
        f" <span class=mode>{mode}</span></span>",
        "</header><main>",
        f"<h1>{esc(heading)}</h1>",
    ]
    if notice:
        parts.append(f"<p class=notice role=status id=notice>{esc(notice)}</p>")
    parts.extend(body)
    parts.append("</main></body></html>")
    return "".join(parts).encode()


def badge(status: str) -> str:
    """A run status as a coloured badge."""
    return f'<span class="badge s-{esc(status)}">{esc(status)}</span>'


def table(head: Sequence[str], rows: Iterable[Sequence[str]], *, cls: str = "") -> str:
    """A table: ``head`` is plain text (escaped here), ``rows`` hold HTML already escaped."""
    th = "".join(f"<th>{esc(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    klass = f' class="{esc(cls)}"' if cls else ""
    return f"<table{klass}><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def facts(items: Iterable[tuple[str, str]]) -> str:
    """A definition list: names are plain text, values HTML already escaped."""
    return (
        "<dl class=facts>"
        + "".join(f"<dt>{esc(name)}</dt><dd>{value}</dd>" for name, value in items)
        + "</dl>"
    )


def form(
    base: str,
    action: str,
    csrf: str,
    fields: Mapping[str, str],
    button: str,
    *,
    inputs: Sequence[tuple[str, str, str]] = (),
    credential: bool = False,
    danger: bool = False,
) -> str:
    """A POST form to action ``action``: hidden ``fields``, visible ``inputs`` (name,
    label, placeholder), a credential field when the app takes a bearer token."""
    hidden = "".join(
        f'<input type=hidden name="{esc(k)}" value="{esc(v)}">' for k, v in fields.items()
    )
    visible = "".join(
        f'<label>{esc(label)} <input name="{esc(name)}" placeholder="{esc(hint)}"></label>'
        for name, label, hint in inputs
    )
    if credential:
        visible += (
            "<label>token <input type=password name=credential autocomplete=off"
            ' placeholder="dashboard token"></label>'
        )
    klass = "danger" if danger else "primary"
    return (
        f'<form method=post class=action action="{href(base, "/actions/" + action)}"'
        f' data-action="{esc(action)}">'
        f'<input type=hidden name=csrf value="{esc(csrf)}">{hidden}{visible}'
        f'<button type=submit class="{klass}">{esc(button)}</button></form>'
    )
