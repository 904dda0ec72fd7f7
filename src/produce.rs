//! Stage 1: generate events and produce them to `raw_events`, keyed by customer id. Either paced (the
//! original's one event every 500 ms, a log line each) or as fast as the broker takes them.

use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, Producer};

use crate::config::{ClientKind, KafkaSettings};
use crate::error::{Error, Result};
use crate::generate::{Generator, GeneratorConfig, Intended};
use crate::kafka::{self, ensure_topics, BrokerWatch, DeliveryTracker, Out, Topic};
use crate::metrics::{self, Export, Exporter};
use crate::options::{cmd, Values};
use crate::stage::{Schedule, StopToken, TICK};

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
        Self::from_values(&Values::defaults(cmd::PRODUCE)).expect("the table's defaults are valid")
    }
}

impl ProduceOptions {
    /// From the producer's options (see `options`): `rate` wins over `interval_ms`.
    pub fn from_values(v: &Values) -> Result<Self> {
        let interval = match v.opt_float("rate")? {
            Some(rate) => Duration::from_secs_f64(1.0 / rate),
            None => Duration::from_secs_f64(v.float("interval_ms")? / 1000.0),
        };
        Ok(ProduceOptions {
            topic: v.text("topic")?,
            count: v.opt_int("count")?,
            interval,
            generator: GeneratorConfig {
                invalid_ratio: v.float("invalid_ratio")?,
                seed: v.opt_int("seed")?,
                ..GeneratorConfig::default()
            },
            log_each: v
                .opt_flag("log_each")?
                .unwrap_or(interval >= Duration::from_millis(50)),
            partitions: v.int("partitions")?,
            flush_timeout: Duration::from_secs(30),
        })
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
    /// The broker is unreachable (for health).
    pub broker_down: bool,
}

/// Generates and produces `opts.count` events (None: until stopped), reporting through `tick` every
/// `TICK`; `token` (or `tick` returning `Error::Interrupted`) stops it after a flush. Succeeds only if
/// every event produced was acknowledged.
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
    let topics = [("output", opts.topic.as_str())];
    metrics::observed("producer", &topics, tick, |tick| {
        // Only failures get a delivery report (see `config`): what is acknowledged is what was
        // produced, minus what is still in flight, minus failures.
        let producer: BaseProducer<DeliveryTracker> = settings
            .client(ClientKind::Producer, &[])
            .create_with_context(DeliveryTracker::new(BrokerWatch::new("ecomlogs.producer")))
            .map_err(|e| Error::kafka("creating the Kafka producer", e))?;
        let mut stage = Stage::new(settings, &producer, opts, token, tick)?;
        match stage.produce() {
            Ok(()) => {}
            Err(Error::Interrupted) => stage.stats.interrupted = true,
            Err(e) => {
                // Deliver what is already queued before reporting the error; nothing else to do.
                let _ = crate::kafka::flush(stage.producer, Duration::from_secs(5));
                return Err(e);
            }
        }
        stage.flush()?;
        Ok(stage.stats)
    })
}

impl Export for ProduceStats {
    fn export(&self, _stage: &'static str, out: &mut Exporter) {
        out.produced("output", self.delivered);
    }

    fn broker_down(&self) -> bool {
        self.broker_down
    }
}

struct Stage<'a> {
    opts: &'a ProduceOptions,
    bootstrap_servers: &'a str,
    producer: &'a BaseProducer<DeliveryTracker>,
    topic: Topic<'a>,
    token: &'a StopToken,
    tick: &'a mut dyn FnMut(&ProduceStats) -> Result<()>,
    stats: ProduceStats,
    start: Instant,
    last_tick: Instant,
}

impl<'a> Stage<'a> {
    fn new(
        settings: &'a KafkaSettings,
        producer: &'a BaseProducer<DeliveryTracker>,
        opts: &'a ProduceOptions,
        token: &'a StopToken,
        tick: &'a mut dyn FnMut(&ProduceStats) -> Result<()>,
    ) -> Result<Self> {
        let topic = Topic::new(producer, &opts.topic)
            .map_err(|e| Error::kafka(format!("producing to {}", opts.topic), e))?;
        let now = Instant::now();
        Ok(Stage {
            opts,
            bootstrap_servers: &settings.bootstrap_servers,
            producer,
            topic,
            token,
            tick,
            stats: ProduceStats::default(),
            start: now,
            last_tick: now,
        })
    }

