//! The async client (`depot::tokio`) over real sockets against a real manager.

use std::time::Duration;

use depot::tokio::Client;
use depot::{Error, ErrorCode, Manager, ManagerHandle};
use faultproxy::{FaultProxy, Faults};
use tokio::time::{sleep, timeout};

const KEY: &[u8] = b"producer";

fn start(capacity: u32) -> ManagerHandle {
    Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(KEY)
        .queue("q", capacity)
        .start()
        .expect("manager starts")
}

/// A manager with one raw queue `q` (any bytes) of `capacity` items.
fn start_raw(capacity: u32) -> ManagerHandle {
    Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(KEY)
        .raw_queue("q", capacity)
        .start()
        .expect("manager starts")
}

/// An item of `size` bytes that starts with `k`.
fn numbered(k: u64, size: usize) -> Vec<u8> {
    let mut item = vec![0u8; size];
    item[..8].copy_from_slice(&k.to_le_bytes());
    item
}

/// The number an item of [`numbered`] starts with.
fn number(item: &[u8]) -> u64 {
    u64::from_le_bytes(item[..8].try_into().unwrap())
}

/// Asserts that `got` holds every number below `n` exactly once.
fn exactly_once(mut got: Vec<u64>, n: u64) {
    assert_eq!(got.len() as u64, n);
    assert_eq!(got.iter().sum::<u64>(), n * (n - 1) / 2);
    got.sort_unstable();
    got.dedup();
    assert_eq!(got.len() as u64, n, "an item came twice");
}

/// `q.get_many(n)`, every item decoded.
async fn values(q: &depot::tokio::Queue<u32>, n: usize) -> Vec<u32> {
    let got = q.get_many(n).await.unwrap();
    got.into_iter().map(Result::unwrap).collect()
}

#[test]
fn handles_are_owned_and_shareable() {
    fn check<T: Clone + Send + Sync + 'static>() {}
    check::<Client>();
    check::<depot::tokio::RawQueue>();
    check::<depot::tokio::Queue<String>>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_tasks_on_one_client_get_every_item_once() {
    const ITEMS: u64 = 20_000;
    const TASKS: u64 = 8;
    let m = start(500);
    let client = Client::connect(m.address(), KEY).await.unwrap();
    let q = client.queue::<u64>("q").await.unwrap();
    let mut producers = Vec::new();
    let mut consumers = Vec::new();
    for t in 0..TASKS {
        let qp = q.clone();
        producers.push(tokio::spawn(async move {
            for i in (t..ITEMS).step_by(TASKS as usize) {
                qp.put(&i).await.unwrap();
            }
        }));
        let q = q.clone();
        consumers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..ITEMS / TASKS {
                got.push(q.get().await.unwrap());
            }
            got
        }));
    }
    for p in producers {
        p.await.unwrap();
    }
    let mut got = Vec::new();
    for c in consumers {
        got.extend(c.await.unwrap());
    }
    exactly_once(got, ITEMS);
    assert_eq!(client.status().await.unwrap().connections, 1);
    assert!(q.empty().await.unwrap());
    m.shutdown().unwrap();
}

