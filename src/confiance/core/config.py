"""Configuration files: TOML validated by pydantic models, errors that name the bad key."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ConfianceError

M = TypeVar("M", bound=BaseModel)


class ConfigError(ConfianceError, ValueError):
    """A configuration that cannot be used; the message names each bad key."""

    code = "config_invalid"


class StrictModel(BaseModel):
    """Base for config sections: unknown keys are errors (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid")


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"configuration invalide ({source}):"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(racine)"
        msg = err["msg"].removeprefix("Value error, ")  # pydantic's prefix for our own validators
        lines.append(f"  - {key}: {msg}")
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


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v), ensure_ascii=False)  # a JSON string is a valid TOML basic string


def _is_table(v: Any) -> bool:
    return isinstance(v, dict) or (isinstance(v, list) and bool(v) and isinstance(v[0], dict))


def dump_toml(cfg: dict[str, Any], prefix: str = "") -> str:
    """Write the configs `up` generates: scalars, nested tables, arrays of tables; None omitted.

    Enough TOML for our own files (no dependency for a writer); `load_config` reads them back.
    """
    lines = [f"{k} = {_toml_value(v)}" for k, v in cfg.items() if v is not None and not _is_table(v)]
    out = "\n".join(lines) + ("\n" if lines else "")
    for k, v in cfg.items():
        if not _is_table(v):
            continue
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out += f"\n[{name}]\n" + dump_toml(v, f"{name}.")
        else:
            for item in v:
                out += f"\n[[{name}]]\n" + dump_toml(item, f"{name}.")
    return out
