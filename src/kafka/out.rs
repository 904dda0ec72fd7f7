//! Sending records: the one way every stage produces. rust-rdkafka's `BaseProducer::send` names the
//! topic on every record, which costs a C string and, inside librdkafka, a lookup of the topic under the
//! client's write lock, a lock every routing thread and librdkafka's own threads meet at (measured: the
//! processor spent 13% more CPU per event that way). A stage asks librdkafka for the handle of each topic
//! it writes once (`Topic`) and produces through it (`send`), with back-pressure.

use std::ffi::CString;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, Producer, ProducerContext};

/// librdkafka's handle of one topic, valid while the producer it came from is (the borrow `'p`).
pub struct Topic<'p> {
    rkt: NonNull<rd::rd_kafka_topic_t>,
    _producer: PhantomData<&'p ()>,
}

// SAFETY: librdkafka's topic handles are thread-safe (reference counted, their state behind locks).
unsafe impl Send for Topic<'_> {}
unsafe impl Sync for Topic<'_> {}

impl<'p> Topic<'p> {
    /// The handle of `name`. Its configuration is the producer's, as when producing by name.
    pub fn new<C: ProducerContext>(
        producer: &'p BaseProducer<C>,
        name: &str,
    ) -> Result<Self, KafkaError> {
        let invalid = || KafkaError::MessageProduction(RDKafkaErrorCode::InvalidTopic);
        let cname = CString::new(name).map_err(|_| invalid())?;
        // SAFETY: a valid client handle and C string; a null configuration means the producer's.
        let rkt = unsafe {
            rd::rd_kafka_topic_new(
                producer.client().native_ptr(),
                cname.as_ptr(),
                std::ptr::null_mut(),
            )
        };
        let rkt = NonNull::new(rkt).ok_or_else(invalid)?;
        Ok(Topic {
            rkt,
            _producer: PhantomData,
        })
    }
}

impl Drop for Topic<'_> {
    fn drop(&mut self) {
        // SAFETY: our one reference, released once, before the producer goes (the borrow `'p`).
        unsafe { rd::rd_kafka_topic_destroy(self.rkt.as_ptr()) }
    }
}

/// One record: key, value and headers are copied by librdkafka.
#[derive(Clone, Copy, Default)]
pub struct Out<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: &'a [(&'a str, &'a [u8])],
}

/// librdkafka's header list of a record, until a successful produce hands it to the message.
struct HeaderList(*mut rd::rd_kafka_headers_t);

impl HeaderList {
    fn of(headers: &[(&str, &[u8])]) -> Option<HeaderList> {
        if headers.is_empty() {
            return None;
        }
        // SAFETY: a new list, filled with copies of names and values of the lengths given.
        unsafe {
            let list = rd::rd_kafka_headers_new(headers.len());
            for (name, value) in headers {
                rd::rd_kafka_header_add(
                    list,
                    name.as_ptr().cast(),
                    name.len() as isize,
                    value.as_ptr().cast(),
                    value.len() as isize,
                );
            }
            Some(HeaderList(list))
        }
    }
}

impl Drop for HeaderList {
    fn drop(&mut self) {
        // SAFETY: a list nobody else owns (a produced message's list is forgotten, see `send`).
        unsafe { rd::rd_kafka_headers_destroy(self.0) }
    }
}

