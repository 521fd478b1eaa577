"""The lane mix on a realistic stream: 1,000 variations of the shipped samples (origins,
traders and AEO statuses varied, the goods kept), assessed with the shipped risk profiles.

Run with `-s` to see the report. The checks are about plausibility, not exact numbers: most
declarations go green, every lane is used, red stays a small minority, and AEO traders get
fewer reds than non-AEO traders with the same goods (paired: the same 1,000 declarations
with every party's status set to NONE, then to each AEO status)."""

from __future__ import annotations

import random
from collections import Counter
from importlib import resources
from pathlib import Path

import pytest
from customs_package import package_of

from broker.core.declaration import AeoStatus, Declaration, DeclarationType
from broker.core.messages import InformationPackage
from broker.core.risk import Lane, RiskPolicy, assess, load_risk_policy

COUNT = 1000
SEED = 2026
POLICY = load_risk_policy()
#: Origins a variation may move an item to: mostly low-risk trading partners, some high-risk.
ORIGINS = ("DE", "FR", "IT", "US", "JP", "GB", "CH", "KR", "CN", "IN", "VN", "TR", "BR", "MX")
AEO_MIX = (
    (AeoStatus.NONE, 0.70),
    (AeoStatus.AEOC, 0.10),
    (AeoStatus.AEOS, 0.05),
    (AeoStatus.AEOF, 0.15),
)


def samples() -> list[Declaration]:
    directory = Path(str(resources.files("broker.samples")))
    return [
        Declaration.model_validate_json(path.read_bytes())
        for path in sorted(directory.glob("*.json"))
    ]


def variations(count: int = COUNT, seed: int = SEED) -> list[tuple[str, InformationPackage]]:
    """(submission id, customs package): each sample in turn, its items' origins kept half the
    time, the responsible trader drawn from a pool of 200 (a few on the watch lists), its AEO
    status drawn from `AEO_MIX`."""
    rng = random.Random(seed)
    bases = samples()
    watched = [trader for p in POLICY.profiles for trader in p.trader_ids]
    traders = [f"NL{800_100_000 + n}" for n in range(200)] + watched
    stream = []
    for n in range(count):
        package = package_of(bases[n % len(bases)])
        items = tuple(
            item
            if rng.random() < 0.5
            else item.model_copy(update={"origin_country": rng.choice(ORIGINS)})
            for item in package.items
        )
        status = rng.choices([s for s, _ in AEO_MIX], [w for _, w in AEO_MIX])[0]
        role = {DeclarationType.IMPORT: "importer", DeclarationType.EXPORT: "exporter"}.get(
            package.type, "declarant"
        )
        party = getattr(package, role) or package.declarant
        trader = party.model_copy(update={"identifier": rng.choice(traders), "aeo_status": status})
        package = package.model_copy(update={"items": items, role: trader})
        stream.append((f"sub-mix-{seed}-{n}", package))
    return stream


def with_status(package: InformationPackage, status: AeoStatus) -> InformationPackage:
    return package.model_copy(
        update={
            role: party.model_copy(update={"aeo_status": status})
            for role in ("declarant", "importer", "exporter")
            if (party := getattr(package, role)) is not None
        }
    )


def lane_mix(
    stream: list[tuple[str, InformationPackage]], policy: RiskPolicy = POLICY, seed: int = 7
) -> Counter[Lane]:
    return Counter(
        assess(package, policy, submission_id=sid, seed=seed).lane for sid, package in stream
    )


def report(title: str, mix: Counter[Lane]) -> str:
    total = sum(mix.values())
    shares = ", ".join(f"{lane.value} {mix[lane]} ({mix[lane] / total:.1%})" for lane in Lane)
    line = f"{title}: {shares}"
    print(line)
    return line


@pytest.fixture(scope="module")
def stream() -> list[tuple[str, InformationPackage]]:
    return variations()


def test_lane_mix_on_the_sample_stream_is_plausible(
    stream: list[tuple[str, InformationPackage]],
) -> None:
    mix = lane_mix(stream)
    report(f"lane mix over {COUNT} sample variations (seed {SEED})", mix)
    assert sum(mix.values()) == COUNT
    assert mix[Lane.GREEN] > COUNT * 0.5  # mostly green
    assert max(mix, key=lambda lane: mix[lane]) is Lane.GREEN
    assert all(mix[lane] > 0 for lane in Lane)  # every lane is used
    assert COUNT * 0.02 < mix[Lane.RED] < COUNT * 0.20  # red stays a minority
    assert mix[Lane.RED] < mix[Lane.GREEN] / 3


def test_the_mix_is_the_same_every_run(stream: list[tuple[str, InformationPackage]]) -> None:
    assert lane_mix(stream) == lane_mix(variations())
    assert lane_mix(stream, seed=7) != lane_mix(stream, seed=8) or POLICY.random_selection_rate == 0


def test_aeo_traders_get_fewer_reds_than_others_with_the_same_goods(
    stream: list[tuple[str, InformationPackage]],
) -> None:
    mixes = {
        status: lane_mix([(sid, with_status(package, status)) for sid, package in stream])
        for status in AeoStatus
    }
    for status in AeoStatus:
        report(f"every trader {status.value}", mixes[status])
    none = mixes[AeoStatus.NONE]
    for status in (AeoStatus.AEOC, AeoStatus.AEOS, AeoStatus.AEOF):
        assert mixes[status][Lane.RED] < none[Lane.RED], status
        assert mixes[status][Lane.GREEN] > none[Lane.GREEN], status
    assert mixes[AeoStatus.AEOF][Lane.RED] <= mixes[AeoStatus.AEOS][Lane.RED]
    assert mixes[AeoStatus.AEOF][Lane.RED] <= mixes[AeoStatus.AEOC][Lane.RED]
    # Firearms keep AEO traders in the red lane: relief lowers reds, it does not abolish them.
    assert mixes[AeoStatus.AEOF][Lane.RED] > 0


def test_aeo_relief_per_declaration_never_raises_a_lane(
    stream: list[tuple[str, InformationPackage]],
) -> None:
    """Paired, declaration by declaration: AEOF is never in a stricter lane than NONE."""
    for sid, package in stream:
        plain = assess(with_status(package, AeoStatus.NONE), POLICY, submission_id=sid, seed=7)
        trusted = assess(with_status(package, AeoStatus.AEOF), POLICY, submission_id=sid, seed=7)
        assert trusted.lane.rank <= plain.lane.rank, (sid, plain.explain(), trusted.explain())