/// A `get` dropped by `tokio::time::timeout` just as its item arrives loses nothing: the item
/// is given back to the queue and a later `get` receives it. Each round puts one item at about
/// the moment the timeout fires, so some gets win and some time out; a round *raced* when the
/// timeout fired although the manager had already accepted the put (so it had handed the item
/// to the parked get before the get was dropped). Rounds go on until many raced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_get_loses_no_item() {
    const MAX_ROUNDS: u64 = 4_000;
    const RACES: u64 = 20;
    const WAIT: Duration = Duration::from_millis(3);
    let m = start(MAX_ROUNDS as u32);
    let consumer = Client::connect(m.address(), KEY).await.unwrap();
    let producer = Client::connect(m.address(), KEY).await.unwrap();
    let q = consumer.queue::<u64>("q").await.unwrap();
    let p = producer.queue::<u64>("q").await.unwrap();
    let mut got = Vec::new();
    let (mut rounds, mut won, mut timed_out, mut raced) = (0, 0, 0, 0);
    while rounds < MAX_ROUNDS && (rounds < 300 || raced < RACES) {
        let i = rounds;
        rounds += 1;
        let p = p.clone();
        // Around the timeout (the runtime rounds timers up): from 2 ms before it to 1 ms
        // after, in 25 µs steps.
        let delay = WAIT - Duration::from_millis(2) + Duration::from_micros(25 * (i % 120));
        let put = tokio::spawn(async move {
            sleep(delay).await;
            p.put(&i).await.unwrap();
            std::time::Instant::now()
        });
        let outcome = timeout(WAIT, q.get()).await;
        let returned = std::time::Instant::now();
        let put_done = put.await.unwrap();
        match outcome {
            Ok(item) => {
                got.push(item.unwrap());
                won += 1;
            }
            Err(_) => {
                timed_out += 1;
                if put_done < returned {
                    raced += 1;
                }
                // The round's item is in the queue or on its way back: the next get has it,
                // and the next round starts with the queue empty again.
                let back = q.get_timeout(Duration::from_secs(5)).await;
                got.push(back.unwrap_or_else(|e| panic!("round {i}: item lost: {e}")));
            }
        }
    }
    // Whatever the dropped gets left is in the queue, or on its way back to it.
    loop {
        match q.get_timeout(Duration::from_millis(500)).await {
            Ok(item) => got.push(item),
            Err(Error::Request {
                code: ErrorCode::Timeout,
                ..
            }) => break,
            Err(e) => panic!("{e}"),
        }
    }
    eprintln!("{rounds} rounds: {won} gets won, {timed_out} timed out, {raced} raced");
    assert!(won > 0 && raced > 0, "{won} won, {raced} raced");
    exactly_once(got, rounds);
    assert_eq!(q.qsize().await.unwrap(), 0);
    m.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_get_and_a_producer_share_one_client() {
    let m = start(4);
    let client = Client::connect(m.address(), KEY).await.unwrap();
    let q = client.queue::<String>("q").await.unwrap();
    let blocked = {
        let q = q.clone();
        tokio::spawn(async move { q.get().await })
    };
    sleep(Duration::from_millis(100)).await;
    assert!(!blocked.is_finished());
    // The same connection still serves other requests while the get waits.
    let producer = {
        let client = client.clone();
        tokio::spawn(async move {
            let q = client.queue::<String>("q").await.unwrap();
            assert_eq!(q.qsize().await.unwrap(), 0);
            q.put(&"hello".to_owned()).await.unwrap();
        })
    };
    producer.await.unwrap();
    let got = timeout(Duration::from_secs(10), blocked).await.unwrap();
    assert_eq!(got.unwrap().unwrap(), "hello");
    m.shutdown().unwrap();
}

#[tokio::test]
async fn nowait_timeouts_batches_and_errors() {
    let m = start(3);
    let client = Client::connect(m.address(), KEY).await.unwrap();
    // The async client negotiates sealing as the blocking one does.
    let blocking = depot::Client::connect(m.address(), KEY).unwrap();
    assert!(client.sealing().is_some_and(|s| s != depot::Sealing::Mac));
    assert_eq!(client.sealing(), blocking.sealing());
    drop(blocking);
    let q = client.queue::<u32>("q").await.unwrap();
    assert_eq!((q.name(), q.capacity()), ("q", 3));
    let empty = q.get_nowait().await.unwrap_err();
    assert_eq!(empty.to_string(), "queue 'q' is empty");
    let t0 = tokio::time::Instant::now();
    let timed = q.get_timeout(Duration::from_millis(100)).await.unwrap_err();
    assert!(t0.elapsed() >= Duration::from_millis(100));
    assert_eq!(timed.code(), Some(ErrorCode::Timeout));
    q.put_nowait(&1).await.unwrap();
    q.put_many(&[2, 3]).await.unwrap();
    assert!(q.full().await.unwrap());
    let full = q.put_nowait(&4).await.unwrap_err();
    assert_eq!(full.code(), Some(ErrorCode::Full));
    let timed = q.put_timeout(&4, Duration::from_millis(50)).await;
    assert_eq!(timed.unwrap_err().code(), Some(ErrorCode::Timeout));
    assert_eq!(q.qsize().await.unwrap(), 3);
    assert_eq!(values(&q, 3).await, [1, 2, 3]);
    for _ in 0..3 {
        q.task_done().await.unwrap();
    }
    q.join().await.unwrap();
    // The same items as raw bytes, in one batch: the CBOR of 1 and of 100.
    let raw = client.raw_queue("q").await.unwrap();
    raw.put_many(&[&[0x01], &[0x18, 0x64]]).await.unwrap();
    let batch = raw.get_batch(2).await.unwrap();
    assert_eq!(
        (batch.len(), batch.to_vecs()),
        (2, vec![vec![0x01], vec![0x18, 0x64]])
    );
    let stat = client.stat().await.unwrap();
    assert_eq!(stat.len(), 1);
    assert_eq!((stat[0].name.as_str(), stat[0].total_put), ("q", 5));
    let e = client.queue::<u32>("nope").await.unwrap_err();
    assert_eq!(e.to_string(), "queue 'nope' does not exist");
    let e = client.shutdown_manager().await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotAllowed));
    let big = client.raw_queue("q").await.unwrap();
    let e = big.put(&vec![0; big.max_item() + 1]).await.unwrap_err();
    assert!(matches!(e, Error::TooLarge { .. }), "{e:?}");
    m.shutdown().unwrap();
}

