"""The plugin manager facade: the only code that calls ``pm.hook.*``.

This is the bottom layer of the plugin system: it imports the hook specifications
(:mod:`thelper.hookspecs`, where :data:`hookimpl` lives too) and the registry, never the
plugins it loads. Plugins come from one door, the ``thelper.plugins`` entry-point group; the
core's own built-ins are known only as a table of module names, :data:`BUILTIN_PLUGINS`,
imported when a manager is created and blockable like any plugin. Loading is isolated: a
plugin that fails to import, or raises while registering or adding commands, is recorded in
:attr:`ThelperPluginManager.failures` (with its distribution) and every other plugin keeps
working.

Switches:
    ``THELPER_DISABLE_PLUGIN_AUTOLOAD=1``: load no entry-point plugin except those named in
    ``THELPER_PLUGINS`` (comma-separated entry-point names); the built-ins still load.
    ``THELPER_BLOCK_PLUGINS`` / ``-p no:<name>``: never load these plugins, built-ins
    included (``-p no:core`` leaves no built-in component; ``-p no:tensorboard`` no
    TensorBoard events).
"""

from __future__ import annotations

import importlib
import os
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any

import pluggy

from thelper import hookspecs
from thelper.exceptions import LocalPluginError, PluginError
from thelper.registry import ComponentInfo, Registry

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

    import typer

__all__ = [
    "ENTRY_POINT_GROUP",
    "BUILTIN_PLUGINS",
    "BUILTIN_DISTRIBUTION",
    "hookimpl",
    "PluginRecord",
    "PluginFailure",
    "ThelperPluginManager",
    "get_plugin_manager",
]

