//! What an idle connection costs in resident memory. Alone in its test binary, so that no
//! other test allocates while it measures the process.

use depot_std::{Client, Manager};

const KEY: &[u8] = b"producer";

fn rss_kib() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

// Resident memory is read from /proc: the measurement needs Linux.
#[cfg(target_os = "linux")]
#[test]
fn idle_connections_are_cheap() {
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
    // threads' shared structures: 23 KiB before clients kept their blocks, 29 KiB after.
    eprintln!("{per} KiB per idle connection, client and manager side together");
    assert!(per < 40, "{per} KiB per idle connection");
    drop(clients);
    m.shutdown().unwrap();
}
