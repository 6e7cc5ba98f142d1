"""Screens everything a plane's regulated work sends back, so no row values reach the orchestrator.

Applies to steps whose clearance is confidential or restricted. The same rules run twice: in the plane,
on every Dagster Pipes message before it leaves (:mod:`hybrid_dagster.plane.launch`), and in the
orchestrator, on the reported results (defence in depth).

- Metadata keys must be declared: the standard keys below, or those the asset author names in
  ``allowed_metadata_keys`` / ``allowed_text_metadata`` (an entry ending in ``*`` declares a family of
  keys, e.g. ``metric/*``). An undeclared key is refused without echoing it (a key can carry a value).
- Values: numbers, booleans, timestamps, null and column lineage pass; text, paths, URLs, JSON and
  markdown pass only under text keys; a table schema passes with names and types only (no descriptions,
  constraints or tags); ``data_version`` is refused.
- Log messages and custom messages stay in the plane; an exception crosses whole only when it is one of
  hybrid-dagster's value-free errors, otherwise as its type.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import dagster as dg

from hybrid_dagster.errors import ResidencyViolation
from hybrid_dagster.keys import (
    CLASSIFICATION_TAG,
    DATA_JURISDICTIONS_METADATA_KEY,
    JURISDICTION_METADATA_KEY,
    PLANE_TAG,
    TRANSFER_ROUTES_METADATA_KEY,
)

STANDARD_TEXT_KEYS = frozenset(
    {
        "dagster/table_name",
        "dagster/uri",
        "dagster/relation_identifier",
        PLANE_TAG,
        JURISDICTION_METADATA_KEY,
        CLASSIFICATION_TAG,
        DATA_JURISDICTIONS_METADATA_KEY,
        TRANSFER_ROUTES_METADATA_KEY,
        "hybrid/watermark",
        "hybrid/source",
        "hybrid/decoder",
        "hybrid/schema_changes",
    }
)
"""Text metadata keys whose values are identifiers or positions, never row values."""

STANDARD_KEYS = frozenset(
    {
        "dagster/row_count",
        "dagster/partition_row_count",
        "dagster/column_schema",
        "dagster/column_lineage",
        "iceberg/snapshot_id",
        "hybrid/content_sha256",
    }
)
"""Non-text metadata keys every plane work may report."""

_NUMERIC = {"int", "float", "bool", "timestamp", "null"}
_TEXTUAL = {"text", "path", "url", "notebook", "md", "json", "asset", "job", "pool"}


class ScreenRules:
    """The declared keys of one step: what its regulated work may report.

    Example:
        >>> rules = ScreenRules(plane="eu-onprem", step="ward_occupancy", keys=["admissions"])
        >>> rules.check_metadata({"admissions": 12}, subject="analytics/ward_occupancy")
    """

    def __init__(
        self,
        *,
        plane: str,
        step: str,
        keys: Sequence[str] = (),
        text_keys: Sequence[str] = (),
    ) -> None:
        self.plane = plane
        self.step = step
        self.text_keys = STANDARD_TEXT_KEYS | {k for k in text_keys if not k.endswith("*")}
        self.keys = STANDARD_KEYS | {k for k in keys if not k.endswith("*")} | self.text_keys
        # A declared key ending in '*' declares a family, e.g. 'metric/*' for metric/roc_auc, metric/f1.
        self.text_prefixes = tuple(k[:-1] for k in text_keys if k.endswith("*"))
        self.prefixes = tuple(k[:-1] for k in keys if k.endswith("*")) + self.text_prefixes

    def _declared(self, key: str) -> bool:
        return key in self.keys or (bool(self.prefixes) and key.startswith(self.prefixes))

    def _textual(self, key: str) -> bool:
        return key in self.text_keys or (bool(self.text_prefixes) and key.startswith(self.text_prefixes))

    def check_metadata(self, metadata: Mapping[str, Any], *, subject: str) -> None:
        """Raise :class:`ResidencyViolation` on the first entry regulated work may not report."""
        for key, value in metadata.items():
            kind, raw = _kind_of(value)
            where = f"plane {self.plane!r}, step {self.step!r}, regulated asset {subject}"
            if not self._declared(key):
                raise ResidencyViolation(
                    f"{where}: reported a metadata key that is not declared (the key is withheld: a key can "
                    "carry a value); declare it with allowed_metadata_keys= or allowed_text_metadata="
                )
            if kind in _NUMERIC or kind == "column_lineage":
                continue
            if kind == "table_schema":
                _check_schema(raw, key, where)
                continue
            if kind in _TEXTUAL and self._textual(key):
                continue
            raise ResidencyViolation(
                f"{where}: metadata {key!r} is {kind}, which may carry row values; only counts, timestamps, "
                "schemas and declared text keys (allowed_text_metadata=) may leave the plane"
            )

    def check_pipes_message(self, message: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """The message as it may leave the plane, ``None`` to keep it in the plane; raises when refused."""
        method = message.get("method")
        params = message.get("params") or {}
        if method in {"opened", "closed"}:
            return message
        if method in {"log", "report_custom_message", "log_external_stream"}:
            return None
        if method in {"report_asset_materialization", "report_asset_check"}:
            subject = str(params.get("asset_key") or "?")
            if params.get("data_version") is not None:
                raise ResidencyViolation(
                    f"plane {self.plane!r}, step {self.step!r}, regulated asset {subject}: reported a "
                    "data_version, which may carry row values; let Dagster compute it"
                )
            self.check_metadata(params.get("metadata") or {}, subject=subject)
            return message
        raise ResidencyViolation(
            f"plane {self.plane!r}, step {self.step!r}: Dagster Pipes message of an unknown kind refused"
        )


def screen_reported_results(
    results: Iterable[dg.MaterializeResult | dg.AssetCheckResult],
    *,
    plane: str,
    allowed_text_keys: Sequence[str] = (),
    allowed_keys: Sequence[str] = (),
    step: str = "?",
) -> None:
    """Raise :class:`ResidencyViolation` if regulated work reported anything that could hold row values.

    Example:
        >>> screen_reported_results([dg.MaterializeResult(metadata={"dagster/row_count": 3})], plane="eu")
    """
    rules = ScreenRules(plane=plane, step=step, keys=allowed_keys, text_keys=allowed_text_keys)
    for result in results:
        subject = getattr(result, "asset_key", None)
        name = subject.to_user_string() if subject is not None else "?"
        if isinstance(result, dg.MaterializeResult) and result.data_version is not None:
            raise ResidencyViolation(
                f"plane {plane!r}, step {step!r}, regulated asset {name}: reported a data_version, which may "
                "carry row values; let Dagster compute it"
            )
        rules.check_metadata(dict(result.metadata or {}), subject=name)


def _kind_of(value: Any) -> tuple[str, Any]:
    """The Pipes type name of a metadata value (raw Pipes dict or Dagster value) and its raw value."""
    if isinstance(value, Mapping) and set(value) == {"raw_value", "type"}:
        kind = str(value["type"])
        if kind == "__infer__":
            return _infer(value["raw_value"])
        return kind, value["raw_value"]
    if isinstance(value, dg.MetadataValue):
        return _dagster_kind(value), value
    return _infer(value)


def _infer(raw: Any) -> tuple[str, Any]:
    if raw is None:
        return "null", raw
    if isinstance(raw, bool):
        return "bool", raw
    if isinstance(raw, int | float):
        return "float" if isinstance(raw, float) else "int", raw
    if isinstance(raw, str):
        return "text", raw
    if isinstance(raw, dg.TableSchema):
        return "table_schema", raw
    return "json", raw


def _dagster_kind(value: dg.MetadataValue) -> str:
    kinds: list[tuple[type, str]] = [
        (dg.BoolMetadataValue, "bool"),
        (dg.IntMetadataValue, "int"),
        (dg.FloatMetadataValue, "float"),
        (dg.TimestampMetadataValue, "timestamp"),
        (dg.NullMetadataValue, "null"),
        (dg.TableSchemaMetadataValue, "table_schema"),
        (dg.TableColumnLineageMetadataValue, "column_lineage"),
        (dg.TextMetadataValue, "text"),
        (dg.PathMetadataValue, "path"),
        (dg.UrlMetadataValue, "url"),
    ]
    for cls, name in kinds:
        if isinstance(value, cls):
            return name
    return "json"


def _check_schema(raw: Any, key: str, where: str) -> None:
    schema = raw.schema if isinstance(raw, dg.TableSchemaMetadataValue) else raw
    if isinstance(schema, dg.TableSchema):
        columns = [
            {
                "description": c.description,
                "constraints": c.constraints,
                "tags": c.tags,
            }
            for c in schema.columns
        ]
        extra = bool(schema.constraints and schema.constraints.other)
    elif isinstance(schema, Mapping):
        columns = list(schema.get("columns") or [])
        extra = bool(schema.get("constraints"))
    else:
        columns, extra = [], True
    for column in columns:
        if not isinstance(column, Mapping):
            extra = True
            break
        constraints = column.get("constraints")
        if column.get("description") or column.get("tags") or _has_other(constraints):
            extra = True
            break
    if extra:
        raise ResidencyViolation(
            f"{where}: table schema {key!r} carries descriptions, constraints or tags, which may carry row "
            "values; report column names and types only"
        )


def _has_other(constraints: Any) -> bool:
    if constraints is None:
        return False
    if isinstance(constraints, Mapping):
        return bool(constraints.get("other"))
    return bool(getattr(constraints, "other", None))
