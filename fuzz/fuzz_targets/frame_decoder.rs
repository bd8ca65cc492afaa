//! Arbitrary bytes into the decoding paths: a client in each handshake state and after it
//! (raw, and as messages inside frames whose MACs verify), and the manager's handshake path,
//! with Python serving on (from the first frame, and after a valid Python handshake).
#![no_main]

use depot_core::client::ClientConfig;
use depot_core::wire::{Handle, Op, Wait};
use depot_core::*;
use depot_fuzz::*;
use libfuzzer_sys::fuzz_target;

const CN: [u8; 32] = [0x43; 32];
const MN: [u8; 32] = [0x4D; 32];

/// Feeds `data` to `feed` in chunks whose sizes come from `sizes` (cycled), calling `poll`
/// after each; stops early when `feed` takes nothing.
fn chunked(data: &[u8], sizes: u8, mut feed: impl FnMut(&[u8]) -> usize) {
    let step = (sizes as usize % 64) + 1;
    let mut at = 0;
    while at < data.len() {
        let end = (at + step).min(data.len());
        let taken = feed(&data[at..end]);
        if taken == 0 {
            return;
        }
        at += taken;
    }
}

fn drain(c: &mut Client<'_>) -> bool {
    let mut closed = false;
    for _ in 0..10_000 {
        match c.poll_event() {
            Some(Event::Closed(_)) => closed = true,
            Some(_) => {}
            None => return closed,
        }
    }
    panic!("poll_event never runs dry");
}

fn client_case(mode: u8, sizes: u8, data: &[u8]) {
    let (mut rx, mut tx, mut slots) = (vec![0u8; 1024], vec![0u8; 1024], [RequestSlot::FREE; 4]);
    let mut c = Client::new(
        ClientConfig::default(),
        KEY,
        CN,
        Instant::ZERO,
        &mut rx[..],
        &mut tx[..],
        &mut slots,
    );
    let hello = c.poll_transmit().to_vec();
    c.handle_transmitted(hello.len());
    let transcript = transcript(&hello, &challenge_frame(&MN, 512));
    let mut sealer = None;
    if mode >= 1 {
        // A valid challenge: the client now waits for the verdict.
        c.handle_input(&challenge_frame(&MN, 512));
        drain(&mut c);
        let proof = c.poll_transmit().len();
        c.handle_transmitted(proof);
    }
    if mode >= 2 {
        let mut welcome = vec![0];
        welcome.extend_from_slice(&derive(b"depot/1 manager proof", &transcript));
        c.handle_input(&plain_frame(&welcome));
        drain(&mut c);
        assert!(c.is_ready());
        // Requests in flight, so some reply ids match.
        let h = Handle::from_raw(0);
        for op in [
            Op::Get {
                handle: h,
                wait: Wait::Forever,
            },
            Op::Put {
                handle: h,
                item: b"x",
                wait: Wait::NoWait,
            },
            Op::Status,
        ] {
            c.send(Instant::ZERO, op).unwrap();
        }
        let out = c.poll_transmit().len();
        c.handle_transmitted(out);
        sealer = Some(Sealer::manager_to_client(&transcript));
    }
    match (mode, sealer.as_mut()) {
        (3, Some(s)) => {
            // The input as message bodies of authentic frames, split at 0xFF-led boundaries.
            for body in data.split(|&b| b == 0xFF) {
                let frame = s.seal(body);
                chunked(&frame, sizes, |chunk| {
                    let n = c.handle_input(chunk);
                    drain(&mut c);
                    n
                });
            }
        }
        _ => chunked(data, sizes, |chunk| {
            let n = c.handle_input(chunk);
            drain(&mut c);
            n
        }),
    }
    c.handle_timeout(Instant::from_millis(u64::MAX / 2));
    drain(&mut c);
    // Whatever happened, the client still answers calls sanely.
    let _ = c.send(Instant::ZERO, Op::Status);
    assert!(c.poll_transmit().len() <= 1024);
}

