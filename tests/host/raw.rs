//! A from-scratch depot client over a plain `TcpStream`, written from PROTOCOL.md (with the
//! core's message types and its HMAC primitive), for the tests that must misbehave on the wire
//! in ways the real client never would: stop mid-frame, dribble bytes, flood requests.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use depot::core::auth::hmac_sha256;
use depot::core::wire::{
    ClientHello, ClientProof, Handle, Message, Op, Reply, Request, ServerHello, ServerVerdict,
    MAGIC, NONCE_LEN, TAG_LEN, VERSION,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// An authenticated session on a raw socket.
pub struct Session {
    pub stream: TcpStream,
    k_c2m: [u8; 32],
    k_m2c: [u8; 32],
    tx_seq: u64,
    rx_seq: u64,
    /// The largest frame body the manager accepts.
    pub server_max_frame: u32,
    next_id: u32,
}

fn nonce() -> [u8; NONCE_LEN] {
    // Fresh enough for a test: the clock, the pid and a counter, hashed.
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let seed = format!("{t}/{}/{n}", std::process::id());
    hmac_sha256(b"test nonce", seed.as_bytes())
}

/// HMAC(authkey, label ‖ 0 ‖ transcript).
fn derive(key: &[u8], label: &[u8], transcript: &[u8; 32]) -> [u8; 32] {
    let mut data = Vec::with_capacity(label.len() + 1 + 32);
    data.extend_from_slice(label);
    data.push(0);
    data.extend_from_slice(transcript);
    hmac_sha256(key, &data)
}

/// A handshake frame: length and the postcard body, no MAC.
pub fn plain_frame<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut buf = [0u8; 256];
    let body = postcard::to_slice(msg, &mut buf).expect("encode handshake message");
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    frame
}

/// A ClientHello frame with a fresh nonce; returns the frame and the nonce.
pub fn hello_frame() -> (Vec<u8>, [u8; NONCE_LEN]) {
    let nonce = nonce();
    let hello = ClientHello {
        magic: MAGIC,
        min_version: VERSION,
        max_version: VERSION,
        nonce,
        max_frame: 1 << 20,
        key: Default::default(),
        // This client writes MACed frames (PROTOCOL.md §5), not sealed ones.
        encrypt: false,
    };
    (plain_frame(&hello), nonce)
}

/// Reads a handshake frame; returns the message and its body as received. A depot manager
/// greets every connection with a Python-style challenge first (PROTOCOL.md §12): skipped.
fn read_plain<T: DeserializeOwned>(stream: &mut TcpStream) -> io::Result<(T, Vec<u8>)> {
    let body = loop {
        let mut header = [0u8; 4];
        stream.read_exact(&mut header)?;
        let len = u32::from_be_bytes(header) as usize;
        assert!(len <= 128, "handshake frame of {len} bytes");
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body)?;
        if !body.starts_with(b"#CHALLENGE#") {
            break body;
        }
    };
    let (msg, rest) = postcard::take_from_bytes::<T>(&body).expect("decode handshake message");
    assert!(rest.is_empty(), "trailing bytes in a handshake frame");
    Ok((msg, body))
}

impl Session {
    /// Connects and runs the handshake; `Err` carries what went wrong.
    pub fn connect(addr: SocketAddr, authkey: &[u8]) -> Result<Session, String> {
        let mut stream =
            TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let (hello, _) = hello_frame();
        stream.write_all(&hello).map_err(|e| e.to_string())?;
        let (challenge, challenge_body) =
            read_plain::<ServerHello>(&mut stream).map_err(|e| e.to_string())?;
        let server_max_frame = match challenge {
            ServerHello::Challenge {
                version, max_frame, ..
            } => {
                assert_eq!(version, VERSION);
                max_frame
            }
            ServerHello::Reject(r) => return Err(format!("rejected: {r:?}")),
        };
        // transcript = SHA-256(ClientHello body ‖ Challenge body), as sent and received.
        let mut sha = Sha256::new();
        sha.update(&hello[4..]);
        sha.update(&challenge_body);
        let transcript: [u8; 32] = sha.finalize().into();
        let proof = derive(authkey, b"depot/1 client proof", &transcript);
        stream
            .write_all(&plain_frame(&ClientProof { proof }))
            .map_err(|e| e.to_string())?;
        match read_plain::<ServerVerdict>(&mut stream) {
            Ok((ServerVerdict::Welcome { proof }, _)) => {
                let expected = derive(authkey, b"depot/1 manager proof", &transcript);
                assert_eq!(proof, expected, "the manager's proof does not verify");
            }
            Ok((ServerVerdict::AuthFailed, _)) => return Err("auth failed".into()),
            Err(e) => return Err(e.to_string()),
        }
        Ok(Session {
            stream,
            k_c2m: derive(authkey, b"depot/1 client->manager", &transcript),
            k_m2c: derive(authkey, b"depot/1 manager->client", &transcript),
            tx_seq: 0,
            rx_seq: 0,
            server_max_frame,
            next_id: 1,
        })
    }

