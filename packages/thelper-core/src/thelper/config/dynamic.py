"""Run-time config models: discriminated unions over the registered components.

For every pluggable slot the core builds ``Annotated[Union[Member_a, Member_b, ...],
Discriminator(...)]`` where each member subclasses the slot's static base with
``type: Literal[name, *aliases]`` and ``params: <the component's params model>``. The result
is cached per registry, so validating many configs in one process costs one build.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union
from weakref import WeakKeyDictionary

from pydantic import BaseModel, Discriminator, Field, Tag, create_model

from thelper.config import models as m
from thelper.registry import ComponentInfo, Params, Registry

__all__ = ["session_model", "UNKNOWN_COMPONENT"]

UNKNOWN_COMPONENT = "unknown_component"
_CACHE: WeakKeyDictionary[Registry, type[m.SessionConfig]] = WeakKeyDictionary()


class _Never(Params):
    """Placeholder member so that a slot with a single component is still a union."""


def _ident(text: str) -> str:
    return re.sub(r"\W+", "_", text).strip("_") or "x"


def _discriminator(registry: Registry, kind: str, default: str | None) -> Discriminator:
    def pick(value: Any) -> str | None:
        if isinstance(value, dict):
            name = value.get("type", default)
            if name is None and "operation" in value:
                name = value.get("operation")
        else:
            name = getattr(value, "type", default)
        if not isinstance(name, str):
            return None
        return registry.canonical(kind, name)

    return Discriminator(
        pick,
        custom_error_type=f"{UNKNOWN_COMPONENT}:{kind}",
        custom_error_message=f"unknown {kind} type",
    )


def _member(base: type[BaseModel], info: ComponentInfo, default_type: bool,
            extra_fields: dict[str, Any]) -> type[BaseModel]:
    params_model = info.params
    required = any(f.is_required() for f in params_model.model_fields.values())
    params_field: Any = (params_model, ...) if required else (
        params_model, Field(default_factory=params_model))
    type_annotation = Literal[info.names]  # type: ignore[valid-type]
    type_field: Any = (type_annotation, info.name) if default_type else (type_annotation, ...)
    return create_model(  # type: ignore[call-overload]
        f"{base.__name__}_{_ident(info.name)}",
        __base__=base,
        __doc__=info.description or base.__doc__,
        type=type_field,
        params=params_field,
        **extra_fields,
    )


def _union(registry: Registry, kind: str, base: type[BaseModel], *, default: str | None = None,
           extra_fields: dict[str, Any] | None = None) -> Any:
    members: list[Any] = [
        Annotated[_member(base, info, default is not None, extra_fields or {}), Tag(info.name)]
        for info in registry.components(kind)
    ]
    while len(members) < 2:  # a discriminated union needs two members
        never = create_model(f"{base.__name__}_unavailable_{len(members)}", __base__=base,
                             type=(Literal[f"__no_{kind}_{len(members)}__"], ...),
                             params=(_Never, Field(default_factory=_Never)))
        members.append(Annotated[never, Tag(f"__no_{kind}_{len(members)}__")])
    return Annotated[Union[tuple(members)], _discriminator(registry, kind, default)]  # noqa: UP007


def session_model(registry: Registry) -> type[m.SessionConfig]:
    """The :class:`~thelper.config.models.SessionConfig` subclass for ``registry``.

    Every ``{type, params}`` slot becomes a discriminated union over the registered
    components of its kind; ``params`` are validated by the component's own params model.
    """
    cached = _CACHE.get(registry)
    if cached is not None:
        return cached
    task = _union(registry, "task", m.TaskSpec)
    dataset = _union(registry, "dataset", m.DatasetSpec,
                     extra_fields={"task": (task | None, None)})
    transform = _union(registry, "transform", m.TransformSpec)
    model = _union(registry, "model", m.ModelSpec)
    loss = _union(registry, "loss", m.LossSpec)
    optimizer = _union(registry, "optimizer", m.OptimizerSpec)
    scheduler = _union(registry, "scheduler", m.SchedulerSpec)
    metric = _union(registry, "metric", m.MetricSpec)

    optimization = create_model(
        "OptimizationConfig", __base__=m.OptimizationConfig,
        loss=(loss | None, None), optimizer=(optimizer, ...), scheduler=(scheduler | None, None),
    )
    trainer = _union(
        registry, "trainer", m.TrainerConfig, default="default",
        extra_fields={
            "optimization": (optimization, ...),
            "metrics": (dict[str, metric], Field(default_factory=dict)),
            "test_metrics": (dict[str, metric], Field(default_factory=dict)),
        },
    )
    loaders = create_model(
        "LoadersConfig", __base__=m.LoadersConfig,
        base_transforms=(list[transform], Field(default_factory=list)),
        train_augments=(list[transform], Field(default_factory=list)),
    )
    session = create_model(
        "SessionConfig", __base__=m.SessionConfig,
        datasets=(dict[str, dataset], Field(min_length=1)),
        loaders=(loaders, ...),
        model=(model, ...),
        trainer=(trainer, ...),
    )
    _CACHE[registry] = session
    return session