#[tokio::test]
async fn calls_fail_once_the_manager_stops() {
    let m = start(3);
    let client = Client::connect(m.address(), KEY).await.unwrap();
    let q = client.queue::<u32>("q").await.unwrap();
    let blocked = {
        let q = q.clone();
        tokio::spawn(async move { q.get().await })
    };
    sleep(Duration::from_millis(50)).await;
    m.stop().unwrap();
    let e = timeout(Duration::from_secs(10), blocked)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(e.is_connection_lost(), "{e:?}");
    let e = q.put(&1).await.unwrap_err();
    assert!(e.is_connection_lost(), "{e:?}");
    let wrong = Client::connect(m.address(), b"wrong").await;
    assert!(wrong.is_err());
}

/// A `get_many` dropped while the reply to its last request is on its way gives back, in
/// order, both the items it took before and the ones that reply brings: the reply's items go
/// back first, then the earlier ones ahead of them. A proxy holds the reply back for a second,
/// so the call is dropped while it travels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_many_dropped_with_its_reply_on_the_way_gives_back_in_order() {
    let m = start(10);
    let proxy = FaultProxy::start("127.0.0.1:0", m.address(), Faults::default()).unwrap();
    let direct = Client::connect(m.address(), KEY).await.unwrap();
    let dq = direct.queue::<u32>("q").await.unwrap();
    let far = Client::connect(proxy.addr(), KEY).await.unwrap();
    let fq = far.queue::<u32>("q").await.unwrap();
    dq.put_many(&[1, 2, 3]).await.unwrap();
    // Takes 1, 2 and 3, then blocks in the manager for three more.
    let taking = tokio::spawn(async move { fq.get_many(6).await });
    let parked = async {
        while direct.status().await.unwrap().waiters == 0 {
            sleep(Duration::from_millis(20)).await;
        }
    };
    timeout(Duration::from_secs(10), parked).await.unwrap();
    assert!(dq.empty().await.unwrap());
    // The blocked request takes 4 and 5, and the proxy holds its reply while the call is
    // dropped.
    proxy.set_faults(Faults {
        latency: Duration::from_secs(1),
        ..Faults::default()
    });
    dq.put_many(&[4, 5]).await.unwrap();
    sleep(Duration::from_millis(50)).await;
    taking.abort();
    let dropped = taking.await;
    assert!(
        dropped.as_ref().is_err_and(|e| e.is_cancelled()),
        "the call ended before it was dropped: {dropped:?}"
    );
    let settled = async {
        while dq.qsize().await.unwrap() < 5 {
            sleep(Duration::from_millis(20)).await;
        }
    };
    timeout(Duration::from_secs(20), settled).await.unwrap();
    assert_eq!(values(&dq, 5).await, [1, 2, 3, 4, 5]);
    drop(far);
    m.shutdown().unwrap();
}

