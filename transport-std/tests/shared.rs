//! One connection shared by blocking producers and the consumer that frees their room: with
//! any mix of blocked calls per connection, nothing waits behind a blocked put.

use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use depot_std::{Client, Manager};

const KEY: &str = "producer";
const RUNS: usize = 200;
const PER_PRODUCER: u32 = 20;
/// A run takes milliseconds; this long means a stall.
const STALL: Duration = Duration::from_secs(20);

/// Two blocking producers and a blocking consumer on one `Client`, a capacity-1 queue,
/// 200 runs in a row: every run ends, and every item arrives exactly once.
#[test]
fn one_client_for_blocking_producers_and_their_consumer() {
    let m = Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(KEY)
        .queue("one", 1)
        .start()
        .unwrap();
    let addr = m.address();
    for run in 0..RUNS {
        let (done, finished) = mpsc::channel();
        thread::spawn(move || {
            let client = Arc::new(Client::connect(addr, KEY).unwrap());
            let producers: Vec<_> = (0..2u32)
                .map(|p| {
                    let client = client.clone();
                    thread::spawn(move || {
                        let q = client.queue::<u32>("one").unwrap();
                        for i in 0..PER_PRODUCER {
                            q.put(&(p * 1000 + i)).unwrap();
                        }
                    })
                })
                .collect();
            let q = client.queue::<u32>("one").unwrap();
            let mut got: Vec<u32> = (0..2 * PER_PRODUCER).map(|_| q.get().unwrap()).collect();
            for p in producers {
                p.join().unwrap();
            }
            got.sort_unstable();
            let _ = done.send(got);
        });
        let got = finished
            .recv_timeout(STALL)
            .unwrap_or_else(|_| panic!("run {run} stalled"));
        let mut want: Vec<u32> = (0..2u32)
            .flat_map(|p| (0..PER_PRODUCER).map(move |i| p * 1000 + i))
            .collect();
        want.sort_unstable();
        assert_eq!(got, want, "run {run}");
    }
    m.shutdown().unwrap();
}

/// A consumer that gives up waiting (its `get_timeout` ends) never costs an item: whatever
/// the manager had already sent is given back and read by the next `get`.
#[test]
fn items_racing_a_timed_out_get_are_not_lost() {
    let m = Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(KEY)
        .queue("race", 1000)
        .start()
        .unwrap();
    let addr = m.address();
    let consumer = Client::connect(addr, KEY).unwrap();
    let producer = Client::connect(addr, KEY).unwrap();
    let rx = consumer.queue::<u32>("race").unwrap();
    let tx = producer.queue::<u32>("race").unwrap();
    let rounds = 300u32;
    let mut got = Vec::new();
    for i in 0..rounds {
        // Put right around the moment the get gives up.
        thread::scope(|s| {
            s.spawn(|| {
                thread::sleep(Duration::from_micros(900 + u64::from(i % 7) * 50));
                tx.put(&i).unwrap();
            });
            if let Ok(v) = rx.get_timeout(Duration::from_millis(1)) {
                got.push(v);
            }
        });
    }
    while let Ok(v) = rx.get_nowait() {
        got.push(v);
    }
    got.sort_unstable();
    assert_eq!(got, (0..rounds).collect::<Vec<_>>());
    m.shutdown().unwrap();
}

/// Several threads calling `get_many` on one client at once: the batches that find no room
/// to park are sent again as others complete, and every item arrives exactly once.
#[test]
fn threads_share_one_client_for_batches() {
    let m = Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(KEY)
        .queue("batches", 100_000)
        .start()
        .unwrap();
    let client = Client::connect(m.address(), KEY).unwrap();
    let per_thread = 5_000u32;
    let getters: Vec<_> = (0..4)
        .map(|_| {
            let q = client.queue::<u32>("batches").unwrap();
            thread::spawn(move || {
                let mut got = Vec::new();
                while got.len() < per_thread as usize {
                    let want = per_thread as usize - got.len();
                    for item in q.get_many(want).unwrap() {
                        got.push(item.unwrap());
                    }
                }
                got
            })
        })
        .collect();
    let q = client.queue::<u32>("batches").unwrap();
    let all: Vec<u32> = (0..4 * per_thread).collect();
    for chunk in all.chunks(1000) {
        q.put_many(chunk).unwrap();
    }
    let mut got: Vec<u32> = getters
        .into_iter()
        .flat_map(|g| g.join().unwrap())
        .collect();
    got.sort_unstable();
    assert_eq!(got, all);
    m.shutdown().unwrap();
}
