"""Customs' information package for a declaration, as the risk tests feed the engine."""

from __future__ import annotations

from broker.core.declaration import Declaration
from broker.core.messages import InformationPackage


def package_of(declaration: Declaration) -> InformationPackage:
    """Customs' package: every header field and every item (its rules grant them all)."""
    return InformationPackage(
        lrn=declaration.lrn,
        type=declaration.type,
        procedure_code=declaration.procedure_code,
        issued_at=declaration.issued_at,
        customs_office=declaration.customs_office,
        declarant=declaration.declarant,
        importer=declaration.importer,
        exporter=declaration.exporter,
        transport=declaration.transport,
        export_country=declaration.export_country,
        destination_country=declaration.destination_country,
        invoice=declaration.invoice,
        items=declaration.items,
        documents=declaration.documents,
    )
