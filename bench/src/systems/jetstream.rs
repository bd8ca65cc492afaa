//! NATS JetStream: depot gateways whose queue lives in a JetStream stream
//! (`depot+jetstream`), next to plain NATS clients doing the same work on the same server
//! (`nats-jetstream`): publish and wait for the PubAck, pull one message and ack it; pipelined
//! (e), publish many with their PubAcks outstanding, pull batches and ack each item. Both start
//! their own `nats-server -js` (DEPOT_BENCH_NATS_SERVER, or `nats-server` on PATH).

use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use depot::{Client, Encryption, Manager, QueueOptions, RawQueue};
use depot_nats::conn::{Auth, Conn, Handler, Msg, Options};

use super::depot::{AUTHKEY, BATCH, QUEUE};
use crate::system::{Measurement, Outcome, System, Transfer};
use crate::threaded::{self, QueueClient};

const LEASE: Duration = Duration::from_secs(600);
const WAIT: Duration = Duration::from_secs(30);

fn server_path() -> String {
    std::env::var("DEPOT_BENCH_NATS_SERVER").unwrap_or_else(|_| "nats-server".into())
}

fn check_server() -> Result<(), String> {
    Command::new(server_path())
        .arg("--version")
        .output()
        .map(|_| ())
        .map_err(|e| format!("nats-server not found ({e}); tests/install installs it"))
}

/// A `nats-server -js` with a store of its own, stopped and removed on drop.
struct NatsServer {
    child: Child,
    dir: std::path::PathBuf,
    addr: String,
}

impl NatsServer {
    fn start() -> Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir =
            std::env::temp_dir().join(format!("depot-bench-nats-{}-{port}", std::process::id()));
        let child = Command::new(server_path())
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nats-server")?;
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&addr).is_err() {
            if Instant::now() > deadline {
                bail!("nats-server did not listen on {addr}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(NatsServer { child, dir, addr })
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// depot clients on a depot gateway (in this process) over JetStream; `read_ahead` off:
/// `depot+jetstream-direct`, every get asks JetStream.
pub struct DepotJetStream {
    pub read_ahead: bool,
}

impl System for DepotJetStream {
    fn name(&self) -> &'static str {
        if self.read_ahead {
            "depot+jetstream"
        } else {
            "depot+jetstream-direct"
        }
    }

    fn clients(&self) -> &'static str {
        "threads, one depot connection each, to a gateway (in-process) over nats-server -js; \
         consumers get_leased + ack_nowait"
    }

    fn check(&mut self) -> Result<(), String> {
        check_server()
    }

    fn transfer(&mut self, shape: &Transfer) -> Outcome {
        if shape.pipelined && (shape.producers != 1 || shape.consumers != 1) {
            return Ok(None);
        }
        let nats = NatsServer::start()?;
        let mut opts = depot_nats::JetStreamOptions::new(vec![nats.addr.clone()]);
        opts.prefix = format!("DEPOT_{}_", std::process::id());
        if !self.read_ahead {
            opts.read_ahead = Duration::ZERO;
        }
        let queue = QueueOptions {
            capacity: (shape.items + shape.producers * shape.consumers + 16) as u32,
            max_item: shape.item_size.max(1) as u32,
            // The items live in JetStream: the gateway keeps none.
            storage_bytes: Some(shape.item_size.max(1) + 16),
            mode: depot::QueueMode::Raw,
        };
        let gateway = Manager::builder()
            .listen("127.0.0.1:0")
            .authkey(AUTHKEY)
            .queue_with(QUEUE, queue)
            .backend("nats", depot_nats::backend(opts))
            .start()
            .context("starting the gateway")?;
        let addr = gateway.address().to_string();
        if shape.pipelined {
            let m = super::depot::pipelined(&addr, shape, Encryption::default())?;
            gateway.shutdown()?;
            return Ok(Some(m.with_note(format!(
                "via a gateway: one put_many of all items, get_many of {BATCH}"
            ))));
        }
        let m = threaded::transfer(shape, || {
            let client = Client::connect(addr.as_str(), AUTHKEY)?;
            Ok(Gatewayed(client.raw_queue(QUEUE)?))
        })?;
        gateway.shutdown()?;
        Ok(Some(m.with_note(
            "RawQueue put / get_leased + ack_nowait via a gateway",
        )))
    }
}

struct Gatewayed(RawQueue);

impl QueueClient for Gatewayed {
    fn put(&mut self, item: &[u8]) -> Result<()> {
        Ok(self.0.put(item)?)
    }

    fn get(&mut self) -> Result<Vec<u8>> {
        let mut leased = self.0.get_leased(LEASE)?;
        let item = leased.take_items().pop().unwrap_or_default();
        leased.ack_nowait()?;
        Ok(item)
    }
}

/// Plain NATS clients on JetStream: publish + PubAck, pull + ack.
pub struct NatsJetStream;

impl System for NatsJetStream {
    fn name(&self) -> &'static str {
        "nats-jetstream"
    }

    fn clients(&self) -> &'static str {
        "threads, one NATS connection each (depot-nats's client) to nats-server -js; publish + \
         PubAck, pull one + ack (not waited for)"
    }

    fn check(&mut self) -> Result<(), String> {
        check_server()
    }

    fn transfer(&mut self, shape: &Transfer) -> Outcome {
        if shape.pipelined && (shape.producers != 1 || shape.consumers != 1) {
            return Ok(None);
        }
        let nats = NatsServer::start()?;
        let setup = Plain::connect(&nats.addr)?;
        let stream = format!("BENCH{}", std::process::id());
        let config = serde_json::json!({
            "name": stream, "subjects": [format!("bench.{stream}")], "retention": "workqueue",
            "storage": "file", "discard": "new",
        });
        setup.request(&format!("$JS.API.STREAM.CREATE.{stream}"), &config)?;
        let consumer = serde_json::json!({
            "stream_name": stream,
            "config": {"durable_name": "bench", "ack_policy": "explicit", "max_ack_pending": 100000},
        });
        setup.request(
            &format!("$JS.API.CONSUMER.DURABLE.CREATE.{stream}.bench"),
            &consumer,
        )?;
        let connect = || {
            let mut c = Plain::connect(&nats.addr)?;
            c.subject = format!("bench.{stream}");
            c.next = format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.bench");
            Ok(c)
        };
        if shape.pipelined {
            return plain_pipelined(shape, connect).map(Some);
        }
        let m = threaded::transfer(shape, connect)?;
        Ok(Some(m.with_note("publish + PubAck / pull + ack")))
    }
}

