"""Run-time config models: discriminated unions over the registered components.

For every pluggable slot the core builds ``Annotated[Union[Member_a, Member_b, ...],
Discriminator(...)]`` where each member subclasses the slot's static base with
``type: Literal[name, *aliases]`` and ``params: <the component's params model>``. The result
is cached per registry, so validating many configs in one process costs one build.

Components of kind ``section`` declare extra top-level sections: ``name`` is the section's
key and ``params`` its model (e.g. a plugin's ``viz:`` or ``grid:`` section). The fields of
that model annotated with :class:`~thelper.config.slots.Slot` (``Slot["executor"]``, also
inside ``list``, ``dict``, ``X | None`` and nested models) become discriminated unions over
every registered component of their kind, exactly like the core's slots: one
``model_validate`` checks them, with the same error paths and did-you-mean suggestions. A
component of such a kind whose params model cannot be imported only fails the configs that
name it. The section models with slots swapped are cached per registry.

Params models given as lazy ``"module:Attr"`` references are imported here, for the
components a document names only (or for all of them for the JSON schema); a reference that
cannot be imported raises :class:`~thelper.exceptions.PluginError`.

Speed: the static bases read their field docstrings (``use_attribute_docstrings``), which
pydantic does by re-reading and tokenising source code for *every* subclass. The members are
created from docstring-free copies of the bases instead (the inherited fields keep their
descriptions), which makes building the session model about 4x faster.
"""

from __future__ import annotations

import copy
import re
import types
import typing
from typing import Annotated, Any, Literal, Union
from weakref import WeakKeyDictionary

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    create_model,
    field_validator,
)
from pydantic_core import PydanticCustomError

from thelper.config import models as m
from thelper.config.slots import Slot
from thelper.exceptions import PluginError
from thelper.params import Params
from thelper.registry import ComponentInfo, Registry

__all__ = ["session_model", "section_model", "UNKNOWN_COMPONENT", "UNAVAILABLE_COMPONENT",
           "SECTION_KIND", "IMPORT_ADAPTERS", "PLACEHOLDER", "import_adapter"]

UNKNOWN_COMPONENT = "unknown_component"
#: Error type of a section slot naming a component whose params model cannot be imported.
UNAVAILABLE_COMPONENT = "unavailable_component"
#: Name part of the placeholder members that pad single-component unions (never valid).
PLACEHOLDER = "unavailable"
#: Component kind whose members declare extra top-level config sections.
SECTION_KIND = "section"
#: Registered components that import an arbitrary class by path (``class_path`` param), per
#: kind. A component may also declare itself with ``metadata={"import_adapter": True}``.
IMPORT_ADAPTERS: dict[str, str] = {"dataset": "torch_dataset"}

_CACHE: WeakKeyDictionary[Registry, dict[Any, type[m.SessionConfig]]] = WeakKeyDictionary()
_CACHE_SIZE = 64
_FAST_BASES: dict[type[BaseModel], type[BaseModel]] = {}
#: Per registry: section models with their slots swapped (``{static: run-time}``), and the
#: union of each slot class.
_SLOTTED: WeakKeyDictionary[Registry, dict[type[BaseModel], type[BaseModel]]] = \
    WeakKeyDictionary()
_SLOT_UNIONS: WeakKeyDictionary[Registry, dict[type[Slot], Any]] = WeakKeyDictionary()


class _Never(Params):
    """Placeholder member so that a slot with a single component is still a union."""

    model_config = ConfigDict(use_attribute_docstrings=False)


def import_adapter(registry: Registry, kind: str) -> str | None:
    """Canonical name of the component of ``kind`` that imports classes by path, if any."""
    for info in registry.components(kind):
        if info.metadata.get("import_adapter"):
            return info.name
    name = IMPORT_ADAPTERS.get(kind)
    return registry.canonical(kind, name) if name else None


def _ident(text: str) -> str:
    return re.sub(r"\W+", "_", text).strip("_") or "x"


def _fast(base: type[BaseModel]) -> type[BaseModel]:
    """``base`` without docstring extraction for its subclasses (fields keep descriptions)."""
    fast = _FAST_BASES.get(base)
    if fast is None:
        fast = type(base.__name__, (base,), {
            "model_config": ConfigDict(use_attribute_docstrings=False),
            "__module__": base.__module__, "__doc__": base.__doc__,
            "__qualname__": base.__qualname__,
        })
        _FAST_BASES[base] = fast
    return fast


def _described(base: type[BaseModel], name: str, default: Any = ...,
               **kwargs: Any) -> Any:
    field = base.model_fields.get(name)
    description = field.description if field is not None else None
    if "default_factory" in kwargs:
        return Field(description=description, **kwargs)
    return Field(default, description=description, **kwargs)


