"""A draft shows what activation would do (issue 13 §5) and every campaign how many
segment profiles the GCG holds out (§3), on both backends."""

from __future__ import annotations

import pytest
from cli_helpers import external_ids_csv, r10_workspace

pytestmark = pytest.mark.usefixtures("no_user_config")


def test_draft_show_gives_the_split_activation_would_produce_now(both_cli):
    cli = both_cli
    r10_workspace(cli)
    cli.ok("gcg", "add", "main", cli.file("held.csv", external_ids_csv(["P099"])))
    cli.ok("campaign", "create", "r10", "--database", "main", "--segment", "everyone",
           "--lcg", "15", "--limit", "12", "--strata", "int_field,region", "--seed", "7")  # fmt: skip
    draft = cli.ok("campaign", "show", "r10", "--json").json
    assert draft["excluded_gcg"] == 1
    pending = draft["pending"]
    assert pending["members"] == 99 and pending["target"] == 12 and pending["limit_binds"]
    quotas = sorted(s["quota"] for s in pending["strata"])
    assert sum(quotas) == 12 and len(quotas) == 6
    # R10: the limit binds and small strata cannot keep their share
    assert [w["code"] for w in pending["warnings"]] == ["stratification_violation"]
    cli.ok("campaign", "activate", "r10", "--wait")
    active = cli.ok("campaign", "show", "r10", "--json").json
    assert "pending" not in active and active["excluded_gcg"] == 1
    # the split activation produced is the one the draft showed, its keys typed alike
    # (int fields as numbers: the draft's were strings)
    assert sorted(s["quota"] for s in active["strata"]) == quotas
    assert sorted((s["label"], s["key"]) for s in pending["strata"]) == sorted(
        (s["label"], s["key"]) for s in active["strata"]
    ), (pending["strata"][0]["key"], active["strata"][0]["key"])
    assert all(isinstance(s["key"]["int_field"], int) for s in pending["strata"])
    assert active["audience"]["control"] == 12


def test_draft_without_lcg_and_excepted_campaign(both_cli):
    cli = both_cli
    r10_workspace(cli)
    cli.ok("gcg", "add", "main", cli.file("held.csv", external_ids_csv(["P000", "P001"])))
    cli.ok("campaign", "create", "plain", "--database", "main", "--segment", "everyone")
    show = cli.ok("campaign", "show", "plain", "--json").json
    assert show["pending"]["members"] == 98 and show["pending"]["target"] == 0
    assert show["pending"]["strata"] == [] and show["excluded_gcg"] == 2
    cli.ok("gcg", "except", "plain")
    show = cli.ok("campaign", "show", "plain", "--json").json
    assert show["pending"]["members"] == 100 and show["excluded_gcg"] == 0
