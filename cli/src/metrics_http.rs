//! `depot serve --metrics ADDR`: `GET /metrics` in Prometheus' text format over plain HTTP.
//!
//! One thread answers one request at a time and closes each connection: a scraper asks every
//! few seconds, so that is plenty, and a slow or hostile peer costs one thread and a time-out,
//! never the manager. The numbers come from [`ManagerHandle::metrics`], which the manager's
//! event loop publishes.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use depot_std::ManagerHandle;

/// How long a peer may take to send its request or read the answer.
const PEER_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest request head read.
const MAX_HEAD: usize = 8 * 1024;

/// Answers scrapes on `listener` for as long as the process lives.
pub fn spawn(listener: TcpListener, manager: Arc<ManagerHandle>) -> io::Result<()> {
    thread::Builder::new()
        .name("depot-metrics".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => {
                        if let Err(e) = answer(stream, &manager) {
                            tracing::debug!("metrics request: {e}");
                        }
                    }
                    // Out of descriptors, say: let the manager's connections go first.
                    Err(e) => {
                        tracing::warn!("metrics: accept failed: {e}");
                        thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })?;
    Ok(())
}

fn answer(mut stream: TcpStream, manager: &ManagerHandle) -> io::Result<()> {
    stream.set_read_timeout(Some(PEER_TIMEOUT))?;
    stream.set_write_timeout(Some(PEER_TIMEOUT))?;
    let mut head = [0u8; MAX_HEAD];
    let mut len = 0;
    // The request line and headers end with an empty line; a body is never expected.
    while !head[..len].windows(4).any(|w| w == b"\r\n\r\n") {
        if len == head.len() {
            return respond(&mut stream, "431 Request Header Fields Too Large", "");
        }
        match stream.read(&mut head[len..])? {
            0 => break,
            n => len += n,
        }
    }
    let line = head[..len]
        .split(|&b| b == b'\r')
        .next()
        .unwrap_or_default();
    let mut words = line.split(|&b| b == b' ');
    let (method, target) = (
        words.next().unwrap_or_default(),
        words.next().unwrap_or_default(),
    );
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    match (method, path) {
        (b"GET", b"/metrics") => match manager.metrics() {
            Ok(m) => respond(&mut stream, "200 OK", &m.prometheus()),
            Err(e) => respond(&mut stream, "503 Service Unavailable", &format!("{e}\n")),
        },
        (b"GET", _) => respond(&mut stream, "404 Not Found", "try /metrics\n"),
        _ => respond(&mut stream, "405 Method Not Allowed", ""),
    }
}

fn respond(stream: &mut TcpStream, status: &str, body: &str) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}
