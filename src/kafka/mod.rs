//! Kafka plumbing shared by the stages: topic creation through the admin API (the dev broker does not
//! auto-create topics), sending with back-pressure through topic handles made once (`out`), and what the stages' clients share: contexts that
//! report broker outages once (`context`), what a consumer knows of its input (`input`), and reading a
//! topic from outside the pipeline (`read`: for notebooks and the dashboard).

mod context;
pub mod fetch_errors;
mod input;
mod out;
mod read;
pub mod session;
mod topic_id;

pub use context::{
    is_connection_error, note_served, rebalance, BrokerWatch, DeliveryTracker, GroupContext,
    LastError, StageContext,
};
pub use input::{Assignment, InputState};
pub use out::{send, Out, Topic};
pub use read::{
    read_to_end, topic_offsets, Each, PartitionOffsets, ReadRequest, Reader, Record, Scan, ScanEnd,
    Tick, TopicRead,
};
pub use topic_id::{cached_watermarks, topic_id};

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::Rebalance;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::TopicPartitionList;

use crate::config::{ClientKind, KafkaSettings};
use crate::error::{Error, Result};

/// Creates the topics that do not exist yet (existing ones are left alone).
pub fn ensure_topics(
    settings: &KafkaSettings,
    topics: &[&str],
    partitions: i32,
    timeout: Duration,
) -> Result<()> {
    // An unreachable broker says so at once, with librdkafka's code (`_TRANSPORT`, `_RESOLVE`, ...) and
    // its last word on why (a TLS handshake, an authentication), rather than after the create
    // request's whole timeout. The admin client serves no events (its logs and errors would be lost):
    // a plain client whose events we serve asks first.
    let probe: BaseProducer<LastError> = settings
        .client(ClientKind::Admin, &[])
        .create_with_context(LastError::default())
        .map_err(|e| Error::kafka("creating a Kafka client", e))?;
    let unreachable = |e: KafkaError| {
        probe.poll(Duration::from_millis(50));
        let why = probe.context().take();
        let why = why.map(|w| format!(" ({w})")).unwrap_or_default();
        Error::kafka(
            format!(
                "cannot reach the broker at {}{why}",
                settings.bootstrap_servers
            ),
            e,
        )
    };
    probe
        .client()
        .fetch_metadata(None, timeout.min(Duration::from_secs(5)))
        .map_err(unreachable)?;
    let admin: AdminClient<DefaultClientContext> = settings
        .client(ClientKind::Admin, &[])
        .create()
        .map_err(|e| Error::kafka("creating the Kafka admin client", e))?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| {
            NewTopic::new(
                t,
                partitions,
                TopicReplication::Fixed(settings.replication_factor),
            )
        })
        .collect();
    let opts = AdminOptions::new()
        .operation_timeout(Some(timeout))
        .request_timeout(Some(timeout));
    let results =
        futures_executor::block_on(admin.create_topics(new.iter(), &opts)).map_err(|e| {
            // A request that timed out because the broker cannot be reached says so, with librdkafka's
            // own code for it (a metadata request names it: `_TRANSPORT`, `_RESOLVE`, ...).
            let reach = probe
                .client()
                .fetch_metadata(None, Duration::from_secs(2))
                .err();
            match reach {
                Some(e) => unreachable(e),
                None => Error::kafka(
                    format!(
                        "creating topics {topics:?} on {}",
                        settings.bootstrap_servers
                    ),
                    e,
                ),
            }
        })?;
    for r in results {
        match r {
            Ok(name) => {
                log::info!(target: "ecomlogs.kafka", "created topic {name} ({partitions} partitions, replication factor {})", settings.replication_factor)
            }
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(Error::kafka(
                    format!("creating topic {name} on {}", settings.bootstrap_servers),
                    KafkaError::AdminOp(code),
                ))
            }
        }
    }
    Ok(())
}

pub fn log_rebalance(rebalance: &Rebalance<'_>) {
    match rebalance {
        Rebalance::Assign(tpl) => {
            log::info!(target: "ecomlogs.kafka", "assigned {}", describe_tpl(tpl))
        }
        Rebalance::Revoke(tpl) => {
            log::info!(target: "ecomlogs.kafka", "revoked {}", describe_tpl(tpl))
        }
        Rebalance::Error(e) => log::warn!(target: "ecomlogs.kafka", "rebalance error: {e}"),
    }
}

pub fn describe_tpl(tpl: &TopicPartitionList) -> String {
    let parts: Vec<String> = tpl
        .elements()
        .iter()
        .map(|e| format!("{}[{}]", e.topic(), e.partition()))
        .collect();
    if parts.is_empty() {
        "no partitions".into()
    } else {
        parts.join(", ")
    }
}

