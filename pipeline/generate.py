"""Deterministic generator of StreamFlow monthly drops (synthetic, Telco-churn-like).

One drop is one folder ``month_NNN`` holding ``<table>.csv`` for every table of ``sql/schema.sql``,
header row, comma-delimited, every known user in every file (a full dump each month). The columns
and their order come from :mod:`pipeline.schema`; this module only knows, per column *name*, how
to make a value, and refuses a schema column it does not know.

How it stays fast and deterministic
-----------------------------------
Nothing is generated in Python loops and no month depends on the files of another. Every value
is a pure function of ``(seed, column tag, month, user index)`` through DuckDB's integer ``hash``,
and every CSV is streamed by ``COPY (SELECT ...) TO``, computed in parallel from one DuckDB table
of the run's user ids (~25 bytes a user; the only thing held). Rows leave in user-index order, so
the same parameters give byte-identical files whatever the thread count (for one DuckDB version:
the bytes depend on DuckDB's ``hash``). 1M users x 3 months take ~6 s on 2 cores.

Changes between months without state: a table that changes "for p of the users each month" gets,
per user and month, an event with probability p (a hash draw). The table's values for month ``m``
are drawn from the *epoch* ``e`` = the last month ``<= m`` with an event (or the user's sign-up
month). Rows of users without an event at ``m`` are therefore identical to month ``m - 1``.

* subscriptions: an event always changes the row (``months_active`` is the tenure *at the epoch*,
  so it moves only with an event), so ``subscription_change_rate`` is the share of changed rows.
* labels, payments, support: an event re-draws the values from the same distribution, which can
  land on the old value. The event probability is scaled up by the analytic chance of a different
  draw, so the ``*_change_rate`` parameters are again the expected share of *changed rows*, and the
  marginal distributions (e.g. ~25 % churners) stay the same month after month.
* usage: re-drawn for every user every month (continuous values, so every row changes).

A static per-user latent ``risk`` in [0, 1) ties the tables together the way real churn data is
tied: riskier users churn more, hold month-to-month contracts and fiber, watch less, skip more,
fail more payments and open more tickets.

User ids look like ``7590-VHVEG``: a three-round Feistel permutation of ``(index // 10000, index %
10000)`` over ``26**5 x 10**4`` keys, so they are unique for every index below 118,813,760,000 and
independent of ``seed`` (user ``i`` has the same id in every run).
"""

from __future__ import annotations

import argparse
import calendar
import logging
import os
import shutil
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb

from pipeline.duck import literal, quote
from pipeline.schema import Schema, Table, load_schema

log = logging.getLogger(__name__)

DEFAULT_START_AS_OF = date(2024, 1, 31)
DEFAULT_SEED = 42
DEFAULT_NEW_USER_RATE = 0.02
DEFAULT_SUBSCRIPTION_CHANGE_RATE = 0.05
DEFAULT_LABEL_CHANGE_RATE = 0.05
DEFAULT_PAYMENTS_CHANGE_RATE = 0.03
DEFAULT_SUPPORT_CHANGE_RATE = 0.03
DEFAULT_HIDDEN_COLUMNS_FROM_MONTH = 1

ID_DIGITS = 10_000  # 4 digits
ID_LETTERS = 26**5  # 5 upper-case letters
MAX_USERS = ID_DIGITS * ID_LETTERS
EXISTING_SIGNUP_DAYS = 6 * 365 + 1  # users of month 0 signed up within the ~6 years before as_of

_INTEGER_TYPES = ("INT", "BIGINT")
USER_TABLE = "generated_user_ids"


def month_folder_name(month: int) -> str:
    return f"month_{month:03d}"


def month_end_dates(start: date, n: int) -> list[date]:
    """``n`` consecutive month-end dates from ``start`` (which must itself be a month end)."""
    if start.day != calendar.monthrange(start.year, start.month)[1]:
        raise ValueError(f"start {start.isoformat()} is not the last day of its month")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    out = []
    year, month = start.year, start.month
    for _ in range(n):
        out.append(date(year, month, calendar.monthrange(year, month)[1]))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


# --------------------------------------------------------------------------------------------
# Distributions. Kept as plain functions of the risk r so the chance that a re-draw changes a
# row can be computed here (for the rate scaling) with exactly the numbers the SQL uses.

