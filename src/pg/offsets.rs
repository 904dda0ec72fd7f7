//! The offsets table that makes loading exactly-once: each partition's next offset, stored in the same
//! transaction as the rows, with what identifies the log it belongs to (see `resume`).

use postgres::{Client, Transaction};

use super::OFFSETS_TABLE;
use crate::resume::{Fingerprint, StoredPosition};

/// One partition's progress, stored with the batch that made it: the next offset to read and the
/// fingerprint of the record just before it (see `resume`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionProgress {
    pub partition: i32,
    pub next_offset: i64,
    pub last: Fingerprint,
}

/// Records the next offsets to consume with the log identity, never moving one backwards (a zombie from
/// an older group generation cannot rewind a partition); the fingerprint always belongs to the offset
/// kept.
pub fn store_offsets(
    tx: &mut Transaction<'_>,
    group: &str,
    topic: &str,
    topic_id: Option<&str>,
    progress: &[PartitionProgress],
) -> Result<(), postgres::Error> {
    let partitions: Vec<i32> = progress.iter().map(|o| o.partition).collect();
    let next: Vec<i64> = progress.iter().map(|o| o.next_offset).collect();
    let ts: Vec<i64> = progress.iter().map(|o| o.last.timestamp_ms).collect();
    let hash: Vec<i64> = progress.iter().map(|o| o.last.hash).collect();
    tx.execute(
        &format!(
            "INSERT INTO {OFFSETS_TABLE} AS o
                 (group_id, topic, partition, next_offset, topic_id, last_timestamp_ms, last_hash)
             SELECT $1, $2, p, n, $3, t, h
             FROM unnest($4::int[], $5::bigint[], $6::bigint[], $7::bigint[]) AS u(p, n, t, h)
             ON CONFLICT (group_id, topic, partition) DO UPDATE SET
                 topic_id = coalesce(EXCLUDED.topic_id, o.topic_id),
                 last_timestamp_ms = CASE WHEN EXCLUDED.next_offset >= o.next_offset
                                          THEN EXCLUDED.last_timestamp_ms ELSE o.last_timestamp_ms END,
                 last_hash = CASE WHEN EXCLUDED.next_offset >= o.next_offset
                                  THEN EXCLUDED.last_hash ELSE o.last_hash END,
                 next_offset = GREATEST(o.next_offset, EXCLUDED.next_offset),
                 updated_at = now()"
        ),
        &[&group, &topic, &topic_id, &partitions, &next, &ts, &hash],
    )?;
    Ok(())
}

/// What is stored for `group` on these partitions of `topic` (partitions with nothing stored are absent).
pub fn load_offsets(
    client: &mut Client,
    group: &str,
    topic: &str,
    partitions: &[i32],
) -> Result<Vec<(i32, StoredPosition)>, postgres::Error> {
    let rows = client.query(
        &format!(
            "SELECT partition, next_offset, topic_id, last_timestamp_ms, last_hash FROM {OFFSETS_TABLE}
             WHERE group_id = $1 AND topic = $2 AND partition = ANY($3)"
        ),
        &[&group, &topic, &partitions],
    )?;
    Ok(rows
        .iter()
        .map(|r| {
            let last = match (r.get::<_, Option<i64>>(3), r.get::<_, Option<i64>>(4)) {
                (Some(timestamp_ms), Some(hash)) => Some(Fingerprint { timestamp_ms, hash }),
                _ => None,
            };
            let position = StoredPosition {
                next_offset: r.get(1),
                topic_id: r.get(2),
                last,
            };
            (r.get(0), position)
        })
        .collect())
}

/// Starts a partition's record again for a new log (reset broker, re-created topic, retention loss):
/// the stored offset belongs to a log that no longer exists, and must not hold the new one back.
pub fn restart_offset(
    client: &mut Client,
    group: &str,
    topic: &str,
    partition: i32,
    next_offset: i64,
    topic_id: Option<&str>,
) -> Result<(), postgres::Error> {
    client.execute(
        &format!(
            "UPDATE {OFFSETS_TABLE} SET next_offset = $4, topic_id = $5, last_timestamp_ms = NULL,
                 last_hash = NULL, log_restarts = log_restarts + 1, updated_at = now()
             WHERE group_id = $1 AND topic = $2 AND partition = $3"
        ),
        &[&group, &topic, &partition, &next_offset, &topic_id],
    )?;
    Ok(())
}
