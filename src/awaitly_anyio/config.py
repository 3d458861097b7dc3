"""Configuration from the environment: typed, validated in one go, secrets kept out of logs.

``Settings.from_env()`` reads one environment variable per field (the field's
name in upper case, or ``setting(env=...)``), converts it to the field's type,
and reports every missing or malformed variable in one `SettingsError`.
Secrets stay out of text: fields typed `Secret` or declared
``setting(secret=True)`` show as ``***`` in ``repr(settings)`` and are never
quoted in errors, and passwords in URL-valued fields are masked in both.  Store
URLs (``DATABASE_URL``, ``REDIS_URL``) are checked when they are read, so a typo
is reported at start-up rather than at the first connection.
Extend it with your own fields by subclassing:

    @attrs.frozen(kw_only=True)
    class CheckoutSettings(Settings):
        stripe_secret_key: Secret = setting()            # required
        enable_new_payment: bool = setting(default=False)
"""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal, TypeVar, Union

import attrs

from ._errors import AwaitlyError
from ._redact import redact_text
from ._store_url import check_redis_url, check_store_url

__all__ = ["Secret", "Settings", "SettingsError", "setting"]

S = TypeVar("S", bound="Settings")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


@attrs.frozen(repr=False)
class Secret:
    """A value that must not appear in logs: its ``repr`` and ``str`` are masked; call
    `reveal` where the real value is needed."""

    _value: str
    # Never written to a store, even if registered: it would be kept in plain text.
    __awaitly_never_stored__: ClassVar[bool] = True

    def reveal(self) -> str:
        """The secret itself."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


class SettingsError(ValueError, AwaitlyError):
    """Some environment variables were missing or malformed; ``problems`` lists each
    as ``VARIABLE: what is wrong`` (values of secrets are never included)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(
            "invalid configuration:\n" + "\n".join(f"  - {problem}" for problem in problems)
        )


def setting(
    *,
    default: Any = attrs.NOTHING,
    env: str | None = None,
    secret: bool = False,
    check: Callable[[Any], object] | None = None,
) -> Any:
    """A settings field read from ``env`` (default: the field name in upper case).

    Without ``default`` the variable is required.  ``secret`` masks a plain value
    in ``repr`` and in error messages (fields typed `Secret` are masked
    anyway).  ``check`` is called with a converted value other than ``None`` (by
    `Settings.from_env`, and when the settings are made directly) and raises
    ``ValueError`` saying what is wrong with it, without quoting it.
    """
    return attrs.field(
        default=default,
        metadata={"env": env, "secret": secret, "check": check},
        repr=_shown_masked if secret else _shown,
        validator=None if check is None else _validator(check),
    )


def _shown(value: object) -> str:
    """A field's value in ``repr``: passwords in text (URLs, DSNs) masked."""
    return repr(redact_text(value)) if isinstance(value, str) else repr(value)


def _shown_masked(value: object) -> str:
    """A ``secret=True`` field's value in ``repr``."""
    return repr(value) if value is None or isinstance(value, Secret) else "'***'"


