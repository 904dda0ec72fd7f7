//! Settings, built once: where the services are (a flag, else the environment, else the original
//! system's default), each Kafka client's configuration (the crate's defaults for its kind, then the
//! stage's own settings, then the user's `extra_config` pairs, which always win), and the range of every
//! numeric option, checked at the edge with one readable error.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::config::ClientConfig;

use crate::error::Result;
use crate::options::Values;
pub use crate::options::{
    bootstrap_servers_from, bounded, database_from, defaults, group_id, seconds, topic_name,
    MAX_SECONDS,
};

/// Where the broker is and how to talk to it.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    pub bootstrap_servers: String,
    /// The user's librdkafka settings, passed as they are; they win over everything this crate sets.
    pub extra: BTreeMap<String, String>,
    /// Replication factor of the topics a stage creates.
    pub replication_factor: i32,
    /// How long a consumer may keep failing to read its input before the stage gives up.
    pub unreadable_timeout: Duration,
    /// The consumers' `session.timeout.ms`, chosen for the cluster (`kafka::session::resolve`); None:
    /// `CONSUMER`'s 6 s.
    pub session_timeout_ms: Option<u32>,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings::new(defaults::BOOTSTRAP_SERVERS)
    }
}

/// What a client is for; each kind has the crate's defaults.
#[derive(Debug, Clone, Copy)]
pub enum ClientKind<'a> {
    Producer,
    Consumer { group: &'a str },
    Admin,
}

impl KafkaSettings {
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        KafkaSettings {
            bootstrap_servers: bootstrap_servers.into(),
            extra: BTreeMap::new(),
            replication_factor: 1,
            unreadable_timeout: Duration::from_secs(60),
            session_timeout_ms: None,
        }
    }

    /// From a command's options (see `options`): the broker, the user's pairs, and, where the command
    /// has them, the replication factor of the topics it creates and the unreadable-input timeout.
    pub fn from_values(v: &Values) -> Result<Self> {
        let mut s = KafkaSettings::new(v.text("bootstrap_servers")?);
        s.extra = v.pairs("extra_config")?;
        if v.has("replication_factor") {
            s.replication_factor = v.int("replication_factor")?;
        }
        if v.has("unreadable_timeout_s") {
            s.unreadable_timeout = v.seconds("unreadable_timeout_s")?;
        }
        Ok(s)
    }

    /// From a flag (None: `KAFKA_BOOTSTRAP_SERVERS`, else the default) and the user's pairs.
    pub fn resolve(bootstrap_servers: Option<&str>, extra: BTreeMap<String, String>) -> Self {
        KafkaSettings {
            extra,
            ..KafkaSettings::new(bootstrap_servers_from(bootstrap_servers))
        }
    }

    /// The one place a client's configuration is built: the crate's defaults for `kind`, then the
    /// stage's settings, then the user's pairs (in that order, so the user's always win).
    pub fn client(&self, kind: ClientKind<'_>, stage: &[(&str, &str)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers);
        c.set("client.id", "ecomlogs");
        // Fail fast on an unreachable broker instead of retrying for minutes.
        c.set("socket.connection.setup.timeout.ms", "10000");
        let crate_defaults: &[(&str, &str)] = match kind {
            ClientKind::Producer => PRODUCER,
            ClientKind::Consumer { group } => {
                c.set("group.id", group);
                CONSUMER
            }
            ClientKind::Admin => &[],
        };
        for (k, v) in crate_defaults.iter().chain(stage) {
            c.set(*k, *v);
        }
        if let (ClientKind::Consumer { .. }, Some(ms)) = (&kind, self.session_timeout_ms) {
            c.set("session.timeout.ms", ms.to_string());
            c.set("heartbeat.interval.ms", (ms / 3).min(1000).to_string());
        }
        // OpenSSL is compiled in, and its default CA folder need not exist on this machine: for TLS to a
        // broker with a public certificate, look where distributions keep the system's CAs (unless the
        // user names a CA: `ssl.ca.location`, `ssl.ca.pem`, ...).
        if !self.extra.keys().any(|k| k.starts_with("ssl.ca.")) {
            c.set("ssl.ca.location", "probe");
        }
        for (k, v) in &self.extra {
            c.set(k, v);
        }
        c
    }
}

