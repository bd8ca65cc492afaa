//! Sealed frames over real sockets: a TCP relay between a real client and a real manager
//! records every byte, and can flip one bit of one frame on its way to the manager.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use depot_std::{Client, ConnectOptions, Encryption, Error, Manager, ManagerHandle};

const KEY: &[u8] = b"a key of 32 bytes, or near it...";
const ITEM: &[u8] = b"RECOGNISABLE-ITEM: the launch code is 0000-1234-5678";

/// The client's frames: hello, proof, `Open`, then the `Put`.
const PUT_FRAME: usize = 3;

fn start(encryption: Encryption) -> ManagerHandle {
    Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(KEY)
        .raw_queue("q", 100)
        .encryption(encryption)
        .start()
        .expect("manager starts")
}

/// Flip bit `bit` of the body of the client's frame number `frame` (0: the hello).
#[derive(Clone, Copy)]
struct Flip {
    frame: usize,
    bit: usize,
}

/// One relayed connection: what went each way, as far as it went.
struct Relay {
    addr: SocketAddr,
    to_manager: Arc<Mutex<Vec<u8>>>,
    to_client: Arc<Mutex<Vec<u8>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Relay {
    /// Listens for one client and relays it to `manager`.
    fn start(manager: SocketAddr, flip: Option<Flip>) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let to_manager = Arc::new(Mutex::new(Vec::new()));
        let to_client = Arc::new(Mutex::new(Vec::new()));
        let (up, down) = (to_manager.clone(), to_client.clone());
        let accept = thread::spawn(move || {
            let (client, _) = listener.accept().unwrap();
            let server = TcpStream::connect(manager).unwrap();
            // A relay must not add Nagle's delays to the protocol's round trips.
            client.set_nodelay(true).unwrap();
            server.set_nodelay(true).unwrap();
            let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let back = thread::spawn(move || copy_bytes(s2, c2, &down));
            // Frame by frame, so one frame can be altered before it goes on.
            let _ = copy_frames(client, server, &up, flip);
            let _ = back.join();
        });
        Relay {
            addr,
            to_manager,
            to_client,
            threads: vec![accept],
        }
    }

    /// Waits for both directions to end; returns (client → manager, manager → client).
    fn finish(mut self) -> (Vec<u8>, Vec<u8>) {
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
        let up = self.to_manager.lock().unwrap().clone();
        let down = self.to_client.lock().unwrap().clone();
        (up, down)
    }
}

fn copy_bytes(mut from: TcpStream, mut to: TcpStream, seen: &Mutex<Vec<u8>>) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 {
            break;
        }
        seen.lock().unwrap().extend_from_slice(&buf[..n]);
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn copy_frames(
    mut from: TcpStream,
    mut to: TcpStream,
    seen: &Mutex<Vec<u8>>,
    flip: Option<Flip>,
) -> io::Result<()> {
    let result = (0..).try_for_each(|n: usize| {
        let mut frame = vec![0u8; 4];
        from.read_exact(&mut frame)?;
        let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        frame.resize(4 + len, 0);
        from.read_exact(&mut frame[4..])?;
        seen.lock().unwrap().extend_from_slice(&frame);
        if let Some(f) = flip.filter(|f| f.frame == n) {
            frame[4 + f.bit / 8] ^= 1 << (f.bit % 8);
        }
        to.write_all(&frame)
    });
    let _ = to.shutdown(Shutdown::Write);
    result
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Puts and gets `ITEM` through a relay; returns the bytes each way.
fn put_and_get_through_relay(
    manager: Encryption,
    client: Encryption,
) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let m = start(manager);
    let relay = Relay::start(m.address(), None);
    let options = ConnectOptions::new().encryption(client);
    let c = Client::connect_with(relay.addr, KEY, &options)?;
    let q = c.raw_queue("q")?;
    q.put(ITEM)?;
    assert_eq!(q.get()?, ITEM);
    drop(q);
    drop(c);
    Ok(relay.finish())
}

/// With encryption on (the default on both sides) the item crosses the wire in neither
/// direction in the clear; with the client's encryption off it does, both ways — so the
/// relay does see items when they are there to see.
#[test]
fn a_sealed_put_does_not_show_the_item_on_the_wire() {
    let (up, down) = put_and_get_through_relay(Encryption::default(), Encryption::default())
        .expect("sealed put and get");
    assert!(up.len() > ITEM.len() && down.len() > ITEM.len());
    assert!(!contains(&up, ITEM), "the put's item crossed in the clear");
    assert!(
        !contains(&down, ITEM),
        "the get's item crossed in the clear"
    );
    assert!(!contains(&up, b"RECOGNISABLE"));

    let (up, down) = put_and_get_through_relay(Encryption::default(), Encryption::Off)
        .expect("MACed put and get");
    assert!(
        contains(&up, ITEM),
        "unsealed, the put's item is on the wire"
    );
    assert!(
        contains(&down, ITEM),
        "unsealed, the get's item is on the wire"
    );
}