def _validator(check: Callable[[Any], object]) -> Callable[[Any, Any, Any], None]:
    def validate(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None:
            return
        try:
            check(value)
        except ValueError as exc:
            raise ValueError(f"{attribute.name}: {exc}") from None

    return validate


def _revealed(check: Callable[[str], object]) -> Callable[[Any], object]:
    """``check`` applied to a `Secret`'s value (or to a plain string)."""
    return lambda value: check(value.reveal() if isinstance(value, Secret) else value)


@attrs.frozen(kw_only=True)
class Settings:
    """The service settings of the deployment guide, with their defaults.

    - ``environment`` (``ENVIRONMENT``): ``development``, ``production`` or ``test``
    - ``port`` (``PORT``): the HTTP port, default 3000
    - ``database_url`` (``DATABASE_URL``): a PostgreSQL DSN (or any store URL
      `open_store` takes), or unset for SQLite; checked
      when read
    - ``redis_url`` (``REDIS_URL``): checked when read
    - ``otel_exporter_otlp_endpoint`` (``OTEL_EXPORTER_OTLP_ENDPOINT``)
    - ``sentry_dsn`` (``SENTRY_DSN``)
    - ``workflow_state_ttl_ms`` (``WORKFLOW_STATE_TTL_MS``): how long a failed run's
      state is kept, default 24 hours
    - ``workflow_max_retries`` (``WORKFLOW_MAX_RETRIES``): default 3
    - ``sqlite_path`` (``AWAITLY_SQLITE_PATH``): the SQLite file used without
      ``DATABASE_URL``
    """

    environment: Literal["development", "production", "test"] = setting(default="development")
    port: int = setting(default=3000)
    database_url: Secret | None = setting(default=None, check=_revealed(check_store_url))
    redis_url: Secret | None = setting(default=None, check=_revealed(check_redis_url))
    otel_exporter_otlp_endpoint: str | None = setting(default=None)
    sentry_dsn: Secret | None = setting(default=None)
    workflow_state_ttl_ms: int = setting(default=24 * 60 * 60 * 1000)
    workflow_max_retries: int = setting(default=3)
    sqlite_path: str = setting(default="awaitly.db", env="AWAITLY_SQLITE_PATH")

    _bounds: ClassVar[dict[str, tuple[int, int]]] = {
        "port": (1, 65535),
        "workflow_state_ttl_ms": (1, 10 * 365 * 24 * 3600 * 1000),
        "workflow_max_retries": (0, 1000),
    }

    @classmethod
    def from_env(cls: type[S], environ: Mapping[str, str] | None = None) -> S:
        """Read every field from ``environ`` (default ``os.environ``); raise
        `SettingsError` listing all problems at once."""
        environ = os.environ if environ is None else environ
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        problems: list[str] = []
        for field in attrs.fields(cls):
            name = field.name.lstrip("_")
            variable = field.metadata.get("env") or name.upper()
            raw = environ.get(variable)
            if raw is None or raw == "":
                if field.default is attrs.NOTHING:
                    problems.append(f"{variable}: required but not set")
                continue
            try:
                value = _convert(raw, hints[field.name])
                low_high = cls._bounds.get(name)
                if low_high is not None and not low_high[0] <= value <= low_high[1]:
                    raise ValueError(f"must be between {low_high[0]} and {low_high[1]}")
                check = field.metadata.get("check")
                if check is not None:
                    check(value)
            except ValueError as exc:
                shown = "the value" if _masked(field, hints[field.name]) else repr(redact_text(raw))
                problems.append(f"{variable}: {shown} is invalid: {exc}")
                continue
            values[name] = value
        if problems:
            raise SettingsError(problems)
        return cls(**values)

    @property
    def is_production(self) -> bool:
        """Whether ``environment`` is ``production``."""
        return self.environment == "production"

    @property
    def workflow_state_ttl(self) -> float:
        """``workflow_state_ttl_ms`` in seconds, as stores and ``workflow.run`` take it."""
        return self.workflow_state_ttl_ms / 1000

    @property
    def store_url(self) -> str:
        """Where durable runs live: ``DATABASE_URL`` if set, else the SQLite file."""
        if self.database_url is not None:
            return self.database_url.reveal()
        return f"sqlite:///{self.sqlite_path}"


def _masked(field: attrs.Attribute[Any], hint: Any) -> bool:
    return bool(field.metadata.get("secret")) or Secret in _options(hint)


def _options(hint: Any) -> tuple[Any, ...]:
    """The members of ``X | None`` (or ``(X,)`` for a plain type)."""
    if typing.get_origin(hint) in (Union, types.UnionType):
        return tuple(arg for arg in typing.get_args(hint) if arg is not type(None))
    return (hint,)


def _convert(raw: str, hint: Any) -> Any:
    """``raw`` as a value of the field type ``hint``; ``ValueError`` says why not."""
    options = _options(hint)
    kind = options[0] if len(options) == 1 else hint
    if typing.get_origin(kind) is Literal:
        allowed = typing.get_args(kind)
        if raw not in allowed:
            raise ValueError(f"must be one of {', '.join(map(str, allowed))}")
        return raw
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError("must be true or false (1/0, yes/no, on/off)")
    if kind is int:
        try:
            return int(raw.strip().replace("_", ""))
        except ValueError:
            raise ValueError("must be a whole number") from None
    if kind is float:
        try:
            return float(raw.strip())
        except ValueError:
            raise ValueError("must be a number") from None
    if kind is Secret:
        return Secret(raw)
    if kind is str:
        return raw
    raise ValueError(f"no conversion from text to {kind!r}")
