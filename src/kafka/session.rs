//! How long a group member may stay silent (`session.timeout.ms`), chosen per broker. On the dev broker
//! (Tansu) a group join takes about half the session timeout, so a short one starts a stage in about a
//! second instead of three; Apache Kafka refuses a session timeout below its
//! `group.min.session.timeout.ms` (6 s by default) and joins at its own pace whatever the timeout. So:
//! ask the broker (DescribeConfigs, a standard Kafka API). A broker that states its minimum gets
//! `max(minimum, 6 s)`, as before; one that states no configuration at all (Tansu) gets `SHORT_MS`. A
//! user's `session.timeout.ms` (`--extra-config`) wins over both.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;

use crate::config::{ClientKind, KafkaSettings};

/// The usual session timeout (the lowest Apache Kafka accepts by default).
pub const USUAL_MS: u32 = 6000;
/// For a broker that states no configuration (the dev broker): joins in about one second there.
pub const SHORT_MS: u32 = 2000;

/// What the broker said about its configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerConfig {
    /// It lists its settings; `Some(ms)`: its `group.min.session.timeout.ms`.
    Stated(Option<u32>),
    /// It answered with no settings at all.
    Silent,
    /// No answer (not allowed to ask, an old broker, a timeout).
    Unknown,
}

/// The session timeout for `answer`.
pub fn choose(answer: BrokerConfig) -> u32 {
    match answer {
        BrokerConfig::Silent => SHORT_MS,
        BrokerConfig::Stated(Some(min)) => min.max(USUAL_MS),
        BrokerConfig::Stated(None) | BrokerConfig::Unknown => USUAL_MS,
    }
}

/// Asks the first broker of the cluster for its configuration (bounded by `timeout`).
pub fn ask(settings: &KafkaSettings, timeout: Duration) -> BrokerConfig {
    let Ok(admin) = settings
        .client(ClientKind::Admin, &[])
        .create::<AdminClient<DefaultClientContext>>()
    else {
        return BrokerConfig::Unknown;
    };
    let Ok(md) = admin.inner().fetch_metadata(None, timeout) else {
        return BrokerConfig::Unknown;
    };
    let Some(broker) = md.brokers().first().map(|b| b.id()) else {
        return BrokerConfig::Unknown;
    };
    let opts = AdminOptions::new().request_timeout(Some(timeout));
    let asked = futures_executor::block_on(
        admin.describe_configs(&[ResourceSpecifier::Broker(broker)], &opts),
    );
    match asked {
        Ok(results) => match results.into_iter().next() {
            Some(Ok(resource)) if resource.entries.is_empty() => BrokerConfig::Silent,
            Some(Ok(resource)) => BrokerConfig::Stated(
                resource
                    .get("group.min.session.timeout.ms")
                    .and_then(|e| e.value.as_deref())
                    .and_then(|v| v.parse().ok()),
            ),
            _ => BrokerConfig::Unknown,
        },
        Err(_) => BrokerConfig::Unknown,
    }
}

/// `settings` with the session timeout for this cluster, unless the user set one.
pub fn resolve(settings: &KafkaSettings) -> KafkaSettings {
    let mut s = settings.clone();
    if s.session_timeout_ms.is_none() && !s.extra.contains_key("session.timeout.ms") {
        let answer = ask(settings, Duration::from_secs(5));
        let ms = choose(answer);
        log::debug!(target: "ecomlogs.kafka", "session.timeout.ms {ms} (the broker's configuration: {answer:?})");
        s.session_timeout_ms = Some(ms);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_broker_gets_the_short_timeout_and_a_stated_minimum_is_respected() {
        assert_eq!(choose(BrokerConfig::Silent), SHORT_MS);
        assert_eq!(choose(BrokerConfig::Unknown), USUAL_MS);
        assert_eq!(choose(BrokerConfig::Stated(None)), USUAL_MS);
        assert_eq!(choose(BrokerConfig::Stated(Some(1000))), USUAL_MS);
        assert_eq!(choose(BrokerConfig::Stated(Some(10_000))), 10_000);
    }
}