/// Sends `record` to `topic`; while librdkafka's queue is full, serves delivery reports and tries
/// again. (Delivery reports carry no per-record state: the stages' delivery opaque is `()`.)
pub fn send<C: ProducerContext<DeliveryOpaque = ()>>(
    producer: &BaseProducer<C>,
    topic: &Topic<'_>,
    record: Out<'_>,
) -> Result<(), KafkaError> {
    let headers = HeaderList::of(record.headers);
    use rd::rd_kafka_vtype_t as V;
    use rd::rd_kafka_vu_s__bindgen_ty_1 as U;
    let end = rd::rd_kafka_vu_t {
        vtype: V::RD_KAFKA_VTYPE_END,
        u: U { i: 0 },
    };
    let (mut vus, mut n) = ([end; 5], 0);
    let mut vu = |vtype, u| {
        vus[n] = rd::rd_kafka_vu_t { vtype, u };
        n += 1;
    };
    vu(
        V::RD_KAFKA_VTYPE_RKT,
        U {
            rkt: topic.rkt.as_ptr(),
        },
    );
    vu(
        V::RD_KAFKA_VTYPE_MSGFLAGS,
        U {
            i: rd::RD_KAFKA_MSG_F_COPY,
        },
    );
    for (vtype, bytes) in [
        (V::RD_KAFKA_VTYPE_VALUE, record.value),
        (V::RD_KAFKA_VTYPE_KEY, record.key),
    ] {
        if let Some(b) = bytes {
            let mem = rd::rd_kafka_vu_s__bindgen_ty_1__bindgen_ty_1 {
                ptr: b.as_ptr() as *mut _,
                size: b.len(),
            };
            vu(vtype, U { mem });
        }
    }
    if let Some(h) = &headers {
        vu(V::RD_KAFKA_VTYPE_HEADERS, U { headers: h.0 });
    }
    loop {
        // SAFETY: a valid client handle; every pointer in `vus` outlives the call (librdkafka copies
        // key and value: MSG_F_COPY); the header list becomes the message's if the call succeeds.
        let err =
            unsafe { rd::rd_kafka_produceva(producer.client().native_ptr(), vus.as_ptr(), n) };
        if err.is_null() {
            std::mem::forget(headers);
            return Ok(());
        }
        // SAFETY: the error object returned to us, read and destroyed once.
        let code = RDKafkaErrorCode::from(unsafe { rd::rd_kafka_error_code(err) });
        unsafe { rd::rd_kafka_error_destroy(err) };
        match code {
            RDKafkaErrorCode::QueueFull => producer.poll(Duration::from_millis(5)),
            code => return Err(KafkaError::MessageProduction(code)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::client::ClientContext;
    use rdkafka::config::ClientConfig;
    use rdkafka::message::{Headers, Message};
    use rdkafka::producer::{DeliveryResult, PurgeConfig};
    use std::sync::Mutex;
    use std::time::Instant;

    /// A record as its delivery report gives it back: key, value, headers.
    type Seen = (Option<Vec<u8>>, Option<Vec<u8>>, Vec<(String, Vec<u8>)>);

    /// Keeps every delivery report's record.
    #[derive(Default)]
    struct Reports(Mutex<Vec<Seen>>);

    impl ClientContext for Reports {}

    impl ProducerContext for Reports {
        type DeliveryOpaque = ();
        fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
            let m = match result {
                Ok(m) => m,
                Err((_, m)) => m,
            };
            let headers = m.headers().map_or_else(Vec::new, |h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            });
            let seen = (
                m.key().map(<[u8]>::to_vec),
                m.payload().map(<[u8]>::to_vec),
                headers,
            );
            self.0.lock().unwrap().push(seen);
        }
    }

    /// A producer that never reaches a broker: records stay queued until purged, and the purge
    /// reports each of them as librdkafka holds it.
    fn unconnected() -> BaseProducer<Reports> {
        ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:1")
            .set("message.timeout.ms", "60000")
            .set("log_level", "0")
            .create_with_context(Reports::default())
            .expect("a producer")
    }

    fn purged(producer: &BaseProducer<Reports>, n: usize) -> Vec<Seen> {
        producer.purge(PurgeConfig::default().queue());
        let deadline = Instant::now() + Duration::from_secs(10);
        while producer.context().0.lock().unwrap().len() < n && Instant::now() < deadline {
            producer.poll(Duration::from_millis(50));
        }
        std::mem::take(&mut *producer.context().0.lock().unwrap())
    }

    #[test]
    fn records_keep_their_key_value_and_headers_and_handles_are_released_on_their_own() {
        let producer = unconnected();
        let topic = Topic::new(&producer, "clean_events").expect("a handle");
        let lineage = [
            ("ecomlogs.replayed_from", &b"dlq/0/7"[..]),
            ("ecomlogs.replay_generation", b"1"),
        ];
        let records = [
            Out {
                key: Some(b"c1"),
                value: Some(b"{}"),
                headers: &[("ecomlogs.contract", b"urn:x")],
            },
            Out {
                key: None,
                value: Some(b"[]"),
                headers: &lineage,
            },
            Out {
                key: Some(b"c2"),
                value: None,
                headers: &[],
            },
        ];
        for r in records {
            send(&producer, &topic, r).expect("queued");
        }
        // Another handle of the same topic is librdkafka's same topic, released on its own.
        drop(Topic::new(&producer, "clean_events").expect("a handle"));
        send(&producer, &topic, Out::default()).expect("queued");
        drop(topic);
        let mut seen = purged(&producer, 4);
        seen.sort();
        let own = |k: &str, v: &[u8]| (k.to_string(), v.to_vec());
        assert_eq!(
            seen,
            vec![
                (None, None, vec![]),
                (
                    None,
                    Some(b"[]".to_vec()),
                    vec![
                        own("ecomlogs.replayed_from", b"dlq/0/7"),
                        own("ecomlogs.replay_generation", b"1")
                    ]
                ),
                (
                    Some(b"c1".to_vec()),
                    Some(b"{}".to_vec()),
                    vec![own("ecomlogs.contract", b"urn:x")]
                ),
                (Some(b"c2".to_vec()), None, vec![]),
            ]
        );
    }

    #[test]
    fn a_topic_name_with_a_nul_byte_is_refused() {
        let producer = unconnected();
        let err = Topic::new(&producer, "clean\0events")
            .err()
            .expect("refused");
        assert_eq!(
            err,
            KafkaError::MessageProduction(RDKafkaErrorCode::InvalidTopic)
        );
    }
}
