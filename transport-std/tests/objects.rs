//! Events, locks, semaphores, values, barriers and dicts over real sockets on 127.0.0.1,
//! between clients in threads and in another process.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use depot_std::{Client, Error, ErrorCode, Manager, ManagerHandle, ObjectKind};

const KEY: &[u8] = b"objects";
/// Where the helper process finds the manager.
const ADDR_ENV: &str = "DEPOT_TEST_LOCK_ADDR";

fn start() -> ManagerHandle {
    Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(KEY)
        .event("ready")
        .lock("lk")
        .rlock("rlk")
        .semaphore("sem", 2)
        .bounded_semaphore("bsem", 1)
        .value("counter")
        .barrier("gate", 3)
        .dict("config", 8)
        .max_connections(64)
        .start()
        .expect("manager starts")
}

fn connect(m: &ManagerHandle) -> Client {
    Client::connect(m.address(), KEY).expect("connect")
}

fn code(e: Error) -> Option<ErrorCode> {
    match e {
        Error::Request { code, .. } => Some(code),
        _ => None,
    }
}

/// Not a test of its own: the process `a_killed_lock_holder_releases_its_lock` starts, which
/// takes the lock, says so and waits to be killed.
#[test]
#[ignore = "run as a helper process by a_killed_lock_holder_releases_its_lock"]
fn helper_holds_the_lock() {
    let addr = std::env::var(ADDR_ENV).expect("the manager's address");
    let client = Client::connect(addr.as_str(), KEY).expect("connect");
    client.lock("lk").unwrap().acquire().unwrap();
    println!("held");
    thread::sleep(Duration::from_secs(120));
}

#[test]
fn a_killed_lock_holder_releases_its_lock() {
    let m = start();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_holds_the_lock",
            "--ignored",
            "--nocapture",
        ])
        .env(ADDR_ENV, m.address().to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("helper process");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while line.trim() != "held" {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "helper ended early");
    }
    let c = connect(&m);
    let lock = c.lock("lk").unwrap();
    assert!(!lock.try_acquire().unwrap(), "the helper holds it");
    assert!(!lock.acquire_timeout(Duration::from_millis(100)).unwrap());
    let waiter = {
        let lock = lock.clone();
        thread::spawn(move || lock.acquire_timeout(Duration::from_secs(20)))
    };
    thread::sleep(Duration::from_millis(100));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        waiter.join().unwrap().unwrap(),
        "got the lock once the holder died"
    );
    assert!(!lock.is_free().unwrap());
    lock.release().unwrap();
    assert!(lock.is_free().unwrap());
}