CHURN_SCALE = 0.75  # P(churn | r) = 0.75 r², mean 0.25
PAY_ZERO_BASE, PAY_ZERO_SLOPE = 0.93, 0.25  # P(no failed payment | r), mean ~0.805
PAY_SPLIT = (0.50, 0.75, 0.88, 0.95)  # cumulative shares of 1, 2, 3, 4 (else 5) failed payments
SUP_ZERO_BASE, SUP_ZERO_SLOPE = 0.80, 0.35  # P(no ticket | r), mean ~0.625


def _mean_over_risk(f: Callable[[float], float], steps: int = 20_000) -> float:
    """E[f(r)] for r ~ U(0, 1), midpoint rule."""
    return sum(f((k + 0.5) / steps) for k in range(steps)) / steps


def _p_label_redraw_differs() -> float:
    def differs(r: float) -> float:
        p = CHURN_SCALE * r * r
        return 2 * p * (1 - p)

    return _mean_over_risk(differs)


def _p_payments_redraw_differs() -> float:
    shares = [b - a for a, b in zip((0.0, *PAY_SPLIT), (*PAY_SPLIT, 1.0), strict=True)]

    def differs(r: float) -> float:
        q0 = PAY_ZERO_BASE - PAY_ZERO_SLOPE * r
        return 1 - q0**2 - sum(((1 - q0) * s) ** 2 for s in shares)

    return _mean_over_risk(differs)


def _p_support_redraw_differs() -> float:
    # With at least one ticket the resolution hours (4 decimals, continuous) differ almost surely,
    # so a re-draw leaves the row alone only when both draws have zero tickets.
    return _mean_over_risk(lambda r: 1 - (SUP_ZERO_BASE - SUP_ZERO_SLOPE * r) ** 2)


def _event_probability(what: str, changed_share: float, p_differs: float) -> float:
    p = changed_share / p_differs
    if p > 1:
        log.warning(
            "%s change rate %.3f is above the reachable %.3f; using the maximum",
            what,
            changed_share,
            p_differs,
        )
        return 1.0
    return p


# --------------------------------------------------------------------------------------------
# SQL building blocks


def _tag(name: str) -> int:
    """A stable integer per draw name (crc32 does not depend on Python's hash seed)."""
    return zlib.crc32(name.encode("utf-8"))


def user_ids_query(n: int, first: int = 0) -> str:
    """SELECT i, user_id for indexes ``first .. first + n - 1``, in index order.

    Feistel rounds over (L, R) = (i // 10**4, i % 10**4): R += F1(L); L += F2(R); R += F3(L),
    modulo 10**4 and 26**5. Each round is invertible whatever F is, so the map is a bijection.
    """
    d, n_letters = ID_DIGITS, ID_LETTERS

    def f(x: str, name: str, mod: int) -> str:
        return f"(hash({x}, {_tag('user_id.' + name)}::BIGINT) % {mod})::BIGINT"

    letters = " || ".join(f"chr(CAST(65 + (l1 // {26**k}) % 26 AS INTEGER))" for k in range(4, -1, -1))
    q = f"SELECT i, i // {d} AS l0, i % {d} AS r0 FROM range({first}, {first + n}) t(i)"
    q = f"SELECT i, l0, (r0 + {f('l0', 'f1', d)}) % {d} AS r1 FROM ({q})"
    q = f"SELECT i, r1, (l0 + {f('r1', 'f2', n_letters)}) % {n_letters} AS l1 FROM ({q})"
    q = f"SELECT i, l1, (r1 + {f('l1', 'f3', d)}) % {d} AS r2 FROM ({q})"
    return f"SELECT i, lpad(r2::VARCHAR, 4, '0') || '-' || {letters} AS user_id FROM ({q})"


@dataclass(frozen=True)
class _Out:
    """One output column: the declared kind, an SQL expression over the last layer, and for
    NUMERIC the number of decimals (the expression then yields an integer count of 10**-scale)."""

    kind: str  # TEXT, DATE, BOOLEAN, INT, NUMERIC
    expr: str
    scale: int = 0


@dataclass(frozen=True)
class _TableSpec:
    epochs: tuple[str, ...]  # which epoch columns (e_<name>) the table needs
    layers: tuple[dict[str, str], ...]  # named intermediate expressions, each layer sees the previous
    outputs: dict[str, _Out]


