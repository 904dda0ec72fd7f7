//! Where the loader starts reading a partition: the offsets stored in PostgreSQL, checked against the log
//! the broker serves now.
//!
//! PostgreSQL is the only source of truth for progress, but an offset only means something in the log
//! it was read from. A broker whose log was reset (memory storage restarted, topic deleted and
//! re-created) serves *new* records at the old offsets, and trusting the stored offset would skip them
//! silently. So with each partition's next offset the loader stores what identifies the log: the topic
//! ID where the broker reports one (KIP-516) and a fingerprint of the last record it stored (the record
//! at `next_offset - 1`: its timestamp and a hash of its key and value). On assignment it reads that
//! record again (one fetch per partition) and decides here, in plain code, where to start.

use std::fmt;

use rdkafka::message::{BorrowedMessage, Message};
use xxhash_rust::xxh3::Xxh3;

mod check;

pub use check::{Checked, LogCheck, LogProbe, PROBE_TIMEOUT};

/// Identifies one record: its timestamp and a hash of its key and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    pub timestamp_ms: i64,
    pub hash: i64,
}

impl Fingerprint {
    pub fn of(timestamp_ms: Option<i64>, key: Option<&[u8]>, value: Option<&[u8]>) -> Self {
        let mut h = Xxh3::new();
        // Lengths (with -1 for null) keep ("ab", "c") apart from ("a", "bc") and null apart from empty.
        for part in [key, value] {
            match part {
                Some(b) => {
                    h.update(&(b.len() as i64).to_le_bytes());
                    h.update(b);
                }
                None => h.update(&(-1i64).to_le_bytes()),
            }
        }
        Fingerprint {
            timestamp_ms: timestamp_ms.unwrap_or(-1),
            hash: h.digest() as i64,
        }
    }

    pub fn of_message(m: &BorrowedMessage<'_>) -> Self {
        Fingerprint::of(m.timestamp().to_millis(), m.key(), m.payload())
    }
}

/// What PostgreSQL holds for one partition of the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPosition {
    pub next_offset: i64,
    pub topic_id: Option<String>,
    /// The record at `next_offset - 1`; None for rows stored before fingerprints existed.
    pub last: Option<Fingerprint>,
}

/// What reading the record at `next_offset - 1` gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    Found(Fingerprint),
    /// The log has no record at that offset (it ends before it, or starts after it).
    Missing,
    /// The broker did not answer in time.
    NoAnswer,
}

/// What the broker shows for the partition now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogView {
    pub topic_id: Option<String>,
    /// Watermarks (first offset, next offset to be written), when the broker answered. Only used to
    /// explain a record that is missing: after a restart some brokers report watermarks that disagree
    /// with the records they serve, so the decision never rests on them alone.
    pub low: Option<i64>,
    pub high: Option<i64>,
    pub at_last: Probe,
}

/// Why a partition starts at the beginning of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewLog {
    NothingStored,
    TopicRecreated {
        old: String,
        new: String,
    },
    /// The record at `next_offset - 1` is another one than the loader stored.
    DifferentRecord,
    /// The log has no record at `next_offset - 1` and does not start after it: it was reset.
    RecordGone,
    /// The record could not be read to check it (the broker did not answer).
    Unverified,
}

/// Where to start a partition, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// The same log: continue at the stored offset.
    Resume(i64),
    /// Another log, or nothing stored: start at its beginning; the unique `event_id` keeps anything
    /// already loaded from being inserted twice.
    Beginning(NewLog),
    /// Records below the log start were deleted (retention) before the loader stored them.
    AfterLoss { log_start: i64, lost: i64 },
}