    /// The loop: one event per turn, at its time when paced.
    fn produce(&mut self) -> Result<()> {
        let mut gen = Generator::new(&self.opts.generator);
        let (mut key, mut value) = (Vec::with_capacity(64), Vec::with_capacity(512));
        let mut schedule = Schedule::every(self.opts.interval);
        let paced = schedule.is_some();
        while self.opts.count.is_none_or(|n| self.stats.produced < n) {
            if let Some(s) = schedule.as_mut() {
                self.wait_until(s.next_due())?;
            }
            let intended = gen.next_into(&mut key, &mut value);
            self.send(&key, &value)?;
            match intended {
                Intended::Valid => self.stats.valid += 1,
                Intended::Invalid(_) => self.stats.invalid += 1,
            }
            if self.opts.log_each {
                log::info!(target: "ecomlogs.producer", "produced {}", String::from_utf8_lossy(&value));
            }
            if paced || self.stats.produced % 1024 == 0 {
                self.serve()?;
            }
        }
        Ok(())
    }

    fn send(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let record = Out {
            key: Some(key).filter(|k| !k.is_empty()),
            value: Some(value),
            headers: &[],
        };
        kafka::send(self.producer, &self.topic, record)
            .map_err(|e| Error::kafka(format!("producing to {}", self.opts.topic), e))?;
        self.stats.produced += 1;
        Ok(())
    }

    /// Sleeps until `due` in short slices, serving the client and reporting meanwhile.
    fn wait_until(&mut self, due: Instant) -> Result<()> {
        loop {
            let now = Instant::now();
            if now >= due {
                return Ok(());
            }
            kafka::serve(self.producer, (due - now).min(TICK));
            self.report()?;
        }
    }

    /// Serves delivery reports (a failure ends the stage) and reports if a tick has passed.
    fn serve(&mut self) -> Result<()> {
        kafka::serve(self.producer, Duration::ZERO);
        if let Some(e) = self.producer.context().take_error() {
            return Err(Error::kafka(
                format!("delivering to {}", self.opts.topic),
                e,
            ));
        }
        self.report()
    }

    fn report(&mut self) -> Result<()> {
        if self.last_tick.elapsed() < TICK {
            return Ok(());
        }
        self.last_tick = Instant::now();
        self.refresh();
        if self.token.is_stopped() {
            return Err(Error::Interrupted);
        }
        (self.tick)(&self.stats)
    }

    fn refresh(&mut self) {
        let ctx = self.producer.context();
        self.stats.failed = ctx.failed();
        let in_flight = self.producer.in_flight_count().max(0) as u64;
        let acknowledged = self
            .stats
            .produced
            .saturating_sub(in_flight + self.stats.failed);
        if acknowledged > self.stats.delivered {
            ctx.watch.alive(); // the broker acknowledged something since the last look
        }
        // Someone may have turned per-event reports back on through extra_config: count them then.
        self.stats.delivered = match ctx.delivered() {
            0 => acknowledged,
            reported => reported,
        };
        self.stats.elapsed = self.start.elapsed();
        self.stats.broker_down = ctx.watch.is_down();
    }

    /// Waits (up to `flush_timeout`) until everything produced is acknowledged.
    fn flush(&mut self) -> Result<()> {
        let deadline = Instant::now() + self.opts.flush_timeout;
        while self.producer.in_flight_count() > 0 && Instant::now() < deadline {
            kafka::serve(self.producer, TICK);
            self.refresh();
            // A second Ctrl-C during the flush is ignored: the flush is bounded by flush_timeout.
            let _ = (self.tick)(&self.stats);
        }
        let _ = crate::kafka::flush(self.producer, Duration::from_secs(1));
        self.refresh();
        if let Some(e) = self.producer.context().take_error() {
            return Err(Error::kafka(
                format!("delivering to {}", self.opts.topic),
                e,
            ));
        }
        if self.stats.delivered < self.stats.produced {
            return Err(Error::kafka(
                format!(
                    "{} of {} events were not acknowledged by {} within {:?}",
                    self.stats.produced - self.stats.delivered,
                    self.stats.produced,
                    self.bootstrap_servers,
                    self.opts.flush_timeout
                ),
                KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut),
            ));
        }
        Ok(())
    }
}
