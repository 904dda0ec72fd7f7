-- Each event becomes exactly one row: redelivered events (at-least-once upstream) are skipped on this key.
-- On a table that already holds duplicates (the original system's has no such key), `ecomlogs migrate` stops
-- before this with their counts and examples, changing nothing; `--move-duplicates` first moves every copy but
-- the lowest id of each event_id to kafka_events_silver_duplicates, in the same transaction (src/pg/schema.rs).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'kafka_events_silver_event_id_key') THEN
        ALTER TABLE kafka_events_silver ADD CONSTRAINT kafka_events_silver_event_id_key UNIQUE (event_id);
    END IF;
END $$;
