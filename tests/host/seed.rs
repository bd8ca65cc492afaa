//! The seed scenario, re-enacted with the examples as processes, and many processes at once.

use std::net::TcpListener;
use std::time::Duration;

use depot::Client;

use crate::harness::{spawn, spawn_env, wait_until};
use crate::SOON;

/// The seed's authkey, the examples' default.
const SEED_KEY: &str = "producer";

/// `put N items, sum S` -> (N, S).
fn parse_put_line(line: &str) -> (u64, u64) {
    let rest = line
        .strip_prefix("put ")
        .unwrap_or_else(|| panic!("not a put summary: {line:?}"));
    let (n, sum) = rest
        .split_once(" items, sum ")
        .unwrap_or_else(|| panic!("not a put summary: {line:?}"));
    (n.parse().unwrap(), sum.parse().unwrap())
}

/// Sum of a consumer's lines, each checked to be a seed value 1..=10.
fn sum_of_values(lines: &[String]) -> u64 {
    lines
        .iter()
        .map(|l| {
            let v: u64 = l.parse().unwrap_or_else(|_| panic!("not a number: {l:?}"));
            assert!((1..=10).contains(&v), "value {v} outside 1..=10");
            v
        })
        .sum()
}

/// manager, consumer (blocks on the empty queue), producer, close: as four processes.
pub fn scenario_with_example_processes() {
    // A small capacity so the producer also blocks while the queue is full.
    let mut manager = spawn("manager", &["--addr", "127.0.0.1:0", "--capacity", "16"]);
    let addr = manager.listening_addr();
    let watcher = Client::connect(addr.as_str(), SEED_KEY).expect("connect");

    // The consumer takes its address and key from the environment, as the seed's would.
    let mut consumer = spawn_env(
        "consumer",
        &["--count", "300"],
        &[("DEPOT_ADDR", &addr), ("DEPOT_AUTHKEY", SEED_KEY)],
    );
    wait_until(SOON, "the consumer blocks in get", || {
        crate::stat(&watcher, "task_queue").getters == 1
    });

    let mut producer = spawn(
        "producer",
        &["--addr", &addr, "--authkey", SEED_KEY, "--count", "300"],
    );
    let out = producer.success(SOON);
    assert_eq!(out.len(), 1, "producer output: {out:?}");
    let (put, sum) = parse_put_line(&out[0]);
    assert_eq!(put, 300);

    let values = consumer.success(SOON);
    assert_eq!(values.len(), 300, "consumer printed {} lines", values.len());
    assert_eq!(sum_of_values(&values), sum, "the consumer's sum differs");
    // Random values: 300 draws from 1..=10 are not all alike.
    assert!(values.iter().any(|v| v != &values[0]), "all values equal");

    let q = crate::stat(&watcher, "task_queue");
    assert_eq!((q.len, q.total_put, q.total_got), (0, 300, 300));

    let mut close = spawn("close", &["--addr", &addr]);
    close.success(SOON);
    let rest = manager.success(SOON);
    assert_eq!(rest, ["stopped"]);
}

/// all_in_one (manager + producer in one process) with a consumer process, then close.
pub fn all_in_one_with_consumer() {
    let mut server = spawn(
        "all_in_one",
        &[
            "--addr",
            "127.0.0.1:0",
            "--count",
            "40",
            "--interval-ms",
            "1",
        ],
    );
    let addr = server.listening_addr();
    let mut consumer = spawn("consumer", &["--addr", &addr, "--count", "40"]);
    let values = consumer.success(SOON);
    let (put, sum) = parse_put_line(&server.line(SOON));
    assert_eq!(put, 40);
    assert_eq!(values.len(), 40);
    assert_eq!(sum_of_values(&values), sum);
    spawn("close", &["--addr", &addr]).success(SOON);
    assert_eq!(server.success(SOON), ["stopped"]);
}

