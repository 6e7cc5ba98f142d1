"""Masking of resolved secret values in a plane process's log output.

Correctness rules:

- Every value resolved in the process is registered with the process-wide :data:`MASKER` before it is
  returned to the caller.
- Log records are masked where they are created (a log record factory running :class:`MaskingFilter`:
  message and arguments are formatted, then masked);
  ``sys.stdout`` and ``sys.stderr`` are wrapped by :class:`MaskingStream`, so ``print`` and tracebacks
  are masked too. A value split across two ``write`` calls is not caught by the stream wrapper: log
  through ``logging`` or ``print`` whole lines.
- Output written by child processes straight to the file descriptors is not masked: do not hand
  secret values to subprocesses that print them.

Example:
    >>> MASKER.add("s3cr3t-pw")
    >>> MASKER.mask("connecting with s3cr3t-pw")
    'connecting with ***'
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterable
from typing import Any, TextIO

MASK = "***"
MIN_MASKED_LENGTH = 4
"""Shorter values are not masked (masking 'a' would garble every line); they are still never logged."""


class SecretMasker:
    """The set of values to hide, and the replacement of each by ``***``.

    Example:
        >>> masker = SecretMasker()
        >>> masker.add("hunter22")
        >>> masker.mask("pw=hunter22")
        'pw=***'
    """

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._lock = threading.Lock()

    def add(self, value: str) -> None:
        if len(value) >= MIN_MASKED_LENGTH:
            with self._lock:
                self._values.add(value)

    def mask(self, text: str) -> str:
        if not self._values:
            return text
        for value in sorted(self._values, key=len, reverse=True):
            if value in text:
                text = text.replace(value, MASK)
        return text

    def contains(self, text: str) -> bool:
        """Whether ``text`` carries a registered value."""
        return any(value in text for value in self._values)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()


MASKER = SecretMasker()
"""The process-wide masker every resolution registers its value with."""


class MaskingFilter(logging.Filter):
    """A logging filter that formats each record and masks registered values in it.

    Example:
        >>> logging.getLogger().addFilter(MaskingFilter())
    """

    def __init__(self, masker: SecretMasker = MASKER) -> None:
        super().__init__()
        self.masker = masker

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = self.masker.mask(message)
        if masked != message or record.args:
            record.msg, record.args = masked, None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            record.exc_text = self.masker.mask(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = self.masker.mask(record.exc_text)
        return True


class MaskingStream:
    """A text stream that masks registered values in each ``write`` before passing it on.

    Example:
        >>> import io
        >>> stream = MaskingStream(io.StringIO())
    """

    def __init__(self, inner: TextIO, masker: SecretMasker = MASKER) -> None:
        self._inner = inner
        self._masker = masker

    def write(self, text: str) -> int:
        self._inner.write(self._masker.mask(text))
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


_installed = False
_install_lock = threading.Lock()


def install_masking() -> None:
    """Mask registered values in every log record created in this process and in ``sys.stdout`` and
    ``sys.stderr`` (idempotent).

    Log records are masked where they are made (a log record factory), so every logger and handler -
    the Dagster Pipes logger included - sees masked text, whenever it was configured.

    Example:
        >>> install_masking()
    """
    global _installed
    with _install_lock:
        if _installed:
            return
        if not isinstance(sys.stdout, MaskingStream):
            sys.stdout = MaskingStream(sys.stdout)  # type: ignore[assignment]
        if not isinstance(sys.stderr, MaskingStream):
            sys.stderr = MaskingStream(sys.stderr)  # type: ignore[assignment]
        make_record = logging.getLogRecordFactory()
        masking_filter = MaskingFilter()

        def masked_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = make_record(*args, **kwargs)
            masking_filter.filter(record)
            return record

        logging.setLogRecordFactory(masked_record)
        _installed = True
