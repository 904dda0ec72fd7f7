//! The loader's writer: a thread beside each worker that writes a batch to PostgreSQL (its COPY, rollups,
//! offsets and dead letters, one transaction) while the worker reads and encodes the next one, so that
//! fetching and encoding no longer take turns with the COPY. One batch in flight at a time, written in
//! the order the worker hands them over: each batch's offsets are stored with its own rows, as before.

use std::collections::BTreeMap;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::sync::Arc;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::BaseProducer;

use super::batch::Batch;
use super::context::LoaderContext;
use super::LoadOptions;
use crate::dead_letter;
use crate::error::{Error, Result};
use crate::kafka::{DeliveryTracker, Topic};
use crate::sink::Written;
use crate::stage::locked;
use crate::validate::Reason;

/// A batch back from the writer: what was stored (None: the stage stopped during an outage, nothing of
/// the batch was), and its dead letters by reason.
pub(super) struct Flushed {
    pub(super) batch: Batch,
    pub(super) written: Option<Written>,
    pub(super) dead_by_reason: BTreeMap<Reason, u64>,
}

pub(super) struct Writer {
    jobs: Option<SyncSender<Batch>>,
    done: Receiver<Result<Flushed>>,
    in_flight: bool,
}

impl Writer {
    /// Starts the writer thread in `scope`; it ends when the writer is dropped or finished, or after a
    /// batch it could not write.
    pub(super) fn spawn<'s, 'e: 's>(
        scope: &'s std::thread::Scope<'s, 'e>,
        consumer: Arc<BaseConsumer<LoaderContext>>,
        producer: Arc<BaseProducer<DeliveryTracker>>,
        opts: &'e LoadOptions,
    ) -> Result<Writer> {
        let (jobs, batches) = sync_channel::<Batch>(1);
        let (results, done) = sync_channel::<Result<Flushed>>(1);
        std::thread::Builder::new()
            .name("ecomlogs-loader-writer".into())
            .spawn_scoped(scope, move || {
                for batch in batches {
                    let r = write(&batch, &consumer, &producer, opts);
                    let go_on = matches!(r, Ok((Some(_), _)));
                    let _ = results.send(r.map(|(written, dead_by_reason)| Flushed {
                        batch,
                        written,
                        dead_by_reason,
                    }));
                    if !go_on {
                        break;
                    }
                }
            })
            .map_err(Error::Io)?;
        Ok(Writer {
            jobs: Some(jobs),
            done,
            in_flight: false,
        })
    }

    /// Hands a batch over (the one before must have been taken back: `wait`).
    pub(super) fn send(&mut self, batch: Batch) -> Result<()> {
        debug_assert!(!self.in_flight);
        let jobs = self.jobs.as_ref().expect("the writer is open");
        if jobs.send(batch).is_err() {
            // The writer stopped after a failure it has reported.
            return self
                .wait()
                .and(Err(Error::Internal("the loader's writer stopped".into())));
        }
        self.in_flight = true;
        Ok(())
    }

    /// The batch in flight once it is written (None: none in flight).
    pub(super) fn wait(&mut self) -> Result<Option<Flushed>> {
        if !self.in_flight {
            return Ok(None);
        }
        self.in_flight = false;
        match self.done.recv() {
            Ok(r) => r.map(Some),
            Err(_) => Err(Error::Internal(
                "the loader's writer ended unexpectedly".into(),
            )),
        }
    }

    /// The batch in flight if it is written by now.
    pub(super) fn try_take(&mut self) -> Result<Option<Flushed>> {
        if !self.in_flight {
            return Ok(None);
        }
        match self.done.try_recv() {
            Ok(r) => {
                self.in_flight = false;
                r.map(Some)
            }
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => {
                self.in_flight = false;
                Err(Error::Internal(
                    "the loader's writer ended unexpectedly".into(),
                ))
            }
        }
    }

    /// Waits for the batch in flight and closes the writer.
    pub(super) fn finish(&mut self) -> Result<Option<Flushed>> {
        let last = self.wait();
        self.jobs = None;
        last
    }
}

/// Writes a batch with its offsets, rollups and dead letters in one transaction (see `PgSink`).
fn write(
    batch: &Batch,
    consumer: &BaseConsumer<LoaderContext>,
    producer: &BaseProducer<DeliveryTracker>,
    opts: &LoadOptions,
) -> Result<(Option<Written>, BTreeMap<Reason, u64>)> {
    let ctx = consumer.context();
    let topic_id = locked(&ctx.topic_id).clone();
    let mut dead_by_reason: BTreeMap<Reason, u64> = BTreeMap::new();
    let mut deliver = |w: &Written| -> Result<()> {
        dead_by_reason.clear();
        let rejected = batch.rejected(w);
        if batch.dead.is_empty() && rejected.is_empty() {
            return Ok(());
        }
        let dlq = Topic::new(producer, &opts.dlq_topic)
            .map_err(|e| Error::kafka("dead-lettering a record", e))?;
        for d in batch.dead.iter().chain(rejected.iter()) {
            let why = d.why(&opts.topic, "loader");
            dead_letter::send(producer, &dlq, d.key.as_deref(), d.value.as_deref(), &why)?;
            *dead_by_reason.entry(d.reason).or_default() += 1;
        }
        if !dead_by_reason.is_empty() {
            dead_letter::flush(producer)?;
        }
        Ok(())
    };
    let mut sink = locked(&ctx.sink);
    let written = sink.write_batch(
        &batch.rows,
        &batch.rollup,
        &batch.progress,
        topic_id.as_deref(),
        &mut deliver,
    )?;
    if written.is_some() {
        sink.merge_deltas(batch.settles)?;
    }
    Ok((written, dead_by_reason))
}
