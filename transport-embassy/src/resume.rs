//! A client that reconnects by itself (feature `sessions`): when its connection is lost, the
//! call that finds it so dials again with jittered exponential backoff, resumes the client's
//! session, and every call in flight is made again when it may (numbered puts always, in the
//! session; see `depot_core::reconnect`). A call fails only when its own deadline passes.
//!
//! The rules (backoff, session numbers, what may be sent again) are depot-core's; this moves
//! the socket and keeps the time. One call dials for all: the others look again every few
//! milliseconds, so each still fails at its own deadline.

use depot_core::client::ClientConfig;
use depot_core::reconnect::{refused_for_now, resend, Backoff, ClientSession, Policy};
use depot_core::wire::{Op, Reply, Wait, SESSION_ID_LEN};
use depot_core::Instant;
use embassy_net::tcp::TcpSocket;
use embassy_net::IpEndpoint;
use embassy_time::{with_timeout, Duration, Timer};

use crate::client::{Client, ClientBuffers};
use crate::entropy::{nonce, Entropy};
use crate::time::now;
use crate::Error;

/// How often a call waiting for another call's reconnection looks again.
const LOOK_AGAIN: Duration = Duration::from_millis(10);

/// What a reconnecting client keeps to come back.
pub(crate) struct Resume<'a> {
    endpoint: IpEndpoint,
    entropy: &'a mut dyn Entropy,
    policy: Policy,
    session: ClientSession,
    /// The connection holds the session (the manager took it).
    in_session: bool,
    /// Counts the connections made: tells a call whether another has already replaced the
    /// one it lost.
    generation: u32,
    /// A call is dialling: no other request may go out until it has resumed the session.
    pub(crate) dialling: bool,
}

impl<'a> Client<'a> {
    /// [`Client::connect_with`] for a client that reconnects by itself (feature `sessions`).
    ///
    /// It opens a session (128 bits from `entropy`) and numbers its puts. When the connection
    /// is lost, the next call, or the calls in flight, dial `endpoint` again with `socket`,
    /// pausing between failed attempts as `policy` says (jittered exponential backoff), resume
    /// the session and make the calls again:
    /// - `put`: sent again with its number; the manager applies it once while it remembers
    ///   the session (PROTOCOL.md §16). A manager that restarted without keeping its sessions
    ///   may apply a put that was in flight twice (at least once). Against a manager that
    ///   keeps no sessions (`resumed` refused), a put in flight fails with the connection error.
    /// - `get`: sent again. An item the manager had already sent to the lost connection is
    ///   lost (a plain get is at most once).
    /// - `qsize`, `join`, opening a queue: sent again.
    /// - `task_done` and `shutdown` in flight fail (whether they counted cannot be told); made
    ///   after the loss, they wait for the new connection like every call.
    /// - any call the manager refuses because it is shutting down (it applied nothing): made
    ///   again on the next connection, so calls ride a graceful restart of the manager.
    ///
    /// A call fails only when its own deadline passes: `Wait::Millis(ms)` after `ms`, other
    /// calls after `policy.give_up_ms` (`None`: never). Queue handles stay valid when the
    /// manager comes back with the same queues declared in the same order. The first
    /// connection is tried once: its failure is returned at once.
    pub async fn connect_reconnecting<const FRAME: usize, const SLOTS: usize>(
        socket: TcpSocket<'a>,
        endpoint: impl Into<IpEndpoint>,
        authkey: &[u8],
        entropy: &'a mut dyn Entropy,
        buffers: &'a mut ClientBuffers<FRAME, SLOTS>,
        config: ClientConfig,
        policy: Policy,
    ) -> Result<Client<'a>, Error> {
        let endpoint = endpoint.into();
        let client =
            Client::connect_with(socket, endpoint, authkey, &mut *entropy, buffers, config).await?;
        let mut id = [0; SESSION_ID_LEN];
        entropy.fill(&mut id);
        client.shared.borrow_mut().resume = Some(Resume {
            endpoint,
            entropy,
            policy,
            session: ClientSession::new(id),
            in_session: false,
            generation: 0,
            dialling: false,
        });
        let in_session = open_session(&client).await?;
        if let Some(r) = &mut client.shared.borrow_mut().resume {
            r.in_session = in_session;
        }
        Ok(client)
    }
}

impl Client<'_> {
    /// Whether the connection holds the client's session, so that its puts are applied once
    /// across reconnects (false for a client that does not reconnect, and against a manager
    /// that keeps no sessions).
    pub fn has_session(&self) -> bool {
        let shared = self.shared.borrow();
        shared.resume.as_ref().is_some_and(|r| r.in_session)
    }
}

