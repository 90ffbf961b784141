"""Settings read from CDS_* environment variables, with development and production defaults."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cds_service.urls import AllowedUrl

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class ConfigError(ValueError):
    """A setting has a value the service cannot run with."""


@dataclass(frozen=True)
class Settings:
    """Every setting of the service. README §Configuration documents each one."""

    env: str = "production"
    database_url: str = f"sqlite:///{PROJECT_ROOT / 'var' / 'cds.sqlite3'}"
    # A source checkout or editable install keeps cards/ beside the package; the Docker image sets
    # CDS_KNOWLEDGE_DIR explicitly.
    knowledge_dir: Path = PROJECT_ROOT / "cards"
    fhir_server_allowlist: tuple[AllowedUrl, ...] = ()
    cors_origins: tuple[str, ...] = ("https://sandbox.cds-hooks.org",)
    max_body_bytes: int = 10 * 1024 * 1024
    fhir_timeout_seconds: float = 3.0
    fhir_deadline_seconds: float = 5.0
    fhir_max_pages: int = 20
    fhir_max_concurrency: int = 8
    fhir_max_response_bytes: int = 10 * 1024 * 1024  # all FHIR answers of one hook call together
    auth: str = "jwt"
    public_base_url: str | None = None
    trusted_issuers: Path | None = None
    patient_hash_key: str | None = None
    jwt_clock_skew_seconds: int = 300
    jwks_cache_seconds: int = 3600
    log_level: str = "INFO"
    validate_responses: bool = False
    store_retry_seconds: float = 5.0
    # Card kind -> active | silent, overriding cards.yaml for this deployment (CDS_CARD_MODES);
    # the kinds are checked against the knowledge base when the app is built.
    card_modes: tuple[tuple[str, str], ...] = ()
    migrate_at_start: bool = True


DEVELOPMENT_DEFAULTS: dict[str, str] = {
    # `make run` is for a developer's laptop: any browser origin, loopback FHIR servers, no JWT.
    "CDS_FHIR_SERVER_ALLOWLIST": "http://127.0.0.1,http://localhost,http://[::1]",
    "CDS_CORS_ORIGINS": "*",
    "CDS_AUTH": "off",
    "CDS_VALIDATE_RESPONSES": "true",
    # A fixed key is fine on a laptop; production must set its own secret.
    "CDS_PATIENT_HASH_KEY": "development-only-patient-hash-key",
}


def _bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false, not {value!r}")


def _number(kind: type[int] | type[float], minimum: float) -> Callable[[str, str], Any]:
    def parse(name: str, value: str) -> Any:
        try:
            parsed = kind(value)
        except ValueError:
            raise ConfigError(f"{name} must be a number, not {value!r}") from None
        if parsed < minimum:
            raise ConfigError(f"{name} must be at least {minimum}")
        return parsed

    return parse


def _list(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _allowlist(name: str, value: str) -> tuple[AllowedUrl, ...]:
    try:
        return tuple(AllowedUrl.parse(item) for item in _list(value))
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def _card_modes(value: str) -> tuple[tuple[str, str], ...]:
    """`kind=mode,...` as (kind, mode) pairs; a mode other than active/silent, a malformed pair or
    a kind named twice is a ConfigError."""
    pairs = []
    for item in _list(value):
        kind, equals, mode = (part.strip() for part in item.partition("="))
        if not equals or not kind:
            raise ConfigError(f"CDS_CARD_MODES: {item!r} is not card-kind=mode")
        if mode not in {"active", "silent"}:
            raise ConfigError(f"CDS_CARD_MODES: {kind} must be active or silent, not {mode!r}")
        pairs.append((kind, mode))
    kinds = [kind for kind, _ in pairs]
    twice = sorted({k for k in kinds if kinds.count(k) > 1})
    if twice:
        raise ConfigError(f"CDS_CARD_MODES names {', '.join(twice)} more than once")
    return tuple(pairs)


# The variable that sets each field, for commands that read only some (`only=` below).
ENV_VAR = {f.name: f"CDS_{f.name.upper()}" for f in dataclasses.fields(Settings) if f.name != "env"}


# How the text of each field's variable (ENV_VAR) becomes its value, in the order they are read.
_PARSERS: dict[str, Callable[[str, str], Any]] = {
    "database_url": lambda _, value: value,
    "knowledge_dir": lambda _, value: Path(value),
    "fhir_server_allowlist": _allowlist,
    "cors_origins": lambda _, value: _list(value),
    "max_body_bytes": _number(int, 1024),
    "fhir_timeout_seconds": _number(float, 0.05),
    "fhir_deadline_seconds": _number(float, 0.05),
    "fhir_max_pages": _number(int, 1),
    "fhir_max_concurrency": _number(int, 1),
    "fhir_max_response_bytes": _number(int, 1024),
    "store_retry_seconds": _number(float, 0),
    "auth": lambda _, value: value.strip().lower(),
    "public_base_url": lambda _, value: value.rstrip("/"),
    "patient_hash_key": lambda _, value: value or None,  # empty: unset
    "trusted_issuers": lambda _, value: Path(value),
    "jwt_clock_skew_seconds": _number(int, 0),
    "jwks_cache_seconds": _number(int, 0),
    "log_level": lambda _, value: value.upper(),
    "card_modes": lambda _, value: _card_modes(value),
    "validate_responses": _bool,
    "migrate_at_start": _bool,
}


def load_settings(
    environ: Mapping[str, str] | None = None,
    *,
    only: Collection[str] | None = None,
    **overrides: Any,
) -> Settings:
    """Settings from `environ` (default os.environ); keyword overrides win (used by tests).

    `only` names the fields a command uses (e.g. `{"database_url"}` for `report`): the others keep
    their defaults, unread and unchecked, so an offline command needs no serving secret.
    """
    env_vars = dict(os.environ if environ is None else environ)
    profile = env_vars.get("CDS_ENV", "production")
    if profile not in {"production", "development"}:
        raise ConfigError(f"CDS_ENV must be production or development, not {profile!r}")
    if profile == "development":
        env_vars = {**DEVELOPMENT_DEFAULTS, **env_vars}
    if only is not None:
        used = {ENV_VAR[name] for name in only}
        env_vars = {k: v for k, v in env_vars.items() if k in used}

    values: dict[str, Any] = {"env": profile}
    for name, parse in _PARSERS.items():
        if ENV_VAR[name] in env_vars:
            values[name] = parse(ENV_VAR[name], env_vars[ENV_VAR[name]])

    settings = dataclasses.replace(Settings(), **{**values, **overrides})
    if settings.auth not in {"jwt", "off"}:
        raise ConfigError(f"CDS_AUTH must be jwt or off, not {settings.auth!r}")
    checked = set(only) if only is not None else {"patient_hash_key", "auth"}
    # Every missing setting at once, so one failed start tells the operator everything to set.
    missing = []
    if "patient_hash_key" in checked and not settings.patient_hash_key:
        missing.append(
            "CDS_PATIENT_HASH_KEY must be set: the secret that turns patient ids into the keyed hashes "
            "stored with issued cards (the same value on every replica)"
        )
    if "auth" in checked and settings.auth == "jwt":
        # The JWT audience must come from configuration: building it from the Host header would let
        # a token minted for another service be accepted here.
        if not settings.public_base_url:
            missing.append("CDS_AUTH=jwt needs CDS_PUBLIC_BASE_URL (the URL clients call)")
        if not settings.trusted_issuers:
            missing.append("CDS_AUTH=jwt needs CDS_TRUSTED_ISSUERS (a trusted-issuers JSON file)")
    if missing:
        raise ConfigError("; ".join(missing))
    return settings