class _Month:
    """SQL for one month of one generation run."""

    def __init__(self, gen: _Generation, month: int):
        self.gen = gen
        self.m = month
        self.n = gen.users_in_month(month)

    def u(self, name: str, month: str | int) -> str:
        """Uniform [0, 1) from (seed, name, month, i). The outer hash is needed: DuckDB's
        multi-argument hash ends in a plain combine, so without it two names give correlated draws."""
        return (
            f"((hash(hash({self.gen.seed}::BIGINT, {_tag(name)}::BIGINT, ({month})::BIGINT, i)) >> 11)"
            "::DOUBLE / 9007199254740992.0)"
        )

    def epoch(self, name: str) -> str:
        p = self.gen.event_probability[name]
        terms = [
            f"CASE WHEN {self.u(name + '.event', j)} < {p!r}::DOUBLE THEN {j} ELSE 0 END" for j in range(1, self.m + 1)
        ]
        return f"greatest(s, {', '.join(terms)})" if terms else "s"

    def base(self, epochs: Sequence[str]) -> str:
        """i, s (sign-up month index, 0 for users of month 0), user_id, risk r, signup_date, m0
        (calendar months from sign-up to as_of of month 0; negative for later sign-ups) and e_<epoch>."""
        g = self.gen
        n0, k = g.users, g.new_per_month
        s = f"CASE WHEN i < {n0} THEN 0 ELSE 1 + (i - {n0}) // {k} END" if k and self.n > n0 else "0"
        as_of0 = g.as_of[0]
        u_signup = self.u("signup_date", -1)
        signup_existing = f"DATE '{as_of0.isoformat()}' - CAST(floor({u_signup} * {EXISTING_SIGNUP_DAYS}) AS INTEGER)"
        if self.m > 0 and k:
            starts = ", ".join(f"DATE '{d.replace(day=1).isoformat()}'" for d in g.as_of[1 : self.m + 1])
            days = ", ".join(str(d.day) for d in g.as_of[1 : self.m + 1])
            signup_new = f"[{starts}][s] + CAST(floor({u_signup} * [{days}][s]) AS INTEGER)"
            signup = f"CASE WHEN s = 0 THEN {signup_existing} ELSE {signup_new} END"
        else:
            signup = signup_existing
        epoch_cols = "".join(f", {self.epoch(e)} AS e_{e}" for e in epochs)
        # the id table is scanned in parallel (range() is a single-threaded source)
        q = f"SELECT i, user_id, {s} AS s FROM {USER_TABLE} WHERE i < {self.n}"
        q = f"SELECT i, user_id, s, {self.u('risk', -1)} AS r, {signup} AS signup_date{epoch_cols} FROM ({q})"
        month0 = as_of0.year * 12 + as_of0.month
        return f"SELECT *, {month0} - (year(signup_date) * 12 + month(signup_date)) AS m0 FROM ({q})"

    def table_query(self, table: Table, spec: _TableSpec) -> str:
        q = self.base(spec.epochs)
        for layer in spec.layers:
            q = f"SELECT *, {', '.join(f'{expr} AS {name}' for name, expr in layer.items())} FROM ({q})"
        cols = []
        for col in self.gen.columns_in_month(table, self.m):
            out = spec.outputs[col.name]
            cols.append(f"{_render(col.name, out)} AS {quote(col.name)}")
        return f"SELECT {', '.join(cols)} FROM ({q})"


def _render(name: str, out: _Out) -> str:
    """The CSV text rules: booleans True/False, decimals fixed-point with exactly ``scale`` places."""
    if out.kind == "BOOLEAN":
        return f"CASE WHEN {out.expr} THEN 'True' ELSE 'False' END"
    if out.kind == "NUMERIC":
        # an integer count of 10**-scale; the double division is exact to far below 10**-scale and
        # the cast rounds it back to the exact decimal, printed with exactly `scale` places
        return f"(CAST({out.expr} AS BIGINT)::DOUBLE / {10**out.scale})::DECIMAL(18, {out.scale})"
    if out.kind == "INT":
        return f"CAST({out.expr} AS BIGINT)"
    if out.kind == "DATE":
        return f"CAST({out.expr} AS DATE)"
    if out.kind == "TEXT":
        return f"CAST({out.expr} AS VARCHAR)"
    raise AssertionError(f"{name}: unknown kind {out.kind}")