/// A `get_batch` of items larger than one reply carries keeps several `GetMany` in flight;
/// dropped while their replies are on their way, it gives back, in order, the items it took
/// before and those every reply brings, even when its client is dropped right after. A proxy
/// holds each chunk 300 ms each way, so the call is dropped once the manager has answered its
/// second wave of requests and before those replies arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_batch_dropped_with_several_replies_on_the_way_gives_back_in_order() {
    const ITEMS: u32 = 40;
    const SIZE: usize = 8 * 1024;
    let m = start_raw(100);
    let proxy = FaultProxy::start("127.0.0.1:0", m.address(), Faults::default()).unwrap();
    let direct = Client::connect(m.address(), KEY).await.unwrap();
    let dq = direct.raw_queue("q").await.unwrap();
    let far = Client::connect(proxy.addr(), KEY).await.unwrap();
    let fq = far.raw_queue("q").await.unwrap();
    let items: Vec<Vec<u8>> = (0..ITEMS).map(|k| numbered(k.into(), SIZE)).collect();
    let refs: Vec<&[u8]> = items.iter().map(Vec::as_slice).collect();
    dq.put_many(&refs).await.unwrap();
    proxy.set_faults(Faults {
        latency: Duration::from_millis(300),
        ..Faults::default()
    });
    let taking = tokio::spawn(async move { fq.get_batch(ITEMS as usize).await });
    // The first reply carries a few items; the requests sent after it take more than two
    // replies' worth.
    let taken = async {
        loop {
            let left = dq.qsize().await.unwrap();
            if left > 0 && left < ITEMS / 2 {
                return left;
            }
            assert!(
                left > 0,
                "every item was taken before the call could be dropped"
            );
            sleep(Duration::from_millis(5)).await;
        }
    };
    let left = timeout(Duration::from_secs(10), taken).await.unwrap();
    taking.abort();
    let dropped = taking.await;
    assert!(
        dropped.as_ref().is_err_and(|e| e.is_cancelled()),
        "the call ended before it was dropped ({left} items left): {dropped:?}"
    );
    // The client goes too: its connection task gives back what it owes before it ends.
    drop(far);
    let settled = async {
        while dq.qsize().await.unwrap() < ITEMS {
            sleep(Duration::from_millis(20)).await;
        }
    };
    timeout(Duration::from_secs(20), settled).await.unwrap();
    let back = dq.get_batch(ITEMS as usize).await.unwrap();
    let order: Vec<u64> = back.iter().map(number).collect();
    assert_eq!(order, (0..u64::from(ITEMS)).collect::<Vec<_>>());
    assert!(dq.empty().await.unwrap());
    m.shutdown().unwrap();
}

/// One consumer whose `get_batch` calls keep being dropped by short timeouts, while a producer
/// puts: every item comes exactly once and in order, so what a dropped call took (and what
/// its requests in flight brought) went back ahead of the rest each time, and no later call
/// overtook it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_batches_dropped_by_timeouts_keep_the_queue_in_order() {
    const ITEMS: u64 = 1_500;
    const SIZE: usize = 2 * 1024;
    let m = start_raw(200);
    let producer = Client::connect(m.address(), KEY).await.unwrap();
    let consumer = Client::connect(m.address(), KEY).await.unwrap();
    let p = producer.raw_queue("q").await.unwrap();
    let q = consumer.raw_queue("q").await.unwrap();
    let put = tokio::spawn(async move {
        for chunk in (0..ITEMS).collect::<Vec<_>>().chunks(25) {
            let items: Vec<Vec<u8>> = chunk.iter().map(|&k| numbered(k, SIZE)).collect();
            let refs: Vec<&[u8]> = items.iter().map(Vec::as_slice).collect();
            p.put_many(&refs).await.unwrap();
            sleep(Duration::from_millis(1)).await;
        }
    });
    let mut got = Vec::new();
    let (mut calls, mut dropped) = (0u64, 0u64);
    let all = async {
        while (got.len() as u64) < ITEMS {
            calls += 1;
            let wait = Duration::from_micros(500 + 700 * (calls % 15));
            let want = (ITEMS as usize - got.len()).min(64);
            match timeout(wait, q.get_batch(want)).await {
                Ok(batch) => got.extend(batch.unwrap().iter().map(number)),
                Err(_) => dropped += 1,
            }
        }
    };
    timeout(Duration::from_secs(60), all).await.unwrap();
    put.await.unwrap();
    eprintln!("{calls} calls, {dropped} dropped");
    assert!(dropped > 0, "no call was dropped");
    assert_eq!(got, (0..ITEMS).collect::<Vec<_>>());
    assert!(q.empty().await.unwrap());
    m.shutdown().unwrap();
}

/// A `get_many` dropped after it took some items gives them back, in order.
#[tokio::test]
async fn a_dropped_get_many_gives_its_items_back() {
    let m = start(10);
    let client = Client::connect(m.address(), KEY).await.unwrap();
    let q = client.queue::<u32>("q").await.unwrap();
    q.put_many(&[1, 2, 3, 4, 5]).await.unwrap();
    // Takes the five, then waits for a sixth that never comes.
    let r = timeout(Duration::from_millis(200), q.get_many(10)).await;
    assert!(r.is_err());
    let back = timeout(Duration::from_secs(10), values(&q, 5)).await;
    assert_eq!(back.unwrap(), [1, 2, 3, 4, 5]);
    assert!(q.empty().await.unwrap());
    m.shutdown().unwrap();
}
