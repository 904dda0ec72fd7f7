-- Consumed Kafka offsets, written in the same transaction as the rows they produced: the loader resumes
-- from here (the Kafka commit that follows is advisory, for lag in Kafka tools).
CREATE TABLE IF NOT EXISTS ecomlogs_kafka_offsets (
    group_id    TEXT    NOT NULL,
    topic       TEXT    NOT NULL,
    partition   INTEGER NOT NULL,
    next_offset BIGINT  NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition)
);
