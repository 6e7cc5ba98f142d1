"""The tamper-evident audit log: hash-chained records, their verification, checkpoints and transfers.

Depends on nothing else in hybrid_dagster except :mod:`hybrid_dagster.errors`.

Example:
    .. code-block:: python

        from hybrid_dagster.audit import AuditLog

        log = AuditLog()
        log.append("dr.drill", actor="schedule:dr_drill", details={"rto_s": 41.2, "rpo_s": 3.0})
        assert log.verify().ok
"""

from hybrid_dagster.audit.canonical import GENESIS_HASH as GENESIS_HASH, canonical_json as canonical_json
from hybrid_dagster.audit.content_hash import content_sha256 as content_sha256
from hybrid_dagster.audit.errors import (
    AuditConfigError as AuditConfigError,
    AuditError as AuditError,
    AuditInputError as AuditInputError,
    TransferIntegrityError as TransferIntegrityError,
)
from hybrid_dagster.audit.log import (
    AuditLog as AuditLog,
    AuditRecord as AuditRecord,
    VerifyResult as VerifyResult,
    default_url as default_url,
    safe_url as safe_url,
)
from hybrid_dagster.audit.transfers import (
    Transfer as Transfer,
    TransferLedger as TransferLedger,
    check_integrity as check_integrity,
    record_cdc_commit as record_cdc_commit,
)
