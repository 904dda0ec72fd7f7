-- What identifies the log each stored offset belongs to, so that a reset broker or a re-created topic is
-- recognised instead of its new records being skipped: the topic ID (where the broker reports one) and
-- the record at next_offset - 1 (its timestamp and a hash of its key and value). Rows stored before this
-- migration have NULLs here and keep working.
ALTER TABLE ecomlogs_kafka_offsets
    ADD COLUMN IF NOT EXISTS topic_id TEXT,
    ADD COLUMN IF NOT EXISTS last_timestamp_ms BIGINT,
    ADD COLUMN IF NOT EXISTS last_hash BIGINT,
    ADD COLUMN IF NOT EXISTS log_restarts INTEGER NOT NULL DEFAULT 0;
