//! What an idle connection costs in resident memory. Alone in its test binary, and one test
//! at a time (`MEASURING`), so that nothing else allocates while a test measures the process.

use depot_std::{Client, Manager};

const KEY: &[u8] = b"producer";

/// Held by the test that measures.
static MEASURING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn rss_kib() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

// Resident memory is read from /proc: the measurement needs Linux.
#[cfg(target_os = "linux")]
#[test]
fn idle_connections_are_cheap() {
    let _alone = MEASURING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let m = Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(KEY)
        .raw_queue("task_queue", 100)
        .max_connections(1024)
        .start()
        .unwrap();
    // Warm up the allocator and the manager's paths.
    let warm: Vec<_> = (0..10)
        .map(|_| Client::connect(m.address(), KEY).unwrap())
        .collect();
    warm[0].raw_queue("task_queue").unwrap().put(b"x").unwrap();
    let before = rss_kib().expect("VmRSS in /proc/self/status");
    let n = 300;
    let clients: Vec<_> = (0..n)
        .map(|_| Client::connect(m.address(), KEY).unwrap())
        .collect();
    for c in &clients {
        c.raw_queue("task_queue").unwrap();
    }
    let after = rss_kib().expect("VmRSS in /proc/self/status");
    let per = after.saturating_sub(before) / n;
    // Both ends are in this process. The manager's side holds no buffer while idle; the
    // client keeps its first 4-KiB block for reading and one for writing (allocating and
    // zeroing them again for every reply cost a client 5 % of its calls per second). The rest
    // is the core state machines (session keys), the socket bookkeeping and the client's
    // threads' shared structures: 23 KiB before clients kept their blocks, 29 KiB after. 37
    // KiB here: each connection has just made a request, and the manager's side of a busy
    // connection keeps its two 4-KiB buffers until it has been quiet for a second (whether the
    // allocator then hands that memory back to the system depends on its heap, so this test
    // does not wait for it; `core/tests/v2.rs` checks the give-back itself).
    eprintln!("{per} KiB per idle connection, client and manager side together");
    assert!(per < 40, "{per} KiB per idle connection");
    drop(clients);
    m.shutdown().unwrap();
}

/// Connections that never speak (a flood, or clients slow to answer the manager's first
/// frame) hold no receive buffer while the manager waits for them: only their slot and socket
/// bookkeeping.
#[cfg(target_os = "linux")]
#[test]
fn silent_connections_hold_no_buffer() {
    let _alone = MEASURING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let n = 300;
    let m = Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(KEY)
        .raw_queue("task_queue", 100)
        .max_connections(1024)
        .max_handshaking(1024)
        .max_handshaking_per_source(1024)
        .handshake_timeout(std::time::Duration::from_secs(60))
        .start()
        .unwrap();
    let accepted = |count: u64| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while m.metrics().unwrap().counters.accepted < count {
            assert!(
                std::time::Instant::now() < deadline,
                "manager did not accept them"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    };
    // Warm up the allocator and the manager's accept path.
    let warm: Vec<_> = (0..10)
        .map(|_| std::net::TcpStream::connect(m.address()).unwrap())
        .collect();
    accepted(10);
    let before = rss_kib().expect("VmRSS in /proc/self/status");
    let silent: Vec<_> = (0..n)
        .map(|_| std::net::TcpStream::connect(m.address()).unwrap())
        .collect();
    accepted(10 + n as u64);
    let after = rss_kib().expect("VmRSS in /proc/self/status");
    let per_kib = after.saturating_sub(before) as f64 / n as f64;
    // A 4-KiB receive buffer each would be 4 KiB or more.
    eprintln!("{per_kib:.2} KiB per silent connection");
    assert!(per_kib < 2.0, "{per_kib:.2} KiB per silent connection");
    drop((warm, silent));
    m.shutdown().unwrap();
}
