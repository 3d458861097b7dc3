"""Settings from the environment: types, defaults, every problem at once, secrets masked."""

from __future__ import annotations

import attrs
import pytest

from awaitly_anyio.config import Secret, Settings, SettingsError, setting


def test_defaults_need_no_environment() -> None:
    settings = Settings.from_env({})
    assert settings.environment == "development"
    assert settings.port == 3000
    assert settings.workflow_state_ttl == 24 * 60 * 60
    assert settings.workflow_max_retries == 3
    assert settings.store_url == "sqlite:///awaitly.db"
    assert settings.database_url is None


def test_values_are_read_and_converted() -> None:
    settings = Settings.from_env(
        {
            "ENVIRONMENT": "production",
            "PORT": "8080",
            "DATABASE_URL": "postgresql://app:hunter2@db/orders",
            "REDIS_URL": "redis://cache:6379/0",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/v1/traces",
            "SENTRY_DSN": "https://key@sentry.example/1",
            "WORKFLOW_STATE_TTL_MS": "3_600_000",
            "WORKFLOW_MAX_RETRIES": "5",
        }
    )
    assert settings.is_production
    assert settings.port == 8080
    assert settings.store_url == "postgresql://app:hunter2@db/orders"
    assert settings.workflow_state_ttl == 3600
    assert settings.workflow_max_retries == 5
    assert settings.otel_exporter_otlp_endpoint == "http://collector:4318/v1/traces"
    assert isinstance(settings.sentry_dsn, Secret)
    # Secrets never show in repr (so not in logs either).
    assert "hunter2" not in repr(settings)
    assert "key@sentry" not in str(settings)


def test_every_problem_is_reported_at_once_without_secret_values() -> None:
    @attrs.frozen(kw_only=True)
    class Checkout(Settings):
        stripe_secret_key: Secret = setting()
        api_token: str = setting(env="CHECKOUT_API_TOKEN", secret=True)
        enable_new_payment: bool = setting(default=False)

    with pytest.raises(SettingsError) as caught:
        Checkout.from_env(
            {
                "ENVIRONMENT": "staging",
                "PORT": "eighty",
                "WORKFLOW_MAX_RETRIES": "-1",
                "ENABLE_NEW_PAYMENT": "maybe",
                "CHECKOUT_API_TOKEN": "",
            }
        )
    problems = caught.value.problems
    assert problems == [
        "ENVIRONMENT: 'staging' is invalid: must be one of development, production, test",
        "PORT: 'eighty' is invalid: must be a whole number",
        "WORKFLOW_MAX_RETRIES: '-1' is invalid: must be between 0 and 1000",
        "STRIPE_SECRET_KEY: required but not set",
        "CHECKOUT_API_TOKEN: required but not set",
        "ENABLE_NEW_PAYMENT: 'maybe' is invalid: must be true or false (1/0, yes/no, on/off)",
    ]
    assert "STRIPE_SECRET_KEY" in str(caught.value)


def test_feature_flags_and_extension_fields() -> None:
    @attrs.frozen(kw_only=True)
    class Checkout(Settings):
        stripe_secret_key: Secret = setting()
        enable_new_payment: bool = setting(default=False)
        enable_circuit_breakers: bool = setting(default=True)

    settings = Checkout.from_env(
        {
            "STRIPE_SECRET_KEY": "sk_live_x",
            "ENABLE_NEW_PAYMENT": "true",
            "ENABLE_CIRCUIT_BREAKERS": "0",
        }
    )
    assert settings.stripe_secret_key.reveal() == "sk_live_x"
    assert settings.enable_new_payment is True
    assert settings.enable_circuit_breakers is False


def test_a_bad_port_range_is_refused() -> None:
    with pytest.raises(SettingsError, match="PORT: '70000' is invalid"):
        Settings.from_env({"PORT": "70000"})
