//! Clients that reconnect by themselves, over real sockets through the fault-injecting proxy
//! (`tests/faultproxy`): puts in a session are applied exactly once however often the
//! connection is dropped, reset or half-closed under them.

use std::collections::HashSet;
use std::thread;
use std::time::Duration;

use depot_std::{
    Client, ConnectOptions, Encryption, Manager, ManagerHandle, QueueStat, Reconnect, Sealing,
};
use faultproxy::{FaultProxy, Faults};

const KEY: &[u8] = b"reconnect";

fn manager(capacity: u32) -> ManagerHandle {
    Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(KEY)
        .raw_queue("q", capacity)
        .start()
        .expect("manager starts")
}

/// A manager keeping `q` and `r` (4 items each) in `dir`, at `addr` ("127.0.0.1:0" the first time, then the same
/// address again: a restart).
fn durable_manager(addr: &str, dir: &std::path::Path, encryption: Encryption) -> ManagerHandle {
    Manager::builder()
        .listen(addr)
        .authkey(KEY)
        .raw_queue("q", 4)
        .raw_queue("r", 4)
        .data_dir(dir)
        .encryption(encryption)
        .start()
        .expect("manager starts")
}

fn data_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("depot-reconnect-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Frames are sealed (the restarted manager requires it), not only MACed.
fn assert_sealed(sealing: Option<Sealing>) {
    assert!(!matches!(sealing, None | Some(Sealing::Mac)), "{sealing:?}");
}

/// An async client of `addr` that reconnects.
#[cfg(feature = "tokio")]
async fn async_client(addr: std::net::SocketAddr) -> depot_std::tokio::Client {
    depot_std::tokio::Client::connect_reconnecting(addr, KEY, policy())
        .await
        .expect("connect")
}

fn policy() -> Reconnect {
    Reconnect {
        initial: Duration::from_millis(5),
        max: Duration::from_millis(100),
        give_up: Some(Duration::from_secs(60)),
        connect_timeout: Duration::from_secs(2),
    }
}

fn item(producer: usize, i: usize) -> Vec<u8> {
    format!("p{producer}-{i}").into_bytes()
}

#[test]
fn puts_through_drops_and_resets_land_exactly_once() {
    const PRODUCERS: usize = 4;
    const EACH: usize = 5_000;
    // Room for twice the items: a duplicate shows in the contents rather than as a full queue.
    let m = manager((2 * PRODUCERS * EACH) as u32);
    let faults = Faults {
        latency: Duration::from_micros(200),
        reset_every: Some(Duration::from_millis(300)),
        drop_every: Some(Duration::from_millis(470)),
        half_close_every: Some(Duration::from_millis(830)),
        pause: Some((Duration::from_millis(610), Duration::from_millis(50))),
        ..Faults::default()
    };
    let proxy = FaultProxy::start("127.0.0.1:0", m.address(), faults).unwrap();
    let addr = proxy.addr();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            thread::spawn(move || {
                let client =
                    Client::connect_with(addr, KEY, &ConnectOptions::new().reconnect(policy()))
                        .expect("connect");
                let q = client.raw_queue("q").expect("open");
                if p % 2 == 0 {
                    for i in 0..EACH {
                        q.put(&item(p, i))
                            .unwrap_or_else(|e| panic!("put {p}/{i}: {e}"));
                    }
                } else {
                    let items: Vec<Vec<u8>> = (0..EACH).map(|i| item(p, i)).collect();
                    for chunk in items.chunks(100) {
                        let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
                        q.put_many(&refs)
                            .unwrap_or_else(|e| panic!("put_many {p}: {e}"));
                    }
                }
            })
        })
        .collect();
    for t in producers {
        t.join().expect("producer");
    }
    let stats = proxy.stats();
    drop(proxy);
    assert!(stats.cut >= 3, "the proxy cut connections: {stats:?}");
    assert!(
        stats.accepted > PRODUCERS as u64,
        "clients reconnected: {stats:?}"
    );

    let direct = Client::connect(m.address(), KEY).unwrap();
    let q = direct.raw_queue("q").unwrap();
    assert_eq!(q.qsize().unwrap() as usize, PRODUCERS * EACH);
    let got = q.get_many(PRODUCERS * EACH).unwrap();
    assert_eq!(got.len(), PRODUCERS * EACH);
    let unique: HashSet<&Vec<u8>> = got.iter().collect();
    assert_eq!(unique.len(), got.len(), "no item twice");
    for p in 0..PRODUCERS {
        // Every item, and each producer's in its order.
        let mine: Vec<&Vec<u8>> = got
            .iter()
            .filter(|i| i.starts_with(format!("p{p}-").as_bytes()))
            .collect();
        let expected: Vec<Vec<u8>> = (0..EACH).map(|i| item(p, i)).collect();
        assert!(
            mine.iter().copied().eq(expected.iter()),
            "producer {p}'s items in order"
        );
    }
    println!("{stats:?}");
}

