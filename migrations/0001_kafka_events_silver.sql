-- The original table (same columns and types as the original DDL). Timestamps are UTC wall-clock values
-- in TIMESTAMP (without time zone) columns, as the original declared them.
CREATE TABLE IF NOT EXISTS kafka_events_silver (
    id SERIAL PRIMARY KEY,
    event_id VARCHAR(255) NOT NULL,
    customer_id VARCHAR(255),
    event_type VARCHAR(50),
    amount DECIMAL(10, 2),
    currency VARCHAR(10),
    event_timestamp TIMESTAMP,
    created_at TIMESTAMP DEFAULT (now() AT TIME ZONE 'UTC')
);
-- An existing table from the original system keeps its rows; only the default becomes UTC.
ALTER TABLE kafka_events_silver ALTER COLUMN created_at SET DEFAULT (now() AT TIME ZONE 'UTC');
