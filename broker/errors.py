"""One exception root for the package. Library errors are translated at the boundary."""

from __future__ import annotations


class SwbError(Exception):
    """Root of every error the broker raises on purpose. `retriable` says whether trying the
    same thing again later may succeed."""

    retriable = False


class CodecError(SwbError):
    """Bytes that cannot be decoded, or a record that cannot be encoded, with a reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # short machine-readable cause, e.g. "unknown-fingerprint"


class RulesError(SwbError):
    """The routing rules file is missing or invalid."""


class TransportError(SwbError):
    """The broker could not be reached or refused a write."""

    retriable = True


class EmbeddedBrokerError(SwbError):
    """The embedded Tansu broker is missing or did not start."""
