//! Stage 1: generate events and produce them to `raw_events`, keyed by customer id. Either paced (the
//! original's one event every 500 ms, a log line each) or as fast as the broker takes them.

use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use crate::config::{defaults, ClientKind, KafkaSettings};
use crate::error::{Error, Result};
use crate::generate::{Generator, GeneratorConfig, Intended};
use crate::kafka::{ensure_topics, send_blocking, BrokerWatch, DeliveryTracker};
use crate::stage::{StopToken, TICK};

#[derive(Debug, Clone)]
pub struct ProduceOptions {
    pub topic: String,
    /// None: until interrupted.
    pub count: Option<u64>,
    /// Pause between events (1 / rate); zero: as fast as possible.
    pub interval: Duration,
    pub generator: GeneratorConfig,
    /// Log a line per event (the original's console output); only sensible when paced.
    pub log_each: bool,
    pub partitions: i32,
    /// How long the final flush may wait for outstanding deliveries.
    pub flush_timeout: Duration,
}

impl Default for ProduceOptions {
    fn default() -> Self {
        ProduceOptions {
            topic: defaults::RAW_TOPIC.to_string(),
            count: None,
            interval: Duration::from_millis(500),
            generator: GeneratorConfig::default(),
            log_each: true,
            partitions: defaults::PARTITIONS,
            flush_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ProduceStats {
    /// Handed to the client.
    pub produced: u64,
    /// Acknowledged by the broker.
    pub delivered: u64,
    pub failed: u64,
    pub valid: u64,
    pub invalid: u64,
    pub elapsed: Duration,
    /// Stopped by the caller (Ctrl-C) rather than by reaching `count`.
    pub interrupted: bool,
}

pub fn run_producer(
    settings: &KafkaSettings,
    opts: &ProduceOptions,
    token: &StopToken,
    tick: &mut dyn FnMut(&ProduceStats) -> Result<()>,
) -> Result<ProduceStats> {
    ensure_topics(
        settings,
        &[&opts.topic],
        opts.partitions,
        Duration::from_secs(15),
    )?;
    // Only failures get a delivery report (see `config`): what is acknowledged is what was produced,
    // minus what is still in flight, minus failures.
    let producer: BaseProducer<DeliveryTracker> = settings
        .client(ClientKind::Producer, &[])
        .create_with_context(DeliveryTracker::new(BrokerWatch::new("ecomlogs.producer")))
        .map_err(|e| Error::kafka("creating the Kafka producer", e))?;
    let mut gen = Generator::new(&opts.generator);
    let (mut key, mut value) = (Vec::with_capacity(64), Vec::with_capacity(512));
    let mut stats = ProduceStats::default();
    let start = Instant::now();
    let mut last_tick = start;
    let mut next_due = start;
    let paced = !opts.interval.is_zero();

    let refresh = |stats: &mut ProduceStats, p: &BaseProducer<DeliveryTracker>| {
        stats.failed = p.context().failed();
        let in_flight = p.in_flight_count().max(0) as u64;
        let acknowledged = stats.produced.saturating_sub(in_flight + stats.failed);
        if acknowledged > stats.delivered {
            p.context().watch.alive(); // the broker acknowledged something since the last look
        }
        stats.delivered = if p.context().delivered() > 0 {
            // Someone turned per-event reports back on through extra_config: count them.
            p.context().delivered()
        } else {
            stats.produced.saturating_sub(in_flight + stats.failed)
        };
        stats.elapsed = start.elapsed();
    };

    let mut tick = |stats: &ProduceStats| {
        if token.is_stopped() {
            return Err(Error::Interrupted);
        }
        tick(stats)
    };
    let outcome: Result<()> = 'run: loop {
        if opts.count.is_some_and(|n| stats.produced >= n) {
            break Ok(());
        }
        if paced {
            // Sleep in short slices so that Ctrl-C is seen promptly.
            loop {
                let now = Instant::now();
                if now >= next_due {
                    break;
                }
                producer.poll((next_due - now).min(TICK));
                if last_tick.elapsed() >= TICK {
                    last_tick = Instant::now();
                    refresh(&mut stats, &producer);
                    if let Err(e) = tick(&stats) {
                        break 'run Err(e);
                    }
                }
            }
            // Keep the schedule (a late event is followed by quicker ones) unless we fell a second behind.
            next_due += opts.interval;
            let now = Instant::now();
            if next_due + Duration::from_secs(1) < now {
                next_due = now;
            }
        }
        let intended = gen.next_into(&mut key, &mut value);
        let mut record: BaseRecord<'_, [u8], [u8]> =
            BaseRecord::to(&opts.topic).payload(value.as_slice());
        if !key.is_empty() {
            record = record.key(key.as_slice());
        }
        if let Err(e) = send_blocking(&producer, record) {
            break 'run Err(Error::kafka(format!("producing to {}", opts.topic), e));
        }
        stats.produced += 1;
        match intended {
            Intended::Valid => stats.valid += 1,
            Intended::Invalid(_) => stats.invalid += 1,
        }
        if opts.log_each {
            log::info!(target: "ecomlogs.producer", "produced {}", String::from_utf8_lossy(&value));
        }
        if stats.produced % 1024 == 0 || paced {
            producer.poll(Duration::ZERO);
            if let Some(e) = producer.context().take_error() {
                break Err(Error::kafka(format!("delivering to {}", opts.topic), e));
            }
            if last_tick.elapsed() >= TICK {
                last_tick = Instant::now();
                refresh(&mut stats, &producer);
                if let Err(e) = tick(&stats) {
                    break Err(e);
                }
            }
        }
    };
    match outcome {
        Ok(()) => {}
        Err(Error::Interrupted) => stats.interrupted = true,
        Err(e) => {
            // Deliver what is already queued before reporting the error; nothing else to do with it.
            let _ = producer.flush(Duration::from_secs(5));
            return Err(e);
        }
    }
    let deadline = Instant::now() + opts.flush_timeout;
    while producer.in_flight_count() > 0 && Instant::now() < deadline {
        producer.poll(TICK);
        refresh(&mut stats, &producer);
        // A second Ctrl-C during the flush is ignored: the flush is bounded by flush_timeout.
        let _ = tick(&stats);
    }
    let _ = producer.flush(Duration::from_secs(1));
    refresh(&mut stats, &producer);
    if let Some(e) = producer.context().take_error() {
        return Err(Error::kafka(format!("delivering to {}", opts.topic), e));
    }
    if stats.delivered < stats.produced {
        return Err(Error::kafka(
            format!(
                "{} of {} events were not acknowledged by {} within {:?}",
                stats.produced - stats.delivered,
                stats.produced,
                settings.bootstrap_servers,
                opts.flush_timeout
            ),
            KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut),
        ));
    }
    Ok(stats)
}