/// True for errors after which retrying the same call cannot help.
pub fn is_fatal(code: Option<RDKafkaErrorCode>) -> bool {
    matches!(
        code,
        Some(RDKafkaErrorCode::Fatal)
            | Some(RDKafkaErrorCode::ProducerFenced)
            | Some(RDKafkaErrorCode::InvalidProducerEpoch)
            | Some(RDKafkaErrorCode::TopicAuthorizationFailed)
    )
}

/// Waits until every record sent so far is acknowledged (or failed), returning as soon as that is so.
/// rust-rdkafka's `flush` polls in whole 100 ms slices (its `poll` waits out its timeout even when
/// nothing comes), which cost the processor 100 ms per batch; this waits in librdkafka's own flush
/// (which also sends lingering records at once) and serves the delivery reports between slices.
pub fn flush<S: Send + Sync>(
    producer: &BaseProducer<StageContext<S>>,
    timeout: Duration,
) -> std::result::Result<(), KafkaError>
where
    StageContext<S>: rdkafka::producer::ProducerContext,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let slice = left.min(Duration::from_millis(20)).as_millis() as i32;
        // SAFETY: a valid producer handle for the duration of the call.
        let err =
            unsafe { rdkafka::bindings::rd_kafka_flush(producer.client().native_ptr(), slice) };
        // Delivery reports (failures only, see config) are events: serve them so they count as done.
        serve(producer, Duration::ZERO);
        match RDKafkaErrorCode::from(err) {
            RDKafkaErrorCode::NoError => return Ok(()),
            RDKafkaErrorCode::OperationTimedOut if producer.in_flight_count() == 0 => return Ok(()),
            RDKafkaErrorCode::OperationTimedOut if left.is_zero() => {
                return Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut))
            }
            RDKafkaErrorCode::OperationTimedOut => {}
            code => return Err(KafkaError::Flush(code)),
        }
    }
}

/// Serves a producer's events (delivery reports, errors, librdkafka's log lines) for `wait`, then
/// those still waiting (its `poll` serves one per call when it does not wait), and notes when its
/// queue was empty (`note_served`). A stage serves its producer at every turn of its loop, so the
/// producer's news of the broker is not left waiting until its next flush.
pub fn serve<S: Send + Sync>(producer: &BaseProducer<StageContext<S>>, wait: Duration)
where
    StageContext<S>: rdkafka::producer::ProducerContext,
{
    if !wait.is_zero() {
        producer.poll(wait);
    }
    // Bounded: a producer whose reports come faster than they are served is noted another time.
    for _ in 0..10_000 {
        if note_served(producer.client()) {
            return;
        }
        producer.poll(Duration::ZERO);
    }
}

/// librdkafka's name for an error code, as its documentation spells it (e.g. `_TRANSPORT`,
/// `TOPIC_ALREADY_EXISTS`).
pub fn code_name(code: RDKafkaErrorCode) -> String {
    use rdkafka::types::RDKafkaRespErr;
    match RDKafkaRespErr::try_from(code as i32) {
        // SAFETY: rd_kafka_err2name returns a pointer to a static, NUL-terminated string for any code.
        Ok(err) => unsafe { std::ffi::CStr::from_ptr(rdkafka::bindings::rd_kafka_err2name(err)) }
            .to_string_lossy()
            .into_owned(),
        Err(_) => format!("{code:?}"),
    }
}

/// Checks the user's librdkafka pairs (an unknown key or a bad value is the user's mistake, said once
/// and at once rather than when the first client is made). The message never holds the value of a key
/// that may be a secret, nor the value of a key librdkafka does not know (a mistyped `sasl.pasword`
/// is still a password).
pub fn check_extra(settings: &KafkaSettings) -> Result<()> {
    for kind in [
        ClientKind::Producer,
        ClientKind::Consumer { group: "check" },
    ] {
        match settings.client(kind, &[]).create_native_config() {
            Ok(_) => {}
            Err(KafkaError::ClientConfig(_, desc, key, value)) => {
                // A key of the other kind of client is fine (librdkafka only warns about those).
                if !desc.contains("is a producer property")
                    && !desc.contains("is a consumer property")
                {
                    let unknown = desc.contains("No such configuration property");
                    let (shown, desc) = if unknown || may_be_secret(&key) {
                        ("***".to_string(), hide(&desc, &value))
                    } else {
                        (value, desc)
                    };
                    return Err(Error::Config(format!("extra_config {key}={shown}: {desc}")));
                }
            }
            Err(e) => {
                let text = settings
                    .extra
                    .iter()
                    .filter(|(k, _)| may_be_secret(k))
                    .fold(e.to_string(), |t, (_, v)| hide(&t, v));
                return Err(Error::Config(format!("extra_config: {text}")));
            }
        }
    }
    Ok(())
}

