//! The client's reply deadlines: what `poll_timeout` says against a sorted list of the
//! requests still waiting, and the work one deadline costs among thousands.

extern crate std;

use super::{Client, ClientConfig, Event};
use crate::error::Error;
use crate::manager::{ConnId, Connection, Manager, ManagerConfig, Resources};
use crate::park::ParkStore;
use crate::registry::ObjectSlot;
use crate::time::Instant;
use crate::waiters::Waiter;
use crate::wire::{ErrorCode, Handle, Op, QueueMode, QueueSpec, Reply, Wait};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::vec::Vec;

const KEY: &[u8] = b"key";
const GRACE: u32 = 100;

/// A manager with one queue and a client connected to it through `pump`.
struct Link {
    m: Manager<'static>,
    conn: ConnId,
    c: Client<'static>,
    handle: Handle,
}

impl Link {
    fn new(slots: usize) -> Link {
        let spec = QueueSpec {
            capacity: 4,
            max_item: 16,
            mode: QueueMode::Raw,
        };
        let queue = ObjectSlot::queue("q", spec, std::vec![0; 256]).unwrap();
        let resources = Resources {
            objects: std::vec![queue].into(),
            connections: std::vec![Connection::owned(1 << 16, 1 << 16)].into(),
            waiters: std::vec![Waiter::EMPTY; 64].into(),
            parked: ParkStore::none(),
        };
        let mut m = Manager::new(ManagerConfig::default(), KEY, resources);
        let conn = m.accept(Instant::ZERO, [1; 32], b"").unwrap();
        let config = ClientConfig {
            reply_timeout_ms: GRACE,
            ..ClientConfig::default()
        };
        let c = Client::owned(config, KEY, [2; 32], Instant::ZERO, 4096, 1 << 20, slots);
        let mut link = Link {
            m,
            conn,
            c,
            handle: Handle(0),
        };
        link.pump(Instant::ZERO);
        assert!(link.c.is_ready());
        let open = link.c.send(Instant::ZERO, Op::Open { name: "q" }).unwrap();
        assert_eq!(link.pump(Instant::ZERO), std::vec![open]);
        link
    }