    /// Encodes one request (a fresh id) into `out`, without framing.
    pub fn encode_request(&mut self, op: Op<'_>, out: &mut Vec<u8>) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        let mut buf = vec![0u8; 64 + op_len(&op)];
        let msg = postcard::to_slice(&Request { id, op }, &mut buf).expect("encode request");
        out.extend_from_slice(msg);
        id
    }

    /// Frames `messages` (header, messages, tag) for the next sequence number.
    pub fn frame(&mut self, messages: &[u8]) -> Vec<u8> {
        let header = ((messages.len() + TAG_LEN) as u32).to_be_bytes();
        let mut mac_input = Vec::with_capacity(12 + messages.len());
        mac_input.extend_from_slice(&self.tx_seq.to_be_bytes());
        mac_input.extend_from_slice(&header);
        mac_input.extend_from_slice(messages);
        let tag = hmac_sha256(&self.k_c2m, &mac_input);
        self.tx_seq += 1;
        let mut frame = header.to_vec();
        frame.extend_from_slice(messages);
        frame.extend_from_slice(&tag[..TAG_LEN]);
        frame
    }

    /// Sends one request in its own frame; returns its id.
    pub fn send(&mut self, op: Op<'_>) -> u32 {
        let mut msgs = Vec::new();
        let id = self.encode_request(op, &mut msgs);
        let frame = self.frame(&msgs);
        self.stream.write_all(&frame).expect("send request");
        id
    }

    /// Reads one frame, checks its tag, and hands each message to `f`.
    pub fn read_frame(&mut self, mut f: impl FnMut(Message<'_>)) -> io::Result<()> {
        let mut header = [0u8; 4];
        self.stream.read_exact(&mut header)?;
        let len = u32::from_be_bytes(header) as usize;
        assert!(len >= TAG_LEN, "frame shorter than a tag");
        let mut body = vec![0u8; len];
        self.stream.read_exact(&mut body)?;
        let (mut msgs, tag) = body.split_at(len - TAG_LEN);
        let mut mac_input = self.rx_seq.to_be_bytes().to_vec();
        mac_input.extend_from_slice(&header);
        mac_input.extend_from_slice(msgs);
        assert_eq!(
            &hmac_sha256(&self.k_m2c, &mac_input)[..TAG_LEN],
            tag,
            "the manager's frame tag does not verify"
        );
        self.rx_seq += 1;
        while !msgs.is_empty() {
            let (msg, rest) =
                postcard::take_from_bytes::<Message<'_>>(msgs).expect("decode manager message");
            f(msg);
            msgs = rest;
        }
        Ok(())
    }

    /// Sends `op` and waits for its reply, calling `f` with it.
    pub fn call<R>(&mut self, op: Op<'_>, f: impl Fn(Reply<'_>) -> R) -> R {
        let id = self.send(op);
        let mut out = None;
        while out.is_none() {
            self.read_frame(|m| {
                if let Message::Reply { id: rid, reply } = m {
                    if rid == id {
                        out = Some(f(reply));
                    }
                }
            })
            .expect("read reply");
        }
        out.unwrap()
    }

    /// Opens a queue by name.
    pub fn open(&mut self, name: &str) -> Handle {
        self.call(Op::Open { name }, |r| match r {
            Reply::Opened(info) => info.handle,
            other => panic!("open {name}: {other:?}"),
        })
    }
}

fn op_len(op: &Op<'_>) -> usize {
    match op {
        Op::Put { item, .. } => item.len(),
        Op::Open { name } | Op::Create { name, .. } => name.len(),
        _ => 0,
    }
}

/// Whether the peer has closed `stream`: reads (discarding data) until EOF or a reset, for at
/// most `timeout`. True when closed in time.
pub fn closed_within(stream: &mut TcpStream, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        stream
            .set_read_timeout(Some(left.min(Duration::from_millis(100))))
            .expect("set_read_timeout");
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}
