"""Starter configs for ``thelper config init``.

Each template is a commented YAML file under ``thelper/config/templates/``; ``__NAME__`` is
replaced by the session name (the output file's stem by default). The written file starts
with a ``# yaml-language-server: $schema=...`` line so that editors complete and check it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from thelper.exceptions import ConfigError

__all__ = ["Template", "TEMPLATES", "DEFAULT_TEMPLATE", "render", "session_name",
           "SCHEMA_FILE"]

#: Schema file written beside a new config (generated for the installed plugins).
SCHEMA_FILE = "thelper-config.schema.json"


@dataclass(frozen=True)
class Template:
    """A starter config.

    Attributes:
        name: Template name (``thelper config init NAME``).
        description: One line shown by ``thelper config init --list``.
        requires: Distributions whose components it uses besides thelper-core.
    """

    name: str
    description: str
    requires: tuple[str, ...] = ()

    def text(self) -> str:
        """The template's YAML text (with ``__NAME__`` placeholders)."""
        return resources.files("thelper.config").joinpath(
            "templates", f"{self.name}.yaml").read_text(encoding="utf-8")


TEMPLATES: dict[str, Template] = {t.name: t for t in (
    Template("digits-mlp", "MLP on scikit-learn's digits (core only; trains in seconds)"),
    Template("digits-cnn", "small CNN on scikit-learn's digits, with augmentation (the "
                           "digits-classification example)", ("thelper-vision",)),
    Template("image-folder", "resnet18 on your own images in ROOT/<class>/<file>",
             ("thelper-vision",)),
)}
DEFAULT_TEMPLATE = "digits-mlp"


def session_name(path: Path | None) -> str:
    """A valid session name from an output file name (``my run.yaml`` -> ``my-run``)."""
    stem = path.stem if path is not None else "my-session"
    name = re.sub(r"[^A-Za-z0-9_.+-]+", "-", stem).strip("-._+")
    return name or "my-session"


def render(template: str, name: str, schema: str) -> str:
    """The config text of ``template`` for session ``name``, with the schema header.

    Raises:
        ConfigError: Unknown template (the message lists the known ones).
    """
    if template not in TEMPLATES:
        from thelper.registry import closest

        hits = closest(template, TEMPLATES)
        hint = f"did you mean {hits[0]!r}? " if hits else ""
        raise ConfigError(f"unknown template {template!r}; {hint}templates: "
                          f"{', '.join(TEMPLATES)} (see 'thelper config init --list')")
    header = f"# yaml-language-server: $schema={schema}\n"
    return header + TEMPLATES[template].text().replace("__NAME__", name)
