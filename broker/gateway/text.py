"""A submission view (the API's JSON) as lines a clerk reads at a terminal (`swb status`)."""

from __future__ import annotations

from typing import Any


def describe_submission(view: dict[str, Any]) -> str:
    decision = view.get("decision")
    head = f"{view['submission_id']}  LRN {view.get('lrn') or '?'}  version {view['version']}"
    if decision is None:
        lines = [f"{head}  received, no decision yet"]
    else:
        final = "final" if decision["final"] else "not final"
        lines = [f"{head}  {decision['outcome']} ({final}, decision on v{decision['version']})"]
        for agency in decision.get("agencies", ()):
            notes = "; ".join(agency.get("reasons") or ())
            if agency.get("conditions"):
                notes += " | conditions: " + "; ".join(agency["conditions"])
            answered = agency.get("answered_at") or f"due {agency.get('deadline')}"
            lines.append(
                f"  {agency['agency']:<12} {agency['status']:<24} {answered}  {notes}".rstrip()
            )
        inspection = decision.get("joint_inspection")
        if inspection:
            lines.append("  joint inspection: " + ", ".join(inspection["agencies"]))
        if decision.get("release_on_arrival"):
            lines.append(
                "  lodged before arrival: the release takes effect once the goods arrive "
                f"(POST {view.get('arrival_url') or 'the arrival'})"
            )
        if decision.get("arrived_at"):
            lines.append(f"  goods arrived {decision['arrived_at']}: the decision is in effect")
        if decision.get("shared_with"):
            lines.append(
                f"  shared with the single window of {decision['shared_with']} once released"
            )
        for doc in decision.get("documents_required") or ():
            lines.append(
                f"  document required: {doc['type_code']} {doc['description']} "
                f"for {doc['agency']} (by {doc.get('deadline') or 'no deadline'})"
            )
    if view.get("changes_allowed"):
        lines.append("  may still be amended (PUT) or cancelled (DELETE)")
    else:
        lines.append(f"  no more changes: {view.get('changes_refused_because')}")
    for version in view.get("versions", ()):
        agencies = ", ".join(version.get("agencies") or ()) or "-"
        by = f" by {version['submitted_by']}" if version.get("submitted_by") else ""
        lines.append(
            f"  v{version['version']} {version.get('kind') or '?'} received "
            f"{version.get('received_at') or '?'}{by} routed to {agencies}"
        )
    return "\n".join(lines)
