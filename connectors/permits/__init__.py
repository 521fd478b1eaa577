"""Permits (LPCO) with quantity write-off: the agency side of `broker/core/permits.py`.

Same anatomy as every connector: `config` (the permit types an agency issues), `handler`
(request + ledger -> settlement and answers, pure), `agency` (the runnable `PermitAgency`
around an SDK `AgencyConnector`, which owns the ledger and persists it on `<prefix>.permits`).

Deploying on Apache Kafka: create `<prefix>.permits` with `cleanup.policy=compact` and the
flow's partition count (the agency creates it itself where its principal may; the embedded
broker keeps every record, which the restore reads in full); grant each permit-issuing
agency's principal Read and Write on it.
"""

from __future__ import annotations

from connectors.permits.agency import PermitAgency, read_permits
from connectors.permits.config import PERMIT_TYPES, PermitConfig, sample_permits
from connectors.permits.handler import PermitAnswer, settle

__all__ = [
    "PERMIT_TYPES",
    "PermitAgency",
    "PermitAnswer",
    "PermitConfig",
    "read_permits",
    "sample_permits",
    "settle",
]
