-- Each event becomes exactly one row: redelivered events (at-least-once upstream) are skipped on this key.
-- (On a table that already holds duplicates this fails; remove them first.)
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'kafka_events_silver_event_id_key') THEN
        ALTER TABLE kafka_events_silver ADD CONSTRAINT kafka_events_silver_event_id_key UNIQUE (event_id);
    END IF;
END $$;
