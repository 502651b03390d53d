"""The one decision of a month's run (issue #13 point 3, issue #20): every branch of decide() and check_as_of()."""

from __future__ import annotations

from datetime import date

import pytest

from pipeline.decide import Action, Decision, check_as_of, decide
from pipeline.errors import ConfigError

JAN, FEB, MAR = date(2024, 1, 31), date(2024, 2, 29), date(2024, 3, 31)
RECORD = {"as_of": FEB.isoformat(), "status": "published", "run_id": "r1"}
CHANGED = {"labels": ("a" * 64, "b" * 64)}


def test_an_unpublished_month_is_published():
    assert decide(FEB, None, None) == Decision(Action.PUBLISH, "month 2024-02-29 is not published yet")


def test_an_unpublished_month_before_published_ones_recomputes_them():  # issue #20 case 3
    decision = decide(FEB, None, None, later=[MAR, JAN])
    assert decision.action is Action.PUBLISH and decision.runs
    assert decision.recompute == (MAR,)
    assert "earlier than the published month(s) 2024-03-31" in decision.reason


def test_a_published_month_as_a_dependency_is_never_compared():
    decision = decide(FEB, RECORD, CHANGED, as_dependency=True, later=[MAR])
    assert decision.action is Action.NOTHING_TO_DO and not decision.runs and decision.recompute == ()


def test_a_published_month_without_a_folder_to_compare_is_done():
    assert decide(FEB, RECORD, None).action is Action.NOTHING_TO_DO


def test_replace_without_a_folder_is_refused():
    decision = decide(FEB, RECORD, None, replace=True)
    assert decision.action is Action.REFUSE and "--source DIR" in decision.reason


@pytest.mark.parametrize("replace", [False, True])
def test_a_published_month_from_the_same_drop_is_done(replace):
    decision = decide(FEB, RECORD, {}, replace=replace, later=[MAR])
    assert decision == Decision(Action.NOTHING_TO_DO, "month 2024-02-29 is already published from the same drop")


def test_a_changed_drop_is_refused_with_the_command_that_replaces():
    decision = decide(FEB, RECORD, CHANGED, source="/drops/feb", later=[MAR])
    assert decision.action is Action.REFUSE and decision.recompute == ()
    assert decision.reason == (
        "month 2024-02-29 is published and immutable, but the drop in /drops/feb differs from what was published "
        "(labels.csv published aaaaaaaaaaaa, now bbbbbbbbbbbb). If this drop is the correction, replace the month "
        "(it and every later month are recomputed): "
        "luigi --module pipeline Month --as-of 2024-02-29 --source /drops/feb --replace"
    )


def test_a_changed_drop_with_replace_replaces_and_recomputes_later_months():
    decision = decide(FEB, RECORD, CHANGED, replace=True, later=[MAR, JAN])
    assert decision.action is Action.REPLACE and decision.runs
    assert decision.recompute == (MAR,)
    assert "labels.csv published aaaaaaaaaaaa, now bbbbbbbbbbbb" in decision.reason


# --- issue #15: months left on a replaced run, and luigi.cfg naming the folder a correction replaced ---


@pytest.mark.parametrize("changed", [{}, None])
def test_months_built_on_a_replaced_run_are_recomputed_with_every_later_month(changed):
    decision = decide(JAN, RECORD, changed, stale=[MAR], later=[JAN, FEB, MAR, date(2024, 4, 30)])
    assert decision.action is Action.RECOMPUTE and not decision.runs
    assert decision.recompute == (MAR, date(2024, 4, 30))
    assert "month(s) 2024-03-31 still build on a run that was replaced" in decision.reason


def test_a_stale_month_as_a_dependency_is_not_recomputed():
    assert decide(FEB, RECORD, {}, stale=[FEB], as_dependency=True).action is Action.NOTHING_TO_DO


def test_the_configured_folder_of_a_corrected_month_is_not_compared():
    decision = decide(FEB, RECORD, CHANGED, source="/cfg/feb", configured=True, corrected_from="/fixed/feb")
    assert decision.action is Action.NOTHING_TO_DO
    assert (
        decision.notice
        == decision.reason
        == (
            "month 2024-02-29 is published from the correction in /fixed/feb (its run record says so); luigi.cfg "
            "[months] still names /cfg/feb, which is not compared: set '2024-02-29 = /fixed/feb' in luigi.cfg [months]"
        )
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"configured": False, "corrected_from": "/fixed/feb"},  # given with --source: compared
        {"configured": True, "corrected_from": None},  # never corrected: the configured folder is its source
        {"configured": True, "corrected_from": "/cfg/feb"},  # corrected from the configured folder itself
    ],
)
def test_a_differing_drop_is_still_refused_unless_a_correction_came_from_elsewhere(kwargs):
    assert decide(FEB, RECORD, CHANGED, source="/cfg/feb", **kwargs).action is Action.REFUSE


def test_decisions_are_frozen():
    with pytest.raises(AttributeError):
        decide(FEB, None, None).action = Action.REFUSE  # type: ignore[misc]


# --- which dates may be an as_of (issue #20 case 5) ---


@pytest.mark.parametrize("as_of", [JAN, FEB, MAR, date(2023, 2, 28), date(2024, 12, 31)])
def test_month_ends_are_accepted(as_of):
    check_as_of(as_of, today=date(2025, 1, 1))


def test_a_day_inside_a_month_is_refused_naming_its_month_end():
    expected = r"as_of 2024-02-15 is not the last day of its month \(did you mean 2024-02-29"
    with pytest.raises(ConfigError, match=expected):
        check_as_of(date(2024, 2, 15), today=date(2025, 1, 1))


def test_any_calendar_accepts_any_day():
    check_as_of(date(2024, 2, 15), today=date(2025, 1, 1), as_of_calendar="any")


def test_an_unknown_calendar_is_refused():
    with pytest.raises(ConfigError, match="as_of_calendar = 'weekly' is not one of month_end, any"):
        check_as_of(JAN, today=date(2025, 1, 1), as_of_calendar="weekly")


def test_a_future_month_is_refused():
    with pytest.raises(ConfigError, match=r"as_of 2099-12-31 is in the future \(today is 2025-01-01"):
        check_as_of(date(2099, 12, 31), today=date(2025, 1, 1))


def test_a_month_end_a_few_days_ahead_is_accepted_and_more_is_not():
    check_as_of(date(2025, 1, 31), today=date(2025, 1, 28))
    with pytest.raises(ConfigError, match="in the future"):
        check_as_of(date(2025, 1, 31), today=date(2025, 1, 27))
