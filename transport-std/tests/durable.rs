//! Durable queues over real sockets: a manager with a data directory serves again, after a
//! restart, what was queued; a torn end of its log is cut and a damaged middle refused; the log
//! stays bounded by compaction. (A `kill -9` crash loop of the `depot` process is in the CLI's
//! tests.)

use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use depot_std::{Client, Error, Fsync, Manager, ManagerBuilder, QueueOptions};

const KEY: &[u8] = b"durable";

fn data_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("depot-durable-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

fn builder(dir: &Path, fsync: Fsync) -> ManagerBuilder {
    Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(KEY)
        .raw_queue("jobs", 20_000)
        .data_dir(dir)
        .fsync(fsync)
}

/// The one log segment of `dir` (two exist for a moment while a compaction switches).
fn segment(dir: &Path) -> PathBuf {
    for _ in 0..100 {
        let mut logs: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        if logs.len() == 1 {
            return logs.pop().unwrap();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("not one segment in {}", dir.display());
}

#[test]
fn a_restart_serves_ten_thousand_queued_items_in_order() {
    let dir = data_dir("restart");
    for policy in [Fsync::Never, Fsync::Always] {
        let _ = fs::remove_dir_all(&dir);
        let m = builder(&dir, policy).start().unwrap();
        let c = Client::connect(m.address(), KEY).unwrap();
        let q = c.raw_queue("jobs").unwrap();
        // Single puts and batches, and some got, so the log holds removals too.
        // (Few single puts: under `always` each waits for a sync of its own.)
        for i in 0..300u32 {
            q.put(&i.to_le_bytes()).unwrap();
        }
        let rest: Vec<[u8; 4]> = (300..10_500u32).map(u32::to_le_bytes).collect();
        let rest: Vec<&[u8]> = rest.iter().map(|b| &b[..]).collect();
        q.put_many(&rest).unwrap();
        for i in 0..500u32 {
            assert_eq!(q.get().unwrap(), i.to_le_bytes());
        }
        drop(c);
        m.shutdown().unwrap();

        let m = builder(&dir, policy).start().unwrap();
        let c = Client::connect(m.address(), KEY).unwrap();
        let q = c.raw_queue("jobs").unwrap();
        assert_eq!(q.qsize().unwrap(), 10_000, "{policy}");
        let got = q.get_many(10_000).unwrap();
        let want: Vec<Vec<u8>> = (500..10_500u32).map(|i| i.to_le_bytes().to_vec()).collect();
        assert!(got == want, "{policy}: items lost or out of order");
        drop(c);
        m.shutdown().unwrap();
    }
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_torn_record_at_the_end_is_cut_and_damage_before_the_end_is_refused() {
    let dir = data_dir("torn");
    let m = builder(&dir, Fsync::Always).start().unwrap();
    let c = Client::connect(m.address(), KEY).unwrap();
    let q = c.raw_queue("jobs").unwrap();
    for i in 0..100u32 {
        q.put(&i.to_le_bytes()).unwrap();
    }
    drop(c);
    m.shutdown().unwrap();
    let log = segment(&dir);
    let whole = fs::read(&log).unwrap();
    // The last record (an append of a 4-byte item) is 8 + 1 + 2 + 4 bytes: cut inside it.
    let last = whole.len() - 15;
    for cut in last..whole.len() {
        fs::write(&log, &whole[..cut]).unwrap();
        let m = builder(&dir, Fsync::Always).start().unwrap();
        let c = Client::connect(m.address(), KEY).unwrap();
        let q = c.raw_queue("jobs").unwrap();
        assert_eq!(q.qsize().unwrap(), 99, "cut at {cut}");
        assert_eq!(q.get_many(99).unwrap()[98], 98u32.to_le_bytes());
        drop(c);
        m.shutdown().unwrap();
        // The restart wrote a fresh segment without the torn record; put it back for the next.
        let log_now = segment(&dir);
        fs::remove_file(&log_now).unwrap();
    }
    // A flipped byte with whole records after it: a clear error, and the log left as it was.
    let mut damaged = whole.clone();
    damaged[whole.len() / 2] ^= 0x55;
    fs::write(&log, &damaged).unwrap();
    let e = builder(&dir, Fsync::Always).start().unwrap_err();
    let text = e.to_string();
    assert!(text.contains("is corrupt at byte"), "{text}");
    assert_eq!(fs::read(&log).unwrap(), damaged);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn compaction_keeps_the_log_bounded_and_the_items() {
    let dir = data_dir("compact");
    let m = builder(&dir, Fsync::Never)
        .compact_after(16 << 10)
        .start()
        .unwrap();
    let c = Client::connect(m.address(), KEY).unwrap();
    let q = c.raw_queue("jobs").unwrap();
    let item = [7u8; 100];
    for round in 0..200 {
        q.put_many(&[&item[..]; 10]).unwrap();
        assert_eq!(q.get_many(9).unwrap().len(), 9, "round {round}");
    }
    // Bounded by the threshold or twice the 200 queued items, whichever is more, once the
    // compaction running on its own thread is done: what arrives meanwhile goes on the old
    // segment (and is carried over), so a fast producer on a loaded machine can see it
    // larger for a moment. A put and a get now and then keep the log moving meanwhile.
    let settled = Instant::now() + Duration::from_secs(20);
    let d = loop {
        let d = m.metrics().unwrap().durability.expect("a durable manager");
        if d.log_bytes < 40 << 10 || Instant::now() > settled {
            break d;
        }
        thread::sleep(Duration::from_millis(20));
        q.put(&item).unwrap();
        assert_eq!(q.get().unwrap(), item);
    };
    assert!(d.compactions > 1, "{d:?}");
    assert!(d.log_bytes < 40 << 10, "{d:?}");
    assert_eq!(d.data_dir, dir);
    assert_eq!(d.fsync, Fsync::Never);
    drop(c);
    m.shutdown().unwrap();
    let m = builder(&dir, Fsync::Never).start().unwrap();
    let c = Client::connect(m.address(), KEY).unwrap();
    assert_eq!(c.raw_queue("jobs").unwrap().qsize().unwrap(), 200);
    drop(c);
    m.shutdown().unwrap();
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn metrics_show_the_log_and_memory_only_managers_show_none() {
    let dir = data_dir("metrics");
    let m = builder(&dir, Fsync::Interval(Duration::from_millis(20)))
        .start()
        .unwrap();
    let c = Client::connect(m.address(), KEY).unwrap();
    c.raw_queue("jobs").unwrap().put(b"x").unwrap();
    let before = m.metrics().unwrap().durability.unwrap();
    assert!(before.log_bytes > 12, "{before:?}");
    // The interval policy syncs what was written within its interval, with no new traffic.
    std::thread::sleep(Duration::from_millis(200));
    let after = m.metrics().unwrap().durability.unwrap();
    assert_eq!(after.unsynced_bytes, 0, "{after:?}");
    assert!(after.last_fsync.is_some());
    let text = m.metrics().unwrap().prometheus();
    assert!(text.contains("depot_log_bytes "), "{text}");
    drop(c);
    m.shutdown().unwrap();

    let plain = Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(KEY)
        .raw_queue("jobs", 4)
        .start()
        .unwrap();
    assert_eq!(plain.metrics().unwrap().durability, None);
    plain.shutdown().unwrap();
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn created_queues_come_back_and_a_directory_serves_one_manager() {
    let dir = data_dir("create");
    let start = || {
        builder(&dir, Fsync::Never)
            .allow_create(2, QueueOptions::new(8).raw())
            .start()
    };
    let m = start().unwrap();
    let c = Client::connect(m.address(), KEY).unwrap();
    c.create_queue_with("made", 8, 64, depot_std::QueueMode::Raw)
        .unwrap();
    c.raw_queue("made").unwrap().put(b"kept").unwrap();
    // A second manager on the same directory is refused while the first runs.
    let e = start().unwrap_err();
    assert!(e.to_string().contains("in use by another manager"), "{e}");
    drop(c);
    m.shutdown().unwrap();

    let m = start().unwrap();
    let c = Client::connect(m.address(), KEY).unwrap();
    assert_eq!(c.raw_queue("made").unwrap().get().unwrap(), b"kept");
    drop(c);
    m.shutdown().unwrap();

    // Without spare slots, a queue the log holds cannot be served: the start says which.
    let e = builder(&dir, Fsync::Never).start().unwrap_err();
    assert!(matches!(e, Error::Config(_)), "{e:?}");
    assert!(e.to_string().contains("'made'"), "{e}");
    // Declared smaller than what it holds: refused, with the sizes it needs.
    let m = start().unwrap();
    let c = Client::connect(m.address(), KEY).unwrap();
    let q = c.raw_queue("jobs").unwrap();
    for _ in 0..5 {
        q.put(b"j").unwrap();
    }
    drop(c);
    m.shutdown().unwrap();
    let e = Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(KEY)
        .raw_queue("jobs", 3)
        .allow_create(2, QueueOptions::new(8).raw())
        .data_dir(&dir)
        .start()
        .unwrap_err();
    assert!(e.to_string().contains("cannot take the 5 items"), "{e}");
    fs::remove_dir_all(&dir).unwrap();
}

const MANAGER_DIR_ENV: &str = "DEPOT_DURABLE_MANAGER_DIR";

/// Not a test of its own: the manager process `leases_held_at_a_crash_are_redelivered` starts
/// (this test binary again) and kills with SIGKILL.
#[test]
#[ignore = "run as a child process by leases_held_at_a_crash_are_redelivered"]
fn durable_manager_process() {
    let Ok(dir) = std::env::var(MANAGER_DIR_ENV) else {
        return;
    };
    let m = builder(Path::new(&dir), Fsync::Never)
        .queue("tasks", 64)
        .compact_after(8 << 10)
        .start()
        .unwrap();
    println!("listening {}", m.address());
    std::thread::sleep(Duration::from_secs(600));
}

fn manager_process(dir: &Path) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "durable_manager_process",
            "--ignored",
            "--nocapture",
        ])
        .env(MANAGER_DIR_ENV, dir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let addr = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .find_map(|l| l.ok()?.strip_prefix("listening ").map(str::to_owned))
        .expect("the manager reports its address");
    (child, addr)
}

/// A manager process killed with SIGKILL while a consumer holds leases: after a restart on the
/// same data directory the unacknowledged items are delivered again, first and in the order
/// they were taken, their delivery count one higher; the acknowledged one never comes back.
/// The log is compacted while the leases are held, so the snapshot must keep them. The old
/// leases died with their connection: acking one fails.
#[test]
fn leases_held_at_a_crash_are_redelivered() {
    let dir = data_dir("leases");
    let (mut child, addr) = manager_process(&dir);
    let c = Client::connect(addr.as_str(), KEY).unwrap();
    let tasks = c.queue::<u32>("tasks").unwrap();
    tasks.put_many(&[10, 11, 12, 13, 14]).unwrap();
    let lease = Duration::from_secs(600);
    let acked = tasks.get_leased(lease).unwrap();
    assert_eq!((*acked, acked.delivery()), (10, 1));
    acked.ack().unwrap();
    // 11 nacked once, so it is on its second delivery when the crash comes.
    let first = tasks.get_leased(lease).unwrap();
    assert_eq!(*first, 11);
    first.nack().unwrap();
    let held: Vec<_> = (0..3).map(|_| tasks.get_leased(lease).unwrap()).collect();
    let seen: Vec<_> = held.iter().map(|l| (**l, l.delivery())).collect();
    assert_eq!(seen, [(11, 2), (12, 1), (13, 1)]);
    // Traffic on another queue until the log is rewritten from the state (with the leases).
    let before = segment(&dir);
    let jobs = c.raw_queue("jobs").unwrap();
    for _ in 0..100 {
        jobs.put_many(&[&[1u8; 200][..]; 5]).unwrap();
        assert_eq!(jobs.get_many(5).unwrap().len(), 5);
    }
    assert_ne!(segment(&dir), before, "the log was compacted");
    child.kill().unwrap(); // SIGKILL: no clean shutdown gives the leases back
    child.wait().unwrap();

    let (mut child, addr) = manager_process(&dir);
    for old in held {
        assert!(old.ack().is_err(), "an old lease cannot be acked");
    }
    drop(c);
    let c = Client::connect(addr.as_str(), KEY).unwrap();
    let tasks = c.queue::<u32>("tasks").unwrap();
    assert_eq!(tasks.qsize().unwrap(), 4);
    let mut again = Vec::new();
    for _ in 0..4 {
        let got = tasks
            .get_leased_timeout(lease, Duration::from_secs(5))
            .unwrap();
        again.push((*got, got.delivery()));
        got.ack().unwrap();
    }
    assert_eq!(again, [(11, 3), (12, 2), (13, 2), (14, 1)]);
    // Acked after the restart: a third run finds nothing left.
    child.kill().unwrap();
    child.wait().unwrap();
    let (mut child, addr) = manager_process(&dir);
    let c = Client::connect(addr.as_str(), KEY).unwrap();
    assert_eq!(c.queue::<u32>("tasks").unwrap().qsize().unwrap(), 0);
    child.kill().unwrap();
    child.wait().unwrap();
    fs::remove_dir_all(&dir).unwrap();
}

/// With every commit synced, one sync serves the puts of several connections at once (a commit
/// waits a moment for the connections the last one answered): each producer's puts are all
/// acknowledged, in its order, and all of them are there after a restart.
#[test]
fn synced_commits_shared_by_several_producers_keep_every_put() {
    let dir = data_dir("shared-sync");
    let m = builder(&dir, Fsync::Always).start().unwrap();
    let addr = m.address();
    let producers: Vec<_> = (0..4u32)
        .map(|p| {
            thread::spawn(move || {
                let q = Client::connect(addr, KEY)
                    .unwrap()
                    .raw_queue("jobs")
                    .unwrap();
                for i in 0..200u32 {
                    q.put(&[p.to_le_bytes(), i.to_le_bytes()].concat()).unwrap();
                }
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    let d = m.metrics().unwrap().durability.expect("a durable manager");
    assert!(d.fsyncs < 800, "one sync per put: {d:?}");
    m.shutdown().unwrap();
    let m = builder(&dir, Fsync::Always).start().unwrap();
    let q = Client::connect(m.address(), KEY)
        .unwrap()
        .raw_queue("jobs")
        .unwrap();
    assert_eq!(q.qsize().unwrap(), 800);
    let items = q.get_many(800).unwrap();
    let mut next = [0u32; 4];
    for item in items {
        let p = u32::from_le_bytes(item[..4].try_into().unwrap()) as usize;
        assert_eq!(u32::from_le_bytes(item[4..].try_into().unwrap()), next[p]);
        next[p] += 1;
    }
    m.shutdown().unwrap();
    fs::remove_dir_all(&dir).unwrap();
}
