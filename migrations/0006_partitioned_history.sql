-- History at day-one speed. Before this runs, the migration's first step renamed an existing table to
-- kafka_events_silver_unpartitioned; its last step moves the rows into the new table, builds the rollups
-- from them and drops the old table (see src/pg/history.rs). All in the migrations' one transaction.

-- The events, partitioned by event day (UTC): the same name and columns as the original table. The key
-- that stores each event once is (event_timestamp, event_id): a partitioned table's unique keys must hold
-- its partition key. A redelivered record (same event, same timestamp) is skipped; a producer that sends an
-- event_id again with another timestamp gets a second row.
CREATE TABLE kafka_events_silver (
    id INTEGER NOT NULL DEFAULT nextval('kafka_events_silver_id_seq'),
    event_id VARCHAR(255) NOT NULL,
    customer_id VARCHAR(255),
    event_type VARCHAR(50),
    amount DECIMAL(10, 2),
    currency VARCHAR(10),
    event_timestamp TIMESTAMP,
    created_at TIMESTAMP DEFAULT (now() AT TIME ZONE 'UTC'),
    CONSTRAINT kafka_events_silver_event_key UNIQUE (event_timestamp, event_id)
) PARTITION BY RANGE (event_timestamp);
ALTER SEQUENCE kafka_events_silver_id_seq OWNED BY kafka_events_silver.id;

-- Rows of a day without a partition (far past or future, no timestamp) land here; a partition created
-- later for such a day takes them over (ecomlogs_ensure_day).
CREATE TABLE kafka_events_silver_default PARTITION OF kafka_events_silver DEFAULT;

-- One partition per day, kafka_events_silver_YYYYMMDD, created ahead of need and by the loader for a day
-- it meets. Serialised by an advisory lock (held to the end of the caller's transaction), so two loaders
-- meeting a new day create it once. It runs with its owner's rights (the role that migrated, which owns
-- the table): a loader's role needs no more than INSERT on the table.
CREATE FUNCTION ecomlogs_ensure_day(d date) RETURNS boolean LANGUAGE plpgsql
SECURITY DEFINER SET search_path FROM CURRENT AS $fn$
DECLARE
    part text := 'kafka_events_silver_' || to_char(d, 'YYYYMMDD');
BEGIN
    IF to_regclass(part) IS NOT NULL THEN
        RETURN false;
    END IF;
    PERFORM pg_advisory_xact_lock(4242019);
    IF to_regclass(part) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE kafka_events_silver INCLUDING DEFAULTS)', part);
    -- What the default partition holds of that day moves into it.
    EXECUTE format(
        'WITH moved AS (DELETE FROM kafka_events_silver_default
                        WHERE event_timestamp >= %L AND event_timestamp < %L RETURNING *)
         INSERT INTO %I SELECT * FROM moved', d, d + 1, part);
    EXECUTE format('ALTER TABLE kafka_events_silver ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                   part, d, d + 1);
    RETURN true;
END
$fn$;

-- Rollups, kept by the loader in the same transaction as the rows it inserts (only rows actually
-- inserted count: a redelivered duplicate adds nothing). Empty strings stand for NULL in key columns.
CREATE TABLE ecomlogs_daily_rollup (
    day DATE NOT NULL,
    event_type VARCHAR(50) NOT NULL,
    currency VARCHAR(10) NOT NULL,
    events BIGINT NOT NULL,
    amount NUMERIC NOT NULL,
    PRIMARY KEY (day, event_type, currency)
);

CREATE TABLE ecomlogs_customer_rollup (
    customer_id VARCHAR(255) NOT NULL,
    currency VARCHAR(10) NOT NULL,
    purchases BIGINT NOT NULL,
    revenue NUMERIC NOT NULL,
    events BIGINT NOT NULL,
    last_seen TIMESTAMP,
    PRIMARY KEY (customer_id, currency)
);

-- Per customer, a loader batch touches thousands of keys (every customer of the batch): updating them row
-- by row in every batch would cost more than the batch's COPY. So a batch stores its customer deltas as one
-- row here (its own encoding, written in the batch's transaction: nothing is lost or counted twice), and a
-- loader merges them into ecomlogs_customer_rollup every few seconds, at start and when it stops
-- (ecomlogs.pg.history::merge_customer_deltas). top_customers trails the rows by those few seconds.
CREATE TABLE ecomlogs_customer_deltas (
    id BIGSERIAL PRIMARY KEY,
    data BYTEA NOT NULL
);
ALTER TABLE ecomlogs_customer_deltas ALTER COLUMN data SET STORAGE EXTERNAL;

-- What retention dropped, per customer (its daily rollups stay where they are): a rebuild from the
-- table adds it back, so customer totals keep the whole history.
CREATE TABLE ecomlogs_customer_rollup_retired (LIKE ecomlogs_customer_rollup INCLUDING ALL);

-- The analytics views keep their names and columns, and read the rollups (never the history).
DROP VIEW IF EXISTS daily_funnel, daily_revenue, top_customers;

CREATE VIEW daily_funnel AS
SELECT
    day,
    coalesce(sum(events) FILTER (WHERE event_type = 'PAGE_VIEW'), 0)::bigint   AS page_views,
    coalesce(sum(events) FILTER (WHERE event_type = 'ADD_TO_CART'), 0)::bigint AS add_to_carts,
    coalesce(sum(events) FILTER (WHERE event_type = 'PURCHASE'), 0)::bigint    AS purchases,
    round(coalesce(sum(events) FILTER (WHERE event_type = 'ADD_TO_CART'), 0)::numeric
          / NULLIF(sum(events) FILTER (WHERE event_type = 'PAGE_VIEW'), 0), 4)   AS view_to_cart_rate,
    round(coalesce(sum(events) FILTER (WHERE event_type = 'PURCHASE'), 0)::numeric
          / NULLIF(sum(events) FILTER (WHERE event_type = 'ADD_TO_CART'), 0), 4) AS cart_to_purchase_rate,
    round(coalesce(sum(events) FILTER (WHERE event_type = 'PURCHASE'), 0)::numeric
          / NULLIF(sum(events) FILTER (WHERE event_type = 'PAGE_VIEW'), 0), 4)   AS view_to_purchase_rate
FROM ecomlogs_daily_rollup
GROUP BY day;

CREATE VIEW daily_revenue AS
SELECT
    day,
    NULLIF(currency, '')::varchar(10) AS currency,
    events                            AS purchases,
    amount                            AS revenue,
    round(amount / NULLIF(events, 0), 2) AS average_order
FROM ecomlogs_daily_rollup
WHERE event_type = 'PURCHASE';

CREATE VIEW top_customers AS
SELECT
    NULLIF(customer_id, '')::varchar(255) AS customer_id,
    NULLIF(currency, '')::varchar(10)     AS currency,
    purchases,
    revenue,
    events,
    last_seen,
    rank() OVER (PARTITION BY currency ORDER BY revenue DESC) AS revenue_rank
FROM ecomlogs_customer_rollup;
