"""Dagster component: data planes and the residency policy declared in YAML.

The YAML attributes reuse the fields (and descriptions) of :class:`DataPlane` and :class:`TransferRoute`:
:func:`config_resolver` derives a YAML model from a ``dg.Config`` class, renders ``{{ ... }}`` templates
anywhere inside it, then builds the real class, so that its validators (jurisdiction codes, warehouse
schemes) run on the rendered values and their errors name the bad value and its YAML location.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, cast

import dagster as dg
from pydantic import BaseModel, Field, create_model, model_validator
from pydantic.fields import FieldInfo

from hybrid_dagster.keys import (
    POLICY_RESOURCE_KEY as POLICY_RESOURCE_KEY,
    plane_resource_key as plane_resource_key,
)
from hybrid_dagster.residency import ResidencyPolicy, TransferRoute
from hybrid_dagster.resources.data_plane import DataPlane


def attributes_model(config_cls: type[BaseModel]) -> type[BaseModel]:
    """A YAML model with the fields, defaults and descriptions of ``config_cls`` but none of its validators.

    The validators run later, on template-rendered values, when :func:`config_resolver` builds
    ``config_cls``. Nested models are reused as they are.

    Example:
        >>> attributes_model(TransferRoute).model_fields["legal_basis"].description
        "The legal instrument that allows the transfer, e.g. 'GDPR Art. 45 adequacy decision'."
    """
    fields: dict[str, Any] = {
        name: (info.rebuild_annotation(), FieldInfo.merge_field_infos(info))
        for name, info in config_cls.model_fields.items()
    }
    return create_model(
        f"{config_cls.__name__}Attributes", __base__=dg.Model, __doc__=config_cls.__doc__, **fields
    )


def config_resolver(*config_classes: type[BaseModel], discriminator: str | None = None) -> dg.Resolver:
    """A ``dg.Resolver`` that reads one of ``config_classes`` from YAML, templates rendered.

    With several classes, give the ``discriminator`` field (a ``Literal``) that tells them apart. A whole
    attribute may also be one template that evaluates to an instance, e.g.
    ``"{{ context.load_component('planes').plane('eu-onprem') }}"``; it is used as it is.

    Example:
        .. code-block:: python

            ResolvedTransferRoute = Annotated[TransferRoute, config_resolver(TransferRoute)]
    """
    models = {attributes_model(cls): cls for cls in config_classes}
    field_type: Any = next(iter(models))
    if len(config_classes) > 1:
        if discriminator is None:
            raise ValueError("config_resolver: several classes need a discriminator field")
        field_type = Annotated[_union(tuple(models)), Field(discriminator=discriminator)]

    def resolve(context: dg.ResolutionContext, value: Any) -> Any:
        if isinstance(value, config_classes):
            return value
        if not isinstance(value, BaseModel) or type(value) not in models:
            names = " or ".join(c.__name__ for c in config_classes)
            raise ValueError(f"expected {names} attributes, got a {type(value).__name__}")
        rendered = context.resolve_value(value.model_dump(exclude_unset=True))
        return models[type(value)](**rendered)

    return dg.Resolver(resolve, model_field_type=cast("type", field_type))


def _union(types: Sequence[type]) -> Any:
    union: Any = types[0]
    for t in types[1:]:
        union = union | t
    return union


ResolvedDataPlane = Annotated[DataPlane, config_resolver(DataPlane)]
"""A :class:`DataPlane` in component YAML: its attributes, or a template evaluating to a plane."""

ResolvedTransferRoute = Annotated[TransferRoute, config_resolver(TransferRoute)]
"""A :class:`TransferRoute` in component YAML."""


class DataPlanesComponent(dg.Component, dg.Model, dg.Resolvable):
    """Declares data planes and the residency policy: one ``DataPlane`` resource per plane, keyed by the
    plane name with ``-`` replaced by ``_``, and the ``residency_policy`` resource.

    Example:
        .. code-block:: yaml

            # defs/planes/defs.yaml
            type: hybrid_dagster.components.DataPlanesComponent
            attributes:
              planes:
                - name: eu-onprem
                  jurisdiction: EU
                  region: fra-dc2
                  location: on_prem
                  warehouse: "file://{{ env.HYBRID_DAGSTER_HOME }}/planes/eu-onprem/warehouse"
                - name: us-cloud
                  jurisdiction: US
                  region: us-east-1
                  location: cloud
                  warehouse: s3://meridian-us/warehouse
                  catalog: {kind: rest, uri: "https://catalog.us.example.org"}
              routes:
                - source: EU
                  target: US
                  legal_basis: GDPR Art. 46(2)(c) standard contractual clauses
                  classifications: [confidential]
              strict: true
    """

    planes: list[ResolvedDataPlane] = Field(
        description="The data planes; each becomes a DataPlane resource keyed by its name, '-' -> '_'."
    )
    routes: list[ResolvedTransferRoute] = Field(
        default_factory=list, description=ResidencyPolicy.model_fields["routes"].description
    )
    strict: bool = Field(default=False, description=ResidencyPolicy.model_fields["strict"].description)

    @model_validator(mode="after")
    def _unique_resource_keys(self) -> DataPlanesComponent:
        seen: dict[str, str] = {}
        for plane in self.planes:
            key = plane_resource_key(plane.name)
            if key == POLICY_RESOURCE_KEY or key in seen:
                other = seen.get(key, POLICY_RESOURCE_KEY)
                raise ValueError(f"plane {plane.name!r} and {other!r} share the resource key {key!r}")
            seen[key] = plane.name
        return self

    def plane(self, name: str) -> DataPlane:
        """The declared plane called ``name`` (the same object as its resource).

        Example:
            .. code-block:: yaml

                plane: "{{ context.load_component('planes').plane('eu-onprem') }}"
        """
        for plane in self.planes:
            if plane.name == name:
                return plane
        known = ", ".join(p.name for p in self.planes)
        raise KeyError(f"no data plane named {name!r}; declared: {known}")

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        policy = ResidencyPolicy(routes=list(self.routes), strict=self.strict)
        planes = {plane_resource_key(plane.name): plane for plane in self.planes}
        return dg.Definitions(resources={**planes, POLICY_RESOURCE_KEY: policy})