    /// Moves bytes both ways until nothing moves; returns the ids of the replies seen.
    fn pump(&mut self, now: Instant) -> Vec<u32> {
        let mut replies = Vec::new();
        loop {
            let out = self.c.poll_transmit().to_vec();
            let sent = self.m.handle_input(self.conn, now, &out);
            self.c.handle_transmitted(sent);
            let back = self.m.poll_transmit(self.conn).to_vec();
            let read = self.c.handle_input(&back);
            self.m.handle_transmitted(self.conn, now, read);
            while let Some(event) = self.c.poll_event() {
                if let Event::Reply { id, reply } = event {
                    if let Reply::Opened(info) = reply {
                        self.handle = info.handle;
                    }
                    replies.push(id);
                }
            }
            if sent == 0 && read == 0 {
                return replies;
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Step {
    /// A get that waits this long (`None`: for ever; `Some(0)`: not at all).
    Get(Option<u32>),
    /// A put, which answers a waiting get.
    Put,
    /// Gives up on the k-th request still waiting.
    Abandon(usize),
    /// The transport moves bytes.
    Pump,
    /// Time passes and both sides are woken.
    Advance(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        proptest::option::of(0..300u32).prop_map(Step::Get),
        Just(Step::Put),
        any::<usize>().prop_map(Step::Abandon),
        Just(Step::Pump),
        (0..150u64).prop_map(Step::Advance),
    ]
}

proptest! {
    #![proptest_config(crate::proptest_cases(256))]

    /// Whatever is sent, answered, abandoned and timed, the client's next deadline is the
    /// earliest of the requests still waiting for a reply, and it closes with `Timeout`
    /// exactly when one of those has passed.
    // Safe code over the same dependencies as the quicker tests: Miri (UB checks) learns
    // nothing more from it and would spend a minute or more (CI's Miri step runs the rest).
    #[cfg_attr(miri, ignore)]
    #[test]
    fn deadlines_agree_with_a_sorted_list(steps in proptest::collection::vec(step(), 0..120)) {
        let mut link = Link::new(8);
        let mut now = Instant::ZERO;
        // Request id -> its deadline, for the requests whose reply is awaited.
        let mut model: BTreeMap<u32, Option<u64>> = BTreeMap::new();
        for s in steps {
            match s {
                Step::Get(wait) => {
                    let wait = match wait {
                        None => Wait::Forever,
                        Some(0) => Wait::NoWait,
                        Some(ms) => Wait::Millis(ms),
                    };
                    let op = Op::Get { handle: link.handle, wait };
                    if let Ok(id) = link.c.send(now, op) {
                        let extra = match wait {
                            Wait::Forever => None,
                            Wait::NoWait => Some(0),
                            Wait::Millis(ms) => Some(u64::from(ms)),
                        };
                        model.insert(id, extra.map(|ms| now.as_millis() + u64::from(GRACE) + ms));
                    }
                }
                Step::Put => {
                    let op = Op::Put { handle: link.handle, item: b"x", wait: Wait::NoWait };
                    if let Ok(id) = link.c.send(now, op) {
                        model.insert(id, Some(now.as_millis() + u64::from(GRACE)));
                    }
                }
                Step::Abandon(k) => {
                    if !model.is_empty() {
                        let id = *model.keys().nth(k % model.len()).unwrap();
                        link.c.abandon(id);
                        model.remove(&id);
                    }
                }
                Step::Pump => {
                    for id in link.pump(now) {
                        prop_assert!(model.remove(&id).is_some(), "reply {} not awaited", id);
                    }
                }
                Step::Advance(ms) => {
                    now = now.add_millis(ms);
                    link.m.handle_timeout(now);
                    link.c.handle_timeout(now);
                    let due = model.values().flatten().any(|&d| d <= now.as_millis());
                    prop_assert_eq!(link.c.error(), due.then_some(Error::Timeout));
                    if due {
                        return Ok(());
                    }
                }
            }
            let earliest = model.values().flatten().min().copied();
            prop_assert_eq!(link.c.poll_timeout().map(Instant::as_millis), earliest);
            let held = model.values().flatten().count() as u32;
            prop_assert_eq!(link.c.timers.heap.len(), held);
        }
    }
}

/// With 10,000 requests in flight, giving one up and timing out on another each take
/// O(log n) heap steps: no call walks the request slots.
// Safe code over the same dependencies as the quicker tests: Miri learns nothing more from it
// and would spend over a minute setting up its link.
#[cfg_attr(miri, ignore)]
#[test]
fn one_due_request_among_ten_thousand_costs_log_n() {
    let n: u32 = 10_000;
    let mut link = Link::new(n as usize);
    let handle = link.handle;
    let c = &mut link.c;
    // Later requests wait less, so each new deadline is the earliest (the most work to insert).
    let mut ids = Vec::new();
    for k in 0..n {
        let wait = Wait::Millis(n - k);
        ids.push(c.send(Instant::ZERO, Op::Get { handle, wait }).unwrap());
        // The manager never sees them: it will not answer.
        let len = c.poll_transmit().len();
        c.handle_transmitted(len);
    }
    assert_eq!(c.in_flight(), n as usize);
    let at = |ms: u64| Instant::from_millis(u64::from(GRACE) + ms);
    assert_eq!(c.poll_timeout(), Some(at(1)));

    c.timers.heap.steps = 0;
    c.abandon(ids[n as usize - 1]);
    assert_eq!(c.poll_timeout(), Some(at(2)));
    c.handle_timeout(at(1));
    assert_eq!(c.error(), None);
    c.handle_timeout(at(2));
    assert_eq!(c.error(), Some(Error::Timeout));
    assert_eq!(c.poll_event(), Some(Event::Closed(Error::Timeout)));
    // log2(10,000) < 14: the removal sifts down at most 14 levels (a walk would count 10,000).
    let steps = c.timers.heap.steps;
    assert!(
        steps <= 2 * 15,
        "{steps} heap steps for one deadline among {n}"
    );
}

/// Each refusal of `send` and `send_unanswered` is its own variant, and becomes the crate's
/// `Error` it was before, text included.
#[test]
fn send_refusals_are_typed() {
    use super::{SendError, SendUnansweredError};
    use std::string::ToString;

    // A request every build of the client sends.
    let size = Op::Size { handle: Handle(0) };
    let config = ClientConfig::default();
    let mut fresh = Client::owned(config, KEY, [3; 32], Instant::ZERO, 4096, 4096, 2);
    assert_eq!(fresh.send(Instant::ZERO, size), Err(SendError::NotReady));
    assert_eq!(
        fresh.send_unanswered(size),
        Err(SendUnansweredError::NotReady)
    );

    let mut link = Link::new(2);
    let handle = link.handle;
    let c = &mut link.c;
    let item = std::vec![0; c.max_item() + 1];
    let put = Op::Put {
        handle,
        item: &item,
        wait: Wait::NoWait,
    };
    assert_eq!(c.send(Instant::ZERO, put), Err(SendError::TooLarge));
    c.send(Instant::ZERO, size).unwrap();
    c.send(Instant::ZERO, size).unwrap();
    let full = c.send(Instant::ZERO, size);
    assert_eq!(full, Err(SendError::InFlightLimit));
    assert_eq!(full.map_err(Error::from), Err(Error::InFlightLimit));

    c.handle_timeout(Instant::from_millis(u64::from(GRACE)));
    let closed = c.send(Instant::ZERO, size).unwrap_err();
    assert_eq!(closed, SendError::Closed(Error::Timeout));
    assert_eq!(Error::from(closed), Error::Timeout);
    assert_eq!(closed.to_string(), Error::Timeout.to_string());
    let unanswered = c.send_unanswered(size).unwrap_err();
    assert_eq!(unanswered, SendUnansweredError::Closed(Error::Timeout));
    assert_eq!(Error::from(unanswered), Error::Timeout);
}

/// A withdrawn get is withdrawn on the manager (`Cancel`) and its reply is still reported:
/// `Cancelled` for a get that was blocked, its item for one the manager had answered.
#[test]
fn a_withdrawn_get_still_reports_its_reply() {
    let mut link = Link::new(4);
    let handle = link.handle;
    let wait = Wait::Forever;
    let blocked = link
        .c
        .send(Instant::ZERO, Op::Get { handle, wait })
        .unwrap();
    assert!(link.pump(Instant::ZERO).is_empty(), "the get is blocked");
    link.c.withdraw(blocked);
    link.c.withdraw(blocked);
    let mut replies = Vec::new();
    let out = link.c.poll_transmit().to_vec();
    let sent = link.m.handle_input(link.conn, Instant::ZERO, &out);
    link.c.handle_transmitted(sent);
    let back = link.m.poll_transmit(link.conn).to_vec();
    link.c.handle_input(&back);
    link.m
        .handle_transmitted(link.conn, Instant::ZERO, back.len());
    while let Some(event) = link.c.poll_event() {
        if let Event::Reply { id, reply } = event {
            replies.push((id, reply == Reply::Error(ErrorCode::Cancelled)));
        }
    }
    assert_eq!(replies, std::vec![(blocked, true)]);
    assert_eq!(link.c.in_flight(), 0);

    // Answered before the `Cancel` reaches the manager: the item is reported, not given back.
    let put = Op::Put {
        handle,
        item: b"x",
        wait: Wait::NoWait,
    };
    link.c.send(Instant::ZERO, put).unwrap();
    link.pump(Instant::ZERO);
    let get = link
        .c
        .send(Instant::ZERO, Op::Get { handle, wait })
        .unwrap();
    let out = link.c.poll_transmit().to_vec();
    let sent = link.m.handle_input(link.conn, Instant::ZERO, &out);
    link.c.handle_transmitted(sent);
    link.c.withdraw(get);
    let back = link.m.poll_transmit(link.conn).to_vec();
    link.c.handle_input(&back);
    link.m
        .handle_transmitted(link.conn, Instant::ZERO, back.len());
    let mut items = Vec::new();
    while let Some(event) = link.c.poll_event() {
        if let Event::Reply {
            id,
            reply: Reply::Item { item, .. },
        } = event
        {
            items.push((id, item.to_vec()));
        }
    }
    assert_eq!(items, std::vec![(get, b"x".to_vec())]);
    // The `Cancel` finds nothing to withdraw, and the core gave nothing back.
    link.pump(Instant::ZERO);
    assert_eq!(link.m.stat(0).map(|s| s.len), Some(0));
}
