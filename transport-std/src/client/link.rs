//! A connection that comes back: when it is lost, a new one is dialled with jittered
//! exponential backoff and the client's session is resumed on it, so numbered puts that were
//! not answered can be sent again without being applied twice (PROTOCOL.md §16).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use depot_core::reconnect::{Backoff, ClientSession, Policy};
use depot_core::wire::SESSION_ID_LEN;
use tracing::debug;

use super::conn::{lock, Conn, Outcome};

use crate::sync::Mutex;
use crate::Error;

/// How a client reconnects after its connection is lost (see
/// [`ConnectOptions::reconnect`](crate::ConnectOptions::reconnect)).
///
/// The first attempt is made at once; after a failed one the client waits a delay that starts
/// at `initial` and doubles up to `max`, each drawn at random between half and all of it (so
/// that many clients of a restarted manager do not come back in step).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reconnect {
    /// The first delay between attempts (default 50 ms).
    pub initial: Duration,
    /// The longest delay between attempts (default 2 s).
    pub max: Duration,
    /// How long a call with no deadline of its own (a blocking `put` or `get`, `qsize`, …)
    /// keeps trying to reconnect before it fails (default 60 s; `None`: for ever). A call
    /// with a timeout fails when its timeout passes.
    pub give_up: Option<Duration>,
    /// The time each connection attempt (TCP and handshake) may take (default 5 s).
    pub connect_timeout: Duration,
}

impl Reconnect {
    /// The same policy in depot-core's terms, whose rules every reconnecting client follows
    /// (delays past `u32::MAX` ms, about 49 days, are cut to it).
    pub(crate) fn policy(&self) -> Policy {
        let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        Policy {
            initial_ms: ms(self.initial),
            max_ms: ms(self.max),
            give_up_ms: self.give_up.map(ms),
            connect_timeout_ms: ms(self.connect_timeout),
        }
    }
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(2),
            give_up: Some(Duration::from_secs(60)),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// The connection in use, and whether it holds the client's session.
#[derive(Clone)]
pub(crate) struct Current {
    pub(crate) conn: Arc<Conn>,
    /// Counts the connections made; tells whether another caller has already replaced it.
    generation: u64,
    pub(crate) session: bool,
}

pub(crate) struct Link {
    addrs: Vec<SocketAddr>,
    key_name: depot_core::KeyName,
    authkey: Vec<u8>,
    encryption: depot_core::Encryption,
    busy_poll: Duration,
    policy: Policy,
    session: Mutex<ClientSession>,
    current: Mutex<Current>,
    /// Held while dialling, so one caller reconnects for all.
    dialling: Mutex<()>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("addrs", &self.addrs)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Link {
    pub(crate) fn connect(
        addrs: Vec<SocketAddr>,
        key_name: depot_core::KeyName,
        authkey: &[u8],
        timeout: Duration,
        encryption: depot_core::Encryption,
        policy: Reconnect,
        busy_poll: Duration,
    ) -> Result<Link, Error> {
        let mut id = [0; SESSION_ID_LEN];
        getrandom::fill(&mut id)
            .map_err(|e| std::io::Error::other(format!("no random bytes for a session: {e}")))?;
        let session = ClientSession::new(id);
        let tuning = (encryption, busy_poll);
        let (conn, has_session) = dial(&addrs, key_name, authkey, tuning, &session, timeout)?;
        Ok(Link {
            addrs,
            key_name,
            authkey: authkey.to_vec(),
            encryption,
            busy_poll,
            policy: policy.policy(),
            session: Mutex::new(session),
            current: Mutex::new(Current {
                conn,
                generation: 0,
                session: has_session,
            }),
            dialling: Mutex::new(()),
        })
    }

    /// The connection to use now.
    pub(crate) fn current(&self) -> Current {
        lock(&self.current).clone()
    }

    /// A fresh number for a put in the client's session.
    pub(crate) fn next_seq(&self) -> u64 {
        lock(&self.session).next_seq()
    }

    /// When a call that started now and has no deadline of its own stops reconnecting.
    pub(crate) fn default_deadline(&self) -> Option<Instant> {
        let give_up = self.policy.give_up_ms?;
        Some(Instant::now() + Duration::from_millis(give_up.into()))
    }

    /// Replaces `failed` (lost) with a new connection, trying until `deadline`. If another
    /// caller already did, its connection is returned. One caller dials at a time; the others
    /// look again every few milliseconds, so each gives up at its own deadline.
    pub(crate) fn redial(
        &self,
        failed: &Current,
        deadline: Option<Instant>,
    ) -> Result<Current, Error> {
        let mut backoff = Backoff::new(&self.policy);
        let connect_timeout = Duration::from_millis(self.policy.connect_timeout_ms.into());
        let mut attempt = 0u32;
        let mut last = None;
        loop {
            let now = self.current();
            if now.generation != failed.generation {
                return Ok(now);
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left.is_some_and(|l| l.is_zero()) {
                let e = last.unwrap_or_else(|| Error::Disconnected {
                    reason: "connection lost; no new one before the deadline".into(),
                });
                debug!(attempt, "gave up reconnecting: {e}");
                return Err(e);
            }
            let Ok(dialling) = self.dialling.try_lock() else {
                std::thread::sleep(OTHERS_LOOK_AGAIN);
                continue;
            };
            if self.current().generation != failed.generation {
                continue;
            }
            let timeout = left.map_or(connect_timeout, |l| l.min(connect_timeout));
            attempt += 1;
            let (name, key) = (self.key_name, &self.authkey);
            let tuning = (self.encryption, self.busy_poll);
            let session = *lock(&self.session);
            match dial(&self.addrs, name, key, tuning, &session, timeout) {
                Ok((conn, session)) => {
                    let next = Current {
                        conn,
                        generation: failed.generation + 1,
                        session,
                    };
                    *lock(&self.current) = next.clone();
                    debug!(attempt, "reconnected");
                    return Ok(next);
                }
                // Waiting does not mend these.
                Err(e @ (Error::AuthFailed { .. } | Error::PythonManager { .. })) => return Err(e),
                Err(e) => last = Some(e),
            }
            drop(dialling);
            let pause = Duration::from_millis(backoff.pause_ms(random()).into());
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            std::thread::sleep(left.map_or(pause, |l| l.min(pause)));
        }
    }
}

/// How often a caller waiting for another's reconnection looks again.
const OTHERS_LOOK_AGAIN: Duration = Duration::from_millis(5);

/// Connects, authenticates and opens (or resumes) `session`: the connection, and whether the
/// manager took the session (a manager without room for it, or an older one, does not).
fn dial(
    addrs: &[SocketAddr],
    key_name: depot_core::KeyName,
    authkey: &[u8],
    (encryption, busy_poll): (depot_core::Encryption, Duration),
    session: &ClientSession,
    timeout: Duration,
) -> Result<(Arc<Conn>, bool), Error> {
    let conn =
        Conn::connect(addrs, key_name, authkey, timeout, encryption)?.with_busy_poll(busy_poll);
    let has_session = match conn.call(session.open())? {
        Outcome::Session(resumed) => {
            debug!(resumed, "session open");
            true
        }
        other => {
            debug!("manager keeps no session for this client: {other:?}");
            false
        }
    };
    Ok((Arc::new(conn), has_session))
}

/// A random `u32` for the backoff's jitter (0, so the shortest pause, if the OS has none).
pub(crate) fn random() -> u32 {
    let mut r = [0u8; 4];
    let _ = getrandom::fill(&mut r);
    u32::from_le_bytes(r)
}
