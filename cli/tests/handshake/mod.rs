//! A depot handshake written from PROTOCOL.md §4 and §13, over a socket bound to a chosen
//! source address: the tests that need a second source (127.0.0.2) cannot use `Client`,
//! which lets the system pick it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use sha2::{Digest, Sha256};

/// A TCP connection to `to` from the address `source` (any port).
pub fn connect_from(source: [u8; 4], to: &str) -> TcpStream {
    let to: SocketAddr = to.parse().unwrap();
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((source, 0)).into()).unwrap();
    socket.connect(&to.into()).unwrap();
    socket.into()
}

fn read_frame(stream: &mut TcpStream) -> Result<Vec<u8>, String> {
    loop {
        let mut header = [0u8; 4];
        stream
            .read_exact(&mut header)
            .map_err(|e| format!("closed: {e}"))?;
        let len = u32::from_be_bytes(header) as usize;
        if len > 128 {
            return Err(format!("a handshake frame of {len} bytes"));
        }
        let mut body = vec![0u8; len];
        stream
            .read_exact(&mut body)
            .map_err(|e| format!("closed: {e}"))?;
        // The Python-style greeting every depot client skips (§12).
        if !body.starts_with(b"#CHALLENGE#") {
            return Ok(body);
        }
    }
}

/// Runs the client side of a handshake naming key `name` and proving `key`: `Ok(true)` if the
/// manager welcomed it with a proof that verifies, `Ok(false)` for `AuthFailed`, `Err` when it
/// was refused or closed before a verdict.
pub fn handshake(mut stream: TcpStream, name: &str, key: &[u8]) -> Result<bool, String> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut hello = b"dpot".to_vec();
    hello.extend_from_slice(&[3, 3]);
    let nonce = depot_core::auth::hmac_sha256(b"nonce", &rand_ish());
    hello.extend_from_slice(&nonce);
    hello.extend_from_slice(&[0x80, 0x80, 0x04]); // max_frame 65536, a varint
    hello.push(name.len() as u8);
    hello.extend_from_slice(name.as_bytes());
    hello.push(0); // encrypt: false (frames MACed, PROTOCOL.md §5)
    let mut frame = (hello.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&hello);
    stream
        .write_all(&frame)
        .map_err(|e| format!("closed: {e}"))?;
    let challenge = read_frame(&mut stream)?;
    if challenge.first() != Some(&0) {
        return Err(format!("refused: {challenge:?}"));
    }
    assert_eq!(challenge[1], 3, "a version 3 challenge");
    let transcript: [u8; 32] = Sha256::new()
        .chain_update(&hello)
        .chain_update(&challenge)
        .finalize()
        .into();
    let derive = |label: &[u8]| {
        let mut data = label.to_vec();
        data.push(0);
        data.extend_from_slice(&transcript);
        depot_core::auth::hmac_sha256(key, &data)
    };
    let mut proof = vec![0, 0, 0, 32];
    proof.extend_from_slice(&derive(b"depot/1 client proof"));
    stream
        .write_all(&proof)
        .map_err(|e| format!("closed: {e}"))?;
    let verdict = read_frame(&mut stream)?;
    match verdict.first() {
        Some(0) => {
            assert_eq!(verdict[1..], derive(b"depot/1 manager proof"));
            Ok(true)
        }
        Some(1) => Ok(false),
        _ => Err(format!("a verdict of {verdict:?}")),
    }
}

/// Bytes that differ from call to call (a nonce needs no more in a test).
fn rand_ish() -> Vec<u8> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{t}/{}/{n}", std::process::id()).into_bytes()
}
