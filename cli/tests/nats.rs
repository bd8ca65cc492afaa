//! depot managers as stateless gateways over NATS JetStream: real `nats-server -js` processes
//! (installed by tests/install) and real `depot serve --backend nats://…` processes, with
//! clients of this process on either gateway.
//!
//! - two gateways on one NATS server: 4 producers on one, 4 consumers (leased gets, acks) on
//!   the other, 50,000 items exactly once;
//! - a capacity-bounded queue answers `Full`; a leased item whose gateway was killed comes
//!   back (JetStream redelivers it after `ack_wait`), counted as a second delivery;
//! - acks riding on the consumer's next pull request (`+NXT`) remove every item;
//! - a gateway's read-ahead item goes to its next get, or back to the queue when no get takes
//!   it in time or the gateway stops, counted as a delivery;
//! - a batch put's count is that of the leading items stored (a full stream, and a refusal
//!   in the middle whose later items JetStream stored anyway);
//! - a 3-node JetStream cluster (replicas 3): one NATS node and one gateway killed mid-run;
//!   every acknowledged put is delivered at least once, nothing appears that was not put.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use depot_std::{Client, Error, ErrorCode};

mod serve;
use serve::{free_port, metric, scrape, temp_dir, Proc};

const KEY: &str = "gateway-test-key-0123456789abcdef";

/// A `nats-server -js` on `port`, its store in `dir`, with `extra` arguments.
fn nats_server(port: u16, dir: &std::path::Path, extra: &[String]) -> Proc {
    let port_text = port.to_string();
    let fixed = ["-js", "-a", "127.0.0.1", "-p", port_text.as_str(), "-sd"];
    let mut args: Vec<&OsStr> = fixed.iter().map(OsStr::new).collect();
    args.push(dir.as_os_str());
    args.extend(extra.iter().map(OsStr::new));
    serve::start_nats(&args, port)
}

/// A JetStream server of its own for one test, its store in a fresh directory: stopped, and
/// the store removed, when dropped.
struct SingleNats {
    server: Proc,
    dir: std::path::PathBuf,
    port: u16,
    /// The `--backend` URL that reaches it.
    backend: String,
}

impl SingleNats {
    /// The server, its store in a directory named after `name`.
    fn start(name: &str) -> SingleNats {
        let dir = temp_dir(name);
        let port = free_port();
        SingleNats {
            server: nats_server(port, &dir, &[]),
            dir,
            port,
            backend: format!("nats://127.0.0.1:{port}"),
        }
    }
}

