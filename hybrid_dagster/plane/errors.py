"""Errors of regulated work stay in the plane: only their type crosses to the orchestrator.

An exception raised inside a plane reaches the orchestrator's event log through Dagster Pipes, and an
exception message can quote row values (a parse error, a failed cast). For regulated steps the message
and traceback are printed to the plane-local log instead, and the orchestrator sees the exception's type.
hybrid-dagster's own errors, whose messages name assets, planes, tables, columns and positions but never
values, pass through unchanged.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from contextlib import contextmanager


class PlaneWorkError(RuntimeError):
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


def _safe_errors() -> tuple[type[BaseException], ...]:
    from hybrid_dagster.cdc.pipeline import DeadLetterStop
    from hybrid_dagster.cdc.schema_evolution import SchemaEvolutionError
    from hybrid_dagster.cdc.sources.postgres import PostgresSetupError
    from hybrid_dagster.residency import ResidencyError

    return (ResidencyError, SchemaEvolutionError, DeadLetterStop, PostgresSetupError, PlaneWorkError)


@contextmanager
def errors_kept_in_plane(regulated: bool, *, where: str = "the plane's work") -> Iterator[None]:
    """Replace a regulated step's exception by its type; print the original to the plane-local log.

    Example:
        >>> with errors_kept_in_plane(regulated=True, where="ward_occupancy on eu-onprem"):
        ...     ...  # plane work
    """
    try:
        yield
    except Exception as error:
        if not regulated or isinstance(error, _safe_errors()):
            raise
        traceback.print_exc()
        raise PlaneWorkError(
            f"{type(error).__name__} in {where}; its message and traceback stay in the plane's log"
        ) from None
