"""What a run of a month has to do, decided in one place, by one pure function.

"Is it published? Did its drop change? Replace it? Which later months does it invalidate? Are later
months still built on a run a correction replaced?" used to be
answered separately by each Luigi task method and by :func:`pipeline.month.run_month`. Now every one of
them calls :func:`decide` with what it knows, and the publish step calls it again under the month's
exclusive lock, so the answer it acts on is the one that holds when it writes.

:func:`check_as_of` is the other pure rule of this module: which dates may be a month's as_of at all.
"""

from __future__ import annotations

import calendar
import dataclasses
import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from pipeline import drops
from pipeline.errors import ConfigError

# A drop may arrive a little before its as_of (time zones, a month closed early): this many days ahead
# of today are accepted, anything later is a typo.
FUTURE_MARGIN_DAYS = 3
AS_OF_CALENDARS = ("month_end", "any")


class Action(enum.Enum):
    NOTHING_TO_DO = "nothing to do"  # published from this drop (or only needed as a dependency)
    PUBLISH = "publish"  # not published yet
    REPLACE = "replace"  # published, the drop differs, and --replace says it is the correction
    REFUSE = "refuse"  # published, the drop differs, no --replace: immutable
    RECOMPUTE = "recompute"  # published from this drop, but later months still build on a replaced run


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str  # in words, for the log or (REFUSE) the error message
    recompute: tuple[date, ...] = ()  # published months after this one, rebuilt on top of it afterwards
    notice: str = ""  # something to tell even when there is nothing to do (luigi.cfg names an old folder)

    @property
    def runs(self) -> bool:
        """True when the month is (re)built and published."""
        return self.action in (Action.PUBLISH, Action.REPLACE)


def decide(
    as_of: date,
    published: object | None,
    changed: Mapping[str, tuple[str, str]] | None,
    *,
    replace: bool = False,
    as_dependency: bool = False,
    later: Iterable[date] = (),
    source: drops.Drop | Path | str | None = None,
    stale: Iterable[date] = (),
    configured: bool = False,
    corrected_from: Path | str | None = None,
) -> Decision:
    """The one decision for a run of month ``as_of``.

    ``published``: its run record when the lake has published it, else None. ``changed``: table ->
    (published sha256, sha256 now) of the drop files that differ from what was published; None when
    there is no drop folder to compare with. ``later``: the published months after ``as_of``: whatever
    rebuilds this month makes them stale, so they are recomputed on top of it (a month published out of
    order, or a correction). ``source``: the drop folder, for the messages. ``stale``: the published months
    from ``as_of`` on that were built on a run of their previous month that is no longer the published one
    (a correction whose recompute stopped halfway): a run of the month recomputes them and every month
    after them. ``configured``: the drop folder came from luigi.cfg [months], not from --source: a month
    corrected from another folder is then not compared with it (issue #15.2). ``corrected_from``: the
    folder a correction (``--replace``) of the published month came from, per its run record; else None."""
    after = tuple(sorted(d for d in later if d > as_of))
    stale = tuple(sorted(d for d in stale if d >= as_of))
    if published is None:
        if after:
            return Decision(
                Action.PUBLISH,
                f"month {as_of} is earlier than the published month(s) {_dates(after)}: it is published, then "
                f"they are recomputed on top of it",
                after,
            )
        return Decision(Action.PUBLISH, f"month {as_of} is not published yet")
    if as_dependency:
        return Decision(Action.NOTHING_TO_DO, f"month {as_of} is published; as a dependency it is not compared")
    if (
        changed
        and configured
        and not replace
        and corrected_from
        and not drops.same_place(str(corrected_from), str(source))
    ):
        notice = (
            f"month {as_of} is published from the correction in {corrected_from} (its run record says so); "
            f"luigi.cfg [months] still names {source}, which is not compared: set "
            f"'{as_of} = {corrected_from}' in luigi.cfg [months]"
        )
        return dataclasses.replace(_or_recompute(as_of, stale, later, notice), notice=notice)
    if changed is None:
        if replace:
            return Decision(
                Action.REFUSE,
                f"month {as_of}: --replace needs the corrected drop: pass --source DIR (nothing was published)",
            )
        return _or_recompute(as_of, stale, later, f"month {as_of} is published (no drop folder to compare with)")
    if not changed:
        return _or_recompute(as_of, stale, later, f"month {as_of} is already published from the same drop")
    files = "; ".join(f"{t}.csv published {old[:12]}, now {new[:12]}" for t, (old, new) in changed.items())
    if replace:
        return Decision(Action.REPLACE, f"replacing published month {as_of} ({files})", after)
    return Decision(
        Action.REFUSE,
        f"month {as_of} is published and immutable, but the drop in {source} differs from what was "
        f"published ({files}). If this drop is the correction, replace the month (it and every later month are "
        f"recomputed): luigi --module pipeline Month --as-of {as_of} --source {source} --replace",
    )


def _or_recompute(as_of: date, stale: tuple[date, ...], later: Iterable[date], reason: str) -> Decision:
    """Nothing to do for the month itself; but published months from ``as_of`` on that still build on a
    replaced run are recomputed, with every month after the first of them."""
    if not stale:
        return Decision(Action.NOTHING_TO_DO, reason)
    redo = tuple(sorted(d for d in later if d >= stale[0]))
    return Decision(
        Action.RECOMPUTE,
        f"{reason}; but month(s) {_dates(stale)} still build on a run that was replaced: {_dates(redo)} are "
        f"recomputed from their typed drops in the lake",
        redo,
    )


def _dates(days: Iterable[date]) -> str:
    return ", ".join(d.isoformat() for d in days)


def is_month_end(day: date) -> bool:
    return day.day == calendar.monthrange(day.year, day.month)[1]


def check_as_of(as_of: date, today: date, as_of_calendar: str = "month_end") -> None:
    """Refuse an as_of that is a typo: not a month end (unless ``[pipeline] as_of_calendar = any``), or
    later than today plus a few days (a month that has not happened cannot be published, and would
    become the live month)."""
    if as_of_calendar not in AS_OF_CALENDARS:
        raise ConfigError(
            f"luigi.cfg [pipeline] as_of_calendar = {as_of_calendar!r} is not one of {', '.join(AS_OF_CALENDARS)}"
        )
    if as_of_calendar == "month_end" and not is_month_end(as_of):
        last = as_of.replace(day=calendar.monthrange(as_of.year, as_of.month)[1])
        raise ConfigError(
            f"as_of {as_of} is not the last day of its month (did you mean {last}?); a month's as_of is its "
            f"month end. To run months on other dates, set as_of_calendar = any in luigi.cfg [pipeline]"
        )
    latest = today + timedelta(days=FUTURE_MARGIN_DAYS)
    if as_of > latest:
        raise ConfigError(
            f"as_of {as_of} is in the future (today is {today}; at most {FUTURE_MARGIN_DAYS} days ahead are "
            f"accepted): a typo? Nothing was run; pass the month's real as_of"
        )
