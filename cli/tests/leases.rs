//! `depot get --lease`: each item is acked once written, and a consumer killed before that
//! gives its item back.

use std::io::Read;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use depot_std::{Client, Manager, ManagerHandle};

const KEY: &str = "producer";

fn manager() -> ManagerHandle {
    Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(KEY)
        .queue("jobs", 16)
        .raw_queue("blobs", 16)
        .start()
        .unwrap()
}

fn depot(m: &ManagerHandle, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_depot"));
    cmd.args(args)
        .args(["--connect", &m.address().to_string()])
        .env("DEPOT_AUTHKEY", KEY)
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

fn len(c: &Client, queue: &str) -> u32 {
    c.stat()
        .unwrap()
        .into_iter()
        .find(|s| s.name == queue)
        .unwrap()
        .len
}

#[test]
fn get_lease_prints_then_acks() {
    let m = manager();
    let c = Client::connect(m.address(), KEY).unwrap();
    c.queue::<u32>("jobs")
        .unwrap()
        .put_many(&[1, 2, 3])
        .unwrap();
    let out = depot(
        &m,
        &["get", "--queue", "jobs", "--count", "3", "--lease", "1"],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "1\n2\n3\n");
    // Acked: nothing came back when the consumer's connection closed, nor after the lease.
    thread::sleep(Duration::from_millis(1200));
    assert_eq!(len(&c, "jobs"), 0);
}

/// The consumer is `kill -9`ed while its second item is still being written (nobody reads its
/// stdout): the first item was acked, the second comes back delivered twice, the third once.
#[test]
fn killed_consumer_gives_its_item_back() {
    let m = manager();
    let c = Client::connect(m.address(), KEY).unwrap();
    let blobs = c.raw_queue("blobs").unwrap();
    let items: Vec<Vec<u8>> = (b'a'..=b'c').map(|b| vec![b; 40_000]).collect();
    let refs: Vec<&[u8]> = items.iter().map(Vec::as_slice).collect();
    blobs.put_many(&refs).unwrap();
    let mut child = depot(
        &m,
        &[
            "get", "--queue", "blobs", "--count", "0", "--raw", "--lease", "600",
        ],
    )
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    // A pipe holds 64 KiB: the second item's write blocks while its lease is held.
    let deadline = Instant::now() + Duration::from_secs(20);
    while len(&c, "blobs") > 1 {
        assert!(
            Instant::now() < deadline,
            "the consumer took no second item"
        );
        thread::sleep(Duration::from_millis(10));
    }
    thread::sleep(Duration::from_millis(200));
    assert_eq!(
        len(&c, "blobs"),
        1,
        "the consumer is blocked on its second item"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let mut printed = Vec::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut printed)
        .unwrap();
    assert!(printed.starts_with(&items[0]), "the first item was printed");
    for (want, delivery) in [(&items[1], 2), (&items[2], 1)] {
        let got = blobs
            .get_leased_timeout(Duration::from_secs(60), Duration::from_secs(10))
            .unwrap();
        assert_eq!((&got.items()[0], got.deliveries()[0]), (want, delivery));
        got.ack().unwrap();
    }
    assert_eq!(len(&c, "blobs"), 0);
}

#[test]
fn serve_dead_letter_is_checked() {
    let out = Command::new(env!("CARGO_BIN_EXE_depot"))
        .args(["serve", "--listen", "127.0.0.1:0", "--queue", "jobs"])
        .args(["--dead-letter", "jobs:nowhere:3"])
        .env("DEPOT_AUTHKEY", KEY)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("no queue 'nowhere'"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_depot"))
        .args(["serve", "--queue", "jobs", "--dead-letter", "jobs:jobs:0"])
        .env("DEPOT_AUTHKEY", KEY)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("delivery count from 1 to 255"), "{err}");
}
