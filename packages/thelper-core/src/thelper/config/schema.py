"""JSON Schema of session configs, for editors (``thelper config schema``).

The schema is generated from the same run-time model that validates configs
(:func:`thelper.config.dynamic.session_model`), so it covers the installed plugins'
components and their params, with the field docstrings as descriptions. Editors that speak
the YAML language server protocol pick it up from a first line such as::

    # yaml-language-server: $schema=../../docs/schema/thelper-config.schema.json

The schema checks structure, names and params; the cross-section rules (split names, the
monitored metric, the import allow-list, ...) are only checked by ``thelper config validate``.

``python -m thelper.config.schema`` rewrites the committed schemas under ``docs/schema/``
(core only, and core + first-party plugins for the examples).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic.json_schema import GenerateJsonSchema

from thelper.config.dynamic import PLACEHOLDER, session_model
from thelper.config.imports import DEFAULT_IMPORT_PREFIXES, IMPORT_PATH
from thelper.registry import Registry

__all__ = ["session_schema", "schema_text", "SCHEMA_ID", "write_committed"]

SCHEMA_ID = "urn:thelper:session-config"
_DRAFT = "https://json-schema.org/draft/2020-12/schema"
_REF = re.compile(r"^#/\$defs/(.+)$")


class _Lenient(GenerateJsonSchema):
    """A params field that JSON Schema cannot express (a callable, ...) becomes ``{}``."""

    def handle_invalid_for_json_schema(self, schema: Any, error_info: str) -> Any:
        return {"description": f"not expressible in JSON Schema ({error_info})"}


def _is_placeholder(node: Any) -> bool:
    if not isinstance(node, dict):
        return False
    match = _REF.match(str(node.get("$ref", "")))
    return bool(match and (f"_{PLACEHOLDER}_" in match.group(1) or match.group(1) == "_Never"))


def _clean(node: Any) -> Any:
    """Drop placeholder union members and turn reST literals into Markdown ones."""
    if isinstance(node, list):
        return [_clean(x) for x in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("oneOf", "anyOf") and isinstance(value, list):
            kept = [_clean(v) for v in value if not _is_placeholder(v)]
            if not kept:
                out["not"] = {}
                out.setdefault("description", "no component of this kind is registered; "
                                              "see 'thelper plugins list'")
                continue
            out[key] = kept
        elif key == "description" and isinstance(value, str):
            out[key] = value.replace("``", "`")
        else:
            out[key] = _clean(value)
    return out


def _referenced(schema: dict[str, Any]) -> set[str]:
    defs = schema.get("$defs", {})
    seen: set[str] = set()
    stack: list[Any] = [{k: v for k, v in schema.items() if k != "$defs"}]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            match = _REF.match(str(node.get("$ref", "")))
            if match and match.group(1) not in seen:
                seen.add(match.group(1))
                stack.append(defs.get(match.group(1)))
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return seen


def _import_path_dataset(task_ref: Any) -> dict[str, Any]:
    prefixes = ", ".join(DEFAULT_IMPORT_PREFIXES)
    return {
        "type": "object",
        "title": "DatasetSpec_import_path",
        "description": (
            "A torch `Dataset` class by import path (thelper 0.6 style), e.g. "
            "`torchvision.datasets.FakeData`: read as `{type: torch_dataset, params: "
            f"{{class_path: ..., params: ...}}}}`. Allowed modules: {prefixes} and "
            "`imports.allow`. Needs a `task` block."),
        "properties": {
            "type": {"type": "string", "pattern": IMPORT_PATH.pattern,
                     "description": "Import path `package.module.Class`."},
            "params": {"type": "object", "description": "Constructor keyword arguments."},
            "task": task_ref,
        },
        "required": ["type", "task"],
        "additionalProperties": False,
    }


def session_schema(registry: Registry) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a session config for ``registry``."""
    raw = session_model(registry).model_json_schema(mode="validation",
                                                    schema_generator=_Lenient)
    schema = _clean(raw)
    datasets = schema.get("properties", {}).get("datasets", {})
    union = datasets.get("additionalProperties")
    if isinstance(union, dict) and "oneOf" in union:
        members = union["oneOf"]
        task_ref: Any = {"type": "object"}
        for member in members:
            ref = _REF.match(str(member.get("$ref", "")))
            props = schema["$defs"].get(ref.group(1), {}).get("properties", {}) if ref else {}
            if "task" in props:
                task_ref = props["task"]
                break
        datasets["additionalProperties"] = {"anyOf": [*members, _import_path_dataset(task_ref)]}
    keep = _referenced(schema)
    schema["$defs"] = {k: v for k, v in sorted(schema.get("$defs", {}).items()) if k in keep}
    plugins = sorted({c.distribution or c.plugin or "?" for c in registry.components()})
    return {
        "$schema": _DRAFT,
        "$id": SCHEMA_ID,
        "title": "thelper session config",
        "description": (
            "A thelper training session: datasets, loaders, model and trainer. Generated by "
            f"'thelper config schema' for: {', '.join(plugins)}. Cross-section rules are "
            "checked by 'thelper config validate'."),
        **{k: v for k, v in schema.items() if k not in ("title", "description")},
    }


def schema_text(registry: Registry) -> str:
    """:func:`session_schema` as stable, indented JSON text (ends with a newline)."""
    return json.dumps(session_schema(registry), indent=2, ensure_ascii=False) + "\n"


#: Committed schemas: file name -> entry-point plugins loaded besides the core.
COMMITTED: dict[str, tuple[str, ...]] = {
    "thelper-config.schema.json": (),
    "thelper-config.workspace.schema.json": ("vision", "geo", "gui"),
}


def committed_registry(plugins: tuple[str, ...]) -> Registry:
    """The registry of the core plus the named entry-point plugins (no autoload)."""
    from thelper.plugins import ThelperPluginManager

    pm = ThelperPluginManager(autoload=False)
    if plugins:
        pm.load_entrypoints(only=set(plugins))
    return pm.registry


def write_committed(folder: Path) -> list[Path]:
    """Rewrite the committed schemas in ``folder`` (``docs/schema``)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, plugins in COMMITTED.items():
        path = folder / name
        path.write_text(schema_text(committed_registry(plugins)), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":  # pragma: no cover - maintenance entry point
    import sys

    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/schema")
    for p in write_committed(root):
        print(f"wrote {p}")
