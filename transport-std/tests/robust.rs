//! Misbehaving peers, limits and configuration errors, over real sockets on 127.0.0.1.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use depot_std::{Client, Error, ErrorCode, Manager, ManagerHandle, QueueOptions};

const KEY: &[u8] = b"producer";

fn start(max_connections: usize) -> ManagerHandle {
    Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(KEY)
        .raw_queue("task_queue", 100)
        .max_connections(max_connections)
        .start()
        .expect("manager starts")
}

#[test]
fn client_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Client>();
    check::<depot_std::RawQueue>();
    check::<depot_std::Queue<String>>();
}

#[test]
fn garbage_and_silence_do_not_hurt_others() {
    let m = start(16);
    let good = Client::connect(m.address(), KEY).unwrap();
    let q = good.raw_queue("task_queue").unwrap();
    // Not depot at all.
    let mut junk = TcpStream::connect(m.address()).unwrap();
    junk.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    // A frame header announcing 4 GiB.
    let mut huge = TcpStream::connect(m.address()).unwrap();
    huge.write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]).unwrap();
    // Connected and silent; then gone mid-frame.
    let silent = TcpStream::connect(m.address()).unwrap();
    let mut half = TcpStream::connect(m.address()).unwrap();
    half.write_all(&[0, 0, 0, 42, b'd']).unwrap();
    drop(half);
    q.put(b"still fine").unwrap();
    assert_eq!(q.get().unwrap(), b"still fine");
    // The bad peers are told and dropped: reading ends (at the end of the stream, or with a
    // reset when the manager closed with their bytes unread), never by our timeout.
    for (name, mut s) in [("junk", junk), ("huge", huge)] {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = Vec::new();
        if let Err(e) = s.read_to_end(&mut buf) {
            assert!(
                !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                "{name}: the manager kept the connection open: {e}"
            );
        }
    }
    drop(silent);
    assert_eq!(q.qsize().unwrap(), 0);
    m.shutdown().unwrap();
}

#[test]
fn busy_manager_refuses_clearly() {
    let m = start(1);
    let first = Client::connect(m.address(), KEY).unwrap();
    let e = Client::connect(m.address(), KEY).unwrap_err();
    assert!(matches!(e, Error::Disconnected { .. }), "{e:?}");
    assert!(e.to_string().contains("no room"), "{e}");
    drop(first);
    // The slot comes back once the first client is gone.
    let mut ok = false;
    for _ in 0..50 {
        if Client::connect(m.address(), KEY).is_ok() {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(ok);
    m.shutdown().unwrap();
}

#[test]
fn create_stat_and_status() {
    let m = Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(KEY)
        .raw_queue("task_queue", 10)
        .allow_create(
            2,
            QueueOptions {
                capacity: 50,
                max_item: 1024,
                storage_bytes: None,
                mode: depot_std::QueueMode::Raw,
            },
        )
        .max_connections(8)
        .start()
        .unwrap();
    let c = Client::connect(m.address(), KEY).unwrap();
    let q = c.create_queue("results", 20, 100).unwrap();
    assert_eq!((q.capacity(), q.max_item()), (20, 100));
    // exist_ok: the same queue again. It holds values: 1 is one (CBOR 0x01), "r" is not.
    let again = c.create_queue("results", 20, 100).unwrap();
    again.put(b"\x01").unwrap();
    assert!(matches!(
        again.put(b"r"),
        Err(Error::Request {
            code: ErrorCode::InvalidValue,
            ..
        })
    ));
    assert!(matches!(
        c.create_queue("bad\nname", 1, 1),
        Err(Error::Request {
            code: ErrorCode::InvalidName,
            ..
        })
    ));
    let stat = c.stat().unwrap();
    let names: Vec<_> = stat.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["task_queue", "results"]);
    assert_eq!(
        (stat[1].len, stat[1].capacity, stat[1].total_put),
        (1, 20, 1)
    );
    assert_eq!(stat[1].mode, depot_std::QueueMode::Value);
    let status = c.status().unwrap();
    assert_eq!(status.connections, 1);
    assert_eq!(status.max_connections, 8);
    assert_eq!(status.objects, 2);
    m.shutdown().unwrap();
}

#[test]
fn configuration_errors() {
    let no_key = Manager::builder().listen("127.0.0.1:0").start();
    assert!(matches!(no_key, Err(Error::Config(_))));
    let bad = Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(KEY)
        .raw_queue("", 1)
        .start();
    assert!(
        matches!(&bad, Err(Error::Config(m)) if m.contains("invalid queue name")),
        "{bad:?}"
    );
    let zero = Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(KEY)
        .raw_queue("q", 0)
        .start();
    assert!(matches!(zero, Err(Error::Config(_))));
    let twice = Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(KEY)
        .raw_queue("q", 1)
        .raw_queue("q", 2)
        .start();
    assert!(matches!(twice, Err(Error::Config(_))));
    let m = start(4);
    let taken = Manager::builder()
        .listen(m.address())
        .authkey(KEY)
        .raw_queue("q", 1)
        .start()
        .unwrap_err();
    assert!(taken.to_string().contains("cannot listen on"), "{taken}");
    m.shutdown().unwrap();
}

#[test]
fn large_items_round_trip() {
    let m = Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(KEY)
        .queue_with(
            "big",
            QueueOptions {
                capacity: 4,
                max_item: 1 << 20,
                storage_bytes: None,
                mode: depot_std::QueueMode::Raw,
            },
        )
        .max_connections(8)
        .start()
        .unwrap();
    let c = Client::connect(m.address(), KEY).unwrap();
    let q = c.raw_queue("big").unwrap();
    let item: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    q.put(&item).unwrap();
    q.put(&item[..1000]).unwrap();
    assert_eq!(q.get().unwrap(), item);
    assert_eq!(q.get().unwrap(), &item[..1000]);
    let e = q.put(&vec![0; (1 << 20) + 1]).unwrap_err();
    assert!(matches!(e, Error::TooLarge { .. }), "{e:?}");
    m.shutdown().unwrap();
}
