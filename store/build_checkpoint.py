"""The checkpoint of an audience build: everything a resumed build needs to make exactly
the decisions an uninterrupted one makes (R9), stored as JSON in `audience_build.checkpoint`.

It is written after every chunk, in the chunk's transaction, and must survive a crash
and a release: `Checkpoint.from_json` reads every version ever written (version 1 was a
plain dict with keys such as "i" and "src"; tests/data/checkpoints_v1.json holds real
ones), `to_json` writes the current version.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

CHECKPOINT_VERSION = 2

# Where a build's candidates come from (store/build_candidates.py).
ACTIVATION_SOURCE = "all"  # every open member of the campaign's segment (R3 final state)
DELTA_SOURCE = "delta"  # segment rows above the campaign's watermark (R2c)
EXPANSION_SOURCE = "expansion"  # the mailing's own segment (R11)


@dataclass(frozen=True)
class Source:
    kind: str  # ACTIVATION_SOURCE | DELTA_SOURCE | EXPANSION_SOURCE
    segment_id: int


@dataclass(frozen=True)
class LcgSettings:
    """The campaign's LCG settings when the build started (a resumed build keeps them)."""

    enabled: bool
    cohort: int
    percent_bp: int | None
    limit: int | None
    strata: list[str]
    key_sql: str  # stratum key expression over profile alias p (store/strata.py)
    seed: int


@dataclass(frozen=True)
class Cutoff:
    """The largest (assignment hash, external_id) that goes to control (R9 order)."""

    hash: int
    external_id: str


@dataclass(frozen=True)
class Trim:
    """R6: control members of `stratum` at or above this (hash, external_id) move to test."""

    stratum: str
    hash: int
    external_id: str
    count: int


@dataclass
class Plan:
    """The R9/R10 decisions of the plan phase (empty before it runs, or with the LCG off)."""

    warnings: list[dict[str, Any]] = field(default_factory=list)
    quotas: dict[str, int] = field(default_factory=dict)
    trims: list[Trim] = field(default_factory=list)
    cutoffs: dict[str, Cutoff] = field(default_factory=dict)
    picks: dict[str, int] = field(default_factory=dict)
    cohort_size: int | None = None
    target: int | None = None
    unlimited_target: int | None = None
    # R4: when re-entering former control members find too little room under the limit
    # (capped), only those at or below this (hash, external_id) return to control; with
    # no room at all there is no cut-off and none do.
    reentry_capped: bool = False
    reentry_cutoff: Cutoff | None = None


@dataclass
class Checkpoint:
    reason: str
    segment_bound: int  # max segment_member.id when the build started; later rows wait
    watermark: int  # the campaign's segment_watermark then (delta: rows above it)
    lcg: LcgSettings
    sources: list[Source]
    phases: list[str]
    phase_index: int = 0
    source_index: int = 0  # assign: the source being read
    cursor: int | None = None  # keyset position inside the current phase (None: start)
    processed: int = 0
    total_base: int = 0  # members a trimming build walks before the newcomers
    total: int = 0
    plan: Plan = field(default_factory=Plan)

    @property
    def phase(self) -> str:
        return self.phases[self.phase_index]

    @property
    def finished(self) -> bool:
        return self.phase_index >= len(self.phases)

    def next_phase(self) -> None:
        self.phase_index += 1
        self.cursor = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["version"] = CHECKPOINT_VERSION
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Checkpoint:
        version = data.get("version")
        if version == 1:
            return _from_v1(data)
        if version != CHECKPOINT_VERSION:
            raise ValueError(f"unknown build checkpoint version {version!r}")
        plan = data["plan"]
        return cls(
            reason=data["reason"],
            segment_bound=data["segment_bound"],
            watermark=data["watermark"],
            lcg=LcgSettings(**data["lcg"]),
            sources=[Source(**s) for s in data["sources"]],
            phases=list(data["phases"]),
            phase_index=data["phase_index"],
            source_index=data["source_index"],
            cursor=data["cursor"],
            processed=data["processed"],
            total_base=data["total_base"],
            total=data["total"],
            plan=Plan(
                **{
                    **plan,
                    "trims": [Trim(**t) for t in plan["trims"]],
                    "cutoffs": {k: Cutoff(**c) for k, c in plan["cutoffs"].items()},
                    "reentry_cutoff": (
                        Cutoff(**plan["reentry_cutoff"]) if plan["reentry_cutoff"] else None
                    ),
                }
            ),
        )


def _from_v1(data: dict[str, Any]) -> Checkpoint:
    """Release 1: {"i": phase index, "src": source index, "max_sm": segment bound, the LCG
    settings at the top level, plan {"trim": [[key, hash, ext, n]], "cut": {key: [hash, ext]}}}."""
    plan = data.get("plan") or {}
    return Checkpoint(
        reason=data["reason"],
        segment_bound=data["max_sm"],
        watermark=data["watermark"],
        lcg=LcgSettings(
            enabled=data["enabled"],
            cohort=data["cohort"],
            percent_bp=data["percent_bp"],
            limit=data["limit"],
            strata=list(data["strata"]),
            key_sql=data["key_sql"],
            seed=data["seed"],
        ),
        sources=[Source(kind=s["kind"], segment_id=s["segment"]) for s in data["sources"]],
        phases=list(data["phases"]),
        phase_index=data["i"],
        source_index=data["src"],
        cursor=data["cursor"],
        processed=data["processed"],
        total_base=data["total_base"],
        total=data["total"],
        plan=Plan(
            warnings=list(plan.get("warnings") or []),
            quotas=dict(plan.get("quotas") or {}),
            trims=[Trim(k, h, e, n) for k, h, e, n in plan.get("trim") or []],
            cutoffs={k: Cutoff(h, e) for k, (h, e) in (plan.get("cut") or {}).items()},
            picks=dict(plan.get("picks") or {}),
            cohort_size=plan.get("cohort_size"),
            target=plan.get("target"),
            unlimited_target=plan.get("unlimited_target"),
        ),
    )