pub fn decide(stored: Option<&StoredPosition>, view: &LogView) -> Start {
    let Some(stored) = stored else {
        return Start::Beginning(NewLog::NothingStored);
    };
    if let (Some(old), Some(new)) = (&stored.topic_id, &view.topic_id) {
        if old != new {
            return Start::Beginning(NewLog::TopicRecreated {
                old: old.clone(),
                new: new.clone(),
            });
        }
    }
    if stored.next_offset <= 0 {
        return Start::Beginning(NewLog::NothingStored);
    }
    match view.at_last {
        Probe::Found(now) => match stored.last {
            Some(then) if then != now => Start::Beginning(NewLog::DifferentRecord),
            // Same record, or a row from before fingerprints (nothing to compare: trust it).
            _ => Start::Resume(stored.next_offset),
        },
        Probe::Missing => match view.low {
            // Deleted from the front (retention): what lies between our offset and the log start is gone.
            Some(low) if low > stored.next_offset => Start::AfterLoss {
                log_start: low,
                lost: low - stored.next_offset,
            },
            // Only the record we stored was deleted; the next one is the log start.
            Some(low) if low == stored.next_offset => Start::Resume(stored.next_offset),
            _ => Start::Beginning(NewLog::RecordGone),
        },
        // Some brokers serve nothing (no end-of-partition, no out-of-range error) past their log end:
        // with the watermark saying the log ends before the record, that silence means it is not there.
        Probe::NoAnswer if view.high.is_some_and(|h| h < stored.next_offset) => {
            Start::Beginning(NewLog::RecordGone)
        }
        Probe::NoAnswer => Start::Beginning(NewLog::Unverified),
    }
}

impl fmt::Display for NewLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NewLog::NothingStored => write!(f, "no offset stored in PostgreSQL"),
            NewLog::TopicRecreated { old, new } => {
                write!(f, "the topic was re-created (topic ID {old} is now {new})")
            }
            NewLog::DifferentRecord => write!(
                f,
                "the record before the stored offset is not the one that was loaded: the log was reset"
            ),
            NewLog::RecordGone => write!(
                f,
                "the log has no record before the stored offset: it was reset"
            ),
            NewLog::Unverified => write!(
                f,
                "the record before the stored offset could not be read to check the log"
            ),
        }
    }
}

/// The log identity of a committed Kafka offset travels in the commit's metadata string, so a stage
/// that keeps its progress in the consumer group (the processor) can check its log like the loader.
const METADATA_TAG: &str = "ecomlogs1";

pub fn commit_metadata(last: &Fingerprint, topic_id: Option<&str>) -> String {
    format!(
        "{METADATA_TAG}:{}:{}:{}",
        last.timestamp_ms,
        last.hash,
        topic_id.unwrap_or("")
    )
}

