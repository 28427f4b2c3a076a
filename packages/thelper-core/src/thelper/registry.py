"""Component registry: what every ``{type, params}`` slot of a config may name.

Plugins describe their components with :class:`ComponentInfo`. Registration is data only:
the factory is a ``"module:attr"`` string imported when the component is built, and the
params model is a pydantic model used to validate configs without importing torch.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from thelper import _fastdocs
from thelper.exceptions import (
    ComponentBuildError,
    ComponentNotFoundError,
    PluginError,
    ThelperError,
)

__all__ = ["KINDS", "Params", "ComponentInfo", "Registry", "closest"]

#: Component kinds known to the core. Plugins may add their own kinds.
KINDS: tuple[str, ...] = (
    "task",
    "dataset",
    "transform",
    "model",
    "loss",
    "optimizer",
    "scheduler",
    "metric",
    "sampler",
    "trainer",
)


_fastdocs.install()  # field docstrings of every params model, without pydantic's frame walk


class Params(BaseModel):
    """Base class of every params model: unknown keys are errors.

    Subclass it and declare each constructor argument as a field with a docstring; the
    docstrings become descriptions in ``thelper config schema``.
    """

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, defer_build=True)


@dataclass(frozen=True)
class ComponentInfo:
    """A registered component.

    Attributes:
        kind: One of :data:`KINDS` (or a plugin-defined kind).
        name: The ``type:`` value that selects it in a config.
        factory: Lazy reference ``"package.module:attr"`` to a class or function. It is
            called with the validated params as keyword arguments, plus the context
            arguments its signature names (``task`` for models, ``params`` for optimizers,
            ``optimizer`` for schedulers, ...).
        params: Pydantic model of the accepted params (subclass :class:`Params`).
        aliases: Other accepted ``type:`` names (e.g. thelper 0.6 fully qualified names).
        description: One line shown by ``thelper plugins list``.
        metadata: Free-form facts the core reads, e.g. ``{"goal": "max"}`` for metrics or
            ``{"provides_task": True}`` for datasets that define their own task.
        plugin: Name of the registering plugin (set by the plugin manager).
        distribution: Distribution that installed the plugin (set by the plugin manager).
    """

    kind: str
    name: str
    factory: str
    params: type[BaseModel] = Params
    aliases: tuple[str, ...] = ()
    description: str = ""
    metadata: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    plugin: str | None = None
    distribution: str | None = None

    def __post_init__(self) -> None:
        if ":" not in self.factory:
            raise PluginError(
                f"component {self.kind}/{self.name}: factory {self.factory!r} must be a "
                "'package.module:attr' reference"
            )
        if not (isinstance(self.params, type) and issubclass(self.params, BaseModel)):
            raise PluginError(
                f"component {self.kind}/{self.name}: params must be a pydantic model class"
            )

    @property
    def names(self) -> tuple[str, ...]:
        """The canonical name followed by the aliases."""
        return (self.name, *self.aliases)

    def load(self) -> Callable[..., Any]:
        """Import and return the factory.

        Raises:
            ComponentBuildError: The module or attribute cannot be imported.
        """
        module_name, _, attr = self.factory.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except Exception as exc:  # noqa: BLE001 - any import failure is reported the same way
            raise ComponentBuildError(
                f"{self.kind} {self.name!r} from {self.distribution or self.plugin}: cannot "
                f"import {self.factory!r}: {type(exc).__name__}: {exc}; check that the "
                "distribution and its dependencies are installed"
            ) from exc
        return obj


def closest(name: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """Closest matches of ``name`` among ``choices``: difflib ratio ≥ 0.6, then prefixes."""
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    key = name.lower().replace(" ", "_")
    hits = difflib.get_close_matches(key, list(lowered), n=n, cutoff=0.6)
    if len(key) >= 3:  # abbreviations: 'acc' -> 'accuracy'
        hits += [c for c in lowered if c.startswith(key) and c not in hits]
    return [lowered[h] for h in hits[:n]]


def _accepted_kwargs(func: Callable[..., Any], context: Mapping[str, Any]) -> dict[str, Any]:
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        return dict(context)
    return {k: v for k, v in context.items() if k in sig.parameters}


class Registry:
    """Components by ``(kind, name)``, with alias resolution and did-you-mean lookups."""

    def __init__(self) -> None:
        self._components: dict[tuple[str, str], ComponentInfo] = {}
        self._aliases: dict[tuple[str, str], str] = {}

    def add(self, info: ComponentInfo) -> None:
        """Add a component.

        Raises:
            PluginError: The kind/name (or one of its aliases) is already registered; the
                message names both distributions.
        """
        for n in info.names:
            key = (info.kind, n)
            if key in self._aliases:
                other = self._components[(info.kind, self._aliases[key])]
                raise PluginError(
                    f"duplicate {info.kind} {n!r}: registered by "
                    f"{other.distribution or other.plugin} and by "
                    f"{info.distribution or info.plugin}; uninstall one of them or block a "
                    "plugin with '-p no:<plugin>'"
                )
        self._components[(info.kind, info.name)] = info
        for n in info.names:
            self._aliases[(info.kind, n)] = info.name

    def kinds(self) -> list[str]:
        """Every kind with at least one component, core kinds first."""
        seen = {k for k, _ in self._components}
        return [k for k in KINDS if k in seen] + sorted(seen - set(KINDS))

    def components(self, kind: str | None = None) -> list[ComponentInfo]:
        """Registered components (of one kind, if given), sorted by kind then name."""
        out = [c for (k, _), c in self._components.items() if kind is None or k == kind]
        return sorted(out, key=lambda c: (c.kind, c.name))

    def names(self, kind: str) -> list[str]:
        """Canonical names of one kind."""
        return [c.name for c in self.components(kind)]

    def canonical(self, kind: str, name: str) -> str | None:
        """Canonical name for ``name`` (itself or an alias), or ``None`` if unknown."""
        return self._aliases.get((kind, name))

    def suggestion(self, kind: str, name: str) -> str:
        """A did-you-mean sentence for an unknown ``name`` of ``kind``."""
        pool = {n: c for c in self.components(kind) for n in c.names}
        hits: list[str] = []
        for hit in closest(name, pool, n=6):
            hits.append(hit if ("." in name and "." in hit) else pool[hit].name)
        if "." in name or ":" in name:  # compare the class name of 0.6 import paths too
            last = name.replace(":", ".").rsplit(".", 1)[-1]
            short = {c.name: c for c in pool.values()}
            short.update({a.rsplit(".", 1)[-1]: c for a, c in pool.items() if "." in a})
            for hit in closest(last, short, n=4):
                hits.append(short[hit].name)
        names = list(dict.fromkeys(h for h in hits if h != name))[:3]
        if names:
            quoted = ", ".join(
                f"'{h}' ({pool[h].distribution or pool[h].plugin or 'unknown distribution'})"
                for h in names)
            return f"did you mean {quoted}?"
        canonical = self.names(kind)
        if not canonical:
            return f"no {kind} is registered; install a plugin that provides one"
        shown = ", ".join(canonical[:12]) + (", ..." if len(canonical) > 12 else "")
        return f"registered {kind}s: {shown} (see 'thelper plugins list')"

    def get(self, kind: str, name: str) -> ComponentInfo:
        """Look up a component by canonical name or alias.

        Raises:
            ComponentNotFoundError: Unknown name; the message suggests close matches.
        """
        canonical = self.canonical(kind, name)
        if canonical is None:
            raise ComponentNotFoundError(
                f"{name!r} is not a registered {kind}; {self.suggestion(kind, name)}"
            )
        return self._components[(kind, canonical)]

    def build(
        self, kind: str, name: str, params: BaseModel | Mapping[str, Any] | None = None, /,
        **context: Any,
    ) -> Any:
        """Instantiate a component.

        Args:
            kind: Component kind.
            name: Canonical name or alias.
            params: Validated params model, or a mapping validated here.
            **context: Extra arguments passed only if the factory's signature names them and
                no param of the same name exists.

        Raises:
            ComponentNotFoundError: Unknown name.
            ComponentBuildError: Invalid params, import failure or constructor error.
        """
        info = self.get(kind, name)
        if params is None or isinstance(params, Mapping):
            try:
                params = info.params.model_validate(dict(params or {}))
            except ValidationError as exc:
                raise ComponentBuildError(
                    f"{kind} {info.name!r}: invalid params: {exc}"
                ) from exc
        factory = info.load()
        kwargs = params.model_dump() if isinstance(params, BaseModel) else dict(params)
        for key, value in _accepted_kwargs(factory, context).items():
            kwargs.setdefault(key, value)  # validated params always win over context
        try:
            return factory(**kwargs)
        except ThelperError:  # already a clear, user-facing message (DataError, ConfigError)
            raise
        except Exception as exc:
            raise ComponentBuildError(
                f"{kind} {info.name!r} ({info.factory}) failed to build with params "
                f"{params.model_dump() if isinstance(params, BaseModel) else params}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def with_origin(self, info: ComponentInfo, plugin: str, distribution: str | None) -> ComponentInfo:
        """Copy of ``info`` stamped with the registering plugin and distribution."""
        return replace(info, plugin=plugin, distribution=distribution or info.distribution)