def _discriminator(registry: Registry, kind: str, default: str | None,
                   tags: frozenset[str]) -> Discriminator:
    def pick(value: Any) -> str | None:
        if isinstance(value, dict):
            name = value.get("type", default)
            if name is None and "operation" in value:
                name = value.get("operation")
        else:
            name = getattr(value, "type", default)
        if not isinstance(name, str):
            return None
        canonical = registry.canonical(kind, name)
        return canonical if canonical in tags else None

    return Discriminator(
        pick,
        custom_error_type=f"{UNKNOWN_COMPONENT}:{kind}",
        custom_error_message=f"unknown {kind} type",
    )


def _member(base: type[BaseModel], info: ComponentInfo, default_type: bool,
            extra_fields: dict[str, Any]) -> type[BaseModel]:
    params_model = info.params_model  # imports a lazy reference (PluginError if broken)
    required = any(f.is_required() for f in params_model.model_fields.values())
    params_field: Any = (params_model, _described(base, "params")) if required else (
        params_model, _described(base, "params", default_factory=params_model))
    type_annotation = Literal[info.names]  # type: ignore[valid-type]
    type_field: Any = (type_annotation, _described(base, "type", info.name if default_type
                                                   else ...))
    doc = info.description or base.__doc__
    if info.distribution or info.plugin:
        doc = f"{doc} ({info.distribution or info.plugin})"
    return create_model(  # type: ignore[call-overload]
        f"{base.__name__}_{_ident(info.name)}",
        __base__=_fast(base),
        __doc__=doc,
        type=type_field,
        params=params_field,
        **extra_fields,
    )


def _unavailable(base: type[BaseModel], info: ComponentInfo, reason: str) -> type[BaseModel]:
    """A member for ``info`` whose params model cannot be imported: naming it is an error
    (at ``type``) that says why, while the configs that do not name it stay valid."""

    def refuse(cls: Any, value: Any) -> Any:
        raise PydanticCustomError(UNAVAILABLE_COMPONENT, "{reason}", {"reason": reason})

    return create_model(  # type: ignore[call-overload]
        f"{base.__name__}_{_ident(info.name)}",
        __base__=_fast(base),
        __validators__={"_unavailable": field_validator("type")(refuse)},
        type=(Literal[info.names], ...),  # type: ignore[valid-type]
        params=(Any, Field(default_factory=dict)),
    )


def _union(registry: Registry, kind: str, base: type[BaseModel], *, default: str | None = None,
           extra_fields: dict[str, Any] | None = None,
           only: dict[str, frozenset[str]] | None = None, tolerant: bool = False) -> Any:
    infos = [i for i in registry.components(kind) if only is None or i.name in only.get(kind, ())]
    members: list[Any] = []
    for info in infos:
        try:
            member = _member(base, info, default is not None, extra_fields or {})
        except PluginError as exc:
            if not tolerant:
                raise
            member = _unavailable(base, info, str(exc))
        members.append(Annotated[member, Tag(info.name)])
    while len(members) < 2:  # a discriminated union needs two members
        never = create_model(f"{base.__name__}_{PLACEHOLDER}_{len(members)}",
                             __base__=_fast(base),
                             type=(Literal[f"__no_{kind}_{len(members)}__"], ...),
                             params=(_Never, Field(default_factory=_Never)),
                             **(extra_fields or {}))
        members.append(Annotated[never, Tag(f"__no_{kind}_{len(members)}__")])
    tags = frozenset(i.name for i in infos)
    return Annotated[Union[tuple(members)],  # noqa: UP007
                     _discriminator(registry, kind, default, tags)]


def _slot_union(registry: Registry, slot: type[Slot]) -> Any:
    """The discriminated union of every registered component of ``slot.kind``."""
    per_registry = _SLOT_UNIONS.setdefault(registry, {})
    union = per_registry.get(slot)
    if union is None:
        union = _union(registry, slot.kind, slot, tolerant=True)
        per_registry[slot] = union
    return union


def _swap(registry: Registry, tp: Any) -> Any:
    """``tp`` with every :class:`Slot` swapped for its union (``tp`` itself if none)."""
    if isinstance(tp, type):
        if issubclass(tp, Slot):
            return _slot_union(registry, tp) if tp.kind else tp
        if issubclass(tp, BaseModel):
            return section_model(registry, tp)
        return tp
    origin = typing.get_origin(tp)
    if origin is None or origin is Literal:
        return tp
    args = typing.get_args(tp)
    if origin is Annotated:
        inner = _swap(registry, args[0])
        return tp if inner is args[0] else Annotated[(inner, *tp.__metadata__)]
    swapped = tuple(_swap(registry, a) for a in args)
    if all(a is b for a, b in zip(args, swapped, strict=True)):
        return tp
    if origin in (Union, types.UnionType):
        return Union[swapped]  # noqa: UP007
    if isinstance(tp, types.GenericAlias):
        return types.GenericAlias(origin, swapped)
    copy_with = getattr(tp, "copy_with", None)  # typing.List[...] and friends
    return copy_with(swapped) if copy_with is not None else tp