/// Sends `Session` on a fresh connection: whether the manager took it.
async fn open_session(client: &Client<'_>) -> Result<bool, Error> {
    let op = match &client.shared.borrow().resume {
        Some(r) => r.session.open(),
        None => return Ok(false),
    };
    let mut taken = false;
    let mut session = |reply: Reply<'_>| {
        taken = matches!(reply, Reply::Session { .. });
        Ok(())
    };
    // The same instance of `call_once` as every other call's (`retried`).
    let session: &mut dyn FnMut(Reply<'_>) -> Result<(), Error> = &mut session;
    client.call_once(op, session, false, None).await?;
    if !taken {
        debug!("depot: the manager keeps no session for this client");
    }
    Ok(taken)
}

/// `op` on a reconnecting client: made again on new connections until it has an outcome or
/// its deadline passes (see [`Client::connect_reconnecting`]).
pub(crate) async fn call<R>(
    client: &Client<'_>,
    op: Op<'_>,
    f: &mut impl FnMut(Reply<'_>) -> Result<R, Error>,
) -> Result<R, Error> {
    // One retry loop for every kind of call (firmware pays for each copy in flash).
    let mut out = None;
    let mut keep = |reply: Reply<'_>| f(reply).map(|r| out = Some(r));
    retried(client, op, &mut keep).await?;
    out.ok_or(Error::Depot(depot_core::Error::Closed(
        depot_core::wire::CloseReason::Unexpected,
    )))
}

async fn retried(
    client: &Client<'_>,
    op: Op<'_>,
    f: &mut dyn FnMut(Reply<'_>) -> Result<(), Error>,
) -> Result<(), Error> {
    let start = now();
    let (seq, policy) = {
        let mut shared = client.shared.borrow_mut();
        let Some(r) = &mut shared.resume else {
            return Err(Error::Depot(depot_core::Error::NotReady));
        };
        let seq = matches!(op, Op::Put { .. }).then(|| r.session.next_seq());
        (seq, r.policy)
    };
    let deadline = match wait_of(&op) {
        Some(Wait::Millis(ms)) => Some(start.add_millis(ms.into())),
        _ => policy.give_up_at(start),
    };
    loop {
        let (generation, in_session, lost) = {
            let shared = client.shared.borrow();
            let Some(r) = &shared.resume else {
                return Err(Error::Depot(depot_core::Error::NotReady));
            };
            (r.generation, r.in_session, shared.lost())
        };
        if lost {
            reconnect(client, generation, deadline).await?;
            continue;
        }
        let attempt = shaped(op, seq, in_session, deadline);
        let mut lost = None;
        let outcome = client
            .call_once(attempt, &mut *f, true, Some(&mut lost))
            .await;
        match (outcome, lost) {
            (Err(e), Some(sent)) if !sent || resend(&attempt, in_session) => {
                debug!("depot: connection lost during a call: {}", e);
                reconnect(client, generation, deadline).await?;
            }
            // Refused by a manager that is stopping (nothing applied): it may be starting
            // again, so the call waits for the next connection, as after a loss.
            (Err(Error::Depot(e)), None) if e.code().is_some_and(refused_for_now) => {
                debug!("depot: the manager is shutting down");
                reconnect(client, generation, deadline).await?;
            }
            (outcome, _) => return outcome,
        }
    }
}

/// What a call waits for, if it may wait.
fn wait_of(op: &Op) -> Option<Wait> {
    match *op {
        Op::Put { wait, .. } | Op::Get { wait, .. } | Op::Join { wait, .. } => Some(wait),
        _ => None,
    }
}

/// `op` as it is sent now: a put numbered when the connection holds the session, and a
/// timed wait cut to what is left of it.
fn shaped<'o>(op: Op<'o>, seq: Option<u64>, in_session: bool, deadline: Option<Instant>) -> Op<'o> {
    let left = |wait: Wait| match (wait, deadline) {
        (Wait::Millis(_), Some(d)) => {
            Wait::Millis(now().millis_until(d).min(u64::from(u32::MAX)) as u32)
        }
        _ => wait,
    };
    match op {
        Op::Put { handle, item, wait } => match seq {
            Some(seq) if in_session => Op::PutSeq {
                seq,
                handle,
                item,
                wait: left(wait),
            },
            _ => Op::Put {
                handle,
                item,
                wait: left(wait),
            },
        },
        Op::Get { handle, wait } => Op::Get {
            handle,
            wait: left(wait),
        },
        Op::Join { handle, wait } => Op::Join {
            handle,
            wait: left(wait),
        },
        other => other,
    }
}

