//! Objects beside queues with the async client over real sockets: events, locks, semaphores,
//! values, dicts, conditions, lists, barriers and registered calls, between tasks on separate
//! connections.

use std::time::Duration;

use depot::tokio::Client;
use depot::{Error, ErrorCode, Manager, ManagerHandle};
use tokio::time::timeout;

const KEY: &[u8] = b"objects";
const LONG: Duration = Duration::from_secs(20);

fn start() -> ManagerHandle {
    Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(KEY)
        .event("ready")
        .lock("lk")
        .bounded_semaphore("slots", 2)
        .value("counter")
        .dict("config", 2)
        .call("area", |(w, h): (u32, u32)| {
            w.checked_mul(h).ok_or("too large")
        })
        .start()
        .expect("manager starts")
}

fn code<T: std::fmt::Debug>(r: Result<T, Error>) -> Option<ErrorCode> {
    match r {
        Err(Error::Request { code, .. }) => Some(code),
        other => panic!("expected a request error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_set_on_one_connection_wakes_a_wait_on_another() {
    let m = start();
    let a = Client::connect(m.address(), KEY).await.unwrap();
    let b = Client::connect(m.address(), KEY).await.unwrap();
    let ev = a.event("ready").await.unwrap();
    assert!(!ev.wait_timeout(Duration::from_millis(20)).await.unwrap());
    let waiter = tokio::spawn(async move { ev.wait().await });
    while b.status().await.unwrap().waiters == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ev = b.event("ready").await.unwrap();
    ev.set().await.unwrap();
    timeout(LONG, waiter).await.unwrap().unwrap().unwrap();
    assert!(ev.is_set().await.unwrap());
    ev.clear().await.unwrap();
    assert!(!ev.is_set().await.unwrap());
    // The wrong kind is refused by name.
    assert_eq!(code(b.lock("ready").await), Some(ErrorCode::WrongKind));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_and_semaphores_go_with_their_connection() {
    let m = start();
    let a = Client::connect(m.address(), KEY).await.unwrap();
    let b = Client::connect(m.address(), KEY).await.unwrap();
    let la = a.lock("lk").await.unwrap();
    let lb = b.lock("lk").await.unwrap();
    la.acquire().await.unwrap();
    assert!(!lb.try_acquire().await.unwrap());
    assert_eq!(code(lb.release().await), Some(ErrorCode::NotOwner));
    let waiting = {
        let lb = lb.clone();
        tokio::spawn(async move { lb.acquire_timeout(LONG).await })
    };
    // The holder's connection closes: its lock goes to the waiter.
    drop(la);
    drop(a);
    assert!(timeout(LONG, waiting).await.unwrap().unwrap().unwrap());
    assert!(!lb.is_free().await.unwrap());
    lb.release().await.unwrap();

    let s = b.semaphore("slots").await.unwrap();
    s.acquire().await.unwrap();
    assert!(s.try_acquire().await.unwrap());
    assert!(!s.acquire_timeout(Duration::from_millis(20)).await.unwrap());
    assert_eq!(s.get_value().await.unwrap(), 0);
    s.release().await.unwrap();
    s.release().await.unwrap();
    assert_eq!(code(s.release().await), Some(ErrorCode::Overflow));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_dicts_and_calls() {
    let m = start();
    let c = Client::connect(m.address(), KEY).await.unwrap();
    let v = c.value::<Option<u32>>("counter").await.unwrap();
    assert_eq!(v.get().await.unwrap(), None);
    // Compare-and-set from many tasks: every increment counts once.
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let v = v.clone();
            tokio::spawn(async move {
                for _ in 0..10 {
                    loop {
                        let now = v.get().await.unwrap();
                        let next = Some(now.unwrap_or(0) + 1);
                        if v.compare_and_set(&now, &next).await.unwrap() {
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(v.get().await.unwrap(), Some(40));
    v.set(&Some(7)).await.unwrap();
    assert_eq!(v.get().await.unwrap(), Some(7));

    let d = c.dict::<String, u32>("config").await.unwrap();
    let waiter = {
        let d = d.clone();
        tokio::spawn(async move { d.wait_for_key(&"go".into(), Some(LONG)).await })
    };
    d.insert(&"a".into(), &1).await.unwrap();
    d.insert(&"go".into(), &2).await.unwrap();
    assert_eq!(timeout(LONG, waiter).await.unwrap().unwrap().unwrap(), 2);
    assert_eq!(code(d.insert(&"b".into(), &3).await), Some(ErrorCode::Full));
    assert_eq!(d.keys().await.unwrap(), ["a", "go"]);
    assert_eq!(
        d.items().await.unwrap(),
        [("a".to_owned(), 1), ("go".to_owned(), 2)]
    );
    assert_eq!(d.remove(&"a".into()).await.unwrap(), Some(1));
    assert_eq!(d.get(&"a".into()).await.unwrap(), None);
    assert_eq!(
        (d.len().await.unwrap(), d.is_empty().await.unwrap()),
        (1, false)
    );

    assert_eq!(c.call::<_, u32>("area", &(6u32, 7u32)).await.unwrap(), 42);
    match c.call::<_, u32>("area", &(u32::MAX, 2u32)).await {
        Err(Error::CallFailed { call, message }) => {
            assert_eq!((call.as_str(), message.as_str()), ("area", "too large"))
        }
        other => panic!("{other:?}"),
    }
    let r = c.call_timeout::<_, u32>("area", &(2u32, 3u32), LONG).await;
    assert_eq!(r.unwrap(), 6);
    // The built-in close is refused without remote shutdown.
    assert_eq!(
        code(c.call::<(), ()>("close", &()).await),
        Some(ErrorCode::NotAllowed)
    );
}

fn start_more() -> ManagerHandle {
    Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(KEY)
        .condition("cv")
        .list("jobs", 4)
        .barrier("start", 2)
        .start()
        .expect("manager starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_condition_wait_on_one_connection_is_woken_by_a_notify_on_another() {
    let m = start_more();
    let a = Client::connect(m.address(), KEY).await.unwrap();
    let b = Client::connect(m.address(), KEY).await.unwrap();
    let cv = a.condition("cv").await.unwrap();
    // Waiting without the lock is refused; a wait that runs out returns holding it.
    assert_eq!(code(cv.wait().await), Some(ErrorCode::NotOwner));
    cv.acquire().await.unwrap();
    assert!(!cv.wait_timeout(Duration::from_millis(20)).await.unwrap());
    let waiter = tokio::spawn(async move {
        cv.wait().await?;
        cv.release().await
    });
    while b.status().await.unwrap().waiters == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The waiter gave the lock up: b takes it at once, notifies, and releases it to a.
    let cv = b.condition("cv").await.unwrap();
    assert!(cv.try_acquire().await.unwrap());
    cv.notify_all().await.unwrap();
    cv.release().await.unwrap();
    timeout(LONG, waiter).await.unwrap().unwrap().unwrap();
    assert!(
        cv.try_acquire().await.unwrap(),
        "a released it after its wait"
    );
    cv.release().await.unwrap();
    assert_eq!(code(b.list::<u32>("cv").await), Some(ErrorCode::WrongKind));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_answers_like_a_vec_within_its_bound() {
    let m = start_more();
    let a = Client::connect(m.address(), KEY).await.unwrap();
    let b = Client::connect(m.address(), KEY).await.unwrap();
    let la = a.list::<u32>("jobs").await.unwrap();
    let lb = b.list::<u32>("jobs").await.unwrap();
    for v in [1, 2, 3] {
        la.push(&v).await.unwrap();
    }
    lb.insert(0, &9).await.unwrap();
    assert_eq!(code(la.push(&4).await), Some(ErrorCode::Full));
    assert_eq!(lb.to_vec().await.unwrap(), vec![9, 1, 2, 3]);
    assert_eq!(la.get(-1).await.unwrap(), Some(3));
    assert_eq!(la.get(7).await.unwrap(), None);
    la.set(1, &2).await.unwrap();
    assert_eq!(lb.count(&2).await.unwrap(), 2);
    assert_eq!(lb.index_of(&2).await.unwrap(), Some(1));
    assert!(lb.remove(&2).await.unwrap());
    assert!(!lb.remove(&7).await.unwrap());
    lb.reverse().await.unwrap();
    assert_eq!(la.to_vec().await.unwrap(), vec![3, 2, 9]);
    assert_eq!(la.pop(-1).await.unwrap(), Some(9));
    assert_eq!(la.len().await.unwrap(), 2);
    assert_eq!(code(la.set(5, &1).await), Some(ErrorCode::NoSuchKey));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_barrier_lets_its_parties_through_together_and_breaks_on_a_timeout() {
    let m = start_more();
    let a = Client::connect(m.address(), KEY).await.unwrap();
    let b = Client::connect(m.address(), KEY).await.unwrap();
    let ba = a.barrier("start").await.unwrap();
    let bb = b.barrier("start").await.unwrap();
    assert_eq!(ba.parties(), 2);
    let first = tokio::spawn(async move { ba.wait().await });
    while bb.n_waiting().await.unwrap() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let second = bb.wait().await.unwrap();
    let first = timeout(LONG, first).await.unwrap().unwrap().unwrap();
    let mut order = [first, second];
    order.sort();
    assert_eq!(order, [0, 1]);
    // A lone party that runs out breaks it, until reset.
    assert_eq!(
        code(bb.wait_timeout(Duration::from_millis(20)).await),
        Some(ErrorCode::Timeout)
    );
    assert!(bb.is_broken().await.unwrap());
    bb.reset().await.unwrap();
    assert!(!bb.is_broken().await.unwrap());
    bb.abort().await.unwrap();
    assert!(bb.is_broken().await.unwrap());
}