/// PubAcks a pipelined producer waits for at most.
const IN_FLIGHT: usize = BATCH;

/// (e) with plain clients: one publishes every item, up to [`IN_FLIGHT`] PubAcks outstanding;
/// the other pulls batches of [`BATCH`] (`expires`) and acks each item.
fn plain_pipelined(
    shape: &Transfer,
    connect: impl Fn() -> Result<Plain> + Sync,
) -> Result<Measurement> {
    let ready = Barrier::new(3);
    let go = Barrier::new(3);
    let item = threaded::item(shape.item_size);
    let (start, last) = std::thread::scope(|scope| {
        let producer = scope.spawn(|| -> Result<()> {
            let c = connect();
            ready.wait();
            go.wait();
            let c = c?;
            let reply = format!("{}.put", c.conn.inbox());
            let mut waiting = 0;
            for _ in 0..shape.items {
                c.conn.publish(&c.subject, Some(&reply), &item);
                waiting += 1;
                while waiting >= IN_FLIGHT {
                    c.pub_ack()?;
                    waiting -= 1;
                }
            }
            for _ in 0..waiting {
                c.pub_ack()?;
            }
            Ok(())
        });
        let consumer = scope.spawn(|| -> Result<Instant> {
            let c = connect();
            ready.wait();
            go.wait();
            let c = c?;
            let mut left = shape.items;
            while left > 0 {
                let batch = left.min(BATCH);
                let body = format!("{{\"batch\":{batch},\"expires\":{}}}", 5_000_000_000u64);
                c.conn
                    .publish(&c.next, Some(&c.pull_reply), body.as_bytes());
                let mut got = 0;
                while got < batch {
                    let (status, reply, payload) = c.rx.recv_timeout(WAIT).context("no message")?;
                    if status.is_some() {
                        // Expired (408) before the batch was full: ask again.
                        break;
                    }
                    if payload.len() != item.len() {
                        bail!("got an item of the wrong size");
                    }
                    if let Some(ack) = reply {
                        c.conn.publish(&ack, None, b"+ACK");
                    }
                    got += 1;
                }
                left -= got;
            }
            Ok(Instant::now())
        });
        crate::threaded::release_pair(&ready, &go, producer, consumer)
    })?;
    Ok(
        Measurement::rate(shape.items, last - start).with_note(format!(
            "publish, up to {IN_FLIGHT} PubAcks outstanding / pull batches of {BATCH} + ack each"
        )),
    )
}