/// Keys whose values are never printed: passwords, secrets, tokens, keys (and their usual spellings).
pub fn may_be_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["pass", "pwd", "secret", "token", "key", "credential"]
        .iter()
        .any(|w| key.contains(w))
}

/// `text` with every occurrence of `value` replaced by `***`.
fn hide(text: &str, value: &str) -> String {
    if value.is_empty() {
        text.to_string()
    } else {
        text.replace(value, "***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names_are_librdkafkas() {
        assert_eq!(
            code_name(RDKafkaErrorCode::BrokerTransportFailure),
            "_TRANSPORT"
        );
        assert_eq!(
            code_name(RDKafkaErrorCode::TopicAlreadyExists),
            "TOPIC_ALREADY_EXISTS"
        );
    }

    #[test]
    fn the_build_has_tls_sasl_and_every_codec() {
        let native = KafkaSettings::new("localhost:1")
            .client(ClientKind::Producer, &[])
            .create_native_config()
            .unwrap();
        let features = native.get("builtin.features").unwrap();
        for f in [
            "gzip",
            "snappy",
            "lz4",
            "zstd",
            "ssl",
            "sasl_plain",
            "sasl_scram",
            "sasl_oauthbearer",
        ] {
            assert!(features.split(',').any(|x| x == f), "{f} not in {features}");
        }
        // The recipes' settings are accepted (they were "not available at build time").
        let mut s = KafkaSettings::new("localhost:1");
        for (k, v) in [
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanisms", "SCRAM-SHA-512"),
            ("sasl.username", "u"),
            ("sasl.password", "p"),
            ("ssl.ca.location", "probe"),
            ("compression.type", "zstd"),
        ] {
            s.extra.insert(k.into(), v.into());
        }
        assert!(check_extra(&s).is_ok(), "{:?}", check_extra(&s));
        s.extra
            .insert("sasl.mechanisms".into(), "OAUTHBEARER".into());
        assert!(check_extra(&s).is_ok());
    }

    #[test]
    fn unknown_extra_keys_are_config_errors() {
        let mut s = KafkaSettings::new("localhost:1");
        s.extra.insert("linger.ms".into(), "7".into());
        s.extra.insert("fetch.wait.max.ms".into(), "50".into());
        assert!(check_extra(&s).is_ok());
        s.extra.insert("no.such.thing".into(), "1".into());
        let e = check_extra(&s).unwrap_err().to_string();
        assert!(e.contains("no.such.thing"), "{e}");
        let mut s = KafkaSettings::new("localhost:1");
        s.extra.insert("linger.ms".into(), "soon".into());
        assert!(matches!(check_extra(&s), Err(Error::Config(_))));
    }

    #[test]
    fn config_errors_never_show_a_secret() {
        // A mistyped key: librdkafka does not know it, so nothing says it is not a password.
        for (key, value) in [
            ("sasl.pasword", "topsecret"),
            ("sasl.password.typo", "topsecret"),
            ("no.such.prop", "topsecret"),
        ] {
            let mut s = KafkaSettings::new("localhost:1");
            s.extra.insert(key.into(), value.into());
            let e = check_extra(&s).unwrap_err().to_string();
            assert!(!e.contains("topsecret"), "{e}");
            assert!(e.contains(&format!("{key}=***")), "{e}");
        }
        // A bad value of a known key: shown, unless the key may hold a secret.
        let mut s = KafkaSettings::new("localhost:1");
        s.extra.insert("linger.ms".into(), "soon".into());
        let e = check_extra(&s).unwrap_err().to_string();
        assert!(e.contains("linger.ms=soon"), "{e}");
        let mut s = KafkaSettings::new("localhost:1");
        s.extra
            .insert("sasl.oauthbearer.method".into(), "nonsense".into());
        s.extra
            .insert("ssl.key.password".into(), "topsecret".into());
        let e = check_extra(&s).unwrap_err().to_string();
        assert!(e.contains("sasl.oauthbearer.method=nonsense"), "{e}");
        for key in [
            "sasl.password",
            "ssl.key.password",
            "SASL.OAUTHBEARER.CLIENT.SECRET",
            "x.token",
        ] {
            assert!(may_be_secret(key), "{key}");
        }
        assert!(!may_be_secret("linger.ms"));
    }
}
