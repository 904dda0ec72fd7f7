//! Input a consumer cannot read. librdkafka does not skip a batch it cannot fetch or decode (a corrupt
//! batch, a codec or record format it does not know, a batch over the fetch size limits, a permission
//! the broker refuses): it tries again after `fetch.error.backoff.ms` (half a second), forever, and
//! everything behind that batch in its partition waits. Each attempt reaches the stage as an error event
//! in place of records. This module turns those events into a streak that is logged with what it is and
//! where (topic, partition, offset), counted, kept from looking like an idle or caught-up input, and
//! ended with an error if it lasts longer than the stage allows.
//!
//! Plain Rust with the clock passed in, so the rules are tested without a broker; `InputState` (see
//! `input`) feeds it from the consumer loop, knows which partitions are waiting, and also feeds it the
//! batches librdkafka re-fetches without reporting anything (a silent stall).

use std::time::{Duration, Instant};

use rdkafka::error::RDKafkaErrorCode;

use super::code_name;

/// A streak ends when the error has not come back for this long (the broker or the input recovered);
/// a decode error comes back every `fetch.error.backoff.ms`, 500 ms by default.
pub const QUIET: Duration = Duration::from_secs(10);

/// Default for how long a streak may last before the stage fails (`--unreadable-timeout`).
pub const DEFAULT_LIMIT: Duration = Duration::from_secs(60);

/// At most one progress line per streak this often (the first attempt is logged at once).
const LOG_EVERY: Duration = Duration::from_secs(10);

/// One error as the consumer got it: librdkafka's code and its own text (which names the offset for
/// decode errors: "Decompression (codec 0x4) of message at 1200 of 512 bytes failed: ...").
#[derive(Debug, Clone)]
pub struct FetchError {
    pub code: RDKafkaErrorCode,
    pub text: String,
}

impl FetchError {
    /// The offset librdkafka's text names, if any ("message at 1200", "at offset 1200").
    pub fn offset(&self) -> Option<i64> {
        ["at offset ", "message at "].iter().find_map(|pat| {
            let start = self.text.find(pat)? + pat.len();
            let digits: String = self.text[start..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        })
    }

    /// What the error means for the stage's input, in words.
    pub fn meaning(&self) -> &'static str {
        match self.code {
            RDKafkaErrorCode::BadCompression => "a batch that does not decompress (corrupt)",
            RDKafkaErrorCode::NotImplemented => {
                "a batch in a codec or format this build cannot read"
            }
            RDKafkaErrorCode::BadMessage | RDKafkaErrorCode::InvalidMessage => "a corrupt batch",
            RDKafkaErrorCode::MessageSizeTooLarge => {
                "a batch over the fetch size limit (raise fetch.message.max.bytes)"
            }
            RDKafkaErrorCode::TopicAuthorizationFailed => "no permission to read the topic",
            RDKafkaErrorCode::GroupAuthorizationFailed => "no permission to use the consumer group",
            RDKafkaErrorCode::Authentication => "the broker refused our credentials",
            RDKafkaErrorCode::SSL => "a TLS failure",
            _ => "an error from the broker or the client",
        }
    }
}

/// A run of the same trouble without a quiet gap.
#[derive(Debug, Clone)]
struct Streak {
    since: Instant,
    last: Instant,
    logged: Instant,
    attempts: u64,
    error: FetchError,
}

/// What the stage should do after an error.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Keep trying (the error is logged as needed).
    Retry,
    /// The streak outlasted the limit: the stage must stop with this message.
    GiveUp(String),
}

/// One worker's fetch errors.
#[derive(Debug)]
pub struct FetchErrors {
    target: &'static str,
    limit: Duration,
    streak: Option<Streak>,
    /// Every fetch or decode error this worker got.
    pub total: u64,
}

impl FetchErrors {
    /// `target`: the stage's logger; `limit`: how long a streak may last.
    pub fn new(target: &'static str, limit: Duration) -> Self {
        FetchErrors {
            target,
            limit,
            streak: None,
            total: 0,
        }
    }

    /// A streak is going on: records are waiting that could not be read (an idle or caught-up input
    /// must not be reported while this holds).
    pub fn active(&self, now: Instant) -> bool {
        self.streak
            .as_ref()
            .is_some_and(|s| now.saturating_duration_since(s.last) < QUIET)
    }

    /// Just started: the caller resets what it tracks per streak (which partitions moved since).
    pub fn fresh(&self) -> bool {
        self.streak.as_ref().is_some_and(|s| s.attempts == 1)
    }

