//! The metrics endpoint: `/metrics` (Prometheus text format) and `/healthz` (200 or 503 with a
//! one-line reason), served by hyper's HTTP/1 server on a current-thread tokio runtime in one background
//! thread, until the server is closed or dropped.
//!
//! No client can hold it: every connection is served concurrently and lives a few seconds at most (the
//! request head within `header_read`, the whole exchange within `connection`, one request per
//! connection), request heads are bounded in size, request bodies are never read (one declaring more
//! than `MAX_BODY` bytes gets 413), and the connections open at once are bounded (over the limit a new
//! one gets 503 at once). Only GET and HEAD are served; any other method gets 405.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONNECTION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::error::{Error, Result};

/// The largest request body accepted (never read: a GET or HEAD has none).
const MAX_BODY: u64 = 1024;

/// What bounds a client's hold on the server.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Connections served at once; a new one over this gets 503 and is closed.
    connections: usize,
    /// The request head must arrive within this (from the connection's start).
    header_read: Duration,
    /// Longest life of a connection (a client that reads its answer slowly, or never).
    connection: Duration,
    /// Request head, start line included.
    max_header: usize,
}

impl Limits {
    const DEFAULT: Limits = Limits {
        connections: 512,
        header_read: Duration::from_secs(5),
        connection: Duration::from_secs(10),
        max_header: 8 * 1024,
    };
}

pub struct MetricsServer {
    stop: Option<oneshot::Sender<()>>,
    addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Listens on `host:port` (port 0: a free one, see `addr`).
    pub fn start(host: &str, port: u16) -> Result<Self> {
        Self::start_with(host, port, Limits::DEFAULT)
    }

