//! A topic's ID (KIP-516), for telling a re-created topic from the one an offset was read in.

use std::time::Duration;

use rdkafka::client::ClientContext;

/// The topic's ID (KIP-516, base64 as Kafka tools print it), or None when the broker reports none.
///
/// rust-rdkafka does not wrap librdkafka's DescribeTopics admin call, so this is the one place that
/// calls librdkafka directly (with `cached_watermarks` below); every pointer is created and destroyed here.
pub fn topic_id<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
    timeout: Duration,
) -> Option<String> {
    use rdkafka::bindings as rd;
    use std::ffi::{CStr, CString};

    let name = CString::new(topic).ok()?;
    let rk = client.native_ptr();
    let timeout_ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: `rk` is a live client handle for the duration of `client`'s borrow. Every object made
    // here is destroyed before returning; the result's descriptions are owned by `event`, which is
    // destroyed only after the topic ID has been copied into a String.
    unsafe {
        let mut names = [name.as_ptr()];
        let collection = rd::rd_kafka_TopicCollection_of_topic_names(names.as_mut_ptr(), 1);
        let options = rd::rd_kafka_AdminOptions_new(
            rk,
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBETOPICS,
        );
        let mut errstr = [0 as std::os::raw::c_char; 256];
        rd::rd_kafka_AdminOptions_set_request_timeout(
            options,
            timeout_ms,
            errstr.as_mut_ptr(),
            errstr.len(),
        );
        let queue = rd::rd_kafka_queue_new(rk);
        rd::rd_kafka_DescribeTopics(rk, collection, options, queue);
        let event = rd::rd_kafka_queue_poll(queue, timeout_ms.saturating_add(1000));
        let mut id = None;
        if !event.is_null()
            && rd::rd_kafka_event_error(event)
                == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
        {
            let result = rd::rd_kafka_event_DescribeTopics_result(event);
            if !result.is_null() {
                let mut count = 0usize;
                let topics = rd::rd_kafka_DescribeTopics_result_topics(result, &mut count);
                if count == 1 && !topics.is_null() {
                    let desc = *topics;
                    let err = rd::rd_kafka_TopicDescription_error(desc);
                    if err.is_null()
                        || rd::rd_kafka_error_code(err)
                            == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
                    {
                        let uuid = rd::rd_kafka_TopicDescription_topic_id(desc);
                        if !uuid.is_null()
                            && (rd::rd_kafka_Uuid_most_significant_bits(uuid) != 0
                                || rd::rd_kafka_Uuid_least_significant_bits(uuid) != 0)
                        {
                            let text = rd::rd_kafka_Uuid_base64str(uuid);
                            if !text.is_null() {
                                id = Some(CStr::from_ptr(text).to_string_lossy().into_owned());
                            }
                        }
                    }
                }
            }
        }
        if !event.is_null() {
            rd::rd_kafka_event_destroy(event);
        }
        rd::rd_kafka_queue_destroy(queue);
        rd::rd_kafka_AdminOptions_destroy(options);
        rd::rd_kafka_TopicCollection_destroy(collection);
        id
    }
}

/// The low and high watermarks librdkafka last saw for a partition (from fetch responses: no request
/// to the broker), or None if it has seen none yet. rust-rdkafka wraps only the querying variant.
pub fn cached_watermarks<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
    partition: i32,
) -> Option<(i64, i64)> {
    let name = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: `client.native_ptr()` is a live handle while `client` is borrowed; `name` outlives the
    // call, and librdkafka only writes the two integers.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            client.native_ptr(),
            name.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some((low, high))
}
