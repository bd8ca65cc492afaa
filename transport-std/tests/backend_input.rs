//! A backend whose answers come over a socket it has the manager's loop read
//! (`BackendLink::watch`): the loop reads it on its own thread as input comes, input that came
//! before the watch is read at once, and a socket no longer watched is left alone.
#![cfg(unix)]

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use depot_std::backend::{
    Backend, BackendDone, BackendInput, BackendLink, BackendRequest, BackendToken, Outcome,
    StartBackend,
};
use depot_std::{Client, Manager, ManagerHandle};

const KEY: &[u8] = b"backend-input-key";

/// What the engine side shares: the puts waiting for their answer byte, and the threads the
/// answers were read on.
#[derive(Default)]
struct Engine {
    waiting: Mutex<VecDeque<BackendToken>>,
    read_on: Mutex<Vec<String>>,
}

/// Sends one byte per put to the far end, which echoes it back on the watched socket.
struct Remote {
    engine: Arc<Engine>,
    to_far_end: TcpStream,
}

impl Backend for Remote {
    fn request(&mut self, request: BackendRequest<'_>) {
        if let BackendRequest::Put { token, .. } = request {
            self.engine.waiting.lock().unwrap().push_back(token);
            self.to_far_end.write_all(b"p").unwrap();
        }
    }
}

/// Reads the echoed bytes without blocking; each answers the oldest waiting put.
struct Answers {
    engine: Arc<Engine>,
    socket: TcpStream,
    link: BackendLink,
}

impl BackendInput for Answers {
    fn readable(&self) {
        let mut buf = [0u8; 64];
        while let Ok(n @ 1..) = depot_std::busy::recv_now(&self.socket, &mut buf) {
            let thread = std::thread::current().name().unwrap_or("").to_owned();
            self.engine.read_on.lock().unwrap().push(thread);
            for _ in 0..n {
                // Input no put waits for (the tests' own bytes) answers nothing.
                let Some(token) = self.engine.waiting.lock().unwrap().pop_front() else {
                    continue;
                };
                self.link.complete(BackendDone {
                    token,
                    outcome: Outcome::Done,
                    settle: None,
                });
            }
        }
    }
}

/// A connected pair of sockets on 127.0.0.1.
fn socket_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (b, _) = listener.accept().unwrap();
    (a, b)
}

struct Setup {
    manager: ManagerHandle,
    engine: Arc<Engine>,
    link: BackendLink,
    /// The engine's end of the watched socket.
    watched: TcpStream,
    /// What the far end writes to the watched socket.
    far_end: TcpStream,
}

/// A manager with queue `q` in the remote engine; the watched socket already has `early`
/// bytes of input when the watch begins (the far end echoes nothing by itself).
fn setup(early: &[u8]) -> Setup {
    let engine = Arc::new(Engine::default());
    let (to_far_end, far_end) = socket_pair();
    let (watched, far_end_writer) = socket_pair();
    let started = Arc::new(Mutex::new(None));
    let (e, keep) = (engine.clone(), started.clone());
    let start: Arc<StartBackend> = Arc::new(move |link: BackendLink, _: &[_]| {
        *keep.lock().unwrap() = Some(link);
        Ok(Box::new(Remote {
            engine: e.clone(),
            to_far_end: to_far_end.try_clone().unwrap(),
        }) as Box<dyn Backend>)
    });
    let manager = Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(KEY)
        .raw_queue("q", 16)
        .backend("remote", start)
        .start()
        .expect("manager starts");
    let link = started
        .lock()
        .unwrap()
        .clone()
        .expect("the backend started");
    (&far_end_writer).write_all(early).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    link.watch(
        &watched,
        Arc::new(Answers {
            engine: engine.clone(),
            socket: watched.try_clone().unwrap(),
            link: link.clone(),
        }),
    )
    .unwrap();
    // The far end: echoes each byte the engine sends.
    let mut from_engine = far_end;
    let mut echo = far_end_writer.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok(n @ 1..) = from_engine.read(&mut buf) {
            if echo.write_all(&buf[..n]).is_err() {
                return;
            }
        }
    });
    Setup {
        manager,
        engine,
        link,
        watched,
        far_end: far_end_writer,
    }
}

/// Waits up to 5 s for `done`.
fn eventually(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..500 {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn the_loop_reads_the_watched_socket_on_its_own_thread() {
    let s = setup(b"");
    let q = Client::connect(s.manager.address(), KEY)
        .unwrap()
        .raw_queue("q")
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for item in [&b"a"[..], b"b", b"c"] {
            q.put(item).unwrap();
        }
        let _ = tx.send(());
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("every put answered");
    let read_on = s.engine.read_on.lock().unwrap().clone();
    assert!(!read_on.is_empty());
    assert!(
        read_on.iter().all(|t| t.starts_with("depot-manager")),
        "answers read on {read_on:?}"
    );
    s.manager.shutdown().unwrap();
    drop(s.watched);
}

#[test]
fn input_before_the_watch_is_read_at_once_and_none_after_it_ends() {
    let s = setup(b"");
    (&s.far_end).write_all(b"x").unwrap();
    assert!(
        eventually(|| !s.engine.read_on.lock().unwrap().is_empty()),
        "the input was never read"
    );

    let early = setup(b"e");
    assert!(
        eventually(|| !early.engine.read_on.lock().unwrap().is_empty()),
        "the input that came before the watch was never read"
    );

    s.link.unwatch();
    let before = s.engine.read_on.lock().unwrap().len();
    (&s.far_end).write_all(b"y").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.engine.read_on.lock().unwrap().len(), before);
    let mut buf = [0u8; 4];
    assert_eq!(
        depot_std::busy::recv_now(&s.watched, &mut buf).unwrap(),
        1,
        "the byte waits, unread"
    );
    s.manager.shutdown().unwrap();
    early.manager.shutdown().unwrap();
}
