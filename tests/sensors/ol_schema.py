"""Offline validation of OpenLineage events against the official schemas in ``../shared/openlineage-spec``.

Each schema file is registered under its own ``$id`` (they reference each other by absolute URL), plus
the residency facet schema shipped in the package. An event is validated against the core schema, and
every facet in it against the schema its ``_schemaURL`` names.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import jsonschema
from referencing import Registry, Resource

from hybrid_dagster.sensors import residency_schema
from tests.conftest import SHARED_DIR

SPEC_DIR = SHARED_DIR / "openlineage-spec"
CORE_ID = "https://openlineage.io/spec/2-0-2/OpenLineage.json"


@lru_cache(maxsize=1)
def registry() -> Registry:  # type: ignore[type-arg]
    resources = []
    for path in sorted(SPEC_DIR.glob("*.json")):
        schema = json.loads(path.read_text(encoding="utf-8"))
        resources.append((schema["$id"], Resource.from_contents(schema)))
    ours = residency_schema()
    resources.append((ours["$id"], Resource.from_contents(ours)))
    return Registry().with_resources(resources)


def _validator(ref: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(
        {"$ref": ref}, registry=registry(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def _facets(event: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    found += list(event["run"].get("facets", {}).items())
    found += list(event["job"].get("facets", {}).items())
    for dataset in [*event.get("inputs", []), *event.get("outputs", [])]:
        for group in ("facets", "inputFacets", "outputFacets"):
            found += list((dataset.get(group) or {}).items())
    return found


def validate_event(event: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` unless the event and each of its facets are valid."""
    _validator(CORE_ID).validate(event)
    for key, facet in _facets(event):
        url = facet["_schemaURL"]
        try:
            _validator(url).validate(facet)
        except jsonschema.ValidationError as err:
            raise AssertionError(f"facet {key!r} ({url}) is invalid: {err.message}") from err
        # The facet key must be the one its schema declares, so consumers find it where they look.
        document = registry().contents(url.split("#")[0])
        assert key in document.get("properties", {}), f"facet key {key!r} is not declared by {url}"