/// A high-throughput, idempotent producer (no duplicates from internal retries). Only failures get a
/// delivery report (a callback per record costs more than validating it); a successful `flush` then
/// means every record was acknowledged.
const PRODUCER: &[(&str, &str)] = &[
    ("enable.idempotence", "true"),
    ("delivery.report.only.error", "true"),
    ("acks", "all"),
    ("linger.ms", "5"),
    // LZ4: a little client CPU for much less broker CPU (fewer bytes to store and serve; figures in
    // bench/PROFILE.md); every Kafka broker since 0.10 handles it.
    ("compression.type", "lz4"),
    ("batch.size", "1000000"),
    ("batch.num.messages", "100000"),
    // Bounded buffering: a producer that outruns the broker waits (memory does not grow with --count).
    ("queue.buffering.max.messages", "100000"),
    ("queue.buffering.max.kbytes", "32768"),
    ("message.timeout.ms", "60000"),
];

/// A consumer that commits only what it is told to. Group joins on the dev broker take about half of
/// `session.timeout.ms`, hence 6 s (the lowest Apache Kafka accepts by default).
const CONSUMER: &[(&str, &str)] = &[
    ("enable.auto.commit", "false"),
    ("enable.auto.offset.store", "false"),
    ("auto.offset.reset", "earliest"),
    ("session.timeout.ms", "6000"),
    ("heartbeat.interval.ms", "1000"),
    // End-of-partition events tell a stage when it has caught up (`until_caught_up`).
    ("enable.partition.eof", "true"),
    ("fetch.wait.max.ms", "100"),
    // Bounded prefetch (per consumer, whatever the backlog): enough to keep a stage busy between fetches.
    ("queued.min.messages", "20000"),
    ("queued.max.messages.kbytes", "8192"),
    ("fetch.max.bytes", "8388608"),
    ("fetch.message.max.bytes", "2097152"),
    // librdkafka (2.1+) waits this long before fetching a partition whose prefetch queue was full; its
    // 1 s default stalls a stage that drains its queue in milliseconds (400k records took 5.9 s instead
    // of 0.5 s to read with the bounds above).
    ("fetch.queue.backoff.ms", "10"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_users_pairs_win_over_the_stages_which_win_over_the_crates() {
        let mut s = KafkaSettings::new("b:1");
        s.extra.insert("message.max.bytes".into(), "2000000".into());
        s.extra.insert("linger.ms".into(), "50".into());
        let c = s.client(
            ClientKind::Producer,
            &[("message.max.bytes", "16000000"), ("acks", "1")],
        );
        assert_eq!(c.get("message.max.bytes"), Some("2000000"));
        assert_eq!(c.get("linger.ms"), Some("50"));
        assert_eq!(c.get("acks"), Some("1"));
        assert_eq!(c.get("compression.type"), Some("lz4"));
        let c = s.client(ClientKind::Consumer { group: "g" }, &[]);
        assert_eq!(c.get("group.id"), Some("g"));
        assert_eq!(c.get("enable.partition.eof"), Some("true"));
        assert_eq!(c.get("compression.type"), None);
        assert_eq!(c.get("ssl.ca.location"), Some("probe"));
        s.extra.insert("ssl.ca.pem".into(), "-----BEGIN ...".into());
        let c = s.client(ClientKind::Admin, &[]);
        assert_eq!(c.get("ssl.ca.location"), None);
    }

    #[test]
    fn numbers_outside_their_range_are_config_errors() {
        assert!(seconds("until_idle", f64::INFINITY, 0.001..=MAX_SECONDS).is_err());
        assert!(seconds("until_idle", 1e300, 0.001..=MAX_SECONDS).is_err());
        assert!(seconds("until_idle", -1.0, 0.001..=MAX_SECONDS).is_err());
        assert!(seconds("until_idle", f64::NAN, 0.001..=MAX_SECONDS).is_err());
        assert_eq!(
            seconds("until_idle", 2.5, 0.001..=MAX_SECONDS).unwrap(),
            Duration::from_millis(2500)
        );
        let e = bounded("workers", 0usize, 1..=64).unwrap_err().to_string();
        assert_eq!(e, "workers must be between 1 and 64, got 0");
    }

    #[test]
    fn topic_names_follow_kafkas_rules() {
        for ok in ["raw_events", "a.b-c_D9", &"x".repeat(249)] {
            assert!(topic_name("topic", ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "with space", "ü", &"x".repeat(250)] {
            assert!(topic_name("topic", bad).is_err(), "{bad:?}");
        }
        assert!(group_id(" ").is_err());
    }
}
