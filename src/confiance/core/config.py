"""Configuration files: TOML validated by pydantic models, errors that name the bad key."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names each bad key."""


class StrictModel(BaseModel):
    """Base for config sections: unknown keys are errors (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid")


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"configuration invalide ({source}):"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(racine)"
        lines.append(f"  - {key}: {err['msg']}")
    return "\n".join(lines)


def parse_config(data: dict, model: type[M], source: str = "<config>") -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def load_config(path: Path | str, model: type[M]) -> M:
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"fichier de configuration introuvable: {p}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"TOML invalide dans {p}: {exc}") from None
    return parse_config(data, model, str(p))
