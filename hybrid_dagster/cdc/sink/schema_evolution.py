"""Evolve an Iceberg table's schema to follow the schema a CDC source declares.

Allowed, and applied: new columns (added as optional), safe widening (int -> long, float -> double,
decimal precision growth). Columns the source no longer sends stay in the table (their values are
null in new rows). Anything else raises :class:`SchemaEvolutionError` before the table is touched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from pyiceberg.schema import Schema
from pyiceberg.table.update.schema import UpdateSchema
from pyiceberg.types import (
    DecimalType,
    DoubleType,
    FloatType,
    IcebergType,
    IntegerType,
    LongType,
    NestedField,
)

from hybrid_dagster.cdc._pyiceberg_compat import iceberg_schema_of as iceberg_schema_of
from hybrid_dagster.errors import SchemaEvolutionError as SchemaEvolutionError


@dataclass
class SchemaPlan:
    """What to change in the table schema: columns to add and columns to widen.

    Example:
        >>> plan = plan_schema_evolution("crm.patients", table.schema(), source, ["id"])  # doctest: +SKIP
        >>> plan.describe()  # doctest: +SKIP
        ["added column 'email' (string)", "widened column 'visits' from int to long"]
    """

    additions: list[NestedField] = field(default_factory=list)
    defaults: dict[str, Any] = field(default_factory=dict)
    """Initial default of an added column: the value rows written before it hold."""
    widenings: list[tuple[str, IcebergType, IcebergType]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.additions and not self.widenings

    def describe(self) -> list[str]:
        added = [
            f"added column {f.name!r} ({f.field_type})"
            + (" with a default" if f.name in self.defaults else "")
            for f in self.additions
        ]
        widened = [f"widened column {name!r} from {old} to {new}" for name, old, new in self.widenings]
        return added + widened

    def apply(self, update: UpdateSchema) -> None:
        """Stage the changes on a schema update (of a transaction or a table)."""
        for added in self.additions:
            update.add_column(
                added.name, added.field_type, doc=added.doc, default_value=self.defaults.get(added.name)
            )
        for name, _old, new in self.widenings:
            update.update_column(name, field_type=new)


def plan_schema_evolution(
    identifier: str,
    table_schema: Schema,
    data_schema: pa.Schema,
    key_columns: Sequence[str],
    column_defaults: Mapping[str, Any] | None = None,
) -> SchemaPlan:
    """Compare the source's row schema with the table's and decide what may change.

    Raises:
        SchemaEvolutionError: a type change that is not a safe widening, a changed primary key, or a
            type Iceberg cannot store; the message names the table, the column and both types.
    """
    identifier_names = sorted(table_schema.identifier_field_names())
    if identifier_names and identifier_names != sorted(key_columns):
        raise SchemaEvolutionError(
            f"{identifier}: primary key changed from {identifier_names} to {sorted(key_columns)}"
        )
    try:
        source = iceberg_schema_of(data_schema)
    except (ValueError, TypeError) as error:
        raise SchemaEvolutionError(
            f"{identifier}: source schema cannot be stored in Iceberg: {error}"
        ) from error

    plan = SchemaPlan()
    existing = {f.name: f for f in table_schema.fields}
    for new_field in source.fields:
        old_field = existing.get(new_field.name)
        if old_field is None:
            plan.additions.append(new_field)
            if column_defaults and column_defaults.get(new_field.name) is not None:
                plan.defaults[new_field.name] = column_defaults[new_field.name]
            continue
        old_type, new_type = old_field.field_type, new_field.field_type
        if _same_type(old_type, new_type):
            continue
        if _widens(old_type, new_type):
            plan.widenings.append((new_field.name, old_type, new_type))
            continue
        arrow_type = data_schema.field(new_field.name).type
        raise SchemaEvolutionError(
            f"{identifier}: column {new_field.name!r} cannot change type from {old_type} to {new_type} "
            f"(source sends {arrow_type}); only int -> long, float -> double and wider decimals are safe"
        )
    return plan


def _same_type(old: IcebergType, new: IcebergType) -> bool:
    if old.is_primitive or new.is_primitive:
        return old == new
    # Nested types compare by shape; field ids differ between the table and a converted source schema.
    return str(old) == str(new) or type(old) is type(new)


def _widens(old: IcebergType, new: IcebergType) -> bool:
    if isinstance(old, IntegerType) and isinstance(new, LongType):
        return True
    if isinstance(old, FloatType) and isinstance(new, DoubleType):
        return True
    return (
        isinstance(old, DecimalType)
        and isinstance(new, DecimalType)
        and old.scale == new.scale
        and new.precision > old.precision
    )
