"""One error hierarchy for hybrid-dagster.

Correctness rule: a :class:`ValueFreeError`'s message names assets, planes, tables, columns, paths and
positions - never a row value or a secret. Errors of regulated work that are not value-free cross to the
orchestrator as their type only (:mod:`hybrid_dagster.plane.errors`); value-free ones cross whole, so
that the user sees what to do.

Example:
    .. code-block:: python

        from hybrid_dagster.errors import HybridDagsterError, ResidencyViolation

        try:
            ...
        except ResidencyViolation as refused:
            print(refused)  # names asset, plane, jurisdiction and the rule, never a value
"""

from __future__ import annotations


class HybridDagsterError(Exception):
    """Base class of every error hybrid-dagster raises."""


class ValueFreeError(HybridDagsterError):
    """Marker: the message is known never to carry row values or secrets, so it may leave a plane."""


class ResidencyError(ValueFreeError):
    """A residency problem: unpinned, unclassified, unknown or unlabelled data, or a refused access."""


class ResidencyViolation(ResidencyError):
    """Data would land in (or be read into) a jurisdiction it is not allowed to reach."""


class UnsupportedAssetError(ValueFreeError):
    """An asset has a shape a hybrid-dagster component cannot handle (e.g. partitions)."""


class PlaneWorkError(ValueFreeError):
    """Regulated work failed; the details are in the plane's own log.

    It never shows the exception it replaces: Dagster Pipes serializes an exception's context chain even
    when it is suppressed (``raise ... from None``), so the chain is hidden from Python-level readers.
    """

    @property  # type: ignore[override]
    def __context__(self) -> BaseException | None:
        return None

    @__context__.setter
    def __context__(self, value: BaseException | None) -> None:
        pass

    @property  # type: ignore[override]
    def __cause__(self) -> BaseException | None:
        return None

    @__cause__.setter
    def __cause__(self, value: BaseException | None) -> None:
        pass


class SchemaEvolutionError(ValueFreeError):
    """A change batch's schema cannot be applied to its Iceberg table (names table, column, types)."""


class DeadLetterStop(ValueFreeError):
    """Malformed change events were found and the dead-letter policy is ``stop``."""


class MissingWatermarkError(ValueFreeError):
    """An Iceberg table holds rows but none of its snapshots records a position of the CDC source.

    Copying the source table again on top would keep rows deleted at the source since; the message says
    how to recover (drop or rename the table, or record the position it is complete up to).
    """


class CarryForwardError(ValueFreeError):
    """A value the source did not send (an unchanged TOAST value) cannot be known exactly.

    The Iceberg table does not hold the row the change updates, so the value is never guessed: not taken
    from another row, not written as NULL. The message names table, column and position, never a value.
    """


class DecoderError(ValueFreeError):
    """A logical-decoding message could not be decoded (names the position and the message type)."""


class PostgresSetupError(ValueFreeError):
    """The source database is not set up for change data capture (names the setting to change)."""


class ReplicationSlotInUse(PostgresSetupError):
    """A replication slot is streamed by another consumer (a slot serves one consumer at a time)."""


class ReplicationLost(ValueFreeError):
    """The replication connection could not be re-established within the reconnect time limit."""


class TriggerColumnsDrift(ValueFreeError):
    """A trigger-captured table's columns changed since its triggers were installed."""


class DefinitionsLoadError(HybridDagsterError):
    """A Definitions module or file could not be loaded (its message may quote user code)."""


class PostgresUnavailable(HybridDagsterError):
    """A PostgreSQL server for the demo or the tests could not be started."""


class SensorCursorError(ValueFreeError):
    """A sensor's stored cursor cannot be read (names the sensor, the version found and how to reset it)."""


class LineageEmitError(ValueFreeError):
    """OpenLineage events could not be delivered (names the transport, the position and what to do)."""


class BinaryFormatUnsupported(DecoderError):
    """pgoutput sent binary values of a type the decoder cannot read (a column of such a type appeared
    while streaming in binary mode); the source reads again in text mode."""
