"""pipeline.pg.live.upsert_sql, rendered without a server (``as_string(None)``): the live upsert's shape.

An update that changes nothing would still write a new row version, so a row is only updated when its
values differ (``IS DISTINCT FROM``, which also compares NULLs); a table whose every column is in the
key has nothing to update (``DO NOTHING``, as sqlite-utils does).
"""

from __future__ import annotations

from psycopg import sql

from pipeline.pg.live import upsert_sql

SOURCE = sql.SQL("SELECT * FROM incoming")


def render(columns: list[str], keys: list[str], table: sql.Identifier | None = None, **options: str) -> str:
    return upsert_sql(table or sql.Identifier("live", "users"), columns, keys, SOURCE, **options).as_string(None)


def test_upsert_inserts_every_column_from_the_source():
    statement = render(["user_id", "plan", "fee"], ["user_id"])
    assert statement.startswith('INSERT INTO "live"."users" AS "t" ("user_id", "plan", "fee") SELECT * FROM incoming ')


def test_conflict_on_the_key_updates_only_the_value_columns_from_excluded():
    statement = render(["user_id", "plan", "fee"], ["user_id"])
    assert ' ON CONFLICT ("user_id") DO UPDATE SET "plan" = EXCLUDED."plan", "fee" = EXCLUDED."fee" ' in statement
    assert '"user_id" = EXCLUDED' not in statement, "the key is never overwritten"


def test_a_row_is_only_updated_when_some_value_is_distinct():
    statement = render(["user_id", "plan", "fee"], ["user_id"])
    assert statement.endswith(' WHERE ("t"."plan", "t"."fee") IS DISTINCT FROM ("excluded"."plan", "excluded"."fee")')


def test_every_column_in_the_key_does_nothing_on_conflict():
    statement = render(["user_id", "as_of"], ["user_id", "as_of"])
    assert statement.endswith(' ON CONFLICT ("user_id", "as_of") DO NOTHING')
    assert "UPDATE" not in statement


def test_identifiers_are_quoted_so_odd_names_cannot_break_the_statement():
    statement = render(['user"id', "plan stream", "Fee"], ['user"id'], table=sql.Identifier("my schema", "Users"))
    assert 'INSERT INTO "my schema"."Users"' in statement
    assert 'ON CONFLICT ("user""id")' in statement
    assert 'SET "plan stream" = EXCLUDED."plan stream", "Fee" = EXCLUDED."Fee"' in statement


def test_the_target_alias_is_used_in_the_distinct_comparison():
    statement = render(["user_id", "plan"], ["user_id"], alias="live_row")
    assert 'AS "live_row"' in statement
    assert 'WHERE ("live_row"."plan") IS DISTINCT FROM ("excluded"."plan")' in statement