    fn start_with(host: &str, port: u16, limits: Limits) -> Result<Self> {
        let listener = std::net::TcpListener::bind((host, port)).map_err(|e| {
            Error::Config(format!(
                "cannot serve metrics on {host}:{port}: {e} (choose another --metrics-port, or 0 for a free one)"
            ))
        })?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let listener = {
            let _entered = runtime.enter();
            TcpListener::from_std(listener)?
        };
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("ecomlogs-metrics".into())
            .spawn(move || {
                runtime.block_on(serve(listener, stopped, limits));
                // Dropping the runtime drops every connection still open.
            })
            .map_err(Error::Io)?;
        log::info!(target: "ecomlogs.metrics", "metrics on http://{addr}/metrics, health on http://{addr}/healthz");
        Ok(MetricsServer {
            stop: Some(stop),
            addr,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving and releases the port (idempotent).
    pub fn close(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.close();
    }
}

/// Sent to a connection over the limit, without reading anything from it.
const BUSY: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
Content-Length: 40\r\nConnection: close\r\n\r\ntoo many connections to the metrics port\n";

/// Accepts until `stopped`; each connection is a task of its own.
async fn serve(listener: TcpListener, mut stopped: oneshot::Receiver<()>, limits: Limits) {
    let open = Arc::new(AtomicUsize::new(0));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read)
        .max_header_size(limits.max_header)
        .max_buf_size(16 * 1024)
        .keep_alive(false);
    loop {
        let accepted = std::future::poll_fn(|cx| {
            if Pin::new(&mut stopped).poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            listener.poll_accept(cx).map(Some)
        })
        .await;
        let stream = match accepted {
            None => return,
            Some(Ok((stream, _))) => stream,
            Some(Err(e)) => {
                // Out of file descriptors, most likely: let connections end before accepting more.
                log::debug!(target: "ecomlogs.metrics", "accepting a connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if open.load(Ordering::Relaxed) >= limits.connections {
            let _ = stream.try_write(BUSY);
            continue;
        }
        let slot = Slot::take(&open);
        let conn = http.serve_connection(
            TokioIo::new(stream),
            hyper::service::service_fn(|req| std::future::ready(Ok::<_, Infallible>(answer(&req)))),
        );
        tokio::spawn(async move {
            let _slot = slot;
            // Past its time the connection is dropped, whatever it was doing.
            let _ = tokio::time::timeout(limits.connection, conn).await;
        });
    }
}

/// One open connection, counted until dropped.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(open: &Arc<AtomicUsize>) -> Slot {
        open.fetch_add(1, Ordering::Relaxed);
        Slot(Arc::clone(open))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CONNECTION, HeaderValue::from_static("close"));
    r
}

const PLAIN: &str = "text/plain; charset=utf-8";

/// The answer to one request; its body (if any) is never read.
fn answer(req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.body().size_hint().upper().is_none_or(|n| n > MAX_BODY) {
        return text(
            StatusCode::PAYLOAD_TOO_LARGE,
            PLAIN,
            "request bodies are not accepted here\n".into(),
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            PLAIN,
            format!("{} is not allowed: use GET or HEAD\n", req.method()),
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match req.uri().path() {
        "/metrics" => text(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            super::render(),
        ),
        "/healthz" => match super::health() {
            Ok(line) => text(StatusCode::OK, PLAIN, line + "\n"),
            Err(line) => text(StatusCode::SERVICE_UNAVAILABLE, PLAIN, line + "\n"),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            PLAIN,
            "not found: try /metrics or /healthz\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream as Tcp;
    use std::time::Instant;

    const WAIT: Duration = Duration::from_secs(5);

    fn connect(addr: SocketAddr) -> Tcp {
        let s = Tcp::connect_timeout(&addr, WAIT).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.set_write_timeout(Some(WAIT)).unwrap();
        s
    }

    /// Sends `request` as is and reads the whole answer (the server closes every connection).
    fn exchange(addr: SocketAddr, request: &str) -> String {
        let mut s = connect(addr);
        s.write_all(request.as_bytes()).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out); // a reset after the answer is fine
        String::from_utf8_lossy(&out).into_owned()
    }

    fn call(addr: SocketAddr, method: &str, path: &str) -> String {
        exchange(
            addr,
            &format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        )
    }

    fn status(answer: &str) -> u16 {
        answer
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"))
    }

    fn body(answer: &str) -> &str {
        answer.split_once("\r\n\r\n").map_or("", |(_, b)| b)
    }

    /// A health check answered within a second, with a status that agrees with its body (other tests
    /// register stages in this process, so either may be right).
    fn healthz_within_a_second(addr: SocketAddr) {
        let t = Instant::now();
        let a = call(addr, "GET", "/healthz");
        let took = t.elapsed();
        assert!(took < Duration::from_secs(1), "/healthz took {took:?}");
        match status(&a) {
            200 => assert!(body(&a).starts_with("ok: "), "{a}"),
            503 => assert!(body(&a).trim().len() > 3, "{a}"),
            _ => panic!("{a}"),
        }
    }

    fn released(addr: SocketAddr) -> bool {
        Tcp::connect_timeout(&addr, Duration::from_secs(1)).is_err()
    }

    #[test]
    fn serves_metrics_and_health_then_closes_and_releases_the_port() {
        let mut server = MetricsServer::start("127.0.0.1", 0).unwrap();
        let addr = server.addr();
        let m = call(addr, "GET", "/metrics");
        assert_eq!(status(&m), 200, "{m}");
        assert!(body(&m).contains("ecomlogs_rows_inserted_total"));
        assert!(m.to_ascii_lowercase().contains("connection: close"), "{m}");
        healthz_within_a_second(addr);
        assert!(matches!(
            status(&call(addr, "GET", "/healthz?x=1")),
            200 | 503
        ));
        assert_eq!(status(&call(addr, "GET", "/nope")), 404);
        // HTTP/1.0, as the simplest clients speak it.
        assert_eq!(
            status(&exchange(addr, "GET /metrics HTTP/1.0\r\n\r\n")),
            200
        );
        server.close();
        assert!(released(addr), "still listening on {addr}");
        server.close(); // idempotent
    }

    #[test]
    fn methods_other_than_get_and_head_get_405_with_allow() {
        let server = MetricsServer::start("127.0.0.1", 0).unwrap();
        for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
            for path in ["/healthz", "/metrics"] {
                let a = call(server.addr(), method, path);
                assert_eq!(status(&a), 405, "{method} {path}: {a}");
                assert!(a.to_ascii_lowercase().contains("allow: get, head"), "{a}");
            }
        }
        // A small body is not read either.
        let a = exchange(
            server.addr(),
            "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi",
        );
        assert_eq!(status(&a), 405, "{a}");
    }

    #[test]
    fn head_answers_headers_without_a_body() {
        let server = MetricsServer::start("127.0.0.1", 0).unwrap();
        for path in ["/metrics", "/healthz"] {
            let a = call(server.addr(), "HEAD", path);
            assert!(matches!(status(&a), 200 | 503), "{a}");
            assert!(a.ends_with("\r\n\r\n"), "HEAD {path} sent a body: {a}");
            assert!(
                a.to_ascii_lowercase().contains("content-type: text/plain"),
                "{a}"
            );
        }
    }

    #[test]
    fn a_client_announcing_a_big_body_gets_413_and_holds_nobody_up() {
        let server = MetricsServer::start("127.0.0.1", 0).unwrap();
        let addr = server.addr();
        // The client: 10 MiB announced, 1 KiB sent, and then nothing.
        let mut slow = connect(addr);
        slow.write_all(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 10485760\r\n\r\n")
            .unwrap();
        slow.write_all(&[b'x'; 1024]).unwrap();
        healthz_within_a_second(addr);
        let mut answer = Vec::new();
        let _ = slow.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer);
        assert_eq!(status(&answer), 413, "{answer}");
        // A GET with a body gets the same.
        let a = exchange(
            addr,
            "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nxx",
        );
        assert_eq!(status(&a), 413, "{a}");
        let a = exchange(
            addr,
            "GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        );
        assert_eq!(status(&a), 413, "{a}");
    }

    #[test]
    fn health_answers_within_a_second_with_300_idle_connections_and_a_slow_client() {
        let server = MetricsServer::start("127.0.0.1", 0).unwrap();
        let addr = server.addr();
        let idle: Vec<Tcp> = (0..300).map(|_| connect(addr)).collect();
        // Slowloris: a request head sent a few bytes at a time, never finished.
        let mut slow = connect(addr);
        slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        let mut big = connect(addr);
        big.write_all(b"PUT /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 10485760\r\n\r\n")
            .unwrap();
        for _ in 0..3 {
            healthz_within_a_second(addr);
            slow.write_all(b"X-A: b\r\n").unwrap();
        }
        let t = Instant::now();
        assert_eq!(status(&call(addr, "GET", "/metrics")), 200);
        assert!(t.elapsed() < Duration::from_secs(1));
        drop(idle);
    }

    #[test]
    fn an_over_long_request_head_is_refused() {
        let server = MetricsServer::start("127.0.0.1", 0).unwrap();
        let long = "a".repeat(20_000);
        let a = exchange(
            server.addr(),
            &format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: {long}\r\n\r\n"),
        );
        assert_eq!(status(&a), 431, "{a}");
        let a = exchange(
            server.addr(),
            &format!("GET /{long} HTTP/1.1\r\nHost: x\r\n\r\n"),
        );
        assert!(matches!(status(&a), 414 | 431), "{a}");
        healthz_within_a_second(server.addr());
    }

    #[test]
    fn idle_connections_are_closed_and_the_limit_answers_503_at_once() {
        let limits = Limits {
            connections: 4,
            header_read: Duration::from_millis(300),
            connection: Duration::from_secs(2),
            max_header: 8 * 1024,
        };
        let server = MetricsServer::start_with("127.0.0.1", 0, limits).unwrap();
        let addr = server.addr();
        let mut idle: Vec<Tcp> = (0..4).map(|_| connect(addr)).collect();
        // The four hold every slot: the next connection is told so at once.
        let t = Instant::now();
        let a = call(addr, "GET", "/healthz");
        assert_eq!(status(&a), 503, "{a}");
        assert!(body(&a).contains("too many connections"), "{a}");
        assert!(t.elapsed() < Duration::from_secs(1));
        // The server closes the silent ones after the head's timeout, which frees their slots.
        let t = Instant::now();
        for s in &mut idle {
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf); // EOF (or a 408) once closed; the read timeout fails the test
        }
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        healthz_within_a_second(addr);
    }
}
