//! Acknowledged gets over real sockets, and a consumer process killed while it holds leases.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use depot_std::{Client, Error, ErrorCode, Manager, ManagerHandle};

const KEY: &[u8] = b"producer";
const HOLDER_ENV: &str = "DEPOT_LEASE_HOLDER_ADDR";

fn manager() -> ManagerHandle {
    Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(KEY)
        .queue("jobs", 64)
        .queue("dead", 64)
        .dead_letter("jobs", "dead", 3)
        .start()
        .unwrap()
}

/// Not a test of its own: the consumer process `killed_consumer_leases_are_redelivered` starts
/// (this test binary again) and kills. It takes three items under leases, says so, and waits.
#[test]
#[ignore = "run as a child process by killed_consumer_leases_are_redelivered"]
fn lease_holder_process() {
    let Ok(addr) = std::env::var(HOLDER_ENV) else {
        return;
    };
    let client = Client::connect(addr.as_str(), KEY).unwrap();
    let jobs = client.queue::<u32>("jobs").unwrap();
    let held: Vec<_> = (0..3)
        .map(|_| jobs.get_leased(Duration::from_secs(600)).unwrap())
        .collect();
    let seen: Vec<String> = held.iter().map(|l| l.to_string()).collect();
    println!("holding {}", seen.join(" "));
    std::thread::sleep(Duration::from_secs(600));
}

/// A consumer process `kill -9`ed while holding leases: another consumer gets those items, in
/// their order, delivered for the second time, long before the leases would have run out.
#[test]
fn killed_consumer_leases_are_redelivered() {
    let m = manager();
    let c = Client::connect(m.address(), KEY).unwrap();
    let jobs = c.queue::<u32>("jobs").unwrap();
    jobs.put_many(&[1, 2, 3, 4]).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "lease_holder_process",
            "--ignored",
            "--nocapture",
        ])
        .env(HOLDER_ENV, m.address().to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines
        .find_map(|l| l.ok().filter(|l| l.starts_with("holding")))
        .expect("the holder reports its leases");
    assert_eq!(line, "holding 1 2 3");
    // The held items are invisible meanwhile.
    assert_eq!(jobs.get_nowait().unwrap(), 4);
    assert!(matches!(
        jobs.get_nowait(),
        Err(Error::Request {
            code: ErrorCode::Empty,
            ..
        })
    ));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let start = Instant::now();
    for want in 1..=3 {
        let got = jobs
            .get_leased_timeout(Duration::from_secs(60), Duration::from_secs(10))
            .unwrap();
        assert_eq!((*got, got.delivery()), (want, 2));
        got.ack().unwrap();
    }
    assert!(start.elapsed() < Duration::from_secs(60), "not by expiry");
    assert_eq!(jobs.qsize().unwrap(), 0);
}

/// A lease that runs out puts the item back; acking it late fails with `NoSuchLease`.
#[test]
fn expired_lease_redelivers() {
    let m = manager();
    let c = Client::connect(m.address(), KEY).unwrap();
    let jobs = c.queue::<String>("jobs").unwrap();
    jobs.put(&"slow".to_string()).unwrap();
    let first = jobs.get_leased(Duration::from_millis(200)).unwrap();
    assert_eq!((first.as_str(), first.delivery()), ("slow", 1));
    let second = jobs
        .get_leased_timeout(Duration::from_secs(60), Duration::from_secs(10))
        .unwrap();
    assert_eq!((second.as_str(), second.delivery()), ("slow", 2));
    assert!(matches!(
        first.ack(),
        Err(Error::Request {
            code: ErrorCode::NoSuchLease,
            ..
        })
    ));
    second.ack().unwrap();
    assert_eq!(jobs.qsize().unwrap(), 0);
}

