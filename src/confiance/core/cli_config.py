"""What every ``confiance <component>`` command does first: load its TOML config or say why not.

Each component's CLI loaded its config the same way — call the loader, print the
``ConfigError`` (which names each bad key) in red, exit with status 2 — and each had its
own copy. This is the one copy, and ``fail`` the one way a command refuses: a short
message on stderr and an exit status, never a traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, TypeVar, cast, overload

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.text import Text

from .config import ConfigError, load_config
from .errors import ConfianceError

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

# Exit statuses of every `confiance` command (docs/api.md):
EXIT_FAILURE = 1  # it ran and failed (an HTTP error answer, a refused request)
EXIT_USAGE = 2  # it cannot run as asked (bad option or input, bad configuration)
EXIT_UNREACHABLE = 3  # a service it needs does not answer (connection refused, TLS, timeout)
EXIT_INTERNAL = 70  # a bug (EX_SOFTWARE): an unexpected exception, reported in one line

stderr = Console(stderr=True, soft_wrap=True)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``message`` in red on stderr and leave with ``code`` (no traceback)."""
    # Text, not markup: a message quoting "[...]" or "[red]" from a file is printed as is.
    stderr.print(Text(message, style="red"))
    raise typer.Exit(code)


@overload
def load_cli_config(path: Path, loader: type[M]) -> M: ...


@overload
def load_cli_config(path: Path, loader: Callable[[Path], T]) -> T: ...


def load_cli_config(path: Path, loader: type[BaseModel] | Callable[[Path], object]) -> object:
    """The config at ``path`` through ``loader`` (a pydantic model or a ``load(path)`` function).

    A missing, unreadable or invalid file exits with status 2 and the error naming the bad
    key; whatever else the loader raises on purpose (a ``ConfianceError``) too.
    """
    try:
        if isinstance(loader, type) and issubclass(loader, BaseModel):
            return load_config(path, loader)
        return cast("Callable[[Path], object]", loader)(path)
    except ConfigError as exc:
        fail(str(exc))
    except ConfianceError as exc:
        fail(f"configuration inutilisable ({path}) : {exc}")
    except OSError as exc:
        fail(f"fichier de configuration illisible : {path} ({exc.strerror or exc})")
