//! The lean HTTP/1.1 client the load benchmarks drive the server with.

#![allow(dead_code)]

use serde_json::Value;

/// A lean HTTP/1.1 keep-alive client: requests are pre-built bytes and responses are
/// read by Content-Length. On two cores the load generator competes with the server for
/// CPU, so it must cost as little as possible per request; a full-featured client would
/// spend more CPU than the server and measure itself.
pub struct Raw {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    pub async fn connect(addr: &str) -> Raw {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Raw { stream, buf: Vec::with_capacity(16 * 1024) }
    }

    /// Sends one request; returns the status and the body.
    pub async fn send(&mut self, req: &[u8]) -> std::io::Result<(u16, &[u8])> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        self.stream.write_all(req).await?;
        self.buf.clear();
        loop {
            if let Some((status, body)) = response(&self.buf) {
                return Ok((status, &self.buf[body]));
            }
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// The same client on a blocking socket, for a load generator paced by plain threads.
pub struct BlockingRaw {
    stream: std::net::TcpStream,
    buf: Vec<u8>,
}

impl BlockingRaw {
    pub fn connect(addr: &str) -> BlockingRaw {
        let stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        // A server that stops answering fails the request instead of hanging the run.
        stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        stream.set_write_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        BlockingRaw { stream, buf: Vec::with_capacity(16 * 1024) }
    }

    /// Sends one request; returns the status and the body.
    pub fn send(&mut self, req: &[u8]) -> std::io::Result<(u16, &[u8])> {
        use std::io::{Read, Write};
        self.stream.write_all(req)?;
        self.buf.clear();
        loop {
            if let Some((status, body)) = response(&self.buf) {
                return Ok((status, &self.buf[body]));
            }
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// The status and where the body lies, once `buf` holds a whole response (read by
/// Content-Length).
fn response(buf: &[u8]) -> Option<(u16, std::ops::Range<usize>)> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..head_end]).unwrap_or_default();
    let status: u16 = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")).map(|(_, v)| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    (buf.len() >= head_end + len).then_some((status, head_end..head_end + len))
}

/// Builds a request's bytes.
pub fn request(method: &str, host: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> Vec<u8> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = token.map(|t| format!("authorization: Bearer {t}\r\n")).unwrap_or_default();
    format!(
        "{method} {path} HTTP/1.1\r\nhost: {host}\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A plain HTTP/1.1 responder: one blocking thread per connection, a fixed `200` with a
/// small JSON body to every request (read up to its blank line: requests sent to it have
/// no body). No async runtime, no router, no middleware: what loopback HTTP costs and how
/// it behaves on this machine with nothing of Countersign in the way. Serves until the
/// process ends; returns the address it listens on.
pub fn plain_responder() -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_nodelay(true);
            std::thread::spawn(move || {
                const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 15\r\n\r\n{\"status\":\"ok\"}";
                let mut buf = Vec::with_capacity(4096);
                let mut chunk = [0u8; 4096];
                loop {
                    match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        if stream.write_all(ANSWER).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}