/// A nack, or dropping the lease, puts the item back at the head, ahead of newer items; after
/// three deliveries it goes to the dead-letter queue.
#[test]
fn nack_and_drop_return_to_head_then_dead_letter() {
    let m = manager();
    let c = Client::connect(m.address(), KEY).unwrap();
    let jobs = c.queue::<u32>("jobs").unwrap();
    let dead = c.queue::<u32>("dead").unwrap();
    jobs.put_many(&[7, 8]).unwrap();
    let lease = Duration::from_secs(60);
    let a = jobs.get_leased(lease).unwrap();
    assert_eq!((*a, a.delivery()), (7, 1));
    a.nack().unwrap();
    let b = jobs.get_leased(lease).unwrap();
    assert_eq!((*b, b.delivery()), (7, 2));
    drop(b);
    let c3 = jobs.get_leased(lease).unwrap();
    assert_eq!((*c3, c3.delivery()), (7, 3));
    c3.nack().unwrap();
    assert_eq!(dead.get_nowait().unwrap(), 7);
    let next = jobs.get_leased(lease).unwrap();
    assert_eq!((*next, next.delivery()), (8, 1));
    next.ack().unwrap();
}

/// Several items under one lease, as bytes.
#[test]
fn many_under_one_lease() {
    let m = manager();
    let c = Client::connect(m.address(), KEY).unwrap();
    let jobs = c.raw_queue("jobs").unwrap();
    let items: Vec<Vec<u8>> = (0..5u8).map(cbor_uint).collect();
    let refs: Vec<&[u8]> = items.iter().map(Vec::as_slice).collect();
    jobs.put_many(&refs).unwrap();
    let got = jobs.get_many_leased(3, Duration::from_secs(60)).unwrap();
    assert_eq!(got.items(), &items[..3]);
    assert_eq!(got.deliveries(), &[1, 1, 1]);
    got.nack().unwrap();
    let got = jobs.get_many_leased(10, Duration::from_secs(60)).unwrap();
    assert_eq!(got.items(), &items[..]);
    assert_eq!(got.deliveries(), &[2, 2, 2, 1, 1]);
    got.ack().unwrap();
    assert_eq!(jobs.qsize().unwrap(), 0);
}

/// An ack not waited for leaves on its own while its connection stays open and idle (the
/// client lets the kernel hold it back for the next request, for a moment at most): the lease
/// does not run out and the item does not come back.
#[test]
fn ack_nowait_leaves_while_idle() {
    let m = manager();
    let c = Client::connect(m.address(), KEY).unwrap();
    let jobs = c.queue::<u32>("jobs").unwrap();
    jobs.put(&7).unwrap();
    let got = jobs.get_leased(Duration::from_millis(800)).unwrap();
    let acked = Instant::now();
    got.ack_nowait().unwrap();
    // Idle past the lease, the connection open; another client looks.
    std::thread::sleep(Duration::from_millis(1500));
    let other = Client::connect(m.address(), KEY).unwrap();
    let look = other.queue::<u32>("jobs").unwrap();
    assert!(acked.elapsed() > Duration::from_millis(800));
    assert_eq!(
        look.qsize().unwrap(),
        0,
        "the ack did not reach the manager in time"
    );
    assert!(look.get_nowait().is_err());
    drop((jobs, c));
}

/// A small CBOR unsigned integer (the queue holds values).
fn cbor_uint(n: u8) -> Vec<u8> {
    assert!(n < 24);
    vec![n]
}

/// An ack not waited for still removes the item: nothing comes back after the lease, or when
/// the connection closes.
#[test]
fn ack_nowait_removes() {
    let m = manager();
    let c = Client::connect(m.address(), KEY).unwrap();
    let jobs = c.queue::<u32>("jobs").unwrap();
    jobs.put_many(&[1, 2]).unwrap();
    for want in 1..=2 {
        let got = jobs.get_leased(Duration::from_millis(300)).unwrap();
        assert_eq!(*got, want);
        got.ack_nowait().unwrap();
    }
    drop((jobs, c));
    std::thread::sleep(Duration::from_millis(600));
    let c = Client::connect(m.address(), KEY).unwrap();
    assert_eq!(c.queue::<u32>("jobs").unwrap().qsize().unwrap(), 0);
}
