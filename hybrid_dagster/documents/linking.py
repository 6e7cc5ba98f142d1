"""Link rules: which structured row (a patient, an encounter) a document belongs to.

Correctness rules: rules are tried in order and the first that yields a value wins; a rule yields the
column it names and the value as text; a document no rule matches is stored unlinked (``link_column``
and ``link_key`` null) and counts against the linked fraction. Rules read the relative path, the
file's metadata (PDF document information, S3 user metadata, JSON transcript fields) or the extracted
text, never anything outside the file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator


class _PatternLink(BaseModel):
    """A rule whose key is a group of the first match of ``pattern`` in one string of the document."""

    pattern: str
    column: str = Field(description="Column of the structured row, e.g. 'encounter_id'.")
    group: str | int = Field(default=1, description="Group of the match holding the key (name or number).")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        re.compile(value)
        return value

    def searched(self, relative_path: str, text: str) -> str:
        """The string the pattern is searched in."""
        raise NotImplementedError

    def resolve(self, relative_path: str, metadata: Mapping[str, Any], text: str) -> str | None:
        match = re.search(self.pattern, self.searched(relative_path, text))
        if match is None:
            return None
        value = match.group(self.group)
        return value if value else None


class PathLink(_PatternLink):
    """The key from the file's path relative to the source root, by a regular expression.

    Example:
        >>> PathLink(pattern=r"encounters/(?P<encounter_id>\\d+)/", column="encounter_id")
    """

    kind: Literal["path"] = "path"
    pattern: str = Field(description="Regular expression searched in the relative path.")

    def searched(self, relative_path: str, text: str) -> str:
        return relative_path


class MetadataLink(BaseModel):
    """The key from a metadata field of the file (PDF info, S3 user metadata, JSON transcript field).

    Example:
        >>> MetadataLink(field="EncounterId", column="encounter_id")
    """

    kind: Literal["metadata"] = "metadata"
    field: str = Field(description="Metadata key; compared case-insensitively, '-' and '_' alike.")
    column: str = Field(description="Column of the structured row, e.g. 'encounter_id'.")

    def resolve(self, relative_path: str, metadata: Mapping[str, Any], text: str) -> str | None:
        wanted = _fold(self.field)
        for key, value in metadata.items():
            if _fold(str(key)) == wanted and value not in (None, ""):
                return str(value)
        return None


class TextLink(_PatternLink):
    """The key from a field inside the document's text, by a regular expression.

    Example:
        >>> TextLink(pattern=r"Encounter no\\.\\s*(\\d+)", column="encounter_id")
    """

    kind: Literal["text"] = "text"
    pattern: str = Field(description="Regular expression searched in the extracted text (first match).")

    def searched(self, relative_path: str, text: str) -> str:
        return text


LinkRule = Annotated[PathLink | MetadataLink | TextLink, Field(discriminator="kind")]
"""One link rule, told apart by ``kind``: ``path``, ``metadata`` or ``text``."""


def resolve_link(
    rules: Sequence[PathLink | MetadataLink | TextLink],
    relative_path: str,
    metadata: Mapping[str, Any],
    text: str,
) -> tuple[str | None, str | None]:
    """``(column, key)`` of the first rule that matches, or ``(None, None)``.

    Example:
        >>> rules = [PathLink(pattern=r"enc-(\\d+)", column="encounter_id")]
        >>> resolve_link(rules, "letters/enc-12.pdf", {}, "")
        ('encounter_id', '12')
    """
    for rule in rules:
        key = rule.resolve(relative_path, metadata, text)
        if key is not None:
            return rule.column, key
    return None, None


def _fold(name: str) -> str:
    return name.lower().replace("-", "_")
