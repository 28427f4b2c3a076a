"""The plugin manager facade: the only code that calls ``pm.hook.*``.

Plugins come from one door, the ``thelper.plugins`` entry-point group; the core's own
built-ins (:mod:`thelper._builtins`) are registered through the same manager. Loading is
isolated: a plugin that fails to import, or raises while registering, is recorded in
:attr:`ThelperPluginManager.failures` (with its distribution) and every other plugin keeps
working.

Switches:
    ``THELPER_DISABLE_PLUGIN_AUTOLOAD=1``: load no entry-point plugin except those named in
    ``THELPER_PLUGINS`` (comma-separated entry-point names).
    ``THELPER_BLOCK_PLUGINS`` / ``-p no:<name>``: never load these plugins.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any

import pluggy

from thelper import hookspecs
from thelper.exceptions import PluginError
from thelper.registry import ComponentInfo, Registry

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

    import typer

__all__ = [
    "ENTRY_POINT_GROUP",
    "hookimpl",
    "PluginRecord",
    "PluginFailure",
    "ThelperPluginManager",
    "get_plugin_manager",
]

ENTRY_POINT_GROUP = "thelper.plugins"
hookimpl = pluggy.HookimplMarker("thelper")
CORE_PLUGIN = "core"


@dataclass
class PluginRecord:
    """A loaded plugin.

    Attributes:
        name: Plugin name (entry-point name, ``core`` for the built-ins).
        distribution: Installed distribution that provides it (``None`` when registered
            in-process).
        version: The distribution's version.
        components: Components it registered.
    """

    name: str
    distribution: str | None
    version: str | None
    components: list[ComponentInfo] = field(default_factory=list)


@dataclass
class PluginFailure:
    """A plugin that could not be loaded or could not register.

    Attributes:
        name: Plugin name.
        distribution: Distribution that provides it, if known.
        stage: ``"import"``, ``"register"`` or ``"add commands"``.
        error: One-line description of the exception.
        details: Full traceback text, for ``--traceback``.
        kind: Kind of the component refused at registration, if the failure is about one
            component (e.g. a duplicate name, or a params module that does not exist).
        names: Name and aliases of that component.
    """

    name: str
    distribution: str | None
    stage: str
    error: str
    details: str = ""
    kind: str | None = None
    names: tuple[str, ...] = ()

    def format(self) -> str:
        dist = f" (from {self.distribution})" if self.distribution else ""
        return f"plugin {self.name!r}{dist} failed to {self.stage}: {self.error}"


def _env_list(var: str) -> set[str]:
    return {x.strip() for x in os.environ.get(var, "").split(",") if x.strip()}


class ThelperPluginManager:
    """Typed facade over :class:`pluggy.PluginManager` for thelper.

    Args:
        autoload: Load plugins from the ``thelper.plugins`` entry points. Defaults to ``True``
            unless ``THELPER_DISABLE_PLUGIN_AUTOLOAD`` is set.
        blocked: Plugin names never to load (adds to ``THELPER_BLOCK_PLUGINS``).
    """

    def __init__(self, autoload: bool | None = None, blocked: Iterable[str] = ()) -> None:
        self._pm = pluggy.PluginManager("thelper")
        self._pm.add_hookspecs(hookspecs)
        self.records: dict[str, PluginRecord] = {}
        self._load_failures: list[PluginFailure] = []
        self._registry_failures: list[PluginFailure] = []
        self.blocked: set[str] = set(blocked) | _env_list("THELPER_BLOCK_PLUGINS")
        self._registry: Registry | None = None
        from thelper import _builtins
        from thelper.tools import commands
        from thelper.trackers import run_record, tensorboard

        self.register(_builtins, name=CORE_PLUGIN, distribution="thelper-core")
        self.register(commands, name="core-commands", distribution="thelper-core")
        for name, module in (("run-record", run_record), ("tensorboard", tensorboard)):
            if name not in self.blocked:
                self.register(module, name=name, distribution="thelper-core")
        if autoload is None:
            autoload = not os.environ.get("THELPER_DISABLE_PLUGIN_AUTOLOAD")
        self.load_entrypoints(only=None if autoload else _env_list("THELPER_PLUGINS"))

    @property
    def failures(self) -> list[PluginFailure]:
        """Plugins that failed to import, register or add commands (each listed once)."""
        _ = self.registry
        return [*self._load_failures, *self._registry_failures]

    # ------------------------------------------------------------------ loading
    def register(self, plugin: object, name: str, distribution: str | None = None) -> None:
        """Register a plugin object or module in-process.

        Raises:
            PluginError: ``name`` is already registered.
        """
        if name in self.records:
            raise PluginError(f"a plugin named {name!r} is already registered")
        version = None
        if distribution:
            try:
                version = metadata.version(distribution)
            except metadata.PackageNotFoundError:
                version = None
        self._pm.register(plugin, name=name)
        try:  # a misspelled hook name would otherwise be ignored silently
            self._pm.check_pending()
        except pluggy.PluginValidationError as exc:
            self._pm.unregister(plugin)
            raise PluginError(f"plugin {name!r}: {exc}; hook names must match "
                              "thelper.hookspecs") from None
        self.records[name] = PluginRecord(name, distribution, version)
        self._registry = None

    def unregister(self, name: str) -> None:
        """Remove a plugin by name (no-op when absent)."""
        plugin = self._pm.get_plugin(name)
        if plugin is not None:
            self._pm.unregister(plugin)
        self.records.pop(name, None)
        self._registry = None

    def load_entrypoints(self, only: set[str] | None = None) -> None:
        """Load the ``thelper.plugins`` entry points, isolating failures.

        Args:
            only: If given, load just these entry-point names.
        """
        seen: set[str] = set()
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in seen or ep.name in self.blocked or ep.name in self.records:
                continue
            if only is not None and ep.name not in only:
                continue
            seen.add(ep.name)
            dist = ep.dist.name if ep.dist is not None else None
            try:
                plugin = ep.load()
            except Exception as exc:  # noqa: BLE001 - isolate any plugin failure
                self._load_failures.append(
                    PluginFailure(ep.name, dist, "import", f"{type(exc).__name__}: {exc}",
                                  traceback.format_exc())
                )
                continue
            try:
                self.register(plugin, name=ep.name, distribution=dist)
            except Exception as exc:  # noqa: BLE001
                self._load_failures.append(
                    PluginFailure(ep.name, dist, "register", f"{type(exc).__name__}: {exc}",
                                  traceback.format_exc())
                )

    # ----------------------------------------------------------------- registry
    @property
    def registry(self) -> Registry:
        """The component registry, built (and cached) from every plugin's registration."""
        if self._registry is None:
            self._registry = self._build_registry()
        return self._registry

    def _build_registry(self) -> Registry:
        registry = Registry()
        self._registry_failures = []
        caller = self._pm.hook.thelper_register_components
        for impl in reversed(caller.get_hookimpls()):  # registration order
            record = self.records.get(impl.plugin_name)
            dist = record.distribution if record else None
            try:
                infos = list(impl.function() or [])
            except Exception as exc:  # noqa: BLE001
                self._registry_failures.append(
                    PluginFailure(impl.plugin_name, dist, "register",
                                  f"{type(exc).__name__}: {exc}", traceback.format_exc())
                )
                continue
            accepted = []
            for info in infos:
                try:
                    if not isinstance(info, ComponentInfo):
                        raise PluginError(f"returned {type(info).__name__}, not ComponentInfo")
                    stamped = registry.with_origin(info, impl.plugin_name, dist)
                    stamped.check_params()  # a misspelled params module, without importing
                    registry.add(stamped)
                    accepted.append(stamped)
                except PluginError as exc:
                    component = isinstance(info, ComponentInfo)
                    self._registry_failures.append(
                        PluginFailure(impl.plugin_name, dist, "register", str(exc),
                                      kind=info.kind if component else None,
                                      names=info.names if component else ())
                    )
            if record is not None:
                record.components = accepted
        return registry

    # ----------------------------------------------------------------- commands
    def add_commands(self, app: typer.Typer) -> None:
        """Let each plugin add CLI commands; failures are recorded, not raised."""
        for impl in reversed(self._pm.hook.thelper_add_commands.get_hookimpls()):
            try:
                impl.function(app=app)
            except Exception as exc:  # noqa: BLE001
                record = self.records.get(impl.plugin_name)
                self._load_failures.append(
                    PluginFailure(impl.plugin_name, record.distribution if record else None,
                                  "add commands", f"{type(exc).__name__}: {exc}",
                                  traceback.format_exc())
                )

    # ---------------------------------------------------------------- lifecycle
    def session_start(self, session: Any) -> None:
        self._pm.hook.thelper_session_start(session=session)

    def epoch_end(self, session: Any, epoch: int, metrics: dict[str, dict[str, float]]) -> None:
        self._pm.hook.thelper_epoch_end(session=session, epoch=epoch, metrics=metrics)

    def evaluation_end(self, session: Any, split: str, epoch: int, metrics: dict[str, float]) -> None:
        self._pm.hook.thelper_evaluation_end(
            session=session, split=split, epoch=epoch, metrics=metrics
        )

    def log_figure(self, session: Any, split: str, epoch: int, tag: str, figure: Any) -> None:
        self._pm.hook.thelper_log_figure(
            session=session, split=split, epoch=epoch, tag=tag, figure=figure
        )

    def checkpoint_saved(self, session: Any, path: Path, epoch: int, is_best: bool) -> None:
        self._pm.hook.thelper_checkpoint_saved(
            session=session, path=path, epoch=epoch, is_best=is_best
        )

    def session_end(self, session: Any, status: str, error: BaseException | None) -> None:
        self._pm.hook.thelper_session_end(session=session, status=status, error=error)

    # ------------------------------------------------------------------ listing
    def describe(self) -> list[dict[str, Any]]:
        """Plain description of every plugin and its components (``plugins list --json``)."""
        _ = self.registry
        out = []
        for rec in self.records.values():
            by_kind: dict[str, list[str]] = {}
            for c in rec.components:
                by_kind.setdefault(c.kind, []).append(c.name)
            out.append({
                "plugin": rec.name,
                "distribution": rec.distribution,
                "version": rec.version,
                "components": {k: sorted(v) for k, v in by_kind.items()},
            })
        return out


_DEFAULT: ThelperPluginManager | None = None


def get_plugin_manager(refresh: bool = False, blocked: Iterable[str] = ()) -> ThelperPluginManager:
    """The process-wide plugin manager (created on first use).

    Args:
        refresh: Build a new manager (re-reading entry points).
        blocked: Plugin names to block when a new manager is built.
    """
    global _DEFAULT
    wanted = set(blocked) | _env_list("THELPER_BLOCK_PLUGINS")
    if _DEFAULT is None or refresh or _DEFAULT.blocked != wanted:
        _DEFAULT = ThelperPluginManager(blocked=blocked)
    return _DEFAULT