#[test]
fn a_lock_keeps_a_read_modify_write_whole_across_clients() {
    let m = start();
    const ROUNDS: u64 = 50;
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let c = connect(&m);
            thread::spawn(move || {
                let lock = c.lock("lk").unwrap();
                let counter = c.value::<Option<u64>>("counter").unwrap();
                for _ in 0..ROUNDS {
                    let _held = lock.lock().unwrap();
                    let n = counter.get().unwrap().unwrap_or(0);
                    // Give another client the chance to interleave, were the lock not held.
                    thread::yield_now();
                    counter.set(&Some(n + 1)).unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let c = connect(&m);
    assert_eq!(
        c.value::<Option<u64>>("counter").unwrap().get().unwrap(),
        Some(3 * ROUNDS)
    );
    // Released by its holder only.
    let lock = c.lock("lk").unwrap();
    assert!(lock.is_free().unwrap());
    let e = lock.release().unwrap_err();
    assert_eq!(code(e), Some(ErrorCode::NotOwner));
}

#[test]
fn an_rlock_is_taken_again_by_its_holder() {
    let m = start();
    let (a, b) = (connect(&m), connect(&m));
    let (la, lb) = (a.lock("rlk").unwrap(), b.lock("rlk").unwrap());
    la.acquire().unwrap();
    assert!(la.try_acquire().unwrap());
    la.release().unwrap();
    assert!(!lb.try_acquire().unwrap());
    la.release().unwrap();
    assert!(lb.try_acquire().unwrap());
}

#[test]
fn an_event_wakes_waiters_in_other_connections() {
    let m = start();
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let e = connect(&m).event("ready").unwrap();
            thread::spawn(move || e.wait_timeout(Duration::from_secs(20)))
        })
        .collect();
    let c = connect(&m);
    let e = c.event("ready").unwrap();
    // Every waiter is blocked on the manager before the flag is set.
    let start = Instant::now();
    while c.status().unwrap().waiters < 3 {
        assert!(start.elapsed() < Duration::from_secs(10));
        thread::sleep(Duration::from_millis(5));
    }
    assert!(!e.is_set().unwrap());
    e.set().unwrap();
    for w in waiters {
        assert!(w.join().unwrap().unwrap());
    }
    assert!(e.is_set().unwrap());
    e.clear().unwrap();
    assert!(!e.wait_timeout(Duration::from_millis(50)).unwrap());
    // An event is not a lock, nor a queue.
    let e = c.lock("ready").unwrap_err();
    assert_eq!(code(e), Some(ErrorCode::WrongKind));
    let e = c.raw_queue("ready").unwrap().get_nowait().unwrap_err();
    assert_eq!(code(e), Some(ErrorCode::WrongKind));
}

#[test]
fn semaphore_permits_come_back_when_their_holder_disconnects() {
    let m = start();
    let a = connect(&m);
    let sa = a.semaphore("sem").unwrap();
    sa.acquire().unwrap();
    sa.acquire().unwrap();
    let b = connect(&m);
    let sb = b.semaphore("sem").unwrap();
    assert_eq!(sb.get_value().unwrap(), 0);
    assert!(!sb.try_acquire().unwrap());
    let waiter = {
        let sb = sb.clone();
        thread::spawn(move || sb.acquire_timeout(Duration::from_secs(20)))
    };
    thread::sleep(Duration::from_millis(50));
    drop(sa);
    drop(a);
    assert!(waiter.join().unwrap().unwrap());
    assert_eq!(sb.get_value().unwrap(), 1);
    // A bounded semaphore refuses a release past its bound.
    let bs = b.semaphore("bsem").unwrap();
    assert_eq!(code(bs.release().unwrap_err()), Some(ErrorCode::Overflow));
    bs.acquire().unwrap();
    bs.release().unwrap();
    assert_eq!(bs.get_value().unwrap(), 1);
}

#[test]
fn compare_and_set_counts_every_increment_once() {
    let m = start();
    const ROUNDS: u64 = 40;
    let counter = connect(&m).value::<u64>("counter").unwrap();
    counter.set(&0).unwrap();
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let v = connect(&m).value::<u64>("counter").unwrap();
            thread::spawn(move || {
                let mut done = 0;
                while done < ROUNDS {
                    let n = v.get().unwrap();
                    if v.compare_and_set(&n, &(n + 1)).unwrap() {
                        done += 1;
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(counter.get().unwrap(), 3 * ROUNDS);
    assert!(!counter.compare_and_set(&0, &1).unwrap());
}

#[test]
fn a_barrier_releases_its_parties_together_and_breaks_when_one_gives_up() {
    let m = start();
    let parties: Vec<_> = (0..3)
        .map(|_| {
            let b = connect(&m).barrier("gate").unwrap();
            thread::spawn(move || b.wait_timeout(Duration::from_secs(20)))
        })
        .collect();
    let mut indexes: Vec<u32> = parties
        .into_iter()
        .map(|p| p.join().unwrap().unwrap())
        .collect();
    indexes.sort();
    assert_eq!(indexes, vec![0, 1, 2]);
    // One party of the next round gives up waiting: the one left waiting learns it is broken.
    let c = connect(&m);
    let b = c.barrier("gate").unwrap();
    assert_eq!(b.parties(), 3);
    assert!(!b.is_broken().unwrap());
    let waiting = {
        let b = b.clone();
        thread::spawn(move || b.wait_timeout(Duration::from_secs(20)))
    };
    let start = Instant::now();
    while b.n_waiting().unwrap() < 1 {
        assert!(start.elapsed() < Duration::from_secs(10));
        thread::sleep(Duration::from_millis(5));
    }
    let impatient = connect(&m).barrier("gate").unwrap();
    let e = impatient
        .wait_timeout(Duration::from_millis(50))
        .unwrap_err();
    assert_eq!(code(e), Some(ErrorCode::Timeout));
    assert_eq!(
        code(waiting.join().unwrap().unwrap_err()),
        Some(ErrorCode::Broken)
    );
    assert_eq!(code(b.wait().unwrap_err()), Some(ErrorCode::Broken));
    assert!(b.is_broken().unwrap());
    b.reset().unwrap();
    assert!(!b.is_broken().unwrap());
    assert_eq!(b.n_waiting().unwrap(), 0);
}

#[test]
fn a_dict_is_shared_and_waited_on_by_key() {
    let m = start();
    let (a, b) = (connect(&m), connect(&m));
    let da = a.dict::<String, i64>("config").unwrap();
    let db = b.dict::<String, i64>("config").unwrap();
    let waiter =
        thread::spawn(move || db.wait_for_key(&"go".into(), Some(Duration::from_secs(20))));
    da.insert(&"x".into(), &1).unwrap();
    da.insert(&"y".into(), &-2).unwrap();
    da.insert(&"x".into(), &3).unwrap();
    assert_eq!(da.get(&"x".into()).unwrap(), Some(3));
    assert_eq!(da.get(&"z".into()).unwrap(), None);
    assert_eq!(da.keys().unwrap(), vec!["x".to_string(), "y".to_string()]);
    assert_eq!(da.len().unwrap(), 2);
    da.insert(&"go".into(), &7).unwrap();
    assert_eq!(waiter.join().unwrap().unwrap(), 7);
    assert_eq!(da.remove(&"y".into()).unwrap(), Some(-2));
    assert_eq!(
        da.items().unwrap(),
        vec![("x".to_string(), 3), ("go".to_string(), 7)]
    );
    let db = b.dict::<String, i64>("config").unwrap();
    let e = db
        .wait_for_key(&"never".into(), Some(Duration::from_millis(30)))
        .unwrap_err();
    assert_eq!(code(e), Some(ErrorCode::Timeout));
    for i in 0..6 {
        da.insert(&format!("k{i}"), &i).unwrap();
    }
    let e = da.insert(&"one too many".into(), &0).unwrap_err();
    assert_eq!(code(e), Some(ErrorCode::Full));
}

#[test]
fn clients_create_objects_and_stat_lists_them() {
    let m = Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(KEY)
        .event("ready")
        .allow_create(2, depot_std::QueueOptions::new(4))
        .start()
        .unwrap();
    let c = connect(&m);
    c.create_object("jobs_done", ObjectKind::Semaphore, 0, 0)
        .unwrap();
    let info = c
        .create_object("jobs_done", ObjectKind::Semaphore, 0, 0)
        .unwrap();
    assert_eq!(info.kind, ObjectKind::Semaphore);
    let e = c
        .create_object("jobs_done", ObjectKind::Lock, 0, 0)
        .unwrap_err();
    assert_eq!(code(e), Some(ErrorCode::WrongKind));
    let done = c.semaphore("jobs_done").unwrap();
    done.release().unwrap();
    assert!(done.try_acquire().unwrap());
    let kinds: Vec<_> = c
        .stat()
        .unwrap()
        .into_iter()
        .map(|s| (s.name, s.kind))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("ready".to_string(), ObjectKind::Event),
            ("jobs_done".to_string(), ObjectKind::Semaphore)
        ]
    );
}

#[test]
fn registered_calls_answer_errors_and_panics_and_the_manager_serves_on() {
    let m = Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(KEY)
        .event("ready")
        .call("area", |(w, h): (u32, u32)| {
            w.checked_mul(h).ok_or("too large")
        })
        .call("boom", |_: ()| -> Result<(), String> {
            panic!("handler bug")
        })
        .call_with("slow", 1, 64, |ms: u64| -> Result<u64, String> {
            thread::sleep(Duration::from_millis(ms));
            Ok(ms)
        })
        .start()
        .unwrap();
    let c = connect(&m);
    assert_eq!(c.call::<_, u32>("area", &(6u32, 7u32)).unwrap(), 42);
    match c.call::<_, u32>("area", &(u32::MAX, 2u32)) {
        Err(Error::CallFailed { call, message }) => {
            assert_eq!((call.as_str(), message.as_str()), ("area", "too large"));
        }
        other => panic!("{other:?}"),
    }
    match c.call::<_, ()>("boom", &()) {
        Err(Error::CallFailed { message, .. }) => {
            assert!(message.contains("handler bug"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    // A request of the wrong type is the handler's error, not a crash.
    assert!(matches!(
        c.call::<_, u32>("area", &"not a pair"),
        Err(Error::CallFailed { .. })
    ));
    // One `slow` at a time: a second waits its turn; a short deadline gives up.
    let first = {
        let c = connect(&m);
        thread::spawn(move || c.call::<_, u64>("slow", &300u64))
    };
    thread::sleep(Duration::from_millis(50));
    let e = c
        .call_timeout::<_, u64>("slow", &1u64, Duration::from_millis(100))
        .unwrap_err();
    assert_eq!(code(e), Some(ErrorCode::Timeout));
    // The manager serves other requests while handlers run.
    c.event("ready").unwrap().set().unwrap();
    assert_eq!(first.join().unwrap().unwrap(), 300);
    assert_eq!(c.call::<_, u64>("slow", &1u64).unwrap(), 1);
    let e = c.call::<_, u32>("ready", &()).unwrap_err();
    assert_eq!(code(e), Some(ErrorCode::WrongKind));
}

#[test]
fn a_leased_lock_goes_to_the_next_client_when_its_holder_overstays() {
    let m = Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(KEY)
        .lock_with_lease("lk", Duration::from_millis(200))
        .start()
        .unwrap();
    let (a, b) = (connect(&m), connect(&m));
    let (la, lb) = (a.lock("lk").unwrap(), b.lock("lk").unwrap());
    la.acquire().unwrap();
    assert!(!lb.try_acquire().unwrap());
    // The holder is alive but keeps it too long.
    assert!(lb.acquire_timeout(Duration::from_secs(10)).unwrap());
    assert_eq!(code(la.release().unwrap_err()), Some(ErrorCode::NotOwner));
    lb.release().unwrap();
}

#[test]
fn the_built_in_close_call_stops_the_manager_only_when_allowed() {
    // Refused without remote shutdown: the manager serves on.
    let refused = start();
    let c = connect(&refused);
    let e = c.call::<(), ()>("close", &()).unwrap_err();
    assert_eq!(code(e), Some(ErrorCode::NotAllowed));
    c.event("ready").unwrap().set().unwrap();
    assert!(c.event("ready").unwrap().is_set().unwrap());
    refused.shutdown().unwrap();

    // Refused for a key without the admin right everywhere, even when allowed.
    let keys = depot_std::Keyring::owned(vec![
        depot_std::Key::owned(
            "worker".into(),
            b"worker key".to_vec(),
            vec![depot_std::Grant::owned(
                "close".into(),
                false,
                depot_std::Rights::PUT | depot_std::Rights::GET,
            )],
        ),
        depot_std::Key::owned(
            String::new(),
            KEY.to_vec(),
            vec![depot_std::Grant::owned(
                String::new(),
                true,
                depot_std::Rights::ALL,
            )],
        ),
    ]);
    let allowed = Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(KEY)
        .keyring(keys)
        .event("ready")
        .allow_remote_shutdown(true)
        .start()
        .unwrap();
    let addr = allowed.address();
    let worker = Client::connect_as(addr, "worker", b"worker key").unwrap();
    let e = worker.call::<(), ()>("close", &()).unwrap_err();
    assert_eq!(code(e), Some(ErrorCode::NotAllowed));

    // Granted: the caller gets its answer, then the manager stops.
    let admin = Client::connect(addr, KEY).unwrap();
    let t = Instant::now();
    admin.call::<(), ()>("close", &()).unwrap();
    allowed.join().unwrap();
    assert!(t.elapsed() < Duration::from_secs(3));
    assert!(Client::connect(addr, KEY).is_err());
}

#[test]
fn a_declared_close_call_takes_the_place_of_the_built_in_one() {
    let m = Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(KEY)
        .allow_remote_shutdown(true)
        .call("close", |n: u32| Ok::<u32, String>(n + 1))
        .start()
        .unwrap();
    let c = connect(&m);
    assert_eq!(c.call::<u32, u32>("close", &41).unwrap(), 42);
    // Still serving: the application's handler ran, not a stop.
    assert_eq!(c.call::<u32, u32>("close", &1).unwrap(), 2);
    m.shutdown().unwrap();
}

#[test]
fn a_condition_waiter_in_one_client_is_notified_from_another() {
    let m = Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(KEY)
        .condition("cv")
        .list("jobs", 8)
        .start()
        .unwrap();
    let (a, b) = (connect(&m), connect(&m));
    let cv = a.condition("cv").unwrap();
    cv.acquire().unwrap();
    let waiter = thread::spawn(move || {
        let jobs = a.list::<String>("jobs").unwrap();
        while jobs.is_empty().unwrap() {
            cv.wait().unwrap();
        }
        let job = jobs.pop(0).unwrap();
        cv.release().unwrap();
        job
    });
    let cv = b.condition("cv").unwrap();
    // Free only once the waiter's wait gave it up.
    let start = Instant::now();
    while !cv.try_acquire().unwrap() {
        assert!(start.elapsed() < Duration::from_secs(10));
        thread::sleep(Duration::from_millis(5));
    }
    b.list::<String>("jobs")
        .unwrap()
        .push(&"build".into())
        .unwrap();
    cv.notify(1).unwrap();
    cv.release().unwrap();
    assert_eq!(waiter.join().unwrap().as_deref(), Some("build"));
    // Timed out: false, and the lock is held again.
    cv.acquire().unwrap();
    assert!(!cv.wait_timeout(Duration::from_millis(50)).unwrap());
    cv.release().unwrap();
    let e = cv.release().unwrap_err();
    assert_eq!(code(e), Some(ErrorCode::NotOwner));
    m.shutdown().unwrap();
}

#[test]
fn a_list_proxy_reads_and_writes_like_a_vec() {
    let m = Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(KEY)
        .list("l", 3)
        .start()
        .unwrap();
    let c = connect(&m);
    let l = c.list::<u32>("l").unwrap();
    l.push(&1).unwrap();
    l.push(&3).unwrap();
    l.insert(1, &2).unwrap();
    let e = l.push(&4).unwrap_err();
    assert_eq!(code(e), Some(ErrorCode::Full));
    assert_eq!(l.to_vec().unwrap(), [1, 2, 3]);
    assert_eq!((l.get(-1).unwrap(), l.get(3).unwrap()), (Some(3), None));
    l.set(0, &3).unwrap();
    assert_eq!(
        (l.count(&3).unwrap(), l.index_of(&3).unwrap()),
        (2, Some(0))
    );
    assert!(l.remove(&3).unwrap());
    l.reverse().unwrap();
    assert_eq!(l.to_vec().unwrap(), [3, 2]);
    assert_eq!(l.pop(-1).unwrap(), Some(2));
    assert_eq!(l.len().unwrap(), 1);
    // The wrong kind is refused by name.
    assert_eq!(
        code(c.dict::<u32, u32>("l").unwrap_err()),
        Some(ErrorCode::WrongKind)
    );
    m.shutdown().unwrap();
}