#[test]
fn a_blocked_get_survives_a_reset_and_a_call_fails_only_at_its_deadline() {
    let m = manager(16);
    let proxy = FaultProxy::start("127.0.0.1:0", m.address(), Faults::default()).unwrap();
    let client = Client::connect_with(
        proxy.addr(),
        KEY,
        &ConnectOptions::new().reconnect(policy()),
    )
    .unwrap();
    let q = client.raw_queue("q").unwrap();
    let waiting = {
        let q = q.clone();
        thread::spawn(move || q.get())
    };
    thread::sleep(Duration::from_millis(100));
    proxy.reset_all();
    thread::sleep(Duration::from_millis(100));
    let other = Client::connect(m.address(), KEY).unwrap();
    other.raw_queue("q").unwrap().put(b"after").unwrap();
    assert_eq!(waiting.join().unwrap().unwrap(), b"after");

    // With nothing to connect to, a call with a timeout fails when it passes, not before.
    m.stop().unwrap();
    m.join().unwrap();
    proxy.reset_all();
    let start = std::time::Instant::now();
    let e = q.get_timeout(Duration::from_millis(700)).unwrap_err();
    let took = start.elapsed();
    // Lost, refused, or (the last dial cut short by the deadline) timed out connecting.
    assert!(
        e.is_connection_lost()
            || matches!(
                e,
                depot_std::Error::Refused { .. } | depot_std::Error::ConnectTimeout { .. }
            ),
        "{e}"
    );
    assert!(took >= Duration::from_millis(600), "failed after {took:?}");
}

#[test]
fn a_plain_client_still_sees_the_loss() {
    let m = manager(16);
    let proxy = FaultProxy::start("127.0.0.1:0", m.address(), Faults::default()).unwrap();
    let client = Client::connect(proxy.addr(), KEY).unwrap();
    let q = client.raw_queue("q").unwrap();
    q.put(b"x").unwrap();
    proxy.reset_all();
    thread::sleep(Duration::from_millis(100));
    assert!(q.put(b"y").unwrap_err().is_connection_lost());
}

#[cfg(feature = "tokio")]
#[::tokio::test]
async fn async_puts_through_resets_land_exactly_once() {
    const PRODUCERS: usize = 2;
    const EACH: usize = 5_000;
    let m = manager((2 * PRODUCERS * EACH) as u32);
    let faults = Faults {
        latency: Duration::from_micros(300),
        reset_every: Some(Duration::from_millis(120)),
        drop_every: Some(Duration::from_millis(290)),
        ..Faults::default()
    };
    let proxy = FaultProxy::start("127.0.0.1:0", m.address(), faults).unwrap();
    let client = depot_std::tokio::Client::connect_reconnecting(proxy.addr(), KEY, policy())
        .await
        .expect("connect");
    let q = client.raw_queue("q").await.unwrap();
    let one_by_one = async {
        for i in 0..EACH {
            q.put(&item(0, i))
                .await
                .unwrap_or_else(|e| panic!("put {i}: {e}"));
        }
    };
    let batches = async {
        let items: Vec<Vec<u8>> = (0..EACH).map(|i| item(1, i)).collect();
        for chunk in items.chunks(50) {
            let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
            q.put_many(&refs)
                .await
                .unwrap_or_else(|e| panic!("put_many: {e}"));
        }
    };
    ::tokio::join!(one_by_one, batches);
    let stats = proxy.stats();
    drop(proxy);
    assert!(stats.cut >= 5, "the proxy cut connections: {stats:?}");

    let direct = Client::connect(m.address(), KEY).unwrap();
    let q = direct.raw_queue("q").unwrap();
    let got = q.get_many(q.qsize().unwrap() as usize).unwrap();
    for p in 0..PRODUCERS {
        let mine: Vec<&Vec<u8>> = got
            .iter()
            .filter(|i| i.starts_with(format!("p{p}-").as_bytes()))
            .collect();
        let expected: Vec<Vec<u8>> = (0..EACH).map(|i| item(p, i)).collect();
        assert!(
            mine.iter().copied().eq(expected.iter()),
            "producer {p}: each item once, in order"
        );
    }
    assert_eq!(got.len(), PRODUCERS * EACH);
    println!("{stats:?}");
}

