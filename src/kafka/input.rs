//! What a consuming worker knows of its input.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;

use super::{is_connection_error, is_fatal};
use crate::error::{Error, Result};

/// What a consuming worker knows of its input: which assigned partitions it has read to their end
/// (librdkafka's end-of-partition events, `enable.partition.eof`) and when input last came. Serves
/// `until_caught_up` (every assigned partition read to its end) and `until_idle`.
#[derive(Debug)]
pub struct InputState {
    generation: u64,
    ends: Vec<(i32, bool)>,
    ended: usize,
    assigned_once: bool,
    pub last_input: Instant,
}

impl Default for InputState {
    fn default() -> Self {
        InputState {
            generation: 0,
            ends: Vec::new(),
            ended: 0,
            assigned_once: false,
            last_input: Instant::now(),
        }
    }
}

impl InputState {
    /// Follows the assignment: a new one (the context's rebalance count moved) starts every partition
    /// unread, and restarts the idle clock.
    pub fn sync<C: ConsumerContext>(&mut self, generation: u64, consumer: &BaseConsumer<C>) {
        if generation == self.generation {
            return;
        }
        self.generation = generation;
        self.ends = consumer
            .assignment()
            .map(|tpl| {
                tpl.elements()
                    .iter()
                    .map(|e| (e.partition(), false))
                    .collect()
            })
            .unwrap_or_default();
        self.ended = 0;
        self.assigned_once |= !self.ends.is_empty();
        self.last_input = Instant::now();
    }

    pub fn assigned(&self) -> bool {
        !self.ends.is_empty()
    }

    /// A record of `partition` came: it is not at its end (any more).
    pub fn record(&mut self, partition: i32) {
        if self.ended > 0 {
            if let Some(e) = self.ends.iter_mut().find(|e| e.0 == partition && e.1) {
                e.1 = false;
                self.ended -= 1;
            }
        }
    }

    pub fn end(&mut self, partition: i32) {
        if let Some(e) = self.ends.iter_mut().find(|e| e.0 == partition && !e.1) {
            e.1 = true;
            self.ended += 1;
        }
    }

    /// Every assigned partition read to its end; a worker the group gave no partition counts too,
    /// once the group has answered.
    pub fn caught_up(&self) -> bool {
        self.ended == self.ends.len() && (self.assigned() || self.generation > 0)
    }

    /// No input for `idle` while assigned (an unassigned worker is joining, not idle: it gets a
    /// generous bound instead; an unreachable broker is never idle: records may be waiting).
    pub fn idle(&self, idle: Option<Duration>, broker_down: bool) -> bool {
        let Some(idle) = idle else { return false };
        let waited = self.last_input.elapsed();
        !broker_down
            && ((self.assigned() && waited >= idle) || waited >= idle + Duration::from_secs(60))
    }
}

/// Handles an error from `poll`: an end of partition is returned, connection trouble is left to the
/// broker watch (reported once), a fatal error ends the stage, anything else is logged.
pub fn poll_error(e: KafkaError, target: &str) -> Result<Option<i32>> {
    if let KafkaError::PartitionEOF(p) = e {
        return Ok(Some(p));
    }
    let code = e.rdkafka_error_code();
    if is_fatal(code) {
        return Err(Error::kafka("consuming", e));
    }
    if !is_connection_error(code) {
        log::warn!(target: target, "consumer: {e}");
    }
    Ok(None)
}