/// Replaces connection `generation`, which a call found lost, trying until `deadline`. When
/// another call has already replaced it, or is doing so, this waits for that instead.
async fn reconnect(
    client: &Client<'_>,
    generation: u32,
    deadline: Option<Instant>,
) -> Result<(), Error> {
    let lost = Error::Depot(depot_core::Error::Disconnected);
    loop {
        {
            let mut shared = client.shared.borrow_mut();
            let Some(r) = &mut shared.resume else {
                return Err(lost);
            };
            if !r.dialling {
                if r.generation != generation {
                    return Ok(());
                }
                r.dialling = true;
                break;
            }
        }
        if deadline.is_some_and(|d| d <= now()) {
            return Err(lost);
        }
        Timer::after(LOOK_AGAIN).await;
    }
    let mut dialling = Dialling {
        client,
        socket: None,
    };
    let policy = match &client.shared.borrow().resume {
        Some(r) => r.policy,
        None => return Err(lost),
    };
    let mut backoff = Backoff::new(&policy);
    let mut last = lost;
    let mut attempt = 0u32;
    loop {
        let left = deadline.map(|d| now().millis_until(d));
        if left == Some(0) {
            debug!("depot: gave up reconnecting after {} attempts", attempt);
            return Err(last);
        }
        let limit = left.map_or(u64::from(policy.connect_timeout_ms), |l| {
            l.min(policy.connect_timeout_ms.into())
        });
        attempt += 1;
        match with_timeout(Duration::from_millis(limit), dialling.dial()).await {
            Ok(Ok(())) => {
                debug!("depot: reconnected after {} attempts", attempt);
                return Ok(());
            }
            // Waiting does not mend these.
            Ok(Err(e @ Error::Depot(depot_core::Error::AuthFailed))) => return Err(e),
            Ok(Err(e @ Error::Depot(depot_core::Error::PythonManager))) => return Err(e),
            Ok(Err(e)) => last = e,
            Err(_) => last = Error::Depot(depot_core::Error::Timeout),
        }
        let mut random = [0; 4];
        if let Some(r) = &mut client.shared.borrow_mut().resume {
            r.entropy.fill(&mut random);
        }
        let pause = u64::from(backoff.pause_ms(u32::from_le_bytes(random)));
        let left = deadline.map(|d| now().millis_until(d));
        Timer::after(Duration::from_millis(left.map_or(pause, |l| l.min(pause)))).await;
    }
}

/// The dialling call's hold on the client: the socket while it connects, given back (and
/// other calls let go on) however the dialling ends, even by its future being dropped.
struct Dialling<'c, 'a> {
    client: &'c Client<'a>,
    socket: Option<TcpSocket<'a>>,
}

impl Dialling<'_, '_> {
    /// One attempt: a new TCP connection, the handshake and the session.
    async fn dial(&mut self) -> Result<(), Error> {
        let endpoint = {
            let mut shared = self.client.shared.borrow_mut();
            shared.core.handle_close();
            if self.socket.is_none() {
                self.socket = shared.socket.take();
            }
            match &shared.resume {
                Some(r) => r.endpoint,
                None => return Err(Error::Depot(depot_core::Error::Disconnected)),
            }
        };
        let Some(socket) = &mut self.socket else {
            return Err(Error::Depot(depot_core::Error::Disconnected));
        };
        // What is left of the old connection goes; the socket is reused.
        socket.abort();
        socket.connect(endpoint).await.map_err(Error::Connect)?;
        {
            let mut shared = self.client.shared.borrow_mut();
            shared.socket = self.socket.take();
            let fresh = match &mut shared.resume {
                Some(r) => nonce(&mut *r.entropy),
                None => return Err(Error::Depot(depot_core::Error::Disconnected)),
            };
            shared.restart(fresh);
        }
        self.client.handshake().await?;
        let in_session = open_session(self.client).await?;
        if let Some(r) = &mut self.client.shared.borrow_mut().resume {
            r.in_session = in_session;
            r.generation = r.generation.wrapping_add(1);
            r.dialling = false;
        }
        Ok(())
    }
}

impl Drop for Dialling<'_, '_> {
    fn drop(&mut self) {
        let mut shared = self.client.shared.borrow_mut();
        if let Some(socket) = self.socket.take() {
            shared.socket = Some(socket);
        }
        if let Some(r) = &mut shared.resume {
            r.dialling = false;
        }
    }
}
