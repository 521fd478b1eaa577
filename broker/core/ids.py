"""Deterministic identifiers, so a re-sent or re-processed message is recognised as the same."""

from __future__ import annotations

import hashlib


def submission_id_for(trader_id: str, lrn: str) -> str:
    """The trader's identity and own reference (WCO LRN, unique per declarant) name a submission:
    a B2B producer re-sending the same declaration lands on the same id."""
    digest = hashlib.sha256(f"{trader_id}\x1f{lrn}".encode()).hexdigest()
    return f"sub-{digest[:24]}"


def payload_sha256(payload: bytes) -> str:
    """Non-repudiation: the hash of the payload exactly as received."""
    return hashlib.sha256(payload).hexdigest()


def request_id_for(submission_id: str, version: int, agency: str, kind: str) -> str:
    return f"{submission_id}:{version}:{agency}:{kind.lower()}"
