"""PostgreSQL: the consumers' tables, the month's staging schema and the one-transaction publish.

The modules import one another only downwards, in this order (no cycle):

- :mod:`~pipeline.pg.sqltext`: quoted names, the staging schema's name (no I/O);
- :mod:`~pipeline.pg.connect`: connections and the errors a person can act on;
- :mod:`~pipeline.pg.locks`: the per-month lock every machine sees (an advisory lock);
- :mod:`~pipeline.pg.copy`: the month's rows as the CSV that COPY reads (DuckDB writes it once);
- :mod:`~pipeline.pg.plan`: pure decisions: the order staging loads the tables in and, per table, where
  the live write reads its rows from (:func:`~pipeline.pg.plan.plan_live`);
- :mod:`~pipeline.pg.tables`: the consumers' tables made to exist, and what ``pipeline_runs`` holds;
- :mod:`~pipeline.pg.staging`: the month's partitions loaded, keyed and viewed in a staging schema;
- :mod:`~pipeline.pg.live`: the live tables' upsert, on the publish connection;
- :mod:`~pipeline.pg.transaction`: the ONE transaction that publishes the month.

SQL text is composed with :mod:`psycopg.sql` (every identifier quoted) from the names in sql/schema.sql;
the DDL comes from :mod:`pipeline.ddl`. Nothing read from a CSV reaches SQL text: data only ever
travels through COPY. :mod:`pipeline.publish` runs the month's publish with these parts.
"""