/// Messages of one connection: (status, reply subject, payload).
type Delivery = (Option<u16>, Option<String>, Vec<u8>);

struct Inbox(Mutex<Sender<Delivery>>);

impl Handler for Inbox {
    fn message(&self, msg: Msg<'_>) {
        let _ = self.0.lock().map(|tx| {
            tx.send((
                msg.status,
                msg.reply.map(str::to_owned),
                msg.payload.to_vec(),
            ))
        });
    }
    fn connected(&self, _server: &str, _again: bool) {}
    fn disconnected(&self, _why: &str) {}
}

struct Plain {
    conn: Arc<Conn>,
    rx: Receiver<Delivery>,
    subject: String,
    next: String,
    /// A subscription for pulled messages (they arrive under their own subject).
    pull_reply: String,
}

impl Plain {
    fn connect(addr: &str) -> Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel();
        let opts = Options {
            servers: vec![addr.to_owned()],
            auth: Auth::None,
            name: "bench".into(),
            tls: None,
            // The reader blocks at once: measured faster for a plain client, whose caller
            // thread waits on a channel anyway (BENCHMARKS.md, gateways over JetStream).
            busy_poll: Duration::ZERO,
        };
        let conn = Conn::start(
            opts,
            Arc::new(Inbox(Mutex::new(tx))),
            Duration::from_secs(10),
        )?;
        let pull_reply = format!("{}_pull", conn.inbox().replace("_INBOX", "_BENCH"));
        conn.subscribe(&pull_reply);
        Ok(Plain {
            conn,
            rx,
            subject: String::new(),
            next: String::new(),
            pull_reply,
        })
    }

    fn request(&self, subject: &str, body: &serde_json::Value) -> Result<Vec<u8>> {
        let reply = format!("{}.api", self.conn.inbox());
        self.conn
            .publish(subject, Some(&reply), body.to_string().as_bytes());
        let (_, _, payload) = self.rx.recv_timeout(WAIT).context("no answer")?;
        if payload.windows(7).any(|w| w == b"\"error\"") {
            bail!("{subject}: {}", String::from_utf8_lossy(&payload));
        }
        Ok(payload)
    }

    /// Waits for the next PubAck.
    fn pub_ack(&self) -> Result<()> {
        let (status, _, payload) = self.rx.recv_timeout(WAIT).context("no PubAck")?;
        if status.is_some() || payload.windows(7).any(|w| w == b"\"error\"") {
            return Err(anyhow!(
                "publish refused: {}",
                String::from_utf8_lossy(&payload)
            ));
        }
        Ok(())
    }
}

impl QueueClient for Plain {
    fn put(&mut self, item: &[u8]) -> Result<()> {
        let reply = format!("{}.put", self.conn.inbox());
        self.conn.publish(&self.subject, Some(&reply), item);
        self.pub_ack()
    }

    fn get(&mut self) -> Result<Vec<u8>> {
        loop {
            let body = format!("{{\"batch\":1,\"expires\":{}}}", 5_000_000_000u64);
            self.conn
                .publish(&self.next, Some(&self.pull_reply), body.as_bytes());
            let (status, reply, payload) = self.rx.recv_timeout(WAIT).context("no message")?;
            if status.is_some() {
                continue;
            }
            if let Some(ack) = reply {
                self.conn.publish(&ack, None, b"+ACK");
            }
            return Ok(payload);
        }
    }
}