/// The README's demo: its own manager, 2 producers and 2 consumers; sums must match.
pub fn demo_reports_matching_checksums() {
    let mut demo = spawn("demo", &["--seconds", "1"]);
    let out = demo.success(Duration::from_secs(30));
    let checksum = out
        .iter()
        .find(|l| l.starts_with("checksum:"))
        .unwrap_or_else(|| panic!("no checksum line in {out:?}"));
    assert!(checksum.ends_with(": match"), "{checksum}");
    let got: Vec<u64> = out
        .iter()
        .filter(|l| l.starts_with("consumer "))
        .map(|l| {
            let n = l
                .split("got")
                .nth(1)
                .unwrap()
                .split("items")
                .next()
                .unwrap();
            n.trim().parse().unwrap()
        })
        .collect();
    assert_eq!(got.len(), 2, "{out:?}");
    assert!(got.iter().sum::<u64>() > 0, "nothing flowed: {out:?}");
    assert!(out.iter().any(|l| l.starts_with("throughput:")), "{out:?}");
}

/// 4 producer and 4 consumer processes move 100,000 distinct items through one manager
/// process: each delivered exactly once.
pub fn four_by_four_processes_exactly_once() {
    const PER: u32 = 25_000;
    const N: usize = 4;
    let mut manager = spawn("manager", &["--addr", "127.0.0.1:0", "--capacity", "1024"]);
    let addr = manager.listening_addr();
    let mut consumers: Vec<_> = (0..N)
        .map(|_| {
            spawn(
                "load-consumer",
                &[
                    "--addr",
                    &addr,
                    "--authkey",
                    SEED_KEY,
                    "--count",
                    &PER.to_string(),
                ],
            )
        })
        .collect();
    let mut producers: Vec<_> = (0..N as u32)
        .map(|p| {
            let first = (p * PER).to_string();
            spawn(
                "load-producer",
                &[
                    "--addr",
                    &addr,
                    "--authkey",
                    SEED_KEY,
                    "--first",
                    &first,
                    "--count",
                    &PER.to_string(),
                ],
            )
        })
        .collect();
    let long = Duration::from_secs(60);
    for p in &mut producers {
        assert_eq!(p.success(long), ["done"]);
    }
    let mut seen = vec![0u8; N * PER as usize];
    let (mut count, mut sum) = (0usize, 0u64);
    for c in &mut consumers {
        let lines = c.success(long);
        assert_eq!(
            lines.len(),
            PER as usize,
            "a consumer got {} items",
            lines.len()
        );
        for l in lines {
            let v: usize = l.parse().expect("a number");
            assert!(v < seen.len(), "value {v} was never put");
            seen[v] += 1;
            count += 1;
            sum += v as u64;
        }
    }
    let expected_sum: u64 = (0..(N as u64) * u64::from(PER)).sum();
    assert_eq!(count, seen.len());
    assert_eq!(sum, expected_sum, "checksum");
    let dup = seen.iter().position(|&n| n > 1);
    let lost = seen.iter().position(|&n| n == 0);
    assert_eq!(dup, None, "an item was delivered twice");
    assert_eq!(lost, None, "an item was lost");

    let c = Client::connect(addr.as_str(), SEED_KEY).expect("connect");
    let q = crate::stat(&c, "task_queue");
    assert_eq!((q.len, q.total_put, q.total_got), (0, 100_000, 100_000));
    c.shutdown_manager().expect("shutdown");
    assert_eq!(manager.success(SOON), ["stopped"]);
}

/// The examples fail with one clear line: a wrong key, nothing listening.
pub fn examples_report_wrong_key_and_refused() {
    let m = crate::start(&[("task_queue", 4)]);
    let addr = m.address().to_string();
    let mut consumer = spawn("consumer", &["--addr", &addr, "--authkey", "not-the-key"]);
    let (status, out) = consumer.wait(SOON);
    assert!(!status.success());
    assert!(out.is_empty(), "{out:?}");
    let err = consumer.stderr();
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(
        err.starts_with("consumer: authentication failed"),
        "{err:?}"
    );

    // A port nobody listens on: bind one, then free it.
    let free = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut producer = spawn("producer", &["--addr", &free.to_string(), "--count", "1"]);
    let (status, _) = producer.wait(SOON);
    assert!(!status.success());
    let err = producer.stderr();
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(err.starts_with("producer: connection refused"), "{err:?}");
    m.shutdown().expect("shutdown");
}
