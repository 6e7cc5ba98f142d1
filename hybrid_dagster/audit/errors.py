"""Errors of the audit log and of transfer integrity.

Correctness rule: messages name records (by sequence number), tables, planes, routes and hashes - never a
row value or a secret; every class here is therefore a :class:`~hybrid_dagster.errors.ValueFreeError`.

Example:
    .. code-block:: python

        from hybrid_dagster.audit.errors import AuditInputError

        try:
            log.append("secret.read", actor="etl", details={"value": b"..."})
        except AuditInputError as refused:
            print(refused)  # names the detail key, never its value
"""

from __future__ import annotations

from hybrid_dagster.errors import ValueFreeError


class AuditError(ValueFreeError):
    """Base of the audit log's errors."""


class AuditConfigError(AuditError):
    """No audit store could be located (no URL given and no DAGSTER_HOME)."""


class AuditInputError(AuditError):
    """A record was refused: its details are not plain JSON metadata (bytes, secrets, row values...)."""


class TransferIntegrityError(AuditError):
    """The rows about to be committed at the target do not hash to what was read or handed over."""


class TransferNotAllowed(AuditError):
    """A cross-jurisdiction movement had no declared route (raised by checks, recorded as evidence)."""
