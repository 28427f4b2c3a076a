"""The public ``{type, params}`` slot type for plugins' own config sections.

A plugin that registers a config section (a component of kind ``section``) describes it with a
pydantic model. A field of that model annotated with :class:`Slot` holds a component of a
registered kind, validated against the registry together with the rest of the config: see
:class:`Slot` and :mod:`thelper.config.dynamic`, which swaps every slot for a discriminated
union over the components of its kind once the plugins are loaded.
"""

from __future__ import annotations

import re
import typing
from typing import Any, ClassVar, Generic, TypeVar

from thelper.config.models import ComponentSpec

if typing.TYPE_CHECKING:  # pragma: no cover
    from thelper.registry import Registry

_K = TypeVar("_K", bound=str)
# For type checkers Slot is generic in its kind, so that ``Slot[Literal["executor"]]`` is a
# valid annotation; at run time ``Slot.__class_getitem__`` makes the per-kind classes.
_Kinded = Generic[_K] if typing.TYPE_CHECKING else object

__all__ = ["Slot"]

_KIND = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_BY_KIND: dict[str, type[Slot]] = {}


class Slot(ComponentSpec, _Kinded):  # type: ignore[misc]
    """A ``{type, params}`` field of a plugin's config section, holding a registered component.

    Subscript it with a component kind to annotate a field of a section's params model:
    ``Slot[Literal["executor"]]``, or for short ``Slot["executor"]``, accepts
    ``{type: NAME, params: {...}}`` where ``NAME`` is a registered ``executor`` (or an alias
    of one) and ``params`` is validated by that component's own params model. Both forms
    give the same class; linters and type checkers (ruff's F821, mypy, pyright) read a bare
    string in an annotation as a forward reference to a class named ``executor``, so write
    the ``Literal`` form in code they check. Slots may be nested in ``list``, ``dict``, ``X | None``
    and in sub-models of the section. When the whole config is validated, an unknown
    ``type`` is reported at ``<section>.<field>.type`` with a did-you-mean suggestion, and a
    bad param at ``<section>.<field>.params.<name>``, like the core's own slots.

    ``Slot["executor"]`` is a class (the same one each time), a subclass of :class:`Slot`;
    the validated value is an instance of a subclass of it, whose ``params`` is the
    component's params model instance. Validated on its own, outside a config (e.g.
    ``MySectionParams.model_validate(...)`` in a unit test), a slot checks only its shape:
    ``type`` a string, ``params`` a mapping left as is.

    Example:
        >>> from typing import Literal
        >>> from thelper.config import Slot
        >>> from thelper.params import Params
        >>> class GridParams(Params):
        ...     executor: Slot[Literal["executor"]]
        ...     '''Where the runs go: ``local`` processes or a ``ray`` cluster.'''
        ...     trackers: list[Slot[Literal["tracker"]]] = []
        ...     '''Where each run's results are recorded.'''
        >>> Slot["executor"] is Slot[Literal["executor"]]
        True
        >>> GridParams.model_validate({"executor": {"type": "local"}}).executor.kind
        'executor'

        Registered as ``ComponentInfo("section", "grid", ..., params="my_plugin.params:
        GridParams")``, a config's ``grid:`` section then validates its ``executor`` against
        the registered executors. Build the chosen component with
        ``cfg.grid.executor.build(registry, **context)``.

    Attributes:
        kind: The component kind of the slot (a class attribute; ``""`` on :class:`Slot`
            itself, which is not meant to annotate a field).
        type: The registered name (or alias) of the component.
        params: The component's validated params (a mapping when validated outside a
            config).
    """

    kind: ClassVar[str] = ""

    def __class_getitem__(cls, kind: Any) -> type[Slot]:  # type: ignore[override]
        if typing.get_origin(kind) is typing.Literal and len(typing.get_args(kind)) == 1:
            kind = typing.get_args(kind)[0]  # Slot[Literal["executor"]], for type checkers
        if not isinstance(kind, str) or not _KIND.match(kind):
            raise TypeError(f"Slot[...] takes a component kind such as 'executor' (a name of "
                            f"letters, digits and underscores), got {kind!r}")
        if cls is not Slot:
            raise TypeError(f"{cls.__name__} is already the slot of kind {cls.kind!r}")
        slot = _BY_KIND.get(kind)
        if slot is None:
            name = "".join(p.capitalize() for p in kind.split("_") if p) + "Slot"
            slot = type(Slot)(name, (Slot,), {
                "__module__": __name__, "__qualname__": name, "kind": kind,
                "__doc__": f"A registered {kind.replace('_', ' ')}: its ``type`` and "
                           "``params``.",
            })
            _BY_KIND[kind] = slot
        return slot

    def build(self, registry: Registry, /, **context: Any) -> Any:
        """Instantiate the component (see :meth:`thelper.registry.Registry.build`).

        Args:
            registry: The registry the config was validated with.
            **context: Extra arguments, passed when the factory's signature names them.

        Raises:
            ComponentNotFoundError: The slot has no kind, or ``type`` is not registered.
            ComponentBuildError: Invalid params, import failure or constructor error.
        """
        if not self.kind:
            from thelper.exceptions import ComponentNotFoundError

            raise ComponentNotFoundError("a bare Slot has no component kind; annotate the "
                                         "field with Slot['<kind>']")
        return registry.build(self.kind, self.type, self.params, **context)

