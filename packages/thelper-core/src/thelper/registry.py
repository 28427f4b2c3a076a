"""Component registry: what every ``{type, params}`` slot of a config may name.

Plugins describe their components with :class:`ComponentInfo`. Registration is data only:
the factory is a ``"module:attr"`` string imported when the component is built, and the
params model (a pydantic model used to validate configs without importing torch) is best
given the same way, as a ``"module:Attr"`` string imported the first time a config names the
component. Importing this module imports neither pydantic nor torch, so ``thelper --help``
and ``thelper plugins list`` stay fast.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType, ModuleType
from typing import TYPE_CHECKING, Any

from thelper.exceptions import (
    ComponentBuildError,
    ComponentNotFoundError,
    PluginError,
    ThelperError,
)

if TYPE_CHECKING:  # pragma: no cover
    from pydantic import BaseModel

    from thelper.params import Params

__all__ = ["KINDS", "DEFAULT_PARAMS", "Params", "ComponentInfo", "Registry", "closest"]

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
    "writer", "decoder",  # thelper infer: output writers by task type, file decoders
)

#: Params of a component that takes none: the empty :class:`~thelper.params.Params`.
DEFAULT_PARAMS = "thelper.params:Params"

#: Resolved lazy params references, ``{"module:Attr": (module, model class)}``, shared by
#: the copies of a :class:`ComponentInfo` that the plugin manager stamps with their origin
#: (an entry is used while its module is still the one in ``sys.modules``).
_RESOLVED: dict[str, tuple[ModuleType, type[BaseModel]]] = {}
#: Modules of lazy params references already found on disk (see ``check_params``).
_LOCATED: set[str] = set()


def __getattr__(name: str) -> Any:  # lazy: ``Params`` needs pydantic
    if name == "Params":
        from thelper.params import Params

        return Params
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _is_reference(text: str) -> bool:
    """Whether ``text`` reads ``"package.module:Attr"`` (dotted identifiers on both sides)."""
    module, sep, attr = text.partition(":")
    return bool(sep) and all(p.isidentifier() for p in (*module.split("."), *attr.split(".")))


def _import_reference(reference: str) -> Any:
    """Import ``"package.module:attr.sub"`` and return the object (errors propagate)."""
    module_name, _, attr = reference.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _is_model_class(obj: Any) -> bool:
    """Whether ``obj`` is a pydantic model class, without importing pydantic for the check
    (a model class exists only once pydantic is imported)."""
    pydantic = sys.modules.get("pydantic")
    return (pydantic is not None and isinstance(obj, type)
            and issubclass(obj, pydantic.BaseModel))


@dataclass(frozen=True)
class ComponentInfo:
    """A registered component.

    Both references are lazy ``"package.module:attr"`` strings, so that registering imports
    neither torch nor pydantic: every ``thelper`` command (``--help`` and ``plugins list``
    included) imports each plugin's registration module, while a params model is only needed
    when a config names the component. A params model *class* is accepted too; it costs the
    import of its module (and of pydantic) on every command.

    Example:
        >>> ComponentInfo(
        ...     kind="model", name="rbf_net", factory="my_plugin.models:RBFNet",
        ...     params="my_plugin.params:RBFNetParams",
        ...     description="radial basis function network")  # doctest: +SKIP

    Attributes:
        kind: One of :data:`KINDS` (or a plugin-defined kind).
        name: The ``type:`` value that selects it in a config.
        factory: Lazy reference ``"package.module:attr"`` to a class or function. It is
            called with the validated params as keyword arguments, plus the context
            arguments its signature names (``task`` for models, ``params`` for optimizers,
            ``optimizer`` for schedulers, ...).
        params: The accepted params: a lazy reference ``"package.module:Attr"`` to a
            pydantic model (recommended; subclass :class:`~thelper.params.Params`), or the
            model class itself. Read the model through :attr:`params_model`. Defaults to
            :data:`DEFAULT_PARAMS` (no params).
        aliases: Other accepted ``type:`` names (e.g. thelper 0.6 fully qualified names).
        description: One line shown by ``thelper plugins list``.
        metadata: Free-form facts the core reads, e.g. ``{"goal": "max"}`` for metrics or
            ``{"provides_task": True}`` for datasets that define their own task.
        plugin: Name of the registering plugin (set by the plugin manager).
        distribution: Distribution that installed the plugin (set by the plugin manager).

    Raises:
        PluginError: ``factory`` or a string ``params`` is not a ``"package.module:attr"``
            reference (checked without importing anything), or ``params`` is neither a
            string nor a pydantic model class.
    """

    kind: str
    name: str
    factory: str
    params: str | type[BaseModel] = DEFAULT_PARAMS
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
        if isinstance(self.params, str):
            if not _is_reference(self.params):
                raise PluginError(
                    f"component {self.kind}/{self.name}: params {self.params!r} must be a "
                    "'package.module:Attr' reference to a pydantic model (or the model class)"
                )
        elif not _is_model_class(self.params):
            raise PluginError(
                f"component {self.kind}/{self.name}: params must be a 'package.module:Attr' "
                f"reference or a pydantic model class (got {self.params!r})"
            )

    @property
    def names(self) -> tuple[str, ...]:
        """The canonical name followed by the aliases."""
        return (self.name, *self.aliases)

    @property
    def origin(self) -> str:
        """The distribution (or plugin) that registered the component, for messages."""
        return self.distribution or self.plugin or "an unknown distribution"

    @property
    def params_model(self) -> type[BaseModel]:
        """The params model, imported on first use when :attr:`params` is a reference.

        Resolved references are cached per reference string (while their module stays
        imported).

        Raises:
            PluginError: The reference cannot be imported, or does not name a pydantic
                model class; the message names the component, the reference and the
                distribution.
        """
        params = self.params
        if not isinstance(params, str):
            return params
        cached = _RESOLVED.get(params)
        if cached is not None and sys.modules.get(cached[0].__name__) is cached[0]:
            return cached[1]
        try:
            obj = _import_reference(params)
        except Exception as exc:  # noqa: BLE001 - any import failure is reported the same way
            raise PluginError(
                f"{self.kind} {self.name!r} from {self.origin}: cannot import its params "
                f"model {params!r}: {type(exc).__name__}: {exc}; fix the plugin or install "
                f"its dependencies{self._block_hint()}"
            ) from exc
        if not _is_model_class(obj):
            raise PluginError(
                f"{self.kind} {self.name!r} from {self.origin}: params {params!r} is "
                f"{type(obj).__name__} {obj!r}, not a pydantic model class (subclass "
                f"thelper.params.Params){self._block_hint()}"
            )
        _RESOLVED[params] = (sys.modules[params.partition(":")[0]], obj)
        return obj

    def check_params(self) -> None:
        """Check cheaply that a lazy params reference can be found, without importing it.

        The reference's module is looked up on disk (``importlib.util.find_spec``) when its
        package is already imported (or it is a top-level module), so that finding it
        imports nothing; otherwise, and for the attribute, the check is left to
        :attr:`params_model`. The plugin manager calls this while building the registry, so
        that ``thelper plugins list`` reports a misspelled module.

        Raises:
            PluginError: The module of the reference does not exist.
        """
        if not isinstance(self.params, str) or self.params in _RESOLVED:
            return
        module = self.params.partition(":")[0]
        if module in _LOCATED or module in sys.modules:
            return
        parent = module.rpartition(".")[0]
        if parent and parent not in sys.modules:
            return  # finding it would import the parent package: leave it to params_model
        import importlib.util

        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # the parent is a module, not a package
            found = False
        if not found:
            raise PluginError(
                f"{self.kind} {self.name!r} from {self.origin}: the module of its params "
                f"model {self.params!r} does not exist ({module!r} not found); fix the "
                f"reference in the plugin's registration{self._block_hint()}"
            )
        _LOCATED.add(module)

    def _block_hint(self) -> str:
        return f", or block the plugin with '-p no:{self.plugin}'" if self.plugin else ""

    def load(self) -> Callable[..., Any]:
        """Import and return the factory.

        Raises:
            ComponentBuildError: The module or attribute cannot be imported.
        """
        try:
            obj: Any = _import_reference(self.factory)
        except Exception as exc:  # noqa: BLE001 - any import failure is reported the same way
            raise ComponentBuildError(
                f"{self.kind} {self.name!r} from {self.origin}: cannot "
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
        #: Plugins that exist but were blocked, ``{name: distribution}`` (set by the plugin
        #: manager); :meth:`suggestion` mentions them when it has no close match.
        self.blocked: dict[str, str | None] = {}

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
            return f"no {kind} is registered; install a plugin that provides one" + \
                self._blocked_note()
        shown = ", ".join(canonical[:12]) + (", ..." if len(canonical) > 12 else "")
        return f"registered {kind}s: {shown} (see 'thelper plugins list')" + self._blocked_note()

    def _blocked_note(self) -> str:
        if not self.blocked:
            return ""
        names = ", ".join(f"'{n}' ({d or 'unknown distribution'})"
                          for n, d in sorted(self.blocked.items()))
        return (f"; blocked plugins, not loaded: {names} (remove their '-p no:NAME' or "
                "THELPER_BLOCK_PLUGINS entry to load them)")

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
            PluginError: The component's params model cannot be imported.
            ComponentBuildError: Invalid params, import failure or constructor error.
        """
        from pydantic import BaseModel, ValidationError

        info = self.get(kind, name)
        if params is None or isinstance(params, Mapping):
            try:
                params = info.params_model.model_validate(dict(params or {}))
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
