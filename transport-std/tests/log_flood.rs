//! No input makes the manager's log grow faster than a bounded rate: a flood of refused,
//! evicted and wrongly keyed connections over real sockets leaves a few summary lines.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use depot_std::{Client, Error, Manager, ThrottleConfig};

const KEY: &[u8] = b"producer";
/// The manager's summary interval is 5 s: a flood this long may log 2 summaries at most.
const FLOOD: Duration = Duration::from_secs(6);

/// Collects everything the manager logs.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[test]
fn floods_leave_a_bounded_log() {
    let log = Log::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    let m = Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(KEY)
        .queue("task_queue", 100)
        .max_connections(6)
        .max_handshaking(2)
        // Every wrong key gets its verdict at once and nobody is locked out, so the flood
        // keeps its pace (the throttle has tests of its own).
        .auth_throttle(ThrottleConfig {
            delay_ms: 0,
            lockout_after: 0,
            ..ThrottleConfig::default()
        })
        .start()
        .unwrap();
    let addr = m.address();
    let start_lines = log.text().lines().count();

    // Half the time: silent connections that evict each other, and wrong keys.
    // The other half: every slot held by clients, so each newcomer is refused busy.
    let until = Instant::now() + FLOOD;
    let mut held = Vec::new();
    let mut silent = VecDeque::new();
    let mut attempts = 0u64;
    while Instant::now() < until {
        let filling = Instant::now() + FLOOD / 2 > until;
        if filling && held.is_empty() {
            for _ in 0..6 {
                held.push(Client::connect(addr, KEY).unwrap());
            }
        }
        if attempts.is_multiple_of(8) && !filling {
            assert!(matches!(
                Client::connect(addr, b"wrong"),
                Err(Error::AuthFailed { .. })
            ));
        } else if let Ok(s) = TcpStream::connect(addr) {
            // Silent, and held (the newest few) so that they outnumber the handshake cap.
            silent.push_back(s);
            if silent.len() > 8 {
                let mut oldest = silent.pop_front().unwrap();
                oldest
                    .set_read_timeout(Some(Duration::from_millis(1)))
                    .unwrap();
                let _ = oldest.read(&mut [0; 16]);
            }
        }
        attempts += 1;
    }
    let metrics = m.metrics().unwrap();
    let c = metrics.counters;
    m.shutdown().unwrap();
    let text = log.text();
    let lines = text.lines().count() - start_lines;
    println!(
        "{attempts} connects in {FLOOD:?}: {} refused busy, {} evicted, {} auth failures; \
         {lines} log lines, {} bytes:\n{text}",
        c.refused_busy,
        c.evicted,
        c.auth_failures,
        text.len()
    );
    // The flood happened, in every kind.
    assert!(c.refused_busy > 100, "{c:?}");
    assert!(c.evicted > 100, "{c:?}");
    assert!(c.auth_failures > 10, "{c:?}");
    // Two summaries during the flood, one when stopping, and the stop lines themselves.
    let summaries = text.matches("turned away").count();
    assert!((1..=3).contains(&summaries), "{summaries} summaries");
    // The failed proofs by source and key name, as rate-limited.
    let auth = text.matches("failed or refused authentication").count();
    assert!((1..=3).contains(&auth), "{auth} summaries of failed proofs");
    assert!(lines <= summaries + auth + 4, "{lines} lines");
    assert!(text.len() < 4096, "{} bytes of log", text.len());
}