/// Flipping any bit of a sealed `Put` frame's body (ciphertext or tag) on its way to the
/// manager closes the connection with "frame failed its integrity check" (`BadMac`), and
/// nothing is queued.
#[test]
fn any_flipped_bit_of_a_sealed_put_closes_with_bad_mac() {
    let m = start(Encryption::Required);
    let observer = Client::connect(m.address(), KEY).unwrap();
    let q = observer.raw_queue("q").unwrap();
    // The length of the put's frame body, from one clean run.
    let relay = Relay::start(m.address(), None);
    {
        let c = Client::connect(relay.addr, KEY).unwrap();
        c.raw_queue("q").unwrap().put(ITEM).unwrap();
    }
    let (up, _) = relay.finish();
    assert_eq!(q.get().unwrap(), ITEM);
    let body_len = frame_body_len(&up, PUT_FRAME);
    assert!(body_len > ITEM.len() + 16);
    for bit in 0..body_len * 8 {
        let relay = Relay::start(
            m.address(),
            Some(Flip {
                frame: PUT_FRAME,
                bit,
            }),
        );
        let c = Client::connect(relay.addr, KEY).unwrap();
        let tampered = c.raw_queue("q").unwrap();
        let err = tampered.put(ITEM).expect_err("a tampered put succeeded");
        let text = err.to_string();
        assert!(
            text.contains("frame failed its integrity check"),
            "bit {bit}: {text}"
        );
        drop(tampered);
        drop(c);
        relay.finish();
        assert_eq!(q.qsize().unwrap(), 0, "bit {bit}: the put ran");
    }
}

/// The body length of the client's frame number `n` in the bytes it sent.
fn frame_body_len(stream: &[u8], n: usize) -> usize {
    let mut at = 0;
    for _ in 0..n {
        at += 4 + u32::from_be_bytes(stream[at..at + 4].try_into().unwrap()) as usize;
    }
    u32::from_be_bytes(stream[at..at + 4].try_into().unwrap()) as usize
}

/// A manager that requires encryption refuses a client that does not encrypt, and a client
/// that requires it refuses a manager that does not; both with one clear line.
#[test]
fn required_encryption_refuses_a_peer_that_will_not_seal() {
    let m = start(Encryption::Required);
    let off = ConnectOptions::new().encryption(Encryption::Off);
    let err = Client::connect_with(m.address(), KEY, &off).expect_err("refused");
    assert!(err.to_string().contains("encryption required"), "{err}");
    // The manager still serves clients that encrypt.
    let c = Client::connect(m.address(), KEY).unwrap();
    c.raw_queue("q").unwrap().put(b"sealed").unwrap();

    let m = start(Encryption::Off);
    let required = ConnectOptions::new()
        .encryption(Encryption::Required)
        .timeout(Duration::from_secs(5));
    let err = Client::connect_with(m.address(), KEY, &required).expect_err("refused");
    assert!(err.to_string().contains("encryption required"), "{err}");
    // Preferred goes on without it.
    let c = Client::connect(m.address(), KEY).unwrap();
    c.raw_queue("q").unwrap().put(b"maced").unwrap();
}

/// Where the CPU has AES instructions, a client and a manager of this build seal with
/// AES-256-GCM (protocol version 4: the challenge says so), else with ChaCha20-Poly1305; with
/// the client's encryption off, MACed frames. Items never cross in the clear when sealed.
#[test]
fn sealing_uses_aes_gcm_where_the_cpu_has_it() {
    use depot_std::Sealing;
    #[cfg(target_arch = "x86_64")]
    let aes = is_x86_feature_detected!("aes") && is_x86_feature_detected!("pclmulqdq");
    #[cfg(target_arch = "aarch64")]
    let aes = std::arch::is_aarch64_feature_detected!("aes");
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let aes = false;
    let (want, version) = match aes {
        true => (Sealing::Aes256Gcm, 4),
        false => (Sealing::ChaCha20Poly1305, 3),
    };
    let m = start(Encryption::default());
    let c = Client::connect(m.address(), KEY).expect("connects");
    assert_eq!(c.sealing(), Some(want));
    let off = ConnectOptions::new().encryption(Encryption::Off);
    let plain = Client::connect_with(m.address(), KEY, &off).expect("connects");
    assert_eq!(plain.sealing(), Some(Sealing::Mac));

    let (up, down) = put_and_get_through_relay(Encryption::default(), Encryption::default())
        .expect("sealed put and get");
    // The challenge (after the greeting a Python client would look for): variant 0, then the
    // version chosen.
    let mut at = 0;
    let challenge = loop {
        let len = u32::from_be_bytes(down[at..at + 4].try_into().unwrap()) as usize;
        let body = &down[at + 4..at + 4 + len];
        if !body.starts_with(b"#CHALLENGE#") {
            break body;
        }
        at += 4 + len;
    };
    assert_eq!(
        challenge[..2],
        [0, version],
        "the version the manager chose"
    );
    assert!(!contains(&up, ITEM) && !contains(&down, ITEM));
}