ENTRY_POINT_GROUP = "thelper.plugins"
#: Re-exported from :mod:`thelper.hookspecs`, where it is defined beside the specs.
hookimpl = hookspecs.hookimpl
#: Name of the built-in plugin that registers the core's components.
CORE_PLUGIN = "core"
#: Distribution of the built-in plugins.
BUILTIN_DISTRIBUTION = "thelper-core"
#: The core's built-in plugins, ``{plugin name: module}``, in registration order. The modules
#: are imported when a manager is created (never when this module is imported), each unless
#: blocked by name (``-p no:NAME``, ``THELPER_BLOCK_PLUGINS``), exactly like entry points.
BUILTIN_PLUGINS: dict[str, str] = {
    CORE_PLUGIN: "thelper._builtins",
    "core-commands": "thelper.tools.commands",
    "run-record": "thelper.trackers.run_record",
    "tensorboard": "thelper.trackers.tensorboard",
    "trackers": "thelper.trackers.configured",
    "runs-commands": "thelper.tools.runs",
    "core-predict": "thelper.writers",
}


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
            component (e.g. a duplicate name, or a params module that does not exist);
            ``"command"`` for a CLI command refused as a duplicate.
        names: Name and aliases of that component (or the command's name).
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


def _command_names(app: typer.Typer, commands: list[Any] | None = None,
                   groups: list[Any] | None = None) -> list[str]:
    """The CLI names of typer command and group registrations (those of ``app`` when
    ``commands`` and ``groups`` are ``None``), as typer will name them."""
    from typer.main import get_command_name, solve_typer_info_defaults

    commands = app.registered_commands if commands is None else commands
    groups = app.registered_groups if groups is None else groups
    names = []
    for info in commands:
        name = info.name or (get_command_name(info.callback.__name__) if info.callback else None)
        if name:
            names.append(name)
    for group in groups:
        name = solve_typer_info_defaults(group).name
        if name:
            names.append(name)
        elif group.typer_instance is not None:  # an unnamed group adds its commands
            names += _command_names(group.typer_instance)
    return names


class ThelperPluginManager:
    """Typed facade over :class:`pluggy.PluginManager` for thelper.

    Args:
        autoload: Load plugins from the ``thelper.plugins`` entry points. Defaults to ``True``
            unless ``THELPER_DISABLE_PLUGIN_AUTOLOAD`` is set.
        blocked: Plugin names never to load (adds to ``THELPER_BLOCK_PLUGINS``), built-ins
            (:data:`BUILTIN_PLUGINS`) included.

    Attributes:
        records: Loaded plugins by name, in registration order (built-ins first).
        blocked: Names of the plugins never to load.
        blocked_plugins: The blocked plugins that exist (a built-in or an installed entry
            point), ``{name: distribution}``; none of their code is imported. The registry
            (:attr:`registry`) mentions them when a config names an unknown component.
    """

    def __init__(self, autoload: bool | None = None, blocked: Iterable[str] = (),
                 local: Iterable[str] = ()) -> None:
        self._pm = pluggy.PluginManager(hookspecs.PROJECT)
        self._pm.add_hookspecs(hookspecs)
        self.records: dict[str, PluginRecord] = {}
        self.blocked_plugins: dict[str, str | None] = {}
        self._load_failures: list[PluginFailure] = []
        self._registry_failures: list[PluginFailure] = []
        self.blocked: set[str] = set(blocked) | _env_list("THELPER_BLOCK_PLUGINS")
        self._registry: Registry | None = None
        self.load_builtins()
        if autoload is None:
            autoload = not os.environ.get("THELPER_DISABLE_PLUGIN_AUTOLOAD")
        self.load_entrypoints(only=None if autoload else _env_list("THELPER_PLUGINS"))
        self.local_modules: tuple[str, ...] = ()
        self.load_local(local)

    def load_local(self, modules: Iterable[str]) -> None:
        """Import local plugin modules by name (``thelper -p my_models``) and register them.

        A module is looked up on ``sys.path`` (the CLI adds the current directory at its
        end, after ``PYTHONPATH`` and the installed packages). It registers like an
        installed plugin (hooks, components, commands), under its module name, with no
        distribution. Unlike installed plugins, which the user did not name, a local module
        that fails is an error: the command line asked for it.

        Raises:
            LocalPluginError: The module cannot be imported, or does not implement any hook.
        """
        for module in modules:
            if module in self.local_modules:
                continue
            if not all(part.isidentifier() for part in module.split(".")):
                raise LocalPluginError(f"-p {module}: not a module name; name a module such as "
                                  "my_models (for my_models.py in the current directory or "
                                  "on PYTHONPATH), or block a plugin with -p no:NAME")
            try:
                plugin = importlib.import_module(module)
            except ImportError as exc:
                raise LocalPluginError(
                    f"-p {module}: cannot import local plugin module {module!r} ({exc}); run "
                    f"from the directory that holds {module.split('.')[0]}.py, or add its "
                    "directory to PYTHONPATH") from None
            except Exception as exc:  # noqa: BLE001 - the user's module raised while importing
                raise LocalPluginError(f"-p {module}: importing {module!r} raised "
                                  f"{type(exc).__name__}: {exc}") from None
            if not any(callable(getattr(plugin, n, None)) and hasattr(getattr(plugin, n),
                       "thelper_impl") for n in dir(plugin) if n.startswith("thelper_")):
                raise LocalPluginError(f"-p {module}: {getattr(plugin, '__file__', module)} "
                                  "implements no thelper hook; decorate e.g. "
                                  "thelper_register_components with @thelper.hookspecs."
                                  "hookimpl (see docs/writing-plugins.md)")
            self.register(plugin, name=module)
            self.local_modules = (*self.local_modules, module)

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

    def load_builtins(self) -> None:
        """Import and register the core's built-in plugins (:data:`BUILTIN_PLUGINS`).

        Each is skipped when blocked (and listed in :attr:`blocked_plugins`), and isolated
        like an entry point: an import or registration error becomes a
        :class:`PluginFailure`. Called by the constructor.
        """
        for name, module in BUILTIN_PLUGINS.items():
            if name in self.records:
                continue
            if name in self.blocked:
                self.blocked_plugins[name] = BUILTIN_DISTRIBUTION
                continue
            self._load(name, BUILTIN_DISTRIBUTION, lambda m=module: importlib.import_module(m))

    def load_entrypoints(self, only: set[str] | None = None) -> None:
        """Load the ``thelper.plugins`` entry points, isolating failures.

        Args:
            only: If given, load just these entry-point names.
        """
        seen: set[str] = set()
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in seen or ep.name in self.records:
                continue
            dist = ep.dist.name if ep.dist is not None else None
            if ep.name in self.blocked:
                self.blocked_plugins.setdefault(ep.name, dist)
                continue
            if only is not None and ep.name not in only:
                continue
            seen.add(ep.name)
            self._load(ep.name, dist, ep.load)

    def _load(self, name: str, dist: str | None, load: Callable[[], object]) -> None:
        """Import a plugin with ``load()`` and register it; failures are recorded."""
        try:
            plugin = load()
        except Exception as exc:  # noqa: BLE001 - isolate any plugin failure
            self._load_failures.append(
                PluginFailure(name, dist, "import", f"{type(exc).__name__}: {exc}",
                              traceback.format_exc())
            )
            return
        try:
            self.register(plugin, name=name, distribution=dist)
        except Exception as exc:  # noqa: BLE001
            self._load_failures.append(
                PluginFailure(name, dist, "register", f"{type(exc).__name__}: {exc}",
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
        registry.blocked = dict(self.blocked_plugins)
        self._registry_failures = []
        caller = self._pm.hook.thelper_register_components
        for impl in caller.get_hookimpls():  # registration order: the first one keeps a name
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
        """Let each plugin add CLI commands; failures are recorded, not raised.

        A command (or command group) name is owned by whoever adds it first: the CLI itself
        for the commands ``app`` has already, then the plugins in registration order. A
        plugin that adds a name already taken has that command removed, and a
        :class:`PluginFailure` (stage ``"add commands"``) names both plugins and their
        distributions, like a duplicate component.
        """
        owners = {name: (None, None) for name in _command_names(app)}
        for impl in self._pm.hook.thelper_add_commands.get_hookimpls():  # registration order
            record = self.records.get(impl.plugin_name)
            dist = record.distribution if record else None
            commands, groups = list(app.registered_commands), list(app.registered_groups)
            try:
                impl.function(app=app)
            except Exception as exc:  # noqa: BLE001
                self._load_failures.append(
                    PluginFailure(impl.plugin_name, dist, "add commands",
                                  f"{type(exc).__name__}: {exc}", traceback.format_exc())
                )
            self._refuse_duplicates(app, commands, groups, owners, impl.plugin_name, dist)

    def _refuse_duplicates(self, app: typer.Typer, commands: list[Any], groups: list[Any],
                           owners: dict[str, tuple[str | None, str | None]], plugin: str,
                           dist: str | None) -> None:
        """Remove the commands ``plugin`` added under a name already taken (recording one
        failure per name) and record the names it now owns."""
        for is_group, registered, before in ((False, app.registered_commands, commands),
                                             (True, app.registered_groups, groups)):
            known = {id(x) for x in before}
            for entry in [x for x in registered if id(x) not in known]:
                names = _command_names(app, [], [entry]) if is_group else \
                    _command_names(app, [entry], [])
                taken = [n for n in names if n in owners]
                for name in taken:
                    other, other_dist = owners[name]
                    first = ("the thelper CLI itself" if other is None
                             else f"plugin {other!r} ({other_dist or 'registered in-process'})")
                    second = f"plugin {plugin!r} ({dist or 'registered in-process'})"
                    by = (f"added twice by {second}" if other == plugin
                          else f"added by {first} and by {second}")
                    self._load_failures.append(PluginFailure(
                        plugin, dist, "add commands",
                        f"duplicate command {name!r}: {by}; the first one is kept; uninstall "
                        "one of them or block a plugin with '-p no:<plugin>'",
                        kind="command", names=(name,)))
                if taken:
                    registered.remove(entry)
                else:
                    owners.update((n, (plugin, dist)) for n in names)

    # ---------------------------------------------------------------- lifecycle
    def lifecycle_caller(self, hook: str, without: Iterable[str] = ()) -> Callable[..., Any]:
        """The lifecycle hook ``thelper_<hook>`` (``session_start``, ``epoch_end``, ...) as
        a function of keyword arguments that calls every plugin except those registered
        under the names in ``without`` (absent names are ignored).

        Raises:
            AttributeError: No lifecycle hook of that name.
        """
        skip = [p for p in map(self._pm.get_plugin, without) if p is not None]
        return self._pm.subset_hook_caller(f"thelper_{hook}", skip)

    def session_start(self, session: Any) -> None:
        self._pm.hook.thelper_session_start(session=session)

    def epoch_end(self, session: Any, epoch: int, metrics: dict[str, dict[str, float]]) -> None:
        self._pm.hook.thelper_epoch_end(session=session, epoch=epoch, metrics=metrics)

    def log_scalars(self, session: Any, split: str, step: int, values: dict[str, float]) -> None:
        self._pm.hook.thelper_log_scalars(session=session, split=split, step=step,
                                          values=values)

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


def get_plugin_manager(refresh: bool = False, blocked: Iterable[str] = (),
                       local: Iterable[str] = ()) -> ThelperPluginManager:
    """The process-wide plugin manager (created on first use).

    Args:
        refresh: Build a new manager (re-reading entry points).
        blocked: Plugin names to block when a new manager is built.
        local: Local plugin modules to import (``thelper -p my_models``).

    Raises:
        PluginError: A local module cannot be imported or implements no hook.
    """
    global _DEFAULT
    wanted = set(blocked) | _env_list("THELPER_BLOCK_PLUGINS")
    local = tuple(dict.fromkeys(local))
    if _DEFAULT is None or refresh or _DEFAULT.blocked != wanted \
            or _DEFAULT.local_modules != local:
        _DEFAULT = ThelperPluginManager(blocked=blocked, local=local)
    return _DEFAULT