def _specs(mo: _Month) -> dict[str, _TableSpec]:
    u = mo.u
    m = mo.m
    has_net = "(u_net < 0.64 + 0.28 * r)"
    return {
        "users": _TableSpec(
            epochs=(),
            layers=(
                {
                    "u_gender": u("gender", -1),
                    "u_senior": u("senior", -1),
                    "u_family": u("family", -1),
                    "u_dependents": u("dependents", -1),
                },
            ),
            outputs={
                "user_id": _Out("TEXT", "user_id"),
                "signup_date": _Out("DATE", "signup_date"),
                "user_gender": _Out("TEXT", "CASE WHEN u_gender < 0.5 THEN 'Male' ELSE 'Female' END"),
                "user_is_senior": _Out("BOOLEAN", "u_senior < 0.16"),
                "has_family": _Out("BOOLEAN", "u_family < 0.48"),
                "has_dependents": _Out(
                    "BOOLEAN",
                    "CASE WHEN u_family < 0.48 THEN u_dependents < 0.55 ELSE u_dependents < 0.08 END",
                ),
            },
        ),
        "subscriptions": _TableSpec(
            epochs=("subscription",),
            layers=(
                {
                    # static per user: network and billing preference
                    "u_net": u("net_service", -1),
                    "u_paperless": u("paperless_billing", -1),
                    # re-drawn at each subscription event
                    "u_tv": u("plan_stream_tv", "e_subscription"),
                    "u_movies": u("plan_stream_movies", "e_subscription"),
                    "u_contract": u("contract_type", "e_subscription"),
                    "u_security": u("add_on_security", "e_subscription"),
                    "u_backup": u("add_on_backup", "e_subscription"),
                    "u_device": u("add_on_device_protect", "e_subscription"),
                    "u_support": u("add_on_support", "e_subscription"),
                    "u_fee": u("monthly_fee", "e_subscription"),
                    "u_paid": u("total_paid", "e_subscription"),
                },
                {
                    "net_service": (
                        f"CASE WHEN u_net < 0.30 + 0.28 * r THEN 'Fiber optic' WHEN {has_net} THEN 'DSL' ELSE 'No' END"
                    ),
                    "tv": f"{has_net} AND u_tv < 0.55",
                    "movies": f"{has_net} AND u_movies < 0.55",
                    "contract_type": (
                        "CASE WHEN u_contract < 0.15 + 0.80 * r THEN 'Month-to-month' "
                        "WHEN u_contract < 0.36 + 0.80 * r THEN 'One year' ELSE 'Two year' END"
                    ),
                    "paperless": "u_paperless < 0.45 + 0.28 * r",
                    "security": f"{has_net} AND u_security < 0.45 - 0.25 * r",
                    "backup": f"{has_net} AND u_backup < 0.45",
                    "device": f"{has_net} AND u_device < 0.44",
                    "support": f"{has_net} AND u_support < 0.47 - 0.25 * r",
                    # tenure at the epoch: moves only when the row changes
                    "months_active": "m0 + e_subscription",
                },
                {
                    # cents: 18.25 base + service + plans + 5.00 per add-on + 0..15.50 → 18.25..118.75
                    "fee_cents": (
                        "1825 + CASE net_service WHEN 'Fiber optic' THEN 4500 WHEN 'DSL' THEN 2000 ELSE 0 END"
                        " + 1000 * tv::INTEGER + 1000 * movies::INTEGER"
                        " + 500 * (security::INTEGER + backup::INTEGER + device::INTEGER + support::INTEGER)"
                        " + CAST(floor(u_fee * 1551) AS INTEGER)"
                    ),
                },
                {"paid_cents": "CAST(floor(fee_cents * months_active * (0.95 + 0.05 * u_paid)) AS BIGINT)"},
            ),
            outputs={
                "user_id": _Out("TEXT", "user_id"),
                "months_active": _Out("INT", "months_active"),
                "plan_stream_tv": _Out("BOOLEAN", "tv"),
                "plan_stream_movies": _Out("BOOLEAN", "movies"),
                "contract_type": _Out("TEXT", "contract_type"),
                "paperless_billing": _Out("BOOLEAN", "paperless"),
                "monthly_fee": _Out("NUMERIC", "fee_cents", 2),
                "total_paid": _Out("NUMERIC", "paid_cents", 2),
                "net_service": _Out("TEXT", "net_service"),
                "add_on_security": _Out("BOOLEAN", "security"),
                "add_on_backup": _Out("BOOLEAN", "backup"),
                "add_on_device_protect": _Out("BOOLEAN", "device"),
                "add_on_support": _Out("BOOLEAN", "support"),
            },
        ),
        "usage_agg_30d": _TableSpec(
            epochs=(),
            layers=(
                {
                    "u_watch_base": u("watch_hours_30d.base", -1),
                    "u_watch": u("watch_hours_30d", m),
                    "u_session_base": u("avg_session_mins_7d.base", -1),
                    "u_session": u("avg_session_mins_7d", m),
                    "u_devices_base": u("unique_devices_30d.base", -1),
                    "u_devices": u("unique_devices_30d", m),
                    "u_skips": u("skips_7d", m),
                    "u_skips2": u("skips_7d.2", m),
                    "u_rebuffer": u("rebuffer_events_7d", m),
                },
            ),
            outputs={
                "user_id": _Out("TEXT", "user_id"),
                # hours: per-user level (lower for risky users) x monthly swing; 0.6 .. 300
                "watch_hours_30d": _Out(
                    "NUMERIC",
                    "least(3000000, floor((2 + 198 * u_watch_base * (1 - 0.5 * r)) * (0.3 + 1.2 * u_watch) * 10000))",
                    4,
                ),
                "avg_session_mins_7d": _Out(
                    "NUMERIC", "floor((4 + 116 * u_session * (0.4 + 0.6 * u_session_base)) * 10000)", 4
                ),
                "unique_devices_30d": _Out("INT", "1 + floor(6 * u_devices * (0.3 + 0.7 * u_devices_base))"),
                "skips_7d": _Out("INT", "floor(60 * u_skips * u_skips2 * (0.5 + r))"),
                "rebuffer_events_7d": _Out("INT", "floor(25 * u_rebuffer * u_rebuffer * u_rebuffer)"),
            },
        ),
        "payments_agg_90d": _TableSpec(
            epochs=("payments",),
            layers=(
                {
                    "u_pay": u("failed_payments_90d", "e_payments"),
                    "q0": f"{PAY_ZERO_BASE} - {PAY_ZERO_SLOPE} * r",
                },
                {"w": "(u_pay - q0) / (1 - q0)"},
            ),
            outputs={
                "user_id": _Out("TEXT", "user_id"),
                "failed_payments_90d": _Out(
                    "INT",
                    "CASE WHEN u_pay < q0 THEN 0 "
                    + " ".join(f"WHEN w < {c} THEN {k}" for k, c in enumerate(PAY_SPLIT, start=1))
                    + " ELSE 5 END",
                ),
            },
        ),
        "support_agg_90d": _TableSpec(
            epochs=("support",),
            layers=(
                {
                    "u_tickets": u("support_tickets_90d", "e_support"),
                    "u_hours": u("ticket_avg_resolution_hrs_90d", "e_support"),
                    "q0": f"{SUP_ZERO_BASE} - {SUP_ZERO_SLOPE} * r",
                },
                {"w": "(u_tickets - q0) / (1 - q0)"},
                {"tickets": "CASE WHEN u_tickets < q0 THEN 0 ELSE least(10, 1 + floor(10 * w * w)) END"},
            ),
            outputs={
                "user_id": _Out("TEXT", "user_id"),
                "support_tickets_90d": _Out("INT", "tickets"),
                "ticket_avg_resolution_hrs_90d": _Out(
                    "NUMERIC",
                    "CASE WHEN tickets = 0 THEN 0 ELSE floor((0.5 + 95.5 * u_hours * u_hours) * 10000) END",
                    4,
                ),
            },
        ),
        "labels": _TableSpec(
            epochs=("label",),
            layers=({"u_churn": u("churn_label", "e_label")},),
            outputs={
                "user_id": _Out("TEXT", "user_id"),
                "churn_label": _Out("BOOLEAN", f"u_churn < {CHURN_SCALE} * r * r"),
            },
        ),
    }


