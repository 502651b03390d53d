-- The contract: the six tables of a monthly StreamFlow drop, as consumers read them in PostgreSQL.
-- This file is the single source of truth for names and types. The pipeline parses it with sqlglot
-- and derives from it the CSV read types, the Parquet schema, the staging, snapshot and live tables,
-- and every upsert statement. Change a column here and everything else follows.
--
-- Columns marked "hidden at start" may be absent from a drop; they are then NULL.
--
-- Keys compare as bytes (COLLATE "C"), as they do in DuckDB and in the lake's sorted Parquet files: an id
-- has no language, and a key under the database's linguistic collation costs PostgreSQL a locale-aware
-- comparison per step of every index build, lookup and sort (a 1,000,000-key primary key: 1.9 s → 0.7 s).

CREATE TABLE users (
    user_id         TEXT COLLATE "C" PRIMARY KEY,
    signup_date     DATE,
    user_gender     TEXT,
    user_is_senior  BOOLEAN,
    has_family      BOOLEAN,
    has_dependents  BOOLEAN
);

CREATE TABLE subscriptions (
    user_id               TEXT COLLATE "C" PRIMARY KEY REFERENCES users (user_id),
    months_active         INT,
    plan_stream_tv        BOOLEAN,
    plan_stream_movies    BOOLEAN,
    contract_type         TEXT,
    paperless_billing     BOOLEAN,
    monthly_fee           NUMERIC,
    total_paid            NUMERIC,
    net_service           TEXT,
    add_on_security       BOOLEAN, -- hidden at start
    add_on_backup         BOOLEAN, -- hidden at start
    add_on_device_protect BOOLEAN, -- hidden at start
    add_on_support        BOOLEAN  -- hidden at start
);

CREATE TABLE usage_agg_30d (
    user_id             TEXT COLLATE "C" PRIMARY KEY REFERENCES users (user_id),
    watch_hours_30d     NUMERIC,
    avg_session_mins_7d NUMERIC,
    unique_devices_30d  INT,
    skips_7d            INT,
    rebuffer_events_7d  INT
);

CREATE TABLE payments_agg_90d (
    user_id             TEXT COLLATE "C" PRIMARY KEY REFERENCES users (user_id),
    failed_payments_90d INT
);

CREATE TABLE support_agg_90d (
    user_id                       TEXT COLLATE "C" PRIMARY KEY REFERENCES users (user_id),
    support_tickets_90d           INT,
    ticket_avg_resolution_hrs_90d NUMERIC
);

CREATE TABLE labels (
    user_id     TEXT COLLATE "C" PRIMARY KEY REFERENCES users (user_id),
    churn_label BOOLEAN
);