/// The stored position behind a committed offset (metadata written by others carries no fingerprint).
pub fn from_commit(next_offset: i64, metadata: Option<&str>) -> StoredPosition {
    let mut parts = metadata.unwrap_or("").splitn(4, ':');
    let (last, topic_id) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(METADATA_TAG), Some(ts), Some(hash), id) => {
            let last = ts
                .parse()
                .ok()
                .zip(hash.parse().ok())
                .map(|(timestamp_ms, hash)| Fingerprint { timestamp_ms, hash });
            (last, id.filter(|i| !i.is_empty()).map(str::to_string))
        }
        _ => (None, None),
    };
    StoredPosition {
        next_offset,
        topic_id,
        last,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(n: i64) -> Fingerprint {
        Fingerprint {
            timestamp_ms: 1_795_000_000_000 + n,
            hash: n * 7919,
        }
    }

    fn stored(next: i64, last: Option<Fingerprint>) -> StoredPosition {
        StoredPosition {
            next_offset: next,
            topic_id: None,
            last,
        }
    }

    fn view(at_last: Probe, low: Option<i64>, high: Option<i64>) -> LogView {
        LogView {
            topic_id: None,
            low,
            high,
            at_last,
        }
    }

    #[test]
    fn same_record_resumes() {
        let s = stored(100, Some(fp(99)));
        let v = view(Probe::Found(fp(99)), Some(0), Some(150));
        assert_eq!(decide(Some(&s), &v), Start::Resume(100));
    }

    #[test]
    fn nothing_stored_starts_at_the_beginning() {
        let v = view(Probe::Missing, Some(0), Some(10));
        assert_eq!(decide(None, &v), Start::Beginning(NewLog::NothingStored));
    }

    #[test]
    fn a_new_log_longer_than_the_old_offset_is_caught_by_the_fingerprint() {
        // The subtle case: the reset log has grown past the stored offset, so the watermarks look fine.
        let s = stored(10_457, Some(fp(10_456)));
        let v = view(Probe::Found(fp(3)), Some(0), Some(20_000));
        assert_eq!(
            decide(Some(&s), &v),
            Start::Beginning(NewLog::DifferentRecord)
        );
    }

    #[test]
    fn a_shorter_log_is_a_reset() {
        let s = stored(10_457, Some(fp(10_456)));
        let v = view(Probe::Missing, Some(0), Some(5_000));
        assert_eq!(decide(Some(&s), &v), Start::Beginning(NewLog::RecordGone));
        // Also for rows stored before fingerprints existed.
        let legacy = stored(10_457, None);
        assert_eq!(
            decide(Some(&legacy), &v),
            Start::Beginning(NewLog::RecordGone)
        );
    }

    #[test]
    fn rows_without_a_fingerprint_resume_when_the_record_is_there() {
        let s = stored(500, None);
        let v = view(Probe::Found(fp(1)), Some(0), Some(900));
        assert_eq!(decide(Some(&s), &v), Start::Resume(500));
    }

    #[test]
    fn a_recreated_topic_is_caught_by_its_id() {
        let mut s = stored(100, Some(fp(99)));
        s.topic_id = Some("AAAA".into());
        let mut v = view(Probe::Found(fp(99)), Some(0), Some(150));
        v.topic_id = Some("BBBB".into());
        assert!(matches!(
            decide(Some(&s), &v),
            Start::Beginning(NewLog::TopicRecreated { .. })
        ));
        v.topic_id = Some("AAAA".into());
        assert_eq!(decide(Some(&s), &v), Start::Resume(100));
    }

    #[test]
    fn retention_loss_is_counted() {
        let s = stored(100, Some(fp(99)));
        let v = view(Probe::Missing, Some(250), Some(900));
        assert_eq!(
            decide(Some(&s), &v),
            Start::AfterLoss {
                log_start: 250,
                lost: 150
            }
        );
        // Only the stored record itself was deleted: nothing lost.
        let v = view(Probe::Missing, Some(100), Some(900));
        assert_eq!(decide(Some(&s), &v), Start::Resume(100));
    }

    #[test]
    fn an_unreadable_record_is_not_trusted() {
        let s = stored(100, Some(fp(99)));
        let v = view(Probe::NoAnswer, None, None);
        assert_eq!(decide(Some(&s), &v), Start::Beginning(NewLog::Unverified));
        // Within the log by its watermarks, yet unreadable: still not trusted.
        let v = view(Probe::NoAnswer, Some(0), Some(500));
        assert_eq!(decide(Some(&s), &v), Start::Beginning(NewLog::Unverified));
        // Silence past the log end is a log that ends before the record.
        let v = view(Probe::NoAnswer, Some(0), Some(40));
        assert_eq!(decide(Some(&s), &v), Start::Beginning(NewLog::RecordGone));
    }

    #[test]
    fn commit_metadata_round_trips_and_foreign_metadata_is_ignored() {
        let last = fp(41);
        let m = commit_metadata(&last, Some("AaIbSwV0dlKMR71hW9XY6A"));
        let back = from_commit(42, Some(&m));
        assert_eq!(back.last, Some(last));
        assert_eq!(back.topic_id.as_deref(), Some("AaIbSwV0dlKMR71hW9XY6A"));
        assert_eq!(
            from_commit(42, Some(&commit_metadata(&last, None))).topic_id,
            None
        );
        for foreign in [None, Some(""), Some("hello"), Some("ecomlogs1:x:y:")] {
            let p = from_commit(7, foreign);
            assert_eq!((p.next_offset, p.last, p.topic_id), (7, None, None));
        }
    }

    #[test]
    fn fingerprints_tell_key_value_boundaries_and_nulls_apart() {
        let a = Fingerprint::of(Some(1), Some(b"ab"), Some(b"c"));
        let b = Fingerprint::of(Some(1), Some(b"a"), Some(b"bc"));
        let c = Fingerprint::of(Some(1), None, Some(b"abc"));
        let d = Fingerprint::of(Some(1), Some(b""), Some(b"abc"));
        assert_ne!(a, b);
        assert_ne!(c, d);
        assert_eq!(a, Fingerprint::of(Some(1), Some(b"ab"), Some(b"c")));
        assert_ne!(a, Fingerprint::of(Some(2), Some(b"ab"), Some(b"c")));
    }
}
