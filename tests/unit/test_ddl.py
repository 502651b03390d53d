"""pipeline.ddl for the real contract (sql/schema.sql): each statement is parsed back with sqlglot and
checked for what PostgreSQL relies on (names, types, keys, references, partitioning), not as a string."""

from __future__ import annotations

from datetime import date

import pytest
import sqlglot
from sqlglot import exp

from pipeline import ddl
from pipeline.schema import load_schema

SCHEMA = load_schema()
SUBSCRIPTIONS = SCHEMA.table("subscriptions")
FEB = date(2024, 2, 29)


def parse(statement: str) -> exp.Create:
    create = sqlglot.parse_one(statement, read="postgres")
    assert isinstance(create, exp.Create), statement
    return create


def target(create: exp.Create) -> tuple[str, str]:
    """(schema, table) the statement creates."""
    table = create.this.this if isinstance(create.this, exp.Schema) else create.this
    return table.db, table.name


def columns(create: exp.Create) -> dict[str, exp.ColumnDef]:
    return {c.name: c for c in create.this.expressions if isinstance(c, exp.ColumnDef)}


def constraint_kinds(column: exp.ColumnDef) -> set[type]:
    return {type(c.kind) for c in column.constraints}


def declared_types(table_name: str) -> dict[str, str]:
    """Each column's type as sql/schema.sql's own statement gives it, rendered the same way."""
    return {c.name: c.kind.sql("postgres") for c in SCHEMA.table(table_name).definition.this.expressions}


@pytest.mark.parametrize("table", SCHEMA.tables, ids=SCHEMA.table_names)
def test_live_table_is_the_declared_table_in_the_target_schema_with_its_key_and_references(table):
    create = parse(ddl.live_table(table, "consumers"))
    assert create.args["exists"], "IF NOT EXISTS: creating the consumers' tables is idempotent"
    assert target(create) == ("consumers", table.name)
    cols = columns(create)
    assert {name: c.kind.sql("postgres") for name, c in cols.items()} == declared_types(table.name)
    assert exp.PrimaryKeyColumnConstraint in constraint_kinds(cols[table.key])
    for column in table.columns:
        if column.references:
            (reference,) = [c.kind for c in cols[column.name].constraints if isinstance(c.kind, exp.Reference)]
            assert target(reference) == ("consumers", column.references), "a reference stays in the same schema"


def test_live_table_leaves_room_for_in_place_updates():
    statement = ddl.live_table(SUBSCRIPTIONS, "public")
    assert f"WITH (fillfactor={ddl.LIVE_FILLFACTOR})" in statement


def test_every_identifier_is_quoted_so_any_schema_name_works():
    statement = ddl.live_table(SUBSCRIPTIONS, "my schema")
    assert 'CREATE TABLE IF NOT EXISTS "my schema"."subscriptions" ("user_id" TEXT COLLATE "C"' in statement
    assert 'REFERENCES "my schema"."users" ("user_id")' in statement


@pytest.mark.parametrize("table", SCHEMA.tables, ids=SCHEMA.table_names)
def test_snapshot_table_adds_as_of_keys_on_key_and_as_of_and_is_partitioned_by_month(table):
    create = parse(ddl.snapshot_table(table, "consumers"))
    assert target(create) == ("consumers", f"{table.name}_snapshots")
    cols = columns(create)
    assert list(cols) == [*table.column_names, "as_of", "as_of_ts"]
    assert cols["as_of"].kind.sql("postgres") == "DATE"
    assert cols["as_of_ts"].kind.sql("postgres") == "TIMESTAMPTZ"  # as_of 00:00 UTC (issue #16)
    assert exp.NotNullColumnConstraint in constraint_kinds(cols["as_of"])
    assert exp.NotNullColumnConstraint in constraint_kinds(cols[table.key])
    assert not any(exp.Reference in constraint_kinds(c) for c in cols.values()), "no foreign keys on history"
    (key,) = [e for e in create.this.expressions if isinstance(e, exp.PrimaryKey)]
    assert [c.name for c in key.expressions] == [table.key, "as_of"]
    (partitioned,) = create.find_all(exp.PartitionedByProperty)
    assert partitioned.sql("postgres") == 'PARTITION BY LIST("as_of")'


def test_snapshot_key_keeps_its_declared_collation():
    cols = columns(parse(ddl.snapshot_table(SUBSCRIPTIONS, "public")))
    assert exp.CollateColumnConstraint in constraint_kinds(cols["user_id"]), "a partition must match its table"


def test_partition_name_is_the_snapshot_table_and_the_day():
    assert ddl.partition_name(SUBSCRIPTIONS, FEB) == "subscriptions_snapshots_20240229"


def test_staged_partition_defaults_and_checks_as_of_so_attach_needs_no_scan():
    create = parse(ddl.staged_partition(SUBSCRIPTIONS, "staging", FEB))
    assert target(create) == ("staging", "subscriptions_snapshots_20240229")
    cols = columns(create)
    assert list(cols) == [*SUBSCRIPTIONS.column_names, "as_of"]
    (default,) = [c.kind for c in cols["as_of"].constraints if isinstance(c.kind, exp.DefaultColumnConstraint)]
    assert "2024-02-29" in default.sql("postgres")
    (check,) = [e for e in create.this.expressions if isinstance(e, exp.Constraint)]
    assert check.name == ddl.STAGED_AS_OF_CHECK
    assert "as_of = CAST('2024-02-29' AS DATE)" in check.sql("postgres")


def test_temp_table_has_the_chosen_columns_without_constraints_and_drops_on_commit():
    statement = ddl.temp_table(SUBSCRIPTIONS, "live_rows", ["user_id", "monthly_fee"])
    assert statement.endswith(" ON COMMIT DROP")
    create = parse(statement.removesuffix(" ON COMMIT DROP"))
    assert create.args["kind"] == "TABLE" and target(create) == ("", "live_rows")
    assert "TEMPORARY" in statement
    cols = columns(create)
    assert list(cols) == ["user_id", "monthly_fee"]
    assert constraint_kinds(cols["user_id"]) == {exp.CollateColumnConstraint}, "collation kept, no key"
    assert cols["monthly_fee"].kind.sql("postgres") == declared_types("subscriptions")["monthly_fee"]


def test_temp_table_without_a_column_list_has_every_declared_column():
    create = parse(ddl.temp_table(SUBSCRIPTIONS, "t").removesuffix(" ON COMMIT DROP"))
    assert list(columns(create)) == SUBSCRIPTIONS.column_names


def test_all_tables_creates_live_tables_then_snapshot_tables_and_any_view_after_them():
    created = [parse(s) for s in ddl.all_tables(SCHEMA, "public")]
    tables = [target(c)[1] for c in created if c.kind == "TABLE"]
    assert tables == [*SCHEMA.table_names, *(f"{t}_snapshots" for t in SCHEMA.table_names)]
    assert tables.index("users") < tables.index("subscriptions"), "a referenced table first"
    kinds = [c.kind for c in created]
    assert kinds == sorted(kinds, key=lambda kind: kind == "VIEW"), "a view reads tables made before it"
