//! `Client::backend_status` over a real manager: `None` when the manager keeps its queues
//! itself, else the health its backend reports through its link (kind, server, connected,
//! since when, connections lost, last error), for the blocking and the tokio client.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use depot_std::backend::{Backend, BackendLink, BackendRequest, StartBackend};
use depot_std::{Client, Manager, ManagerHandle};

const KEY: &[u8] = b"backend-health-key";

/// A backend that keeps nothing: the test reports its connection through the link.
struct Idle;

impl Backend for Idle {
    fn request(&mut self, _: BackendRequest<'_>) {}
}

fn with_backend() -> (ManagerHandle, BackendLink) {
    let link = Arc::new(Mutex::new(None));
    let keep = link.clone();
    let start: Arc<StartBackend> = Arc::new(move |l: BackendLink, _: &[_]| {
        *keep.lock().unwrap() = Some(l);
        Ok(Box::new(Idle) as Box<dyn Backend>)
    });
    let m = Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(KEY)
        .backend("test", start)
        .start()
        .expect("manager starts");
    let link = link.lock().unwrap().clone().expect("the backend started");
    (m, link)
}

#[test]
fn a_manager_without_a_backend_says_so() {
    let m = Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(KEY)
        .raw_queue("q", 4)
        .start()
        .unwrap();
    let c = Client::connect(m.address(), KEY).unwrap();
    assert_eq!(c.backend_status().unwrap(), None);
    // Not an error: the connection goes on.
    c.raw_queue("q").unwrap().put(b"x").unwrap();
    m.shutdown().unwrap();
}

#[test]
fn the_backend_reports_connected_lost_and_found_again() {
    let (m, link) = with_backend();
    let c = Client::connect(m.address(), KEY).unwrap();
    let health = || c.backend_status().unwrap().expect("a backend");

    let h = health();
    assert_eq!(h.kind, "test");
    assert_eq!(
        (h.connected, h.server.as_str(), h.reconnects),
        (false, "", 0)
    );

    link.health().connected("10.1.2.3:4222");
    let h = health();
    assert_eq!(
        (h.connected, h.server.as_str(), h.reconnects),
        (true, "10.1.2.3:4222", 0)
    );
    assert_eq!(h.last_error, "");

    std::thread::sleep(Duration::from_millis(50));
    link.health()
        .disconnected("the server closed the connection");
    let h = health();
    assert_eq!(
        (h.connected, h.server.as_str(), h.reconnects),
        (false, "10.1.2.3:4222", 1)
    );
    assert_eq!(h.last_error, "the server closed the connection");
    assert!(h.since < Duration::from_secs(5), "{:?}", h.since);
    std::thread::sleep(Duration::from_millis(120));
    assert!(health().since >= Duration::from_millis(100));

    // A text longer than the wire carries is cut.
    link.health().connected(&"s".repeat(300));
    let h = health();
    assert!(h.connected);
    assert_eq!(h.server, "s".repeat(depot_core::wire::MAX_BACKEND_SERVER));
    m.shutdown().unwrap();
}

#[cfg(feature = "tokio")]
#[::tokio::test]
async fn the_tokio_client_reads_the_same_health() {
    let (m, link) = with_backend();
    link.health().connected("10.1.2.3:4222");
    let c = depot_std::tokio::Client::connect(m.address(), KEY)
        .await
        .unwrap();
    let h = c.backend_status().await.unwrap().expect("a backend");
    assert_eq!(
        (h.kind.as_str(), h.connected, h.server.as_str()),
        ("test", true, "10.1.2.3:4222")
    );
    m.shutdown().unwrap();
}
