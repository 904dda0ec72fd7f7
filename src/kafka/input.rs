//! What a consuming worker knows of its input.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;

use super::{is_connection_error, is_fatal};
use crate::error::{Error, Result};

/// This member's standing in its consumer group, kept by its context's rebalance callback: how many
/// rebalances so far, and whether an assignment is in force (from an ASSIGN to the next REVOKE; during
/// a rebalance none is, even an empty one).
#[derive(Debug, Default)]
pub struct Assignment {
    generation: AtomicU64,
    in_force: AtomicBool,
}

impl Assignment {
    pub fn assigned(&self) {
        self.in_force.store(true, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    pub fn revoked(&self) {
        self.in_force.store(false, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    pub fn in_force(&self) -> bool {
        self.in_force.load(Ordering::Relaxed)
    }
}

/// An assigned partition, and whether it has been read to its end (since its last record).
#[derive(Debug)]
struct PartitionEnd {
    partition: i32,
    at_end: bool,
}

/// What a consuming worker knows of its input: which assigned partitions it has read to their end
/// (librdkafka's end-of-partition events, `enable.partition.eof`) and when input last came. Serves
/// `until_caught_up` (every assigned partition read to its end) and `until_idle`.
#[derive(Debug)]
pub struct InputState {
    generation: u64,
    in_force: bool,
    ends: Vec<PartitionEnd>,
    ended: usize,
    pub last_input: Instant,
}

impl Default for InputState {
    fn default() -> Self {
        InputState {
            generation: 0,
            in_force: false,
            ends: Vec::new(),
            ended: 0,
            last_input: Instant::now(),
        }
    }
}

impl InputState {
    /// Follows the assignment: a new one (the group's generation moved) starts every partition unread,
    /// and restarts the idle clock.
    pub fn sync<C: ConsumerContext>(&mut self, group: &Assignment, consumer: &BaseConsumer<C>) {
        let generation = group.generation();
        if generation == self.generation {
            return;
        }
        self.generation = generation;
        self.in_force = group.in_force();
        self.ends = match self.in_force {
            true => consumer
                .assignment()
                .map(|tpl| {
                    tpl.elements()
                        .iter()
                        .map(|e| PartitionEnd {
                            partition: e.partition(),
                            at_end: false,
                        })
                        .collect()
                })
                .unwrap_or_default(),
            false => Vec::new(),
        };
        self.ended = 0;
        self.last_input = Instant::now();
    }

    /// Partitions are assigned to this worker now.
    pub fn assigned(&self) -> bool {
        self.in_force && !self.ends.is_empty()
    }

    /// A record of `partition` came: it is not at its end (any more).
    pub fn record(&mut self, partition: i32) {
        if self.ended > 0 {
            if let Some(e) = self
                .ends
                .iter_mut()
                .find(|e| e.partition == partition && e.at_end)
            {
                e.at_end = false;
                self.ended -= 1;
            }
        }
    }

    pub fn end(&mut self, partition: i32) {
        if let Some(e) = self
            .ends
            .iter_mut()
            .find(|e| e.partition == partition && !e.at_end)
        {
            e.at_end = true;
            self.ended += 1;
        }
    }

    /// An assignment is in force and every partition of it has been read to its end (a worker the
    /// group gave no partition counts too, but never one in the middle of a rebalance).
    pub fn caught_up(&self) -> bool {
        self.in_force && self.ended == self.ends.len()
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