fn manager_case(mode: u8, sizes: u8, data: &[u8]) {
    let mut storage = vec![0u8; 512];
    let mut objects = [ObjectSlot::queue(
        "task_queue",
        wire::QueueSpec {
            capacity: 4,
            max_item: 64,
            mode: depot_core::QueueMode::Raw,
        },
        &mut storage[..],
    )
    .unwrap()];
    let (mut rx, mut tx, mut park) = (vec![0u8; 512], vec![0u8; 512], vec![0u8; 64]);
    let mut conns = [Connection::new(&mut rx[..], &mut tx[..])];
    let mut waiters = [Waiter::EMPTY; 4];
    let resources = Resources {
        objects: (&mut objects).into(),
        connections: (&mut conns).into(),
        waiters: (&mut waiters).into(),
        parked: ParkStore::slots(&mut park[..], 64),
    };
    let mut m = Manager::new(ManagerConfig::default(), KEY, resources);
    let (mut nodes, mut stack, mut memo) = (
        vec![depot_core::python::pickle::Node::None; 64],
        vec![0u32; 16],
        vec![0u32; 16],
    );
    let (mut nodes2, mut stack2, mut memo2) = (nodes.clone(), stack.clone(), memo.clone());
    let (mut item, mut join) = (vec![0u8; 64], vec![0u8; 64]);
    if mode >= 6 {
        // Python clients served on the same port.
        m.serve_python(
            KEY,
            depot_core::manager::PythonStorage {
                request: depot_core::python::ScratchStore {
                    nodes: (&mut nodes[..]).into(),
                    stack: (&mut stack[..]).into(),
                    memo: (&mut memo[..]).into(),
                },
                item: (&mut item[..]).into(),
                reply: depot_core::python::ScratchStore {
                    nodes: (&mut nodes2[..]).into(),
                    stack: (&mut stack2[..]).into(),
                    memo: (&mut memo2[..]).into(),
                },
                join: (&mut join[..]).into(),
            },
        );
    }
    let id = m.accept(Instant::ZERO, MN, &[]).unwrap();
    if mode >= 6 {
        let greeting = m.poll_transmit(id).len();
        m.handle_transmitted(id, Instant::ZERO, greeting);
    }
    if mode == 7 {
        // A valid Python answer, challenge and verdict: Python requests follow.
        let mut challenge = b"{sha256}dpot/mgr".to_vec();
        challenge.extend_from_slice(&MN);
        let mut answer = b"{sha256}".to_vec();
        answer.extend_from_slice(&depot_core::auth::hmac_sha256(KEY, &challenge));
        let mut theirs = b"#CHALLENGE#".to_vec();
        theirs.extend_from_slice(&[0x43; 20]);
        for body in [&answer[..], &theirs[..], b"#WELCOME#"] {
            let frame = plain_frame(body);
            assert_eq!(m.handle_input(id, Instant::ZERO, &frame), frame.len());
            let out = m.poll_transmit(id).len();
            m.handle_transmitted(id, Instant::ZERO, out);
        }
        assert!(!m.wants_close(id));
    }
    if mode == 5 {
        // A valid hello first: the manager now waits for the proof.
        let hello = hello_frame(&CN, 1024);
        assert_eq!(m.handle_input(id, Instant::ZERO, &hello), hello.len());
        assert_eq!(challenge_nonce(m.poll_transmit(id)), Some(MN));
    }
    chunked(data, sizes, |chunk| {
        let n = m.handle_input(id, Instant::ZERO, chunk);
        let out = m.poll_transmit(id).len();
        assert!(out <= 512);
        m.handle_transmitted(id, Instant::ZERO, out);
        n
    });
    m.handle_timeout(Instant::from_millis(60_000));
    if m.wants_close(id) {
        m.handle_close(id, Instant::ZERO);
        assert_eq!(m.connections(), 0);
    }
}

fuzz_target!(|input: &[u8]| {
    let [mode, sizes, data @ ..] = input else {
        return;
    };
    match mode % 8 {
        m @ 0..=3 => client_case(m, *sizes, data),
        m => manager_case(m, *sizes, data),
    }
});
