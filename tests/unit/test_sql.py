"""Named SQL parameters (shared/sql.py): numbered once, in order; fragments inlined; every binding
mistake refused before the statement reaches PostgreSQL."""

from __future__ import annotations

import uuid

import pytest

from shared import outbox
from shared.sql import statement


def test_names_become_numbers_in_order_of_first_use_and_a_repeat_reuses_its_number():
    text, args = statement(
        "UPDATE t SET a = :a, b = :b::jsonb WHERE id = :id AND (a IS NULL OR :a = 'x')", id=7, a="x", b={}
    ).compiled()
    assert text == "UPDATE t SET a = $1, b = $2::jsonb WHERE id = $3 AND (a IS NULL OR $1 = 'x')"
    assert args == ["x", {}, 7]


def test_casts_and_words_with_colons_are_not_parameters():
    text, args = statement("SELECT '12:30'::time, x::text, :p::int", p=1).compiled()
    assert text == "SELECT '12:30'::time, x::text, $1::int" and args == [1]


def test_a_fragment_goes_in_with_its_parameters_and_shares_equal_ones():
    inner = statement("(SELECT :lead_id AS id, :day AS day)", lead_id=1, day="2026-01-01")
    text, args = statement("SELECT :inner, :lead_id", inner=inner, lead_id=1).compiled()
    assert text == "SELECT (SELECT $1 AS id, $2 AS day), $1"
    assert args == [1, "2026-01-01"]


@pytest.mark.parametrize(
    ("stmt", "error", "match"),
    [
        (statement("SELECT :a, :b", a=1), KeyError, ":b not bound"),
        (statement("SELECT :a", a=1, typo=2), KeyError, ":typo not in the statement"),
        (
            statement("SELECT :a, :f", a=1, f=statement("(:a)", a=2)),
            ValueError,
            ":a bound to two different values",
        ),
    ],
)
def test_a_binding_mistake_is_refused_not_sent(stmt, error, match):
    with pytest.raises(error, match=match):
        stmt.compiled()


def test_with_event_writes_one_outbox_row_per_row_of_its_source():
    event = outbox.event("lead.sold", {"x": 1}, message_id=uuid.UUID(int=1))
    ctes = statement(
        "decided AS (UPDATE leads SET status = :status WHERE id = :lead_id RETURNING id)", status="sold", lead_id=9
    )
    text, args = outbox.with_event(ctes, event, source="decided", select="1 AS one").compiled()
    assert text.startswith("WITH decided AS (UPDATE leads SET status = $1 WHERE id = $2 RETURNING id), event AS (")
    assert "FROM decided RETURNING id) SELECT 1 AS one, (SELECT count(pg_notify(" in text
    assert args[:3] == ["sold", 9, uuid.UUID(int=1)]
    assert args[3:6] == ["events", "lead.sold", {"x": 1}]