    /// Ends the streak (it cleared: the waiting partitions moved on, or the assignment changed).
    pub fn clear(&mut self, why: &str) {
        if let Some(s) = self.streak.take() {
            log::info!(
                target: self.target,
                "input readable again ({why}) after {} failed attempts in {:.1}s",
                s.attempts,
                s.last.saturating_duration_since(s.since).as_secs_f64()
            );
        }
    }

    /// Ends a streak whose error has not come back for `QUIET`.
    pub fn expire(&mut self, now: Instant) {
        if self.streak.is_some() && !self.active(now) {
            self.clear("the error stopped");
        }
    }

    /// Counts an error; `place` says where the waiting records are ("raw_events[2] at offset 1200").
    /// Logs the first attempt of a streak and then one line every `LOG_EVERY`; past the limit, gives up.
    pub fn error(&mut self, now: Instant, error: FetchError, place: &str) -> Verdict {
        self.total += 1;
        self.expire(now);
        let Some(s) = self.streak.as_mut() else {
            log::warn!(
                target: self.target,
                "cannot read {place}: {} ({}: {}); retrying, the stage stops if this lasts {:.0}s",
                error.meaning(), code_name(error.code), error.text, self.limit.as_secs_f64()
            );
            self.streak = Some(Streak {
                since: now,
                last: now,
                logged: now,
                attempts: 1,
                error,
            });
            return Verdict::Retry;
        };
        s.last = now;
        s.attempts += 1;
        s.error = error;
        let lasted = now.saturating_duration_since(s.since);
        if lasted >= self.limit {
            return Verdict::GiveUp(format!(
                "cannot read {place}: {} ({}: {}); {} failed attempts in {:.1}s, the records from there \
                 on are not processed",
                s.error.meaning(),
                code_name(s.error.code),
                s.error.text,
                s.attempts,
                lasted.as_secs_f64()
            ));
        }
        if now.saturating_duration_since(s.logged) >= LOG_EVERY {
            s.logged = now;
            log::warn!(
                target: self.target,
                "still cannot read {place} ({}, {} attempts in {:.0}s); the stage stops in {:.0}s",
                code_name(s.error.code), s.attempts, lasted.as_secs_f64(),
                (self.limit - lasted).as_secs_f64()
            );
        }
        Verdict::Retry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(offset: i64) -> FetchError {
        FetchError {
            code: RDKafkaErrorCode::BadCompression,
            text: format!(
                "Decompression (codec 0x4) of message at {offset} of 28 bytes failed: Local: \
                 Invalid compressed data"
            ),
        }
    }

    #[test]
    fn offsets_are_read_from_librdkafkas_text() {
        assert_eq!(bad(1200).offset(), Some(1200));
        let fetch = FetchError {
            code: RDKafkaErrorCode::MessageSizeTooLarge,
            text: "Fetch from broker 1 failed at offset 77 (leader epoch 0): too large".into(),
        };
        assert_eq!(fetch.offset(), Some(77));
        let none = FetchError {
            code: RDKafkaErrorCode::TopicAuthorizationFailed,
            text: "Fetch from broker 1 failed: Broker: Topic authorization failed".into(),
        };
        assert_eq!(none.offset(), None);
    }

    #[test]
    fn a_streak_that_outlasts_the_limit_gives_up_and_names_the_place() {
        let t0 = Instant::now();
        let mut f = FetchErrors::new("test", Duration::from_secs(5));
        let mut verdicts = Vec::new();
        for i in 0..=10 {
            verdicts.push(f.error(
                t0 + Duration::from_millis(500 * i),
                bad(3),
                "t[0] at offset 3",
            ));
        }
        assert!(verdicts[..10].iter().all(|v| *v == Verdict::Retry));
        match &verdicts[10] {
            Verdict::GiveUp(m) => {
                assert!(
                    m.contains("t[0] at offset 3") && m.contains("11 failed attempts"),
                    "{m}"
                );
                assert!(m.contains("_BAD_COMPRESSION") && m.contains("5.0s"), "{m}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(f.total, 11);
    }

    #[test]
    fn a_quiet_gap_or_a_clear_ends_the_streak() {
        let t0 = Instant::now();
        let mut f = FetchErrors::new("test", Duration::from_secs(5));
        f.error(t0, bad(3), "t[0]");
        assert!(f.active(t0 + Duration::from_secs(1)) && f.fresh());
        assert!(!f.active(t0 + QUIET));
        // After the gap the old streak does not count: a new one starts.
        let later = t0 + QUIET + Duration::from_secs(1);
        assert_eq!(f.error(later, bad(3), "t[0]"), Verdict::Retry);
        assert!(f.fresh());
        f.clear("moved on");
        assert!(!f.active(later));
        assert_eq!(f.total, 2);
    }
}