/// A manager that shuts down (telling its clients so) and starts again at the same address
/// with its data directory: a reconnecting client's next call reaches the new manager, and
/// the connection's sealing is what the new manager agreed (it requires encryption, the first
/// had it off).
#[test]
fn a_client_rides_a_manager_restart() {
    let dir = data_dir("restart");
    let m = durable_manager("127.0.0.1:0", &dir, Encryption::Off);
    let addr = m.address();
    let client = Client::connect_with(addr, KEY, &ConnectOptions::new().reconnect(policy()))
        .expect("connect");
    let q = client.raw_queue("q").unwrap();
    q.put(b"before").unwrap();
    assert_eq!(client.sealing(), Some(Sealing::Mac));
    m.shutdown().unwrap();
    let m = durable_manager(&addr.to_string(), &dir, Encryption::Required);
    q.put(b"after").unwrap();
    assert_sealed(client.sealing());
    assert_eq!(q.get().unwrap(), b"before");
    assert_eq!(q.get().unwrap(), b"after");
    drop(client);
    m.shutdown().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The same through the async client, whose connection task reads the manager's shutdown
/// notice itself (it once swallowed the notice and failed the next call with "manager shut
/// down" instead of reconnecting).
#[cfg(feature = "tokio")]
#[::tokio::test]
async fn an_async_client_rides_a_manager_restart() {
    let dir = data_dir("restart-async");
    let m = durable_manager("127.0.0.1:0", &dir, Encryption::Off);
    let addr = m.address();
    let client = async_client(addr).await;
    let q = client.raw_queue("q").await.unwrap();
    q.put(b"before").await.unwrap();
    assert_eq!(client.sealing(), Some(Sealing::Mac));
    // The shutdown blocks until the manager has stopped; the client's task runs meanwhile.
    ::tokio::task::spawn_blocking(move || m.shutdown().unwrap())
        .await
        .unwrap();
    let m = durable_manager(&addr.to_string(), &dir, Encryption::Required);
    ::tokio::time::timeout(Duration::from_secs(20), q.put(b"after"))
        .await
        .expect("the put reaches the restarted manager")
        .expect("put after the restart");
    assert_sealed(client.sealing());
    assert_eq!(q.get().await.unwrap(), b"before");
    assert_eq!(q.get().await.unwrap(), b"after");
    drop(q);
    drop(client);
    ::tokio::task::spawn_blocking(move || m.shutdown().unwrap())
        .await
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The shape of the next two tests: on a manager about to stop, `q` is full with a batch put
/// blocked part-way (4 of its 10 items in), and a get waits on the empty `r`. The manager
/// answers both `ShuttingDown` as it stops, and starts again at the same address with its
/// data directory: the clients, which reconnect, send the batch's rest and the get again
/// instead of failing, so every item arrives once, in order.
const WITHIN: Duration = Duration::from_secs(10);

fn batch(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| item(0, i)).collect()
}

/// Waits (up to 5 s) until the manager at `addr` has `n` items in `q` and a getter on `r`.
fn wait_for_blocked_calls(addr: std::net::SocketAddr, n: u32) {
    wait_for(addr, |q, r| q.len == n && q.putters > 0 && r.getters > 0);
}

/// Waits (up to 5 s) until the manager at `addr` has `n` items in `q` and a putter waiting.
#[cfg(feature = "tokio")]
fn wait_for_blocked_calls_on_q(addr: std::net::SocketAddr, n: u32) {
    wait_for(addr, |q, _| q.len == n && q.putters > 0);
}

/// Waits (up to 5 s) until `ready` holds for the statistics of `q` and `r`.
fn wait_for(addr: std::net::SocketAddr, ready: impl Fn(&QueueStat, &QueueStat) -> bool) {
    let plain = Client::connect(addr, KEY).unwrap();
    let start = std::time::Instant::now();
    loop {
        let stats = plain.stat().unwrap();
        let q = stats.iter().find(|s| s.name == "q").unwrap();
        let r = stats.iter().find(|s| s.name == "r").unwrap();
        if ready(q, r) {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "{stats:?}");
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn blocked_calls_ride_a_graceful_restart() {
    let dir = data_dir("blocked");
    let m = durable_manager("127.0.0.1:0", &dir, Encryption::Off);
    let addr = m.address();
    let client = Client::connect_with(addr, KEY, &ConnectOptions::new().reconnect(policy()))
        .expect("connect");
    let putting = {
        let q = client.raw_queue("q").unwrap();
        thread::spawn(move || {
            let items = batch(10);
            let refs: Vec<&[u8]> = items.iter().map(Vec::as_slice).collect();
            q.put_many(&refs)
        })
    };
    let getting = {
        let r = client.raw_queue("r").unwrap();
        thread::spawn(move || r.get_timeout(WITHIN))
    };
    wait_for_blocked_calls(addr, 4);
    m.shutdown().unwrap();
    let m = durable_manager(&addr.to_string(), &dir, Encryption::Off);
    let plain = Client::connect(addr, KEY).unwrap();
    plain
        .raw_queue("r")
        .unwrap()
        .put(b"for the getter")
        .unwrap();
    assert_eq!(getting.join().unwrap().unwrap(), b"for the getter");
    let q = plain.raw_queue("q").unwrap();
    let got: Vec<Vec<u8>> = (0..10).map(|_| q.get_timeout(WITHIN).unwrap()).collect();
    assert_eq!(got, batch(10), "each item once, in order");
    putting.join().unwrap().expect("the batch put went through");
    assert_eq!(q.qsize().unwrap(), 0);
    drop((client, plain));
    m.shutdown().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(feature = "tokio")]
#[::tokio::test]
async fn blocked_async_calls_ride_a_graceful_restart() {
    let dir = data_dir("blocked-async");
    let m = durable_manager("127.0.0.1:0", &dir, Encryption::Off);
    let addr = m.address();
    let client = async_client(addr).await;
    let putting = {
        let q = client.raw_queue("q").await.unwrap();
        ::tokio::spawn(async move {
            let items = batch(10);
            let refs: Vec<&[u8]> = items.iter().map(Vec::as_slice).collect();
            q.put_many(&refs).await
        })
    };
    let getting = {
        let r = client.raw_queue("r").await.unwrap();
        ::tokio::spawn(async move { r.get().await })
    };
    let kept = dir.clone();
    let m = ::tokio::task::spawn_blocking(move || {
        wait_for_blocked_calls(addr, 4);
        m.shutdown().unwrap();
        durable_manager(&addr.to_string(), &kept, Encryption::Off)
    })
    .await
    .unwrap();
    let got = ::tokio::task::spawn_blocking(move || {
        let plain = Client::connect(addr, KEY).unwrap();
        plain
            .raw_queue("r")
            .unwrap()
            .put(b"for the getter")
            .unwrap();
        let q = plain.raw_queue("q").unwrap();
        (0..10)
            .map(|_| q.get_timeout(WITHIN).unwrap())
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    assert_eq!(got, batch(10), "each item once, in order");
    let got = ::tokio::time::timeout(WITHIN, getting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.unwrap(), b"for the getter");
    let put = ::tokio::time::timeout(WITHIN, putting)
        .await
        .unwrap()
        .unwrap();
    put.expect("the batch put went through");
    drop(client);
    ::tokio::task::spawn_blocking(move || m.shutdown().unwrap())
        .await
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A put the stopping manager refused is held for the next connection; its caller giving up
/// meanwhile (the future dropped) drops it: the restarted manager never gets it.
#[cfg(feature = "tokio")]
#[::tokio::test]
async fn a_held_put_whose_caller_gave_up_is_not_sent_again() {
    let dir = data_dir("held-dropped");
    let m = durable_manager("127.0.0.1:0", &dir, Encryption::Off);
    let addr = m.address();
    let client = async_client(addr).await;
    let q = client.raw_queue("q").await.unwrap();
    for item in batch(4) {
        q.put(&item).await.unwrap();
    }
    let dropped = {
        let q = q.clone();
        ::tokio::spawn(async move { q.put(b"given up").await })
    };
    let m = ::tokio::task::spawn_blocking(move || {
        wait_for_blocked_calls_on_q(addr, 4);
        m.shutdown().unwrap();
        m
    })
    .await
    .unwrap();
    drop(m);
    // The client's task reads the refusal and holds the put; then its caller gives up.
    ::tokio::time::sleep(Duration::from_millis(100)).await;
    dropped.abort();
    let _ = dropped.await;
    let kept = dir.clone();
    let m = ::tokio::task::spawn_blocking(move || {
        durable_manager(&addr.to_string(), &kept, Encryption::Off)
    })
    .await
    .unwrap();
    // The client is back (a call goes through), and its queue holds only the first four.
    assert_eq!(q.qsize().await.unwrap(), 4);
    let got = ::tokio::task::spawn_blocking(move || {
        let plain = Client::connect(addr, KEY).unwrap();
        let q = plain.raw_queue("q").unwrap();
        let got: Vec<Vec<u8>> = (0..4).map(|_| q.get_timeout(WITHIN).unwrap()).collect();
        // Time for a put sent again to land.
        thread::sleep(Duration::from_millis(300));
        (got, q.qsize().unwrap())
    })
    .await
    .unwrap();
    assert_eq!(got, (batch(4), 0));
    drop((q, client));
    ::tokio::task::spawn_blocking(move || m.shutdown().unwrap())
        .await
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
