"""Distribution rules as tables: stages per group, choosing inside a group, the next step, caps."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from services.router import rules
from services.router.rules import Attempt, Stage
from shared.catalog.model import Caps, Catalog, Distribution

HTTP = {"method": "http", "url": "http://buyer.test/"}


def catalog(groups=(), accounts=(), clients=("a", "b", "c", "d"), **options) -> Catalog:
    return Catalog.model_validate(
        {
            "options": options,
            "lead_types": [{"id": "t", "name": "T", "fields": [{"name": "x"}]}],
            "clients": [
                {"id": c, "name": c, "external_ref": f"REF-{c.upper()}", "email": f"{c}@x.io"} for c in clients
            ],
            "groups": list(groups),
            "delivery_accounts": list(accounts)
            or [{"id": f"{c}1", "client": c, "lead_type": "t", "price": "10", "delivery": HTTP} for c in clients],
        }
    )


def account(id, client, price="10", priority=0, weight=1):
    return {
        "id": id,
        "client": client,
        "lead_type": "t",
        "price": price,
        "priority": priority,
        "weight": weight,
        "delivery": HTTP,
    }


def test_groups_become_stages_in_order_and_ungrouped_clients_come_last():
    cat = catalog(
        groups=[
            {"id": "g1", "name": "G1", "clients": ["c", "a"], "apply_groups_as_criteria": True},
            {"id": "g2", "name": "G2", "clients": ["b"], "apply_groups_as_criteria": False},
        ]
    )
    stages = rules.build_stages(cat, list(cat.delivery_accounts), {})
    assert stages == [
        Stage("g1", True, ("a1", "c1")),
        Stage("g2", False, ("b1",)),
        Stage(rules.UNGROUPED, True, ("d1",)),
    ]


def test_a_group_without_the_flag_follows_the_global_option():
    for default in (True, False):
        cat = catalog(groups=[{"id": "g", "name": "G", "clients": ["a", "b"]}], apply_groups_as_criteria=default)
        assert rules.build_stages(cat, list(cat.delivery_accounts), {})[0].exclusive is default


@pytest.mark.parametrize(
    ("method", "turn", "expected"),
    [
        (Distribution.priority, 0, ["n1", "p0", "p1", "p5"]),
        (Distribution.highest_price, 0, ["p5", "p1", "n1", "p0"]),
        (Distribution.round_robin, 0, ["p0", "p1", "p5", "n1"]),
        (Distribution.round_robin, 1, ["p1", "p5", "n1", "p0"]),
        (Distribution.round_robin, 6, ["p5", "n1", "p0", "p1"]),
    ],
)
def test_choosing_inside_an_exclusive_group(method, turn, expected):
    cat = catalog(
        accounts=[
            account("p0", "a", "10", 0),
            account("p1", "b", "20", 1),
            account("p5", "c", "30", 5),
            account("n1", "d", "15", -1),
        ]
    )
    position = {a.id: i for i, a in enumerate(cat.delivery_accounts)}
    ordered = rules.order_accounts(method, list(cat.delivery_accounts), position, turn)
    assert [a.id for a in ordered] == expected


def test_priority_ties_go_by_entry_order_and_highest_price_ties_by_priority():
    cat = catalog(accounts=[account("x", "a", "10", 1), account("y", "b", "10", 0), account("z", "c", "10", 1)])
    position = {a.id: i for i, a in enumerate(cat.delivery_accounts)}
    accounts = list(cat.delivery_accounts)
    assert [a.id for a in rules.order_accounts(Distribution.priority, accounts, position, 0)] == ["y", "x", "z"]
    assert [a.id for a in rules.order_accounts(Distribution.highest_price, accounts, position, 0)] == ["y", "x", "z"]


def test_weighted_shares_converge_on_the_weights():
    cat = catalog(accounts=[account("w1", "a", weight=1), account("w3", "b", weight=3), account("w0", "c", weight=0)])
    position = {a.id: i for i, a in enumerate(cat.delivery_accounts)}
    firsts = Counter(
        rules.order_accounts(Distribution.weighted, list(cat.delivery_accounts), position, turn)[0].id
        for turn in range(400)
    )
    assert firsts == {"w1": 100, "w3": 300}


def step(stages, attempts=(), skipped=(), max_sales=3, client_of=None):
    client_of = client_of or {a: a[0] for s in stages for a in s.accounts}
    return rules.next_step(list(stages), list(attempts), set(skipped), max_sales, client_of)


EXCL = Stage("g1", True, ("a1", "b1"))
SHARED = Stage("g2", False, ("c1", "d1"))


@pytest.mark.parametrize(
    ("attempts", "skipped", "max_sales", "expected"),
    [
        ([], [], 3, rules.NextStep(request=(("g1", "a1"),))),
        ([Attempt("a1", "a", "requested")], [], 3, rules.NextStep()),
        ([Attempt("a1", "a", "failed")], [], 3, rules.NextStep(request=(("g1", "b1"),))),
        ([], ["a1"], 3, rules.NextStep(request=(("g1", "b1"),))),
        # the exclusive group sold: the shared group gets it, everyone at once
        ([Attempt("a1", "a", "succeeded")], [], 3, rules.NextStep(request=(("g2", "c1"), ("g2", "d1")))),
        # ... but never past the maximum number of sales
        ([Attempt("a1", "a", "succeeded")], [], 2, rules.NextStep(request=(("g2", "c1"),))),
        ([Attempt("a1", "a", "succeeded")], [], 1, rules.NextStep(done=True, sold=True)),
        # nobody in the exclusive group took it: on to the shared group
        (
            [Attempt("a1", "a", "failed"), Attempt("b1", "b", "failed")],
            [],
            3,
            rules.NextStep(request=(("g2", "c1"), ("g2", "d1"))),
        ),
        # a shared delivery failed while another is in flight: its slot goes to nobody new (none left)
        (
            [Attempt("a1", "a", "succeeded"), Attempt("c1", "c", "failed"), Attempt("d1", "d", "requested")],
            [],
            3,
            rules.NextStep(),
        ),
        (
            [Attempt("a1", "a", "succeeded"), Attempt("c1", "c", "failed"), Attempt("d1", "d", "succeeded")],
            [],
            3,
            rules.NextStep(done=True, sold=True),
        ),
        (
            [Attempt("a1", "a", "failed"), Attempt("b1", "b", "failed"), Attempt("c1", "c", "failed")],
            ["d1"],
            3,
            rules.NextStep(done=True, sold=False),
        ),
    ],
)
def test_next_step(attempts, skipped, max_sales, expected):
    assert step([EXCL, SHARED], attempts, skipped, max_sales) == expected


def test_a_shared_slot_freed_by_a_failure_goes_to_the_next_account_in_line():
    shared = Stage("g", False, ("a1", "b1", "c1"))
    assert step([shared], [], max_sales=2) == rules.NextStep(request=(("g", "a1"), ("g", "b1")))
    assert step(
        [shared], [Attempt("a1", "a", "failed"), Attempt("b1", "b", "requested")], max_sales=2
    ) == rules.NextStep(request=(("g", "c1"),))


def test_a_client_never_gets_the_same_lead_twice():
    stages = [Stage("g1", True, ("a1",)), Stage("g2", False, ("a2", "b1"))]
    client_of = {"a1": "a", "a2": "a", "b1": "b"}
    result = rules.next_step(stages, [Attempt("a1", "a", "succeeded")], set(), 3, client_of)
    assert result == rules.NextStep(request=(("g2", "b1"),))


@pytest.mark.parametrize(
    ("attempts", "holders", "expected"),
    [
        # nobody holds the person: the plan as usual
        ([], set(), rules.NextStep(request=(("g1", "a1"),))),
        # a holds it through another lead (an earlier one, or a later copy): a is skipped
        ([], {"a"}, rules.NextStep(request=(("g1", "b1"),))),
        # the race: a refused this lead, b took its duplicate meanwhile -> on to c
        ([Attempt("a1", "a", "failed")], {"b"}, rules.NextStep(request=(("g1", "c1"),))),
        # the rest of the exclusive group holds it: on to the next group
        ([Attempt("a1", "a", "failed")], {"b", "c"}, rules.NextStep(request=(("g2", "d1"),))),
        # every client left holds the person: nothing to send, the lead is decided
        ([Attempt("a1", "a", "failed")], {"b", "c", "d"}, rules.NextStep(done=True, sold=False)),
        # a shared group skips holders too
        ([], {"a", "b", "c", "d"}, rules.NextStep(done=True, sold=False)),
    ],
)
def test_clients_holding_the_person_through_another_lead_are_skipped(attempts, holders, expected):
    stages = [Stage("g1", True, ("a1", "b1", "c1")), Stage("g2", False, ("d1",))]
    client_of = {a: a[0] for s in stages for a in s.accounts}
    assert rules.next_step(stages, attempts, set(), 1, client_of, frozenset(holders)) == expected


@pytest.mark.parametrize(
    ("mapping", "force_id", "client"),
    [
        ("client_id", "b", "b"),
        ("external_ref", "ref-c", "c"),
        ("email", "D@X.IO", "d"),
        ("name", "a", "a"),
        ("external_ref", "nobody", None),
    ],
)
def test_force_id_follows_the_mapping_option(mapping, force_id, client):
    assert rules.force_target(catalog(delivery_force_id_mapping=mapping), force_id) == client


@pytest.mark.parametrize(("lead_type_max", "source_max", "expected"), [(3, None, 3), (3, 2, 2), (1, 5, 1)])
def test_max_sales_is_the_lower_of_lead_type_and_source(lead_type_max, source_max, expected):
    cat = Catalog.model_validate(
        {
            "lead_types": [{"id": "t", "name": "T", "fields": [{"name": "x"}], "max_sales": lead_type_max}],
            "sources": [{"id": "s", "name": "S", "max_sales": source_max}],
        }
    )
    assert rules.max_sales(cat, "t", "s") == expected


def test_cap_windows_are_local_to_the_client():
    now = datetime(2026, 11, 2, 3, 30, tzinfo=UTC)  # Sunday 1 Nov, 19:30 in Los Angeles (PST)
    windows = rules.cap_windows(Caps(hourly=1, daily=2, weekly=3, monthly=4), "America/Los_Angeles", now)
    assert [(p, s.isoformat(), c) for p, s, c in windows] == [
        ("hourly", "2026-11-01T19:00:00", 1),
        ("daily", "2026-11-01T00:00:00", 2),
        ("weekly", "2026-10-26T00:00:00", 3),
        ("monthly", "2026-11-01T00:00:00", 4),
    ]
    assert rules.cap_windows(Caps(), "UTC", now) == []


def test_a_zero_cap_closes_the_account_before_any_counting():
    cat = catalog(accounts=[{**account("z", "a"), "caps": {"daily": 0}}, account("ok", "b")])
    eligible = rules.eligible_accounts(cat, "t", {"x": "1"}, datetime(2026, 11, 23, tzinfo=UTC))
    assert [a.id for a in eligible] == ["ok"]
    assert Decimal(cat.accounts_by_id["ok"].price) == 10


@pytest.mark.parametrize(
    "paused, excluded, only, expected",
    [
        (frozenset(), frozenset(), None, ["a1", "a2", "b1", "c1"]),
        (frozenset({"a1"}), frozenset(), None, ["a2", "b1", "c1"]),
        (frozenset(), frozenset({"a", "c"}), None, ["b1"]),
        (frozenset({"a2"}), frozenset(), "a", ["a1"]),
        (frozenset({"b1"}), frozenset({"a"}), "a", []),
    ],
)
def test_narrowing_after_eligibility_equals_filtering_during_it(paused, excluded, only, expected):
    cat = catalog(
        accounts=[
            account("a1", "a"),
            account("a2", "a"),
            account("b1", "b"),
            account("c1", "c"),
            {**account("d1", "d"), "criteria": [{"field": "x", "op": "equals", "value": "2"}]},
        ]
    )
    now = datetime(2026, 11, 23, tzinfo=UTC)
    direct = rules.eligible_accounts(
        cat, "t", {"x": "1"}, now, paused=paused, excluded_clients=excluded, only_client=only
    )
    narrowed = rules.narrow(
        rules.eligible_accounts(cat, "t", {"x": "1"}, now), paused=paused, excluded_clients=excluded, only_client=only
    )
    assert [a.id for a in direct] == [a.id for a in narrowed] == expected


def _tried(stages, attempts, max_sales, client_of, refused):
    """What `usecases._advance` tries in one step when the accounts in `refused` are full."""
    attempts = list(attempts)
    skipped: set[str] = set()
    tried: list[str] = []
    while True:
        result = rules.next_step(list(stages), attempts, skipped, max_sales, client_of)
        if result.done or not result.request:
            return tried
        for _group, acc in result.request:
            tried.append(acc)
            if acc in refused:
                skipped.add(acc)
            else:
                attempts.append(Attempt(acc, client_of[acc], "requested"))


@pytest.mark.parametrize(
    "attempts",
    [
        [],
        [Attempt("a1", "a", "failed")],
        [Attempt("a1", "a", "succeeded"), Attempt("c1", "c", "failed")],
        [Attempt("a1", "a", "failed"), Attempt("b1", "b", "failed"), Attempt("c1", "c", "requested")],
    ],
)
@pytest.mark.parametrize("max_sales", [1, 2, 3])
def test_the_accounts_a_step_takes_are_known_before_it_takes_them(attempts, max_sales):
    """The cap counters locked up front are those of `accounts_tried`: for whichever accounts
    refuse, exactly the accounts the step then tries, in order."""
    stages = [EXCL, Stage("g2", False, ("c1", "d1", "e1")), Stage("g3", True, ("f1", "b2"))]
    client_of = {a: a[0] for s in stages for a in s.accounts}
    everyone = [a for s in stages for a in s.accounts]
    for mask in range(2 ** len(everyone)):
        refused = {a for i, a in enumerate(everyone) if mask >> i & 1}
        expected = _tried(stages, attempts, max_sales, client_of, refused)
        assert rules.accounts_tried(stages, attempts, set(), max_sales, client_of, frozenset(), refused) == expected
