"""The customs risk engine, pure: profiles as data, AEO relief, random selection, lanes mapped
to statuses, explanations, determinism. No broker."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path

import pytest
from customs_package import package_of

from broker.core.declaration import AdditionalDocument, AeoStatus, Declaration
from broker.core.messages import (
    AgencyRequest,
    AgencyStatus,
    InformationPackage,
    RequestKind,
    Requirement,
)
from broker.core.risk import (
    Lane,
    RiskPolicy,
    assess,
    load_risk_policy,
    parse_risk_policy,
    selection_draw,
)
from broker.errors import RulesError
from connectors.customs_risk import CustomsRiskConfig, decide, examination_result

T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
POLICY = load_risk_policy()


def sample(name: str) -> Declaration:
    path = Path(str(resources.files("broker.samples"))) / f"{name}.json"
    return Declaration.model_validate_json(path.read_bytes())


def with_aeo(package: InformationPackage, status: AeoStatus) -> InformationPackage:
    update = {
        role: party.model_copy(update={"aeo_status": status})
        for role in ("declarant", "importer", "exporter")
        if (party := getattr(package, role)) is not None
    }
    return package.model_copy(update=update)


def request_for(package: InformationPackage, submission_id: str = "sub-1", version: int = 1):
    return AgencyRequest(
        request_id=f"{submission_id}:{version}:customs:review",
        submission_id=submission_id,
        version=version,
        agency="customs",
        kind=RequestKind.REVIEW,
        requirement=Requirement.REQUIRED,
        reasons=("customs.all-declarations",),
        deadline=T0 + timedelta(minutes=10),
        sent_at=T0,
        package=package,
    )


NO_RANDOM = POLICY.model_copy(update={"random_selection_rate": 0.0})


def lane(name: str, policy: RiskPolicy = NO_RANDOM, aeo: AeoStatus | None = None) -> Lane:
    package = package_of(sample(name))
    if aeo is not None:
        package = with_aeo(package, aeo)
    return assess(package, policy, submission_id=f"sub-{name}", seed=7).lane


# --- profiles as data ---------------------------------------------------------------------


def test_the_shipped_profiles_load_and_cover_the_four_dimensions() -> None:
    assert len(POLICY.profiles) >= 10
    assert any(p.hs_prefixes and p.origin_countries for p in POLICY.profiles)
    assert any(p.trader_ids for p in POLICY.profiles)
    assert any(p.procedures for p in POLICY.profiles)
    assert any(p.procedure_codes for p in POLICY.profiles)
    assert any(not p.aeo_relief for p in POLICY.profiles)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("01-cut-flowers-kenya", Lane.GREEN),
        ("04-hunting-rifle-usa", Lane.RED),  # firearms: always verified
        ("06-used-car-japan", Lane.BLUE),  # valuation: post-clearance audit
        ("07-ivory-carving-cites", Lane.YELLOW),  # CITES specimens: documentary check
        ("10-x-ray-tubes-germany", Lane.GREEN),
        ("14-sapele-logs-cameroon", Lane.YELLOW),  # Congo Basin logs
    ],
)
def test_samples_get_the_lane_their_profiles_give(name: str, expected: Lane) -> None:
    assert lane(name) is expected


def test_item_conditions_must_hold_on_the_same_item() -> None:
    """Logs from Cameroon fire the timber profile; the same logs from Germany do not."""
    package = package_of(sample("14-sapele-logs-cameroon"))
    german = package.model_copy(
        update={
            "items": tuple(i.model_copy(update={"origin_country": "DE"}) for i in package.items)
        }
    )
    fired = {h.profile.id for h in assess(package, NO_RANDOM, submission_id="s", seed=1).hits}
    assert "risk.illegal-timber" in fired
    assert assess(german, NO_RANDOM, submission_id="s", seed=1).hits == ()


def test_a_trader_profile_fires_on_any_party_and_adds_up() -> None:
    """The HCFC importer is on the compliance watch list: ODS (45) + trader (30) = red."""
    assessment = assess(
        package_of(sample("08-refrigerant-hcfc22-china")), NO_RANDOM, submission_id="s", seed=1
    )
    assert {h.profile.id for h in assessment.hits} == {
        "risk.ozone-depleting-substances",
        "risk.trader-compliance-history",
    }
    assert assessment.score == 75
    assert assessment.lane is Lane.RED


def test_procedure_and_procedure_code_profiles() -> None:
    transit = package_of(sample("12-transit-electronics"))
    transit = with_aeo(transit, AeoStatus.NONE)
    fired = {h.profile.id for h in assess(transit, NO_RANDOM, submission_id="s", seed=1).hits}
    assert "risk.transit-electronics-diversion" in fired
    onward = package_of(sample("10-x-ray-tubes-germany")).model_copy(
        update={"procedure_code": "4200"}
    )
    assessment = assess(onward, NO_RANDOM, submission_id="s", seed=1)
    assert [h.profile.id for h in assessment.hits] == ["risk.onward-supply-vat"]
    assert assessment.lane is Lane.BLUE


# --- AEO relief -----------------------------------------------------------------------------


def test_aeo_lowers_the_score_aeof_most() -> None:
    package = package_of(sample("07-ivory-carving-cites"))
    scores = {
        status: assess(with_aeo(package, status), NO_RANDOM, submission_id="s", seed=1).score
        for status in AeoStatus
    }
    assert scores[AeoStatus.AEOF] < scores[AeoStatus.AEOS] < scores[AeoStatus.NONE]
    assert scores[AeoStatus.AEOF] < scores[AeoStatus.AEOC] < scores[AeoStatus.NONE]
    assert lane("07-ivory-carving-cites", aeo=AeoStatus.AEOF) is Lane.GREEN


def test_aeo_does_not_lift_security_targets() -> None:
    """Firearms are verified whoever imports them (aeo_relief = false)."""
    assert lane("04-hunting-rifle-usa", aeo=AeoStatus.AEOF) is Lane.RED


def test_the_responsible_trader_is_the_importer_on_import_and_the_exporter_on_export() -> None:
    imported = package_of(sample("07-ivory-carving-cites"))
    importer_only = imported.model_copy(
        update={"importer": imported.importer.model_copy(update={"aeo_status": AeoStatus.AEOF})}
    )
    assert assess(importer_only, NO_RANDOM, submission_id="s", seed=1).aeo_status is AeoStatus.AEOF
    exported = package_of(sample("11-dual-use-machine-tools-export"))
    assessment = assess(exported, NO_RANDOM, submission_id="s", seed=1)
    assert assessment.trader_id == exported.exporter.identifier
    assert assessment.aeo_status is AeoStatus.AEOF


# --- random selection and determinism ------------------------------------------------------


def test_random_selection_raises_the_lane_at_about_its_rate() -> None:
    package = package_of(sample("10-x-ray-tubes-germany"))  # green on its profiles
    policy = POLICY.model_copy(update={"random_selection_rate": 0.1})
    lanes = [assess(package, policy, submission_id=f"s{i}", seed=3).lane for i in range(2000)]
    selected = lanes.count(Lane.RED) / len(lanes)
    assert 0.07 < selected < 0.13
    assert set(lanes) == {Lane.GREEN, Lane.RED}


def test_random_selection_is_fixed_by_seed_and_submission_not_version() -> None:
    """Same seed and submission: same draw, so amending cannot re-roll a selection."""
    assert selection_draw(7, "sub-a") == selection_draw(7, "sub-a")
    assert selection_draw(7, "sub-a") != selection_draw(8, "sub-a")
    assert selection_draw(7, "sub-a") != selection_draw(7, "sub-b")
    policy = POLICY.model_copy(update={"random_selection_rate": 0.5})
    package = package_of(sample("13-cakes-malaysia-singapore"))
    first = [assess(package, policy, submission_id=f"s{i}", seed=5) for i in range(50)]
    again = [assess(package, policy, submission_id=f"s{i}", seed=5) for i in range(50)]
    assert first == again
    config = CustomsRiskConfig(seed=5, policy=policy)
    v1 = [decide(request_for(package, f"s{i}", 1), config).first.status for i in range(50)]
    v2 = [decide(request_for(package, f"s{i}", 2), config).first.status for i in range(50)]
    assert v1 == v2


def test_aeo_lowers_the_random_selection_rate() -> None:
    package = package_of(sample("10-x-ray-tubes-germany"))
    policy = POLICY.model_copy(update={"random_selection_rate": 0.2})

    def reds(status: AeoStatus) -> int:
        aeo = with_aeo(package, status)
        return sum(
            assess(aeo, policy, submission_id=f"s{i}", seed=9).lane is Lane.RED for i in range(1000)
        )

    assert reds(AeoStatus.AEOF) < reds(AeoStatus.AEOS) < reds(AeoStatus.NONE)


# --- lanes to statuses, with explanations ---------------------------------------------------


def answer_for(name: str, *, aeo: AeoStatus | None = None, **update: object):
    package = package_of(sample(name))
    if aeo is not None:
        package = with_aeo(package, aeo)
    package = package.model_copy(update=update)
    return decide(request_for(package, f"sub-{name}"), CustomsRiskConfig(policy=NO_RANDOM))


def test_green_is_cleared_and_says_no_profile_fired() -> None:
    answer = answer_for("10-x-ray-tubes-germany")
    assert answer.first.status is AgencyStatus.CLEARED
    assert answer.final is None
    assert answer.first.reasons[0].startswith("risk lane green: score 0 below the blue threshold")
    assert "no risk profile fired" in answer.first.reasons[0]


def test_blue_is_cleared_with_a_post_clearance_audit() -> None:
    answer = answer_for("06-used-car-japan")
    assert answer.first.status is AgencyStatus.CLEARED_WITH_CONDITIONS
    assert answer.first.conditions == (POLICY.post_clearance_condition,)
    assert "profile risk.used-vehicles +22" in answer.first.reasons[1]


def test_yellow_asks_for_the_profiles_documents_then_clears_once_cited() -> None:
    answer = answer_for("14-sapele-logs-cameroon")
    assert answer.first.status is AgencyStatus.DOCUMENTS_REQUIRED
    (document,) = answer.first.documents_required
    assert document.type_code == "N861"
    assert document.deadline == T0 + timedelta(hours=48)
    assert answer.first.reasons[0] == (
        "risk lane yellow: score 42 at or above the yellow threshold 40"
    )
    assert "risk.illegal-timber" in answer.first.reasons[1]
    # The amendment cites the certificate: the documentary check is passed.
    declaration = sample("14-sapele-logs-cameroon")
    cited = (*declaration.documents, AdditionalDocument(type_code="N861", id="CM-ORIG-1"))
    amended = answer_for("14-sapele-logs-cameroon", documents=cited)
    assert amended.first.status is AgencyStatus.CLEARED
    assert amended.first.reasons[-1] == "documentary check passed: N861 cited"


def test_red_is_an_inspection_followed_by_a_final_answer() -> None:
    answer = answer_for("04-hunting-rifle-usa")
    assert answer.first.status is AgencyStatus.INSPECTION
    assert answer.final is not None
    assert answer.final.status in {
        AgencyStatus.CLEARED,
        AgencyStatus.CLEARED_WITH_CONDITIONS,
        AgencyStatus.REJECTED,
    }
    assert answer.final.sequence == answer.first.sequence + 1
    assert answer.final.answered_at >= answer.first.answered_at
    assert answer.final.reasons[0].startswith("examination: ")
    assert "profile risk.firearms-and-ammunition +65" in answer.final.reasons[2]


def test_examination_results_follow_their_weights() -> None:
    config = CustomsRiskConfig(policy=NO_RANDOM)
    package = package_of(sample("04-hunting-rifle-usa"))
    results = []
    for i in range(1000):
        request = request_for(package, f"s{i}")
        first = decide(request, config).first
        results.append(examination_result(request, first, config).status)
    assert 0.80 < results.count(AgencyStatus.CLEARED) / 1000 < 0.90
    assert 0 < results.count(AgencyStatus.REJECTED) < 80


def test_random_selection_is_explained() -> None:
    policy = POLICY.model_copy(update={"random_selection_rate": 1.0})
    package = package_of(sample("10-x-ray-tubes-germany"))
    assessment = assess(package, policy, submission_id="s", seed=1)
    assert assessment.lane is Lane.RED
    assert assessment.randomly_selected
    assert assessment.explain()[-1] == "random selection (rate 100.00%) for red lane"
    # A red lane on its own profiles is not claimed as a random selection.
    rifle = assess(package_of(sample("04-hunting-rifle-usa")), policy, submission_id="s", seed=1)
    assert not rifle.randomly_selected


# --- the file is validated ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("thresholds = [", "not valid TOML"),
        (
            "random_selection_rate = 0.1\npost_clearance_condition = 'x'\n"
            "[thresholds]\nblue = 50\nyellow = 40\nred = 60\n"
            "[[yellow_documents]]\ntype_code = 'N935'\ndescription = 'invoice'\n",
            "thresholds: thresholds must increase",
        ),
        (
            "random_selection_rate = 0.1\npost_clearance_condition = 'x'\n"
            "[thresholds]\nblue = 20\nyellow = 40\nred = 60\n"
            "[[yellow_documents]]\ntype_code = 'N935'\ndescription = 'invoice'\n"
            "[[profiles]]\nid = 'risk.x'\ndescription = 'd'\nweight = 10\nhs_prefx = ['01']\n",
            "profiles.0.hs_prefx: Extra inputs are not permitted",
        ),
        (
            "random_selection_rate = 0.1\npost_clearance_condition = 'x'\n"
            "[thresholds]\nblue = 20\nyellow = 40\nred = 60\n"
            "[[yellow_documents]]\ntype_code = 'N935'\ndescription = 'invoice'\n"
            "[[profiles]]\nid = 'risk.x'\ndescription = 'd'\nweight = 10\n",
            "a profile needs at least one condition",
        ),
    ],
)
def test_invalid_profiles_fail_with_the_field_named(text: str, message: str) -> None:
    with pytest.raises(RulesError, match=r"risk profiles test\.toml") as raised:
        parse_risk_policy(text, "test.toml")
    assert message in str(raised.value)


def test_a_missing_profiles_file_is_a_rules_error(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot be read"):
        load_risk_policy(tmp_path / "nope.toml")


# --- swb risk -------------------------------------------------------------------------------


def swb_executable() -> str:
    beside = Path(sys.executable).with_name("swb")
    found = str(beside) if beside.exists() else shutil.which("swb")
    assert found, "the swb command is not installed: pip install -e '.[dev]'"
    return found


@pytest.mark.e2e
def test_swb_risk_explains_a_declarations_lane() -> None:
    sample_file = Path(str(resources.files("broker.samples"))) / "04-hunting-rifle-usa.json"
    result = subprocess.run(
        [swb_executable(), "risk", str(sample_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["lane"] == "red"
    assert answer["profiles"] == ["risk.firearms-and-ammunition"]
    assert answer["reasons"][0] == "risk lane red: score 65 at or above the red threshold 60"


@pytest.mark.e2e
def test_swb_risk_names_the_field_of_a_bad_profiles_file(tmp_path: Path) -> None:
    bad = tmp_path / "profiles.toml"
    bad.write_text("random_selection_rate = 2\n")
    sample_file = Path(str(resources.files("broker.samples"))) / "04-hunting-rifle-usa.json"
    result = subprocess.run(
        [swb_executable(), "risk", str(sample_file), "--profiles", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "random_selection_rate: Input should be less than or equal to 1" in result.stderr