impl Drop for SingleNats {
    fn drop(&mut self) {
        self.server.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `depot serve --backend …` gateway; retried while the backend is not ready yet (a
/// JetStream cluster elects its leaders in the first seconds).
fn gateway(backend: &str, queue: &str, extra: &[&str]) -> (Proc, SocketAddr) {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let listen = addr.to_string();
    let args = ["--listen", &listen, "--queue", queue, "--backend", backend];
    let args: Vec<&OsStr> = args.iter().chain(extra).map(OsStr::new).collect();
    let child = serve::serve(
        &args,
        KEY,
        Duration::from_secs(40),
        Duration::from_millis(500),
    );
    (Proc(child), addr)
}

/// Connects to the first gateway of `addrs` that answers, trying them in turn.
fn connect(addrs: &[SocketAddr], turn: &mut usize, stop: &AtomicBool) -> Option<Client> {
    while !stop.load(Ordering::SeqCst) {
        let addr = addrs[*turn % addrs.len()];
        if let Ok(c) = Client::connect(addr, KEY) {
            return Some(c);
        }
        *turn += 1;
        thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Puts `p:0` … `p:count-1` (or until stopped), moving to the next gateway when one fails:
/// (acknowledged, tried).
fn producer(
    p: usize,
    count: u64,
    addrs: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
) -> (Vec<String>, Vec<String>) {
    let (mut acked, mut tried) = (Vec::new(), Vec::new());
    let mut seq = 0u64;
    let mut turn = p;
    'connect: while let Some(c) = connect(&addrs, &mut turn, &stop) {
        let Ok(q) = c.raw_queue("jobs") else {
            turn += 1;
            continue;
        };
        while seq < count && !stop.load(Ordering::SeqCst) {
            let item = format!("{p}:{seq}");
            seq += 1;
            tried.push(item.clone());
            match q.put(item.as_bytes()) {
                Ok(()) => acked.push(item),
                // Never put again: it may be stored or not. Back off as a real producer
                // would: while JetStream elects a stream leader after a node died, every put
                // fails at once (`Timeout` from "no responders"), and without a pause a
                // producer would spend its whole count within that election.
                Err(Error::Request { .. }) => thread::sleep(Duration::from_millis(20)),
                Err(_) => {
                    turn += 1;
                    continue 'connect;
                }
            }
        }
        break;
    }
    (acked, tried)
}

/// Takes items under leases and acks each until stopped: each item with its delivery count.
fn consumer(
    c: usize,
    addrs: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    taken: Arc<AtomicUsize>,
) -> Vec<(String, u8)> {
    let mut got = Vec::new();
    let mut turn = c;
    'connect: while let Some(client) = connect(&addrs, &mut turn, &stop) {
        let Ok(q) = client.raw_queue("jobs") else {
            turn += 1;
            continue;
        };
        while !stop.load(Ordering::SeqCst) {
            match q.get_leased_timeout(Duration::from_secs(60), Duration::from_millis(500)) {
                Ok(mut leased) => {
                    let deliveries = leased.deliveries()[0];
                    let item = leased.take_items().pop().expect("one item");
                    got.push((String::from_utf8(item).expect("text"), deliveries));
                    taken.fetch_add(1, Ordering::SeqCst);
                    if leased.ack().is_err() {
                        turn += 1;
                        continue 'connect;
                    }
                }
                Err(Error::Request {
                    code: ErrorCode::Timeout | ErrorCode::Empty,
                    ..
                }) => {}
                Err(_) => {
                    turn += 1;
                    continue 'connect;
                }
            }
        }
        break;
    }
    got
}

#[test]
fn two_gateways_pass_50000_items_exactly_once() {
    let nats = SingleNats::start("single");
    let backend = &nats.backend;
    let (_a, addr_a) = gateway(backend, "jobs:1000000:raw", &[]);
    let (_b, addr_b) = gateway(backend, "jobs:1000000:raw", &[]);

    const PER_PRODUCER: u64 = 12_500;
    let started = Instant::now();
    let never = Arc::new(AtomicBool::new(false));
    let producers: Vec<_> = (0..4)
        .map(|p| {
            let stop = never.clone();
            thread::spawn(move || producer(p, PER_PRODUCER, vec![addr_a], stop))
        })
        .collect();
    let consuming = Arc::new(AtomicBool::new(false));
    let taken = Arc::new(AtomicUsize::new(0));
    let consumers: Vec<_> = (0..4)
        .map(|c| {
            let (stop, taken) = (consuming.clone(), taken.clone());
            thread::spawn(move || consumer(c, vec![addr_b], stop, taken))
        })
        .collect();
    let mut acked = HashSet::new();
    for p in producers {
        let (ok, tried) = p.join().unwrap();
        assert_eq!(
            ok.len(),
            tried.len(),
            "every put on a healthy gateway succeeds"
        );
        acked.extend(ok);
    }
    assert_eq!(acked.len(), 50_000);
    let puts_done = started.elapsed();
    // The consumers run until they have taken as many items as were put (then a moment
    // more, to catch any duplicate), or for a minute at most.
    let deadline = Instant::now() + Duration::from_secs(60);
    while taken.load(Ordering::SeqCst) < acked.len() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    thread::sleep(Duration::from_millis(1000));
    consuming.store(true, Ordering::SeqCst);
    let mut seen: HashMap<String, u32> = HashMap::new();
    for c in consumers {
        for (item, deliveries) in c.join().unwrap() {
            assert_eq!(deliveries, 1, "{item} was redelivered");
            *seen.entry(item).or_default() += 1;
        }
    }
    let elapsed = started.elapsed();
    println!(
        "50,000 items through two gateways: puts done in {puts_done:?}, all consumed in {elapsed:?}"
    );
    let missing: Vec<_> = acked.iter().filter(|i| !seen.contains_key(*i)).collect();
    assert!(
        missing.is_empty(),
        "{} items lost, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "items delivered twice: {twice:?}");
    let foreign: Vec<_> = seen.keys().filter(|i| !acked.contains(*i)).collect();
    assert!(foreign.is_empty(), "items nobody put: {foreign:?}");
}

#[test]
fn a_full_queue_says_full_and_leases_of_lost_holders_come_back() {
    let nats = SingleNats::start("full");
    let backend = &nats.backend;
    let ack_wait = ["--backend-ack-wait", "2"];
    let (mut a, addr_a) = gateway(backend, "small:3:raw", &ack_wait);
    let (_b, addr_b) = gateway(backend, "small:3:raw", &ack_wait);

    let qa = Client::connect(addr_a, KEY)
        .unwrap()
        .raw_queue("small")
        .unwrap();
    for i in 0..3 {
        qa.put(format!("{i}").as_bytes()).unwrap();
    }
    match qa.put(b"3") {
        Err(Error::Request {
            code: ErrorCode::Full,
            ..
        }) => {}
        other => panic!("a fourth put into a queue of capacity 3: {other:?}"),
    }

    // A client that goes away (its gateway stays) gives its lease back at once.
    let qb = Client::connect(addr_b, KEY)
        .unwrap()
        .raw_queue("small")
        .unwrap();
    let held = {
        let c = Client::connect(addr_b, KEY).unwrap();
        let mut leased = c
            .raw_queue("small")
            .unwrap()
            .get_leased(Duration::from_secs(60))
            .unwrap();
        assert_eq!(leased.deliveries(), [1]);
        leased.take_items().pop().unwrap()
    };
    // JetStream redelivers it, not necessarily ahead of the items never taken (SCALING.md):
    // those are given back until it comes.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut back = qb
            .get_leased_timeout(Duration::from_secs(60), Duration::from_secs(1))
            .expect("the lease of a closed connection comes back at once");
        let d = back.deliveries()[0];
        if back.take_items().pop().unwrap() == held {
            assert_eq!(d, 2, "the given-back item counts its second delivery");
            back.ack().unwrap();
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the given-back item did not come back"
        );
        back.nack().unwrap();
    }

    // A lease held through a gateway that is killed comes back after ack_wait.
    let mut lost = qa.get_leased(Duration::from_secs(60)).unwrap();
    let again = lost.deliveries()[0] + 1;
    let lost_item = lost.take_items().pop().unwrap();
    a.kill();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && !seen.iter().any(|(i, d)| *i == lost_item && *d == again) {
        if let Ok(mut leased) =
            qb.get_leased_timeout(Duration::from_secs(60), Duration::from_secs(1))
        {
            let d = leased.deliveries()[0];
            seen.push((leased.take_items().pop().unwrap(), d));
            leased.ack().unwrap();
        }
    }
    assert!(
        seen.iter().any(|(i, d)| *i == lost_item && *d == again),
        "the item leased through the killed gateway came back: {seen:?}"
    );
    // Nothing else is left, and room is back.
    assert_eq!(seen.len(), 2, "{seen:?}");
    qb.put(b"after").unwrap();
}

/// One request to the JetStream API over a plain NATS connection: the answer's payload.
fn jetstream_api(port: u16, subject: &str, body: &str) -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut out = TcpStream::connect(("127.0.0.1", port)).unwrap();
    out.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut input = BufReader::new(out.try_clone().unwrap());
    let mut line = String::new();
    input.read_line(&mut line).unwrap();
    assert!(line.starts_with("INFO"), "{line}");
    write!(
        out,
        concat!(
            "CONNECT {{\"verbose\":false}}\r\n",
            "SUB _INBOX.test 1\r\n",
            "PUB {} _INBOX.test {}\r\n{}\r\n"
        ),
        subject,
        body.len(),
        body
    )
    .unwrap();
    loop {
        line.clear();
        input.read_line(&mut line).unwrap();
        if line.starts_with("PING") {
            out.write_all(b"PONG\r\n").unwrap();
        }
        if let Some(head) = line.strip_prefix("MSG ") {
            let len: usize = head.trim_end().rsplit(' ').next().unwrap().parse().unwrap();
            let mut payload = vec![0; len + 2];
            input.read_exact(&mut payload).unwrap();
            payload.truncate(len);
            return String::from_utf8(payload).unwrap();
        }
    }
}

/// A consumer's ack and its next get reach the gateway together (`ack_nowait` leaves with the
/// next request), and the gateway sends them to JetStream as one "ack next" (`+NXT`); an ack
/// with no get after it in the turn is sent on its own. Either way every item is removed:
/// after the consumer's `ack_wait` nothing comes back, and the stream is empty.
#[test]
fn acks_riding_on_the_next_pull_remove_every_item() {
    let nats = SingleNats::start("acknext");
    let (backend, port) = (&nats.backend, nats.port);
    let (_g, addr) = gateway(backend, "acknext:1000:raw", &["--backend-ack-wait", "2"]);
    let q = Client::connect(addr, KEY)
        .unwrap()
        .raw_queue("acknext")
        .unwrap();
    let items: Vec<Vec<u8>> = (0..300).map(|i| format!("item {i}").into_bytes()).collect();
    let refs: Vec<&[u8]> = items.iter().map(Vec::as_slice).collect();
    q.put_many(&refs).unwrap();

    // Leased gets acked without waiting, and now and then a plain get (acked by the gateway
    // once its reply is queued) or an ack waited for (alone in its turn).
    let mut got = Vec::new();
    for i in 0..items.len() {
        if i % 7 == 3 {
            got.push(q.get().unwrap());
            continue;
        }
        let mut leased = q.get_leased(Duration::from_secs(60)).unwrap();
        assert_eq!(leased.deliveries(), [1], "item {i} was delivered before");
        got.push(leased.take_items().pop().unwrap());
        if i % 11 == 5 {
            leased.ack().unwrap();
        } else {
            leased.ack_nowait().unwrap();
        }
    }
    assert_eq!(got, items, "every item once, in order");

    // Past ack_wait, an unacknowledged item would be back.
    thread::sleep(Duration::from_secs(3));
    let rest = q.get_timeout(Duration::from_millis(500));
    assert!(rest.is_err(), "nothing comes back: {rest:?}");
    let info = jetstream_api(port, "$JS.API.STREAM.INFO.DEPOT_acknext", "");
    assert!(
        info.contains("\"messages\":0,"),
        "the stream is empty: {info}"
    );
}

/// Leases one item of `q` within `wait`: the item and its delivery count.
fn lease_one(q: &depot_std::RawQueue, wait: Duration) -> (String, u8) {
    let mut leased = q
        .get_leased_timeout(Duration::from_secs(60), wait)
        .expect("an item");
    let deliveries = leased.deliveries()[0];
    let item = leased.take_items().pop().expect("one item");
    leased.ack().unwrap();
    (String::from_utf8(item).unwrap(), deliveries)
}

/// A gateway that answers a get soon after the last while more items wait asks JetStream for
/// the next one at once (`--backend-read-ahead`): its next get takes it, in order; if none does
/// in time, or the gateway stops, it goes back to the queue (a delivery more) for any gateway's
/// consumers. A consumer slow between gets is not read ahead for.
#[test]
fn a_read_ahead_item_goes_to_the_next_get_or_back_to_the_queue() {
    let nats = SingleNats::start("readahead");
    let backend = &nats.backend;
    let queue = "ahead:100:raw";
    let (a, addr_a) = gateway(backend, queue, &["--backend-read-ahead", "60000"]);
    let (_b, addr_b) = gateway(backend, queue, &["--backend-read-ahead", "0"]);
    let (_c, addr_c) = gateway(backend, queue, &["--backend-read-ahead", "300"]);
    let open = |addr| {
        Client::connect(addr, KEY)
            .unwrap()
            .raw_queue("ahead")
            .unwrap()
    };
    let (qa, qb, qc) = (open(addr_a), open(addr_b), open(addr_c));
    let items = |range: std::ops::Range<u32>| -> Vec<Vec<u8>> {
        range.map(|i| i.to_string().into_bytes()).collect()
    };
    let put = |range| {
        let items = items(range);
        let refs: Vec<&[u8]> = items.iter().map(Vec::as_slice).collect();
        qb.put_many(&refs).unwrap();
    };
    let short = Duration::from_millis(500);

    // Gateway A's consumer takes 0, 1, 2 in order, each delivered once (1 and 2 read ahead);
    // A now holds 3 for its next get.
    put(0..5);
    for i in 0..3 {
        assert_eq!(lease_one(&qa, short), (i.to_string(), 1));
    }
    // Another gateway's consumer gets 4 (3 is with A), then nothing while A holds 3.
    assert_eq!(lease_one(&qb, short), ("4".into(), 1));
    let held = qb.get_leased_timeout(Duration::from_secs(60), short);
    assert!(held.is_err(), "item 3 stays with gateway A: {held:?}");
    // A stops: the item it held goes back at once (not after its hold or ack_wait).
    let stopped = Instant::now();
    a.stop();
    assert_eq!(lease_one(&qb, Duration::from_secs(5)), ("3".into(), 2));
    println!(
        "item 3 back {:?} after gateway A stopped",
        stopped.elapsed()
    );

    // Gateway C holds a read-ahead item 300 ms; nobody asks it, so it goes back.
    put(5..8);
    assert_eq!(lease_one(&qc, short), ("5".into(), 1));
    assert_eq!(lease_one(&qc, short), ("6".into(), 1));
    let asked = Instant::now();
    assert_eq!(lease_one(&qb, Duration::from_secs(10)), ("7".into(), 2));
    let waited = asked.elapsed();
    assert!(
        waited < Duration::from_secs(5),
        "item 7 came back after {waited:?}, not within a few ticks of its 300-ms hold"
    );

    // A consumer that takes its time between gets (200 ms, over a quarter of C's hold) is not
    // read ahead for: the item after its last stays in the queue, delivered once.
    put(8..11);
    assert_eq!(lease_one(&qc, short), ("8".into(), 1));
    thread::sleep(Duration::from_millis(200));
    assert_eq!(lease_one(&qc, short), ("9".into(), 1));
    assert_eq!(lease_one(&qb, short), ("10".into(), 1));
    let rest = qb.get_timeout(short);
    assert!(rest.is_err(), "nothing else is queued: {rest:?}");
}

#[test]
fn a_batch_put_counts_the_leading_items_stored() {
    let nats = SingleNats::start("batch");
    let (backend, port) = (&nats.backend, nats.port);
    let (_g, addr) = gateway(backend, "batch:50:raw", &[]);
    let q = Client::connect(addr, KEY)
        .unwrap()
        .raw_queue("batch")
        .unwrap();
    let no_more = |q: &depot_std::RawQueue| {
        let rest = q.get_timeout(Duration::from_millis(500));
        assert!(rest.is_err(), "nothing else is queued: {rest:?}");
    };

    // The stream is full after 50 (it discards new messages): the gateway publishes all 120
    // at once, and the first 50, in order, are what went in.
    let items: Vec<Vec<u8>> = (0..120).map(|i| format!("item {i}").into_bytes()).collect();
    let refs: Vec<&[u8]> = items.iter().map(Vec::as_slice).collect();
    match q.put_many(&refs) {
        Err(Error::Request {
            code: ErrorCode::Full,
            ..
        }) => {}
        other => panic!("120 items into a queue of capacity 50: {other:?}"),
    }
    assert_eq!(q.get_many(50).unwrap(), items[..50]);
    no_more(&q);

    // A failure in the middle: the stream's limit on a message's size made smaller than the
    // queue's, so JetStream refuses the third item and stores the fourth and fifth anyway.
    // The count stops at the third (the client reports that item's size), and the later
    // items are in the queue: a client that put them again would store them twice.
    let config = r#"{"name":"DEPOT_batch","subjects":["depot.batch"],"retention":"workqueue",
        "storage":"file","max_msgs":50,"max_msg_size":16,"discard":"new","num_replicas":1}"#;
    let answer = jetstream_api(port, "$JS.API.STREAM.UPDATE.DEPOT_batch", config);
    assert!(!answer.contains("\"error\""), "{answer}");
    let items = [
        b"a".to_vec(),
        b"bb".to_vec(),
        vec![b'x'; 40],
        b"dddd".to_vec(),
        b"eeeee".to_vec(),
    ];
    let refs: Vec<&[u8]> = items.iter().map(Vec::as_slice).collect();
    match q.put_many(&refs) {
        Err(Error::TooLarge { size, .. }) => assert_eq!(size, 40, "the item the count stops at"),
        other => panic!("a batch with an item beyond the stream's limit: {other:?}"),
    }
    let stored: Vec<Vec<u8>> = [0, 1, 3, 4].map(|i| items[i].clone()).into();
    assert_eq!(q.get_many(4).unwrap(), stored);
    no_more(&q);
}

#[test]
fn a_cluster_loses_no_acknowledged_item_when_a_node_and_a_gateway_die() {
    let dir = temp_dir("cluster");
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let cluster: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let routes = cluster
        .iter()
        .map(|p| format!("nats://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes: Vec<Proc> = (0..3)
        .map(|n| {
            let store = dir.join(format!("n{n}"));
            let extra = [
                "--server_name".to_string(),
                format!("n{n}"),
                "--cluster_name".into(),
                "depot".into(),
                "--cluster".into(),
                format!("nats://127.0.0.1:{}", cluster[n]),
                "--routes".into(),
                routes.clone(),
            ];
            nats_server(ports[n], &store, &extra)
        })
        .collect();
    let backend = format!(
        "nats://{}",
        ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let opts = ["--backend-replicas", "3", "--backend-ack-wait", "3"];
    let (mut a, addr_a) = gateway(&backend, "jobs:1000000:raw", &opts);
    let metrics_b = format!("127.0.0.1:{}", free_port());
    let opts_b = [&opts[..], &["--metrics", &metrics_b]].concat();
    let (_b, addr_b) = gateway(&backend, "jobs:1000000:raw", &opts_b);
    let before = scrape(&metrics_b);
    assert_eq!(
        metric(&before, "depot_backend_connected{"),
        Some(1),
        "{before}"
    );
    assert!(
        before.contains(&format!("server=\"127.0.0.1:{}\"", ports[0])),
        "{before}"
    );
    assert_eq!(metric(&before, "depot_backend_reconnects_total"), Some(0));
    let addrs = vec![addr_a, addr_b];

    const PER_PRODUCER: u64 = 4_000;
    let never = Arc::new(AtomicBool::new(false));
    let producers: Vec<_> = (0..4)
        .map(|p| {
            let (stop, addrs) = (never.clone(), addrs.clone());
            thread::spawn(move || producer(p, PER_PRODUCER, addrs, stop))
        })
        .collect();
    let consuming = Arc::new(AtomicBool::new(false));
    let taken = Arc::new(AtomicUsize::new(0));
    let consumers: Vec<_> = (0..4)
        .map(|c| {
            let (stop, taken, addrs) = (consuming.clone(), taken.clone(), addrs.clone());
            thread::spawn(move || consumer(c, addrs, stop, taken))
        })
        .collect();
    // Mid-run: the first NATS node (every gateway's first server) dies, then gateway A.
    while taken.load(Ordering::SeqCst) < 2_000 {
        thread::sleep(Duration::from_millis(20));
    }
    nodes[0].kill();
    let at_node_kill = taken.load(Ordering::SeqCst);
    thread::sleep(Duration::from_secs(2));
    a.kill();
    let at_gateway_kill = taken.load(Ordering::SeqCst);

    let (mut acked, mut tried) = (HashSet::new(), HashSet::new());
    for p in producers {
        let (ok, all) = p.join().unwrap();
        acked.extend(ok);
        tried.extend(all);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while taken.load(Ordering::SeqCst) < acked.len() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    // Leases lost with gateway A come back after ack_wait.
    thread::sleep(Duration::from_secs(5));
    consuming.store(true, Ordering::SeqCst);
    let mut seen: HashMap<String, u32> = HashMap::new();
    for c in consumers {
        for (item, _) in c.join().unwrap() {
            *seen.entry(item).or_default() += 1;
        }
    }
    let redelivered = seen.values().filter(|n| **n > 1).count();
    println!(
        "cluster: {} of {} puts acknowledged, {} items seen ({} more than once); node killed \
         after {at_node_kill} items, gateway after {at_gateway_kill}",
        acked.len(),
        tried.len(),
        seen.len(),
        redelivered
    );
    let missing: Vec<_> = acked.iter().filter(|i| !seen.contains_key(*i)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged items lost, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    // Gateway B moved to another node and says so.
    let after = scrape(&metrics_b);
    assert_eq!(
        metric(&after, "depot_backend_connected{"),
        Some(1),
        "{after}"
    );
    assert!(
        !after.contains(&format!("server=\"127.0.0.1:{}\"", ports[0])),
        "{after}"
    );
    assert_eq!(
        metric(&after, "depot_backend_reconnects_total"),
        Some(1),
        "{after}"
    );
    let foreign: Vec<_> = seen.keys().filter(|i| !tried.contains(*i)).collect();
    assert!(foreign.is_empty(), "items nobody put: {foreign:?}");
    assert!(acked.len() as u64 > PER_PRODUCER, "most puts went through");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn gateways_log_in_to_nats_with_a_password_or_a_token() {
    let dir = temp_dir("creds");
    for (server_args, creds) in [
        (
            vec![
                "--user".to_string(),
                "gw".into(),
                "--pass".into(),
                "s3cret".into(),
            ],
            "# gateway login\nuser: gw\npassword: s3cret\n",
        ),
        (vec!["--auth".to_string(), "t0ken".into()], "token: t0ken\n"),
    ] {
        let port = free_port();
        let _nats = nats_server(port, &dir.join(format!("{port}")), &server_args);
        let backend = format!("nats://127.0.0.1:{port}");
        let file = dir.join("creds");
        std::fs::write(&file, creds).unwrap();
        let (_g, addr) = gateway(
            &backend,
            "jobs",
            &["--backend-creds", file.to_str().unwrap()],
        );
        let q = Client::connect(addr, KEY)
            .unwrap()
            .raw_queue("jobs")
            .unwrap();
        q.put(b"7").unwrap();
        assert_eq!(q.get().unwrap(), b"7");

        // Without them the gateway does not start, and says why.
        let out = Command::new(env!("CARGO_BIN_EXE_depot"))
            .args(["serve", "--listen", "127.0.0.1:0", "--queue", "jobs"])
            .args(["--backend", &backend])
            .env("DEPOT_AUTHKEY", KEY)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("Authorization Violation"), "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
