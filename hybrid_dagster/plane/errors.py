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

from hybrid_dagster.errors import PlaneWorkError as PlaneWorkError, ValueFreeError


@contextmanager
def errors_kept_in_plane(regulated: bool, *, where: str = "the plane's work") -> Iterator[None]:
    """Replace a regulated step's exception by its type; print the original to the plane-local log.

    Example:
        >>> with errors_kept_in_plane(regulated=True, where="ward_occupancy on eu-onprem"):
        ...     ...  # plane work
    """
    try:
        yield
    except BaseException as error:
        if not regulated or isinstance(error, ValueFreeError) or _is_clean_exit(error):
            raise
        if isinstance(error, KeyboardInterrupt | GeneratorExit):
            raise
        traceback.print_exc()
        raise PlaneWorkError(
            f"{type(error).__name__} in {where}; its message and traceback stay in the plane's log"
        ) from None


def _is_clean_exit(error: BaseException) -> bool:
    """``sys.exit()`` / ``sys.exit(0)``: no message to hide. ``sys.exit("text")`` is an error."""
    return isinstance(error, SystemExit) and (error.code is None or error.code == 0)
