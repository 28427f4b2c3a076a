"""Command-line options shared by thelper's commands and plugins' commands.

Torch-free and pydantic-free: imported by every command's signature.
"""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["SetOption", "AllowImportOption", "allowed_imports"]

SetOption = Annotated[list[str] | None, typer.Option(
    "--set", "-s", metavar="PATH=VALUE",
    help="Override a config value (repeatable), e.g. --set trainer.epochs=5. Values are "
         "read as YAML: 3, 0.1, true, [1, 2], '{a: 1}'.")]

AllowImportOption = Annotated[list[str] | None, typer.Option(
    "--allow-import", metavar="MODULE",
    help="Let the config import classes from MODULE (and its submodules) by import path "
         "(repeatable). A config's own imports.allow counts only for the modules confirmed "
         "here: importing runs code, and a config or checkpoint may come from anyone. "
         "Loaders of code (os, subprocess, pickle, torch.hub, ...) are never allowed. See "
         "docs/config/imports.md.")]


def allowed_imports(values: list[str] | None) -> tuple[str, ...]:
    """Check the ``--allow-import`` values: dotted module names that may ever be allowed.

    Raises:
        ConfigError: A value is not a module name, or names a module that is never
            importable from a config (:func:`thelper.config.imports.import_denied`).
    """
    import re

    from thelper.config.imports import import_denied
    from thelper.exceptions import ConfigError

    out: list[str] = []
    for value in values or []:
        if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", value):
            raise ConfigError(f"--allow-import {value!r}: expected a dotted module name, "
                              "e.g. --allow-import mypackage.datasets")
        denied = import_denied(f"{value}.X")
        if denied is not None:
            raise ConfigError(f"--allow-import {value}: {denied}")
        out.append(value)
    return tuple(out)
