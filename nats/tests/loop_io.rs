//! A NATS connection read by a depot manager's event loop (`Conn::read_on_loop`), against a
//! scripted NATS server on 127.0.0.1: messages are handled on the loop's thread once the
//! reader thread has handed the connection over, and a server that goes silent is still found
//! out (pinged, then dropped) by the reader thread.
#![cfg(unix)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use depot_nats::conn::{Auth, Conn, Handler, Msg, Options};
use depot_std::backend::{Backend, BackendLink, BackendRequest, StartBackend};
use depot_std::{Manager, ManagerHandle};

/// What the connection told the test: each message's payload and the thread it was handled
/// on, and why the connection was lost.
#[derive(Default)]
struct Heard {
    messages: Mutex<Vec<(String, String)>>,
    lost: Mutex<Vec<String>>,
}

impl Handler for Heard {
    fn message(&self, msg: Msg<'_>) {
        let thread = std::thread::current().name().unwrap_or("").to_owned();
        let payload = String::from_utf8_lossy(msg.payload).into_owned();
        self.messages.lock().unwrap().push((payload, thread));
    }
    fn connected(&self, _server: &str, _again: bool) {}
    fn disconnected(&self, why: &str) {
        self.lost.lock().unwrap().push(why.to_owned());
    }
}

/// A manager whose loop is there only to read the connection.
fn manager() -> (ManagerHandle, BackendLink) {
    struct Idle;
    impl Backend for Idle {
        fn request(&mut self, _: BackendRequest<'_>) {}
    }
    let link = Arc::new(Mutex::new(None));
    let keep = link.clone();
    let start: Arc<StartBackend> = Arc::new(move |l: BackendLink, _: &[_]| {
        *keep.lock().unwrap() = Some(l);
        Ok(Box::new(Idle) as Box<dyn Backend>)
    });
    let m = Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(b"loop-io-test-key")
        .backend("test", start)
        .start()
        .expect("manager starts");
    let link = link.lock().unwrap().clone().expect("the backend started");
    (m, link)
}

/// A NATS server that answers the handshake and every PING while `answering`, and whose
/// first connection's socket the test writes messages to.
struct Server {
    address: String,
    answering: Arc<AtomicBool>,
    first: Arc<Mutex<Option<TcpStream>>>,
}

fn server() -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let answering = Arc::new(AtomicBool::new(true));
    let first = Arc::new(Mutex::new(None));
    let (a, f) = (answering.clone(), first.clone());
    std::thread::spawn(move || {
        for socket in listener.incoming() {
            let Ok(mut socket) = socket else { return };
            let _ = socket.write_all(b"INFO {\"server_id\":\"test\",\"max_payload\":1048576}\r\n");
            let mut keep = f.lock().unwrap();
            if keep.is_none() {
                *keep = socket.try_clone().ok();
            }
            drop(keep);
            let a = a.clone();
            std::thread::spawn(move || {
                let mut lines = BufReader::new(socket.try_clone().unwrap()).lines();
                while let Some(Ok(line)) = lines.next() {
                    if line == "PING" && a.load(Ordering::SeqCst) {
                        let _ = socket.write_all(b"PONG\r\n");
                    }
                }
            });
        }
    });
    Server {
        address,
        answering,
        first,
    }
}

fn connect(server: &Server, heard: &Arc<Heard>) -> Arc<Conn> {
    let opts = Options {
        servers: vec![server.address.clone()],
        auth: Auth::None,
        name: "loop-io-test".into(),
        tls: None,
        busy_poll: Duration::ZERO,
    };
    Conn::start(opts, heard.clone(), Duration::from_secs(5)).expect("connects")
}

/// Waits up to `limit` for `done`.
fn within(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A connection to a scripted server, handed over to a manager's loop: the manager, the
/// server, what the connection heard, the connection, the server's end of it, and how many
/// messages (`m001`, `m002` …) the server sent until the loop handled one.
fn handed_over() -> (
    ManagerHandle,
    Server,
    Arc<Heard>,
    Arc<Conn>,
    TcpStream,
    usize,
) {
    let (m, link) = manager();
    let server = server();
    let heard = Arc::new(Heard::default());
    let conn = connect(&server, &heard);
    conn.read_on_loop(link);
    let mut socket = server.first.lock().unwrap().take().expect("connected");
    // The hand-over happens at the reader thread's next input: send until the loop has one.
    let mut sent = 0;
    let done = within(Duration::from_secs(10), || {
        sent += 1;
        socket
            .write_all(format!("MSG inbox.x 1 4\r\nm{sent:03}\r\n").as_bytes())
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
        heard
            .messages
            .lock()
            .unwrap()
            .iter()
            .any(|(_, t)| on_loop(t))
    });
    assert!(done, "{:?}", heard.messages.lock().unwrap());
    (m, server, heard, conn, socket, sent)
}

fn on_loop(thread: &str) -> bool {
    thread.starts_with("depot-manager")
}

#[test]
fn once_handed_over_messages_are_handled_on_the_managers_loop() {
    let (m, _server, heard, conn, mut socket, sent) = handed_over();
    // From then on every message is the loop's, whole and in order, even one split in two.
    socket.write_all(b"MSG inbox.x 1 4\r\nla").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    socket.write_all(b"st\r\n").unwrap();
    assert!(within(Duration::from_secs(5), || heard
        .messages
        .lock()
        .unwrap()
        .last()
        .is_some_and(|(p, _)| p == "last")));
    let messages = heard.messages.lock().unwrap().clone();
    let first_on_loop = messages.iter().position(|(_, t)| on_loop(t)).unwrap();
    assert!(
        messages[first_on_loop..].iter().all(|(_, t)| on_loop(t)),
        "{messages:?}"
    );
    let payloads: Vec<&str> = messages.iter().map(|(p, _)| p.as_str()).collect();
    let mut expected: Vec<String> = (1..=sent).map(|i| format!("m{i:03}")).collect();
    expected.push("last".into());
    assert_eq!(payloads, expected);
    assert!(heard.lost.lock().unwrap().is_empty());
    conn.close();
    m.shutdown().unwrap();
}

#[test]
fn a_silent_server_is_found_out_while_the_loop_reads() {
    let (m, server, heard, conn, _socket, _) = handed_over();
    server.answering.store(false, Ordering::SeqCst);
    // Three silences of the read timeout (2 s) and the connection is given up.
    assert!(
        within(Duration::from_secs(15), || !heard
            .lost
            .lock()
            .unwrap()
            .is_empty()),
        "the silent server was never found out"
    );
    assert_eq!(
        heard.lost.lock().unwrap()[0],
        format!("{}: the server stopped answering", server.address)
    );
    conn.close();
    m.shutdown().unwrap();
}
