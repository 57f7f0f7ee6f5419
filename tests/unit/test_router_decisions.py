"""The router's decisions about a lead, as tables: why it is rejected, whether a duplicate may be
routed and to whom, its plan (the Force ID branch included), and its outcome."""

from __future__ import annotations

import pytest

from services.router import rules
from services.router.rules import Attempt, FieldProblem, Plan, Stage, Unsold
from shared.catalog.model import Catalog, Distribution

HTTP = {"method": "http", "url": "http://buyer.test/"}
KEYLESS = "message_id"


def catalog(clients: dict[str, dict] | None = None, groups=(), accounts=None, **options) -> Catalog:
    clients = clients if clients is not None else {"a": {}, "b": {}, "c": {}}
    return Catalog.model_validate(
        {
            "options": options,
            "lead_types": [{"id": "t", "name": "T", "fields": [{"name": "x"}], "max_sales": 2}],
            "sources": [{"id": "web", "name": "Web"}, {"id": "old", "name": "Old", "active": False}],
            "clients": [
                {"id": c, "name": c.upper(), "external_ref": f"REF-{c.upper()}", **extra}
                for c, extra in clients.items()
            ],
            "groups": list(groups),
            "delivery_accounts": accounts
            if accounts is not None
            else [
                {"id": f"{c}{n}", "client": c, "lead_type": "t", "price": "10", "priority": n, "delivery": HTTP}
                for c in clients
                for n in (1, 2)
            ],
        }
    )


@pytest.mark.parametrize(
    ("lead_type", "source", "has_key", "field_problems", "expected"),
    [
        ("t", "web", True, [], []),
        ("t", "web", False, [], [KEYLESS]),
        ("nope", "web", True, [], ["lead_type"]),
        ("t", "nope", True, [], ["source"]),
        ("t", "old", True, [], ["source"]),
        ("nope", "nope", False, [FieldProblem("x", "is required")], [KEYLESS, "lead_type", "source", "x"]),
    ],
)
def test_every_reason_to_reject_a_lead_in_order(lead_type, source, has_key, field_problems, expected):
    problems = rules.lead_problems(catalog(), lead_type, source, field_problems, has_key=has_key)
    assert [p.field for p in problems] == expected


def test_an_inactive_source_says_so():
    [problem] = rules.lead_problems(catalog(), "t", "old", [], has_key=True)
    assert problem.message == "lead source 'old' is inactive"


@pytest.mark.parametrize(
    ("global_option", "overrides", "routed", "excluded"),
    [
        (False, {}, False, {"a", "b", "c"}),
        (False, {"b": True}, True, {"a", "c"}),
        (True, {}, True, set()),
        (True, {"a": False}, True, {"a"}),
        (True, {"a": False, "b": False, "c": False}, False, {"a", "b", "c"}),
    ],
)
def test_route_duplicate_leads_decides_whether_and_to_whom(global_option, overrides, routed, excluded):
    clients = {c: ({"options": {"route_duplicate_leads": overrides[c]}} if c in overrides else {}) for c in "abc"}
    cat = catalog(clients, route_duplicate_leads=global_option)
    assert rules.routes_duplicates(cat) is routed
    assert rules.duplicate_exclusions(cat, frozenset()) == excluded
    # Clients holding the person through another lead never get the duplicate either.
    assert rules.duplicate_exclusions(cat, frozenset({"b"})) == excluded | {"b"}


def test_with_no_clients_no_duplicate_is_routed():
    assert rules.routes_duplicates(catalog({})) is False


def plan(cat: Catalog, force_id: str | None = None, *, paused=frozenset(), excluded=frozenset(), turns=None):
    candidates = list(cat.delivery_accounts)
    return rules.plan(cat, "t", "web", force_id, candidates, paused=paused, excluded=excluded, turns=turns or {})


@pytest.mark.parametrize(
    ("force_id", "mapping", "paused", "excluded", "expected"),
    [
        (None, "client_id", set(), set(), Plan((Stage("(ungrouped)", True, ("a1", "b1", "c1", "a2", "b2", "c2")),), 2)),
        (None, "client_id", {"a1"}, {"c"}, Plan((Stage("(ungrouped)", True, ("b1", "a2", "b2")),), 2)),
        ("b", "client_id", set(), set(), Plan((Stage("force:b", True, ("b1", "b2")),), 2)),
        ("ref-c", "external_ref", {"c1"}, set(), Plan((Stage("force:c", True, ("c2",)),), 2)),
        ("zz", "client_id", set(), set(), Unsold("force id 'zz' matches no client (client_id)")),
        ("b", "client_id", {"b1", "b2"}, set(), Unsold("no eligible delivery account of forced client 'b'")),
        ("b", "client_id", set(), {"b"}, Unsold("no eligible delivery account of forced client 'b'")),
    ],
)
def test_the_plan_with_and_without_a_force_id(force_id, mapping, paused, excluded, expected):
    cat = catalog(delivery_force_id_mapping=mapping)
    assert plan(cat, force_id, paused=frozenset(paused), excluded=frozenset(excluded)) == expected


def test_the_plan_takes_the_groups_turns():
    cat = catalog(groups=[{"id": "g", "name": "G", "distribution": Distribution.round_robin, "clients": ["a", "b"]}])
    planned = plan(cat, turns={"g": 1})
    assert isinstance(planned, Plan)
    # Round robin: catalog order, rotated by the group's turn; the rest by priority.
    assert [s.accounts for s in planned.stages] == [("a2", "b1", "b2", "a1"), ("c1", "c2")]


def failed(account: str, reason: str | None = None) -> Attempt:
    return Attempt(account, account[0], "failed", reason)


@pytest.mark.parametrize(
    ("attempts", "duplicate", "skipped", "expected"),
    [
        ([Attempt("a1", "a", "succeeded"), failed("b1")], False, False, ("sold", None)),
        ([Attempt("a1", "a", "succeeded")], True, True, ("sold", None)),
        ([failed("a1")], True, False, ("duplicate", "duplicate lead; no buyer that takes duplicates bought it")),
        ([], True, False, ("duplicate", "duplicate lead; no buyer that takes duplicates bought it")),
        (
            [failed("a1", "buyer rejected: zip"), failed("b1")],
            False,
            False,
            ("unsold", "no delivery account accepted the lead (last: buyer rejected: zip)"),
        ),
        ([failed("a1")], False, True, ("unsold", "no delivery account accepted the lead (last: refused)")),
        ([], False, True, ("unsold", "every eligible delivery account is at its cap or has no order with room")),
        ([], False, False, ("unsold", "no eligible delivery account")),
    ],
)
def test_the_outcome_of_a_routed_lead(attempts, duplicate, skipped, expected):
    assert rules.outcome(attempts, duplicate=duplicate, skipped=skipped) == expected


def test_a_new_distribution_method_cannot_fall_through_to_another():
    """`order_accounts` matches every Distribution member (mypy's assert_never checks the match is
    exhaustive); an unknown value fails loudly instead of being treated as one of them."""
    with pytest.raises(AssertionError):
        rules.order_accounts("lottery", [], {}, 0)  # type: ignore[arg-type]