class _Generation:
    def __init__(
        self,
        *,
        schema: Schema,
        users: int,
        months: int,
        seed: int,
        start_as_of: date,
        new_user_rate: float,
        subscription_change_rate: float,
        label_change_rate: float,
        payments_change_rate: float,
        support_change_rate: float,
        hidden_columns_from_month: int,
    ):
        if users < 1:
            raise ValueError(f"users must be >= 1, got {users}")
        if months < 1:
            raise ValueError(f"months must be >= 1, got {months}")
        if not -(2**63) <= seed < 2**63:
            raise ValueError("seed must fit in a signed 64-bit integer")
        rates = {
            "new_user_rate": new_user_rate,
            "subscription_change_rate": subscription_change_rate,
            "label_change_rate": label_change_rate,
            "payments_change_rate": payments_change_rate,
            "support_change_rate": support_change_rate,
        }
        for name, value in rates.items():
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        self.schema = schema
        self.users = users
        self.months = months
        self.seed = int(seed)
        self.as_of = month_end_dates(start_as_of, months)
        self.new_per_month = round(users * new_user_rate)
        self.hidden_columns_from_month = hidden_columns_from_month
        if self.users_in_month(months - 1) > MAX_USERS:
            raise ValueError(f"at most {MAX_USERS:,} users fit the id format")
        self.event_probability = {
            "subscription": subscription_change_rate,  # an event always changes the row
            "label": _event_probability("label", label_change_rate, _p_label_redraw_differs()),
            "payments": _event_probability("payments", payments_change_rate, _p_payments_redraw_differs()),
            "support": _event_probability("support", support_change_rate, _p_support_redraw_differs()),
        }
        self._check_schema()

    def users_in_month(self, month: int) -> int:
        return self.users + month * self.new_per_month

    def columns_in_month(self, table: Table, month: int):
        hide = month < self.hidden_columns_from_month
        return [c for c in table.columns if not (hide and c.hidden_at_start)]

    def _check_schema(self) -> None:
        specs = _specs(_Month(self, 0))
        problems = []
        for table in self.schema.tables:
            spec = specs.get(table.name)
            if spec is None:
                problems.append(f"table {table.name!r} (the generator knows {', '.join(specs)})")
                continue
            for col in table.columns:
                out = spec.outputs.get(col.name)
                if out is None:
                    problems.append(f"column {table.name}.{col.name}")
                    continue
                declared = "INT" if col.pg_type in _INTEGER_TYPES else col.pg_type
                if declared != out.kind:
                    problems.append(f"column {table.name}.{col.name} declared {col.pg_type}, generated as {out.kind}")
                elif out.kind == "NUMERIC" and col.precision is not None and (col.scale or 0) < out.scale:
                    problems.append(
                        f"column {table.name}.{col.name} declared NUMERIC({col.precision}, "
                        f"{col.scale or 0}), generated with {out.scale} decimals"
                    )
        if problems:
            raise ValueError("sql/schema.sql declares what the generator cannot produce: " + "; ".join(problems))

    def write_month(self, con: duckdb.DuckDBPyConnection, month: int, folder: Path) -> None:
        mo = _Month(self, month)
        specs = _specs(mo)
        partial = folder.with_name(f".{folder.name}.partial")
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir(parents=True)
        for table in self.schema.tables:
            target = partial / f"{table.name}.csv"
            query = mo.table_query(table, specs[table.name])
            con.execute(f"COPY ({query}) TO {literal(str(target))} (HEADER, DELIMITER ',')")
        if folder.exists():
            for table in self.schema.tables:
                os.replace(partial / f"{table.name}.csv", folder / f"{table.name}.csv")
            partial.rmdir()
        else:
            partial.rename(folder)


