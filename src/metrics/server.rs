//! The metrics endpoint: `/metrics` (Prometheus text format) and `/healthz` (200 or 503 with a
//! one-line reason), served by one background thread until the server is closed or dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use tiny_http::{Header, Response, Server};

use crate::error::{Error, Result};

pub struct MetricsServer {
    server: Option<Arc<Server>>,
    addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Listens on `host:port` (port 0: a free one, see `addr`).
    pub fn start(host: &str, port: u16) -> Result<Self> {
        let server = Server::http((host, port)).map_err(|e| {
            Error::Config(format!(
                "cannot serve metrics on {host}:{port}: {e} (choose another --metrics-port, or 0 for a free one)"
            ))
        })?;
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| Error::Config("the metrics server has no IP address".into()))?;
        let server = Arc::new(server);
        let s = Arc::clone(&server);
        let thread = std::thread::Builder::new()
            .name("ecomlogs-metrics".into())
            .spawn(move || serve(&s))
            .map_err(Error::Io)?;
        log::info!(target: "ecomlogs.metrics", "metrics on http://{addr}/metrics, health on http://{addr}/healthz");
        Ok(MetricsServer {
            server: Some(server),
            addr,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving (idempotent).
    pub fn close(&mut self) {
        if let Some(server) = self.server.take() {
            server.unblock();
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.close();
    }
}

fn text_header(content_type: &str) -> Header {
    Header::from_bytes("Content-Type", content_type).expect("a valid header")
}

fn serve(server: &Server) {
    for request in server.incoming_requests() {
        let path = request.url().split('?').next().unwrap_or("").to_string();
        let response = match path.as_str() {
            "/metrics" => Response::from_string(super::render())
                .with_header(text_header("text/plain; version=0.0.4; charset=utf-8")),
            "/healthz" => match super::health() {
                Ok(line) => Response::from_string(line + "\n"),
                Err(line) => Response::from_string(line + "\n").with_status_code(503),
            }
            .with_header(text_header("text/plain; charset=utf-8")),
            _ => {
                Response::from_string("not found: try /metrics or /healthz\n").with_status_code(404)
            }
        };
        let _ = request.respond(response);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn serves_metrics_and_health_then_closes() {
        let mut server = MetricsServer::start("127.0.0.1", 0).unwrap();
        let addr = server.addr();
        assert!(get(addr, "/metrics").contains("ecomlogs_rows_inserted_total"));
        // Other tests register stages in this process: the status must agree with the body either way.
        let health = get(addr, "/healthz");
        let body = health.rsplit("\r\n\r\n").next().unwrap_or("");
        if health.contains(" 200 ") {
            assert!(body.starts_with("ok: "), "{health}");
        } else {
            assert!(
                health.contains(" 503 ") && body.trim().len() > 3,
                "{health}"
            );
        }
        assert!(get(addr, "/nope").contains(" 404 "));
        server.close();
        // tiny_http's acceptor thread lets go of the socket just after the server is dropped.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::net::TcpStream::connect(addr).is_ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "still listening on {addr}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