def section_model(registry: Registry, model: type[BaseModel]) -> type[BaseModel]:
    """``model`` (a plugin section's params model, or a model nested in one) with every
    :class:`~thelper.config.slots.Slot` field validated against ``registry``.

    Returns ``model`` itself when it holds no slot; otherwise a run-time subclass (cached per
    registry) whose slot fields are discriminated unions over the registered components of
    their kind. Every other field, validator and default is inherited.
    """
    per_registry = _SLOTTED.setdefault(registry, {})
    done = per_registry.get(model)
    if done is not None:
        return done
    per_registry[model] = model  # a model that refers to itself keeps its static slots
    if any(isinstance(f.annotation, (str, typing.ForwardRef))
           for f in model.model_fields.values()):
        model.model_rebuild(raise_errors=False)  # names defined after the model
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        swapped = _swap(registry, info.annotation)
        if swapped is not info.annotation:
            field = copy.copy(info)
            field.annotation = swapped
            fields[name] = (swapped, field)
    if fields:
        per_registry[model] = create_model(  # type: ignore[call-overload]
            model.__name__, __base__=_fast(model), __doc__=model.__doc__,
            __module__=model.__module__, **fields)
    return per_registry[model]


def _sections(registry: Registry) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for info in registry.components(SECTION_KIND):
        if info.name in m.SessionConfig.model_fields or not info.name.isidentifier():
            continue  # never shadow a core section
        out[info.name] = (section_model(registry, info.params_model) | None,
                          Field(None, description=info.description or None))
    return out


def session_model(registry: Registry,
                  only: dict[str, frozenset[str]] | None = None) -> type[m.SessionConfig]:
    """The :class:`~thelper.config.models.SessionConfig` subclass for ``registry``.

    Every ``{type, params}`` slot becomes a discriminated union over the registered
    components of its kind; ``params`` are validated by the component's own params model.

    Args:
        registry: The registered components.
        only: ``{kind: canonical names}``: build the unions over these components only (the
            ones a document names; others are reported as unknown). Building a model for the
            ~10 components of one config is several times faster than for every registered
            one. ``None`` (for the JSON schema) takes every component.

    Raises:
        PluginError: The params model of one of these components cannot be imported (see
            :attr:`~thelper.registry.ComponentInfo.params_model`).
    """
    key = None if only is None else frozenset((k, v) for k, v in only.items())
    per_registry = _CACHE.setdefault(registry, {})
    cached = per_registry.get(key)
    if cached is not None:
        return cached
    session = _build(registry, only)
    if len(per_registry) >= _CACHE_SIZE:
        per_registry.pop(next(iter(per_registry)))
    per_registry[key] = session
    return session


def _build(registry: Registry, only: dict[str, frozenset[str]] | None) -> type[m.SessionConfig]:
    task = _union(registry, "task", m.TaskSpec, only=only)
    dataset = _union(registry, "dataset", m.DatasetSpec, only=only,
                     extra_fields={"task": (task | None, _described(m.DatasetSpec, "task", None))})
    transform = _union(registry, "transform", m.TransformSpec, only=only)
    model = _union(registry, "model", m.ModelSpec, only=only)
    loss = _union(registry, "loss", m.LossSpec, only=only)
    optimizer = _union(registry, "optimizer", m.OptimizerSpec, only=only)
    scheduler = _union(registry, "scheduler", m.SchedulerSpec, only=only)
    metric = _union(registry, "metric", m.MetricSpec, only=only)

    opt = m.OptimizationConfig
    optimization = create_model(
        "OptimizationConfig", __base__=_fast(opt), __doc__=opt.__doc__,
        loss=(loss | None, _described(opt, "loss", None)),
        optimizer=(optimizer, _described(opt, "optimizer")),
        scheduler=(scheduler | None, _described(opt, "scheduler", None)),
    )
    tr = m.TrainerConfig
    trainer = _union(
        registry, "trainer", tr, default="default", only=only,
        extra_fields={
            "optimization": (optimization, _described(tr, "optimization")),
            "metrics": (dict[str, metric], _described(tr, "metrics", default_factory=dict)),
            "test_metrics": (dict[str, metric],
                             _described(tr, "test_metrics", default_factory=dict)),
        },
    )
    ld = m.LoadersConfig
    sampler = _union(registry, "sampler", m.SamplerSpec, only=only)
    loaders = create_model(
        "LoadersConfig", __base__=_fast(ld), __doc__=ld.__doc__,
        train_sampler=(sampler | None, _described(ld, "train_sampler", None)),
        valid_sampler=(sampler | None, _described(ld, "valid_sampler", None)),
        test_sampler=(sampler | None, _described(ld, "test_sampler", None)),
        base_transforms=(list[transform], _described(ld, "base_transforms",
                                                     default_factory=list)),
        train_augments=(list[transform], _described(ld, "train_augments",
                                                    default_factory=list)),
    )
    sc = m.SessionConfig
    session = create_model(
        "SessionConfig", __base__=_fast(sc), __doc__=sc.__doc__,
        datasets=(dict[str, dataset], _described(sc, "datasets", min_length=1)),
        loaders=(loaders, _described(sc, "loaders")),
        model=(model, _described(sc, "model")),
        trainer=(trainer, _described(sc, "trainer")),
        **_sections(registry),
    )
    return session