def generate_drops(
    out_dir: Path,
    users: int,
    months: int,
    seed: int = DEFAULT_SEED,
    start_as_of: date = DEFAULT_START_AS_OF,
    *,
    new_user_rate: float = DEFAULT_NEW_USER_RATE,
    subscription_change_rate: float = DEFAULT_SUBSCRIPTION_CHANGE_RATE,
    label_change_rate: float = DEFAULT_LABEL_CHANGE_RATE,
    payments_change_rate: float = DEFAULT_PAYMENTS_CHANGE_RATE,
    support_change_rate: float = DEFAULT_SUPPORT_CHANGE_RATE,
    hidden_columns_from_month: int = DEFAULT_HIDDEN_COLUMNS_FROM_MONTH,
    schema: Schema | None = None,
    threads: int | None = None,
    memory_limit: str | None = None,
) -> list[tuple[date, Path]]:
    """Write ``months`` drops ``out_dir/month_000 ..`` and return ``(as_of, folder)`` per month.

    Month 0 has ``users`` users; every later month adds ``round(users * new_user_rate)`` sign-ups
    (sign-up date inside that month) and is again a full dump. Between consecutive months about
    ``subscription_change_rate`` / ``label_change_rate`` / ``payments_change_rate`` /
    ``support_change_rate`` of the users have a changed row in that table; usage changes for all.
    Columns marked "hidden at start" in the schema are left out of months before
    ``hidden_columns_from_month`` (0 = always present). Same arguments, same bytes (whatever
    ``threads``). ``memory_limit`` (e.g. "512MB") caps DuckDB; beyond it DuckDB spills to a
    temporary folder. Unbounded, 5M users peak at ~0.8 GB RSS, 1M at ~0.4 GB.
    """
    gen = _Generation(
        schema=schema or load_schema(),
        users=users,
        months=months,
        seed=seed,
        start_as_of=start_as_of,
        new_user_rate=new_user_rate,
        subscription_change_rate=subscription_change_rate,
        label_change_rate=label_change_rate,
        payments_change_rate=payments_change_rate,
        support_change_rate=support_change_rate,
        hidden_columns_from_month=hidden_columns_from_month,
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory(prefix="streamflow-generate-") as spill:
        con = duckdb.connect(":memory:")
        try:
            con.execute("SET preserve_insertion_order = true")  # rows leave in user-index order
            con.execute("SET enable_progress_bar = false")
            con.execute("SET temp_directory = ?", [spill])  # not ./.tmp in the current directory
            if memory_limit:
                con.execute("SET memory_limit = ?", [memory_limit])
            if threads:
                con.execute(f"SET threads = {int(threads)}")
            # every user id of the run, computed once (~25 bytes a user) and then scanned in parallel
            con.execute(f"CREATE TEMP TABLE {USER_TABLE} AS {user_ids_query(gen.users_in_month(months - 1))}")
            for month, as_of in enumerate(gen.as_of):
                started = time.perf_counter()
                folder = out_dir / month_folder_name(month)
                gen.write_month(con, month, folder)
                written.append((as_of, folder))
                log.info(
                    "wrote %s (as_of %s): %s users x %d tables in %.2f s",
                    folder,
                    as_of.isoformat(),
                    f"{gen.users_in_month(month):,}",
                    len(gen.schema.tables),
                    time.perf_counter() - started,
                )
        finally:
            con.close()
    return written


def _parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not a YYYY-MM-DD date") from e


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.generate",
        description="Write deterministic synthetic StreamFlow monthly drops.",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder that receives month_000, month_001, ...")
    parser.add_argument("--users", type=int, required=True, help="users in month 0")
    parser.add_argument("--months", type=int, required=True, help="number of monthly drops")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--start", type=_parse_date, default=DEFAULT_START_AS_OF, help="as_of of month 0, a month end")
    parser.add_argument("--new-user-rate", type=float, default=DEFAULT_NEW_USER_RATE)
    parser.add_argument("--subscription-change-rate", type=float, default=DEFAULT_SUBSCRIPTION_CHANGE_RATE)
    parser.add_argument("--label-change-rate", type=float, default=DEFAULT_LABEL_CHANGE_RATE)
    parser.add_argument("--payments-change-rate", type=float, default=DEFAULT_PAYMENTS_CHANGE_RATE)
    parser.add_argument("--support-change-rate", type=float, default=DEFAULT_SUPPORT_CHANGE_RATE)
    parser.add_argument(
        "--hidden-columns-from-month",
        type=int,
        default=DEFAULT_HIDDEN_COLUMNS_FROM_MONTH,
        help="first month that contains the columns marked 'hidden at start' (0 = every month)",
    )
    parser.add_argument("--threads", type=int, default=None, help="DuckDB threads (default: all cores)")
    parser.add_argument("--memory-limit", default=None, help="DuckDB memory limit, e.g. 512MB (default: DuckDB's)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        generate_drops(
            args.out,
            args.users,
            args.months,
            seed=args.seed,
            start_as_of=args.start,
            new_user_rate=args.new_user_rate,
            subscription_change_rate=args.subscription_change_rate,
            label_change_rate=args.label_change_rate,
            payments_change_rate=args.payments_change_rate,
            support_change_rate=args.support_change_rate,
            hidden_columns_from_month=args.hidden_columns_from_month,
            threads=args.threads,
            memory_limit=args.memory_limit,
        )
    except ValueError as e:
        parser.error(str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
