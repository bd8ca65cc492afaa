//! Durable queues: the core's journal kept in an append-only log, with group commit and
//! compaction.
//!
//! A data directory holds `LOCK` (locked while a manager uses the directory) and one log
//! segment, `seg-<n>.log`: a 12-byte header (`DEPOTLOG`, format version as u32 LE) and then
//! records, each `len: u32 LE | crc32: u32 LE | kind: u8 | payload`, where `len` counts kind
//! and payload and the CRC-32 (IEEE) covers them. Every segment begins with a snapshot (a
//! `Created` record for every queue, an `Appended` record for every item, then the lease id
//! floor and a `Leased` record for every item under a lease), so only the newest
//! segment is needed. When the segment grows past a bound, a new one is written from the
//! manager's state (to a `.tmp` file, synced, then renamed) and the old one removed; the same
//! happens at every start, after recovery.
//!
//! Group commit: the event loop appends the records of a whole turn's input in one `write`
//! before it transmits any reply of that turn, and with [`Fsync::Always`] syncs the file first.
//! So a process crash (`kill -9`) never loses an acknowledged put under any policy (the data is
//! in the kernel), and the policy says what an operating-system crash or power loss may lose.
//!
//! Record kinds (payload after the kind byte; integers little-endian; a queue is named by its
//! handle in this segment, bound to its name by a `Created` record earlier in the segment):
//! 1 `Created` handle u16, capacity u32, max_item u32, mode u8 (0 value, 1 raw), name;
//! 2 `Appended` handle u16, item; 3 `Removed` handle u16, count u32; 4 `Returned` handle u16,
//! item; 5 `Leased` handle u16, lease u64, deliveries u8, item (an item the `Removed` record
//! before it took off the queue, held by that lease); 6 `LeaseEnded` lease u64 (acknowledged,
//! or its items given back by the records before it); 7 `ReturnedCounted` handle u16,
//! deliveries u8, item (`Returned` for an item delivered that many times under leases); 8
//! `AppendedCounted` handle u16, deliveries u8, item (the same at the tail, in snapshots); 9
//! `LeaseIds` floor u64 (every lease id so far is below it, in snapshots); 10
//! `SessionApplied` session id (16 bytes), seq u64, applied u32 (a numbered put has that many
//! items in now; after the records of its items); 11 `SessionWindow` session id,
//! expired_below u64, then seq u64 + applied u32 per put (a session's whole window, in
//! snapshots, least recently used first); 12 `Held` handle u16, item (given back to a queue
//! with no room: it waits at the front of its blocked puts); 13 `HeldEntered` handle u16,
//! item (the front held item went in at the tail). A snapshot keeps every queue's held items
//! after its items, then the sessions' windows, then every outstanding lease as `Leased`
//! records. A log without the newer kinds loads as before; an older manager refuses a log with
//! a kind it does not know rather than misread it.
//!
//! Recovery gives sessions their windows back, so a numbered put a client sends again after a
//! restart is applied once; held items go back to the head of their queue, or wait outside it
//! again. It gives the items of every outstanding lease back to the head of their queue with
//! their delivery counts, the oldest lease first at the head, as the manager does when their
//! holders go away; new lease ids start above every id in the log. An old lease cannot be
//! acknowledged after a restart anyway: a lease belongs to its connection, which the restart
//! closed, so its items are delivered again (with a higher count).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use depot_core::journal::Journal;
use depot_core::session::WINDOW;
use depot_core::wire::{Handle, QueueSpec, MAX_MAX_FRAME, SESSION_ID_LEN};
use depot_core::QueueMode;
use tracing::{info, warn};

use crate::Error;

const MAGIC: &[u8; 8] = b"DEPOTLOG";
const FORMAT: u32 = 1;
const HEADER: usize = 12;
/// Length and CRC before each record's kind byte.
const RECORD_HEAD: usize = 8;
/// No record is longer: the largest item plus its handle and kind.
const MAX_RECORD: usize = MAX_MAX_FRAME as usize + 64;
/// The default size a segment grows to before it is compacted (or twice its snapshot, if more).
pub const DEFAULT_COMPACT_AFTER: u64 = 64 << 20;
/// How often the event loop looks whether a running compaction is done.
const COMPACTION_CHECK: Duration = Duration::from_millis(5);

const CREATED: u8 = 1;
const APPENDED: u8 = 2;
const REMOVED: u8 = 3;
const RETURNED: u8 = 4;
const LEASED: u8 = 5;
const LEASE_ENDED: u8 = 6;
const RETURNED_COUNTED: u8 = 7;
const APPENDED_COUNTED: u8 = 8;
const LEASE_IDS: u8 = 9;
const SESSION_APPLIED: u8 = 10;
const SESSION_WINDOW: u8 = 11;
const HELD: u8 = 12;
const HELD_ENTERED: u8 = 13;

/// When the log is synced to disk (Redis's `appendfsync`). Every policy writes a turn's records
/// to the log before its replies go out, so a crash of the manager's process alone loses
/// nothing acknowledged; the policy bounds what an operating-system crash or power loss loses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Before the replies of each turn are sent: an acknowledged put survives power loss.
    Always,
    /// At most this long after a change: a power loss loses at most about this much.
    Interval(Duration),
    /// Never explicitly: the operating system writes back when it likes.
    Never,
}

impl Default for Fsync {
    fn default() -> Self {
        Fsync::Interval(Duration::from_millis(100))
    }
}

impl fmt::Display for Fsync {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fsync::Always => f.write_str("always"),
            Fsync::Interval(d) => write!(f, "interval={}", d.as_millis()),
            Fsync::Never => f.write_str("never"),
        }
    }
}

impl FromStr for Fsync {
    type Err = String;

    /// `always`, `never`, `interval` (100 ms) or `interval=MS`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "always" => Ok(Fsync::Always),
            "never" => Ok(Fsync::Never),
            "interval" => Ok(Fsync::default()),
            _ => match s.strip_prefix("interval=").map(str::parse::<u64>) {
                Some(Ok(ms)) if ms > 0 => Ok(Fsync::Interval(Duration::from_millis(ms))),
                _ => Err(format!(
                    "'{s}' is not an fsync policy: always, interval, interval=MS (MS > 0) or never"
                )),
            },
        }
    }
}

/// Where and how a manager keeps its queues.
#[derive(Debug, Clone)]
pub(crate) struct DurableOptions {
    pub(crate) dir: PathBuf,
    pub(crate) fsync: Fsync,
    pub(crate) compact_after: u64,
}

/// The durability state of a running manager, as [`crate::Metrics`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Durability {
    /// The data directory.
    pub data_dir: PathBuf,
    /// The fsync policy.
    pub fsync: Fsync,
    /// Bytes in the current log segment.
    pub log_bytes: u64,
    /// Bytes written to the log and not yet synced.
    pub unsynced_bytes: u64,
    /// When the log was last synced.
    pub last_fsync: Option<SystemTime>,
    /// Syncs since the manager started.
    pub fsyncs: u64,
    /// Segments written from the manager's state (one at start, then one per compaction).
    pub compactions: u64,
}

/// CRC-32 (IEEE, reflected), as zlib and Ethernet compute it.
fn crc32(parts: &[&[u8]]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for part in parts {
        for &b in *part {
            crc = TABLE[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
        }
    }
    !crc
}

/// Appends one record made of `parts` (the kind byte first) to `out`.
fn push_record(out: &mut Vec<u8>, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&crc32(parts).to_le_bytes());
    for part in parts {
        out.extend_from_slice(part);
    }
}

fn created(out: &mut Vec<u8>, handle: Handle, name: &str, spec: QueueSpec) {
    let mut head = [0u8; 12];
    head[0] = CREATED;
    head[1..3].copy_from_slice(&handle.to_raw().to_le_bytes());
    head[3..7].copy_from_slice(&spec.capacity.to_le_bytes());
    head[7..11].copy_from_slice(&spec.max_item.to_le_bytes());
    head[11] = match spec.mode {
        QueueMode::Value => 0,
        QueueMode::Raw => 1,
    };
    push_record(out, &[&head, name.as_bytes()]);
}

fn item_record(out: &mut Vec<u8>, kind: u8, handle: Handle, item: &[&[u8]]) {
    let [lo, hi] = handle.to_raw().to_le_bytes();
    let head = [kind, lo, hi];
    match item {
        [a] => push_record(out, &[&head, a]),
        [a, b] => push_record(out, &[&head, a, b]),
        _ => push_record(out, &[&head, &item.concat()]),
    }
}

fn counted_record(out: &mut Vec<u8>, kind: u8, handle: Handle, deliveries: u8, item: &[&[u8]]) {
    let [lo, hi] = handle.to_raw().to_le_bytes();
    push_record(out, &[&[kind, lo, hi, deliveries], &item.concat()]);
}

fn leased_record(out: &mut Vec<u8>, lease: u64, handle: Handle, deliveries: u8, item: &[u8]) {
    let mut head = [0u8; 12];
    head[0] = LEASED;
    head[1..3].copy_from_slice(&handle.to_raw().to_le_bytes());
    head[3..11].copy_from_slice(&lease.to_le_bytes());
    head[11] = deliveries;
    push_record(out, &[&head, item]);
}

fn u64_record(out: &mut Vec<u8>, kind: u8, value: u64) {
    let mut rec = [0u8; 9];
    rec[0] = kind;
    rec[1..].copy_from_slice(&value.to_le_bytes());
    push_record(out, &[&rec]);
}

fn session_applied(out: &mut Vec<u8>, id: &[u8; SESSION_ID_LEN], seq: u64, applied: u32) {
    let mut rec = [0u8; 1 + SESSION_ID_LEN + 12];
    rec[0] = SESSION_APPLIED;
    rec[1..17].copy_from_slice(id);
    rec[17..25].copy_from_slice(&seq.to_le_bytes());
    rec[25..29].copy_from_slice(&applied.to_le_bytes());
    push_record(out, &[&rec]);
}

fn session_window(
    out: &mut Vec<u8>,
    id: &[u8; SESSION_ID_LEN],
    expired_below: u64,
    puts: impl Iterator<Item = (u64, u32)>,
) {
    let mut rec = Vec::with_capacity(25 + 12 * WINDOW);
    rec.push(SESSION_WINDOW);
    rec.extend_from_slice(id);
    rec.extend_from_slice(&expired_below.to_le_bytes());
    for (seq, applied) in puts {
        rec.extend_from_slice(&seq.to_le_bytes());
        rec.extend_from_slice(&applied.to_le_bytes());
    }
    push_record(out, &[&rec]);
}

/// The core's journal: encodes each change into the records the next commit writes.
struct Recorder(Arc<Mutex<Vec<u8>>>);

impl Recorder {
    fn with(&self, f: impl FnOnce(&mut Vec<u8>)) {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner));
    }
}

impl Journal for Recorder {
    fn created(&mut self, handle: Handle, name: &str, spec: QueueSpec) {
        self.with(|out| created(out, handle, name, spec));
    }
    fn appended(&mut self, handle: Handle, item: &[u8]) {
        self.with(|out| item_record(out, APPENDED, handle, &[item]));
    }
    fn removed(&mut self, handle: Handle, count: u32) {
        let [lo, hi] = handle.to_raw().to_le_bytes();
        let mut rec = [REMOVED, lo, hi, 0, 0, 0, 0];
        rec[3..].copy_from_slice(&count.to_le_bytes());
        self.with(|out| push_record(out, &[&rec]));
    }
    fn returned(&mut self, handle: Handle, item: &[u8]) {
        self.with(|out| item_record(out, RETURNED, handle, &[item]));
    }
    fn leased(&mut self, lease: u64, handle: Handle, item: &[u8], deliveries: u8) {
        self.with(|out| leased_record(out, lease, handle, deliveries, item));
    }
    fn lease_ended(&mut self, lease: u64) {
        self.with(|out| u64_record(out, LEASE_ENDED, lease));
    }
    fn returned_leased(&mut self, handle: Handle, item: &[u8], deliveries: u8) {
        self.with(|out| counted_record(out, RETURNED_COUNTED, handle, deliveries, &[item]));
    }
    fn held(&mut self, handle: Handle, item: &[u8]) {
        self.with(|out| item_record(out, HELD, handle, &[item]));
    }
    fn held_entered(&mut self, handle: Handle, item: &[u8]) {
        self.with(|out| item_record(out, HELD_ENTERED, handle, &[item]));
    }
    fn session_applied(&mut self, session: &[u8; SESSION_ID_LEN], seq: u64, applied: u32) {
        self.with(|out| session_applied(out, session, seq, applied));
    }
}

/// One queue as the log left it.
#[derive(Debug)]
pub(crate) struct RecoveredQueue {
    pub(crate) name: String,
    pub(crate) spec: QueueSpec,
    /// Each item with the times it was delivered under leases.
    pub(crate) items: VecDeque<(Vec<u8>, u8)>,
    /// Items given back while the queue had no room, the next to enter first.
    pub(crate) held: VecDeque<Vec<u8>>,
}

/// A session's de-duplication window as the log left it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct RecoveredSession {
    pub(crate) expired_below: u64,
    /// Numbered puts with items applied: number to count.
    pub(crate) puts: BTreeMap<u64, u32>,
    /// When the log last named it (least recently named is restored first).
    last: u64,
}

impl RecoveredSession {
    /// Put `seq` has `applied` items in; the window keeps the newest [`WINDOW`] numbers, as
    /// the manager's does.
    fn applied(&mut self, seq: u64, applied: u32) {
        if seq < self.expired_below && !self.puts.contains_key(&seq) {
            return;
        }
        let count = self.puts.entry(seq).or_default();
        *count = (*count).max(applied);
        while self.puts.len() > WINDOW {
            if let Some((oldest, _)) = self.puts.pop_first() {
                self.expired_below = self.expired_below.max(oldest.saturating_add(1));
            }
        }
    }
}

/// A lease outstanding in the log: its queue (an index into the queues) and items.
type OpenLease = (usize, Vec<(Vec<u8>, u8)>);

/// What reading a log gave.
#[derive(Debug, Default)]
pub(crate) struct Replayed {
    pub(crate) queues: Vec<RecoveredQueue>,
    /// Records read.
    pub(crate) records: u64,
    /// Where the last whole record ends.
    pub(crate) good_len: usize,
    /// A torn last record, cut: its offset and why it was taken for torn.
    pub(crate) torn: Option<(usize, &'static str)>,
    /// Leases outstanding (their items are back in `queues` once replay ends).
    pub(crate) leases_returned: usize,
    /// Every lease id in the log is below this.
    pub(crate) lease_ids: u64,
    /// Sessions' windows, least recently named first.
    pub(crate) sessions: Vec<([u8; SESSION_ID_LEN], RecoveredSession)>,
}

/// The state a log's records build up.
#[derive(Default)]
struct Replay {
    queues: Vec<RecoveredQueue>,
    handles: HashMap<u16, usize>,
    leases: BTreeMap<u64, OpenLease>,
    lease_ids: u64,
    sessions: HashMap<[u8; SESSION_ID_LEN], RecoveredSession>,
    /// Session records read (orders sessions by last use).
    session_records: u64,
}

/// The log is damaged before its end: where, and why.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Corrupt {
    pub(crate) offset: usize,
    pub(crate) why: String,
}

/// Replays the records of a segment (header included). A damaged last record is a write a
/// crash interrupted: it is cut. Damage with intact data after it is not: that is an error.
pub(crate) fn replay(bytes: &[u8]) -> Result<Replayed, Corrupt> {
    let (state, mut out) = read(bytes)?;
    // Outstanding leases go back as their holders' going away would put them: newest first,
    // each last item first, so the oldest stands at the head, every item in its order.
    let Replay {
        mut queues,
        leases,
        lease_ids,
        sessions,
        ..
    } = state;
    out.leases_returned = leases.len();
    for (queue, items) in leases.into_values().rev() {
        for item in items.into_iter().rev() {
            queues[queue].items.push_front(item);
        }
    }
    out.queues = queues;
    out.lease_ids = lease_ids;
    out.sessions = sessions.into_iter().collect();
    out.sessions.sort_by_key(|(_, s)| s.last);
    Ok(out)
}

/// The state a segment's records build up (leases still outstanding), and what reading it
/// found.
fn read(bytes: &[u8]) -> Result<(Replay, Replayed), Corrupt> {
    let corrupt = |offset, why: &str| Corrupt {
        offset,
        why: why.to_owned(),
    };
    let mut out = Replayed::default();
    if bytes.len() < HEADER {
        // Only a header cut short (by a crash while it was written) may be this short.
        if MAGIC.starts_with(&bytes[..bytes.len().min(8)]) {
            out.torn = (!bytes.is_empty()).then_some((0, "the header is cut short"));
            return Ok((Replay::default(), out));
        }
        return Err(corrupt(0, "not a depot log (bad magic)"));
    }
    if &bytes[..8] != MAGIC {
        return Err(corrupt(0, "not a depot log (bad magic)"));
    }
    let format = u32::from_le_bytes(bytes[8..12].try_into().unwrap_or_default());
    if format != FORMAT {
        return Err(corrupt(
            8,
            &format!("log format {format}; this depot reads format {FORMAT}"),
        ));
    }
    let mut state = Replay::default();
    let mut at = HEADER;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let damaged =
            |why: &'static str, extent: usize| -> Result<(usize, &'static str), Corrupt> {
                // Torn: the record reaches the end of the file, or only zeros follow it (a
                // file system that extended the file before the data reached the disk).
                if extent >= rest.len() || rest.iter().all(|&b| b == 0) {
                    Ok((at, why))
                } else {
                    Err(corrupt(at, why))
                }
            };
        if rest.len() < RECORD_HEAD {
            out.torn = Some(damaged("a record header cut short", rest.len())?);
            break;
        }
        let len = u32::from_le_bytes(rest[..4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(rest[4..8].try_into().unwrap_or_default());
        if len == 0 || len > MAX_RECORD {
            out.torn = Some(damaged("an impossible record length", 0)?);
            break;
        }
        let Some(body) = rest.get(RECORD_HEAD..RECORD_HEAD + len) else {
            out.torn = Some(damaged("a record cut short", usize::MAX)?);
            break;
        };
        if crc32(&[body]) != crc {
            out.torn = Some(damaged("a checksum mismatch", RECORD_HEAD + len)?);
            break;
        }
        apply(&mut state, body).map_err(|why| corrupt(at, &why))?;
        out.records += 1;
        at += RECORD_HEAD + len;
        out.good_len = at;
    }
    if out.torn.is_none() {
        out.good_len = bytes.len();
    }
    Ok((state, out))
}

/// Applies one checked record to the state.
fn apply(state: &mut Replay, body: &[u8]) -> Result<(), String> {
    let Replay {
        queues,
        handles,
        leases,
        lease_ids,
        sessions,
        session_records,
    } = state;
    let u64_at = |i: usize| {
        body.get(i..i + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
            .ok_or("a record too short for its kind")
    };
    let handle = body
        .get(1..3)
        .map(|h| u16::from_le_bytes([h[0], h[1]]))
        .ok_or("a record too short for its kind")?;
    let queue = |handles: &HashMap<u16, usize>| {
        handles
            .get(&handle)
            .copied()
            .ok_or_else(|| format!("a record for queue handle {handle}, which no record created"))
    };
    // Session records name a session, not a queue.
    if let SESSION_APPLIED | SESSION_WINDOW = body[0] {
        let id: [u8; SESSION_ID_LEN] = body
            .get(1..1 + SESSION_ID_LEN)
            .and_then(|b| b.try_into().ok())
            .ok_or("a session record too short")?;
        *session_records += 1;
        let session = sessions.entry(id).or_default();
        session.last = *session_records;
        let at = 1 + SESSION_ID_LEN;
        if body[0] == SESSION_APPLIED {
            let applied = body
                .get(at + 8..at + 12)
                .filter(|_| body.len() == at + 12)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .ok_or("a session record of the wrong length")?;
            session.applied(u64_at(at)?, applied);
        } else {
            let puts = body.get(at + 8..).unwrap_or_default();
            if puts.len() % 12 != 0 {
                return Err("a session window of the wrong length".into());
            }
            session.expired_below = u64_at(at)?;
            session.puts.clear();
            for put in puts.chunks_exact(12) {
                let seq = u64::from_le_bytes(put[..8].try_into().unwrap_or_default());
                let applied = u32::from_le_bytes(put[8..].try_into().unwrap_or_default());
                session.puts.insert(seq, applied);
            }
            if session.puts.len() > WINDOW {
                return Err("a session window longer than the manager keeps".into());
            }
        }
        return Ok(());
    }
    match body[0] {
        CREATED => {
            let head = body.get(..12).ok_or("a Created record too short")?;
            let u32_at =
                |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
            let mode = match head[11] {
                0 => QueueMode::Value,
                1 => QueueMode::Raw,
                m => return Err(format!("an unknown queue mode {m}")),
            };
            let name = std::str::from_utf8(&body[12..])
                .map_err(|_| "a queue name that is not UTF-8")?
                .to_owned();
            if handles.contains_key(&handle) || queues.iter().any(|q| q.name == name) {
                return Err(format!("queue '{name}' created twice"));
            }
            handles.insert(handle, queues.len());
            queues.push(RecoveredQueue {
                name,
                spec: QueueSpec {
                    capacity: u32_at(3),
                    max_item: u32_at(7),
                    mode,
                },
                items: VecDeque::new(),
                held: VecDeque::new(),
            });
        }
        APPENDED => {
            let q = queue(handles)?;
            queues[q].items.push_back((body[3..].to_vec(), 0));
        }
        RETURNED => {
            let q = queue(handles)?;
            queues[q].items.push_front((body[3..].to_vec(), 0));
        }
        APPENDED_COUNTED | RETURNED_COUNTED => {
            let q = queue(handles)?;
            let &deliveries = body.get(3).ok_or("a counted record too short")?;
            let item = (body[4..].to_vec(), deliveries);
            match body[0] {
                APPENDED_COUNTED => queues[q].items.push_back(item),
                _ => queues[q].items.push_front(item),
            }
        }
        LEASED => {
            let q = queue(handles)?;
            let lease = u64_at(3)?;
            let &deliveries = body.get(11).ok_or("a Leased record too short")?;
            let (held, items) = leases.entry(lease).or_insert((q, Vec::new()));
            if *held != q {
                return Err(format!("lease {lease} holds items of two queues"));
            }
            items.push((body[12..].to_vec(), deliveries));
            *lease_ids = (*lease_ids).max(lease.saturating_add(1));
        }
        LEASE_ENDED => {
            let lease = u64_at(1)?;
            if leases.remove(&lease).is_none() {
                return Err(format!("lease {lease} ended, which no record took"));
            }
        }
        LEASE_IDS => *lease_ids = (*lease_ids).max(u64_at(1)?),
        HELD => {
            let q = queue(handles)?;
            queues[q].held.push_front(body[3..].to_vec());
        }
        HELD_ENTERED => {
            let q = queue(handles)?;
            let queue = &mut queues[q];
            if queue.held.pop_front().as_deref() != Some(&body[3..]) {
                return Err(format!(
                    "an item entered queue '{}' that was not held outside it",
                    queue.name
                ));
            }
            queue.items.push_back((body[3..].to_vec(), 0));
        }
        REMOVED => {
            let q = queue(handles)?;
            let count = body
                .get(3..7)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .ok_or("a Removed record too short")?;
            let queue = &mut queues[q];
            if count as usize > queue.items.len() {
                return Err(format!(
                    "{count} items removed from queue '{}', which held {}",
                    queue.name,
                    queue.items.len()
                ));
            }
            queue.items.drain(..count as usize);
        }
        kind => {
            return Err(format!(
                "an unknown record kind {kind} (written by a newer depot?)"
            ))
        }
    }
    Ok(())
}

/// A data directory opened and its newest segment read, before the manager starts.
pub(crate) struct Opened {
    opts: DurableOptions,
    lock: File,
    /// The newest segment's number and every other segment found (superseded).
    newest: Option<u64>,
    older: Vec<PathBuf>,
    pub(crate) queues: Vec<RecoveredQueue>,
    /// Every lease id in the log is below this.
    pub(crate) lease_ids: u64,
    pub(crate) sessions: Vec<([u8; SESSION_ID_LEN], RecoveredSession)>,
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("seg-{n:016}.log"))
}

fn segment_number(name: &str) -> Option<u64> {
    name.strip_prefix("seg-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

/// Locks `opts.dir` (creating it) and reads its newest segment.
pub(crate) fn open(opts: DurableOptions) -> Result<Opened, Error> {
    let dir = &opts.dir;
    let shown = dir.display();
    let at = |e: io::Error, what: &str| {
        Error::Io(io::Error::new(
            e.kind(),
            format!("data dir {shown}: {what}: {e}"),
        ))
    };
    fs::create_dir_all(dir).map_err(|e| at(e, "cannot create it"))?;
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("LOCK"))
        .map_err(|e| at(e, "cannot open LOCK"))?;
    lock_exclusive(&lock).map_err(|e| at(e, "in use by another manager (LOCK is held)"))?;
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| at(e, "cannot list it"))? {
        let entry = entry.map_err(|e| at(e, "cannot list it"))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".log.tmp") {
            // A segment a crash interrupted before it was complete: never used.
            let _ = fs::remove_file(entry.path());
        } else if let Some(n) = segment_number(&name) {
            segments.push(n);
        }
    }
    segments.sort_unstable();
    let newest = segments.pop();
    let older = segments.iter().map(|&n| segment_path(dir, n)).collect();
    let mut queues = Vec::new();
    let mut lease_ids = 0;
    let mut sessions = Vec::new();
    if let Some(n) = newest {
        let path = segment_path(dir, n);
        let mut bytes = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| at(e, &format!("cannot read {}", path.display())))?;
        let replayed = replay(&bytes).map_err(|c| {
            Error::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "data dir {shown}: {} is corrupt at byte {}: {}; what follows cannot be \
                     trusted. Truncate the file to {} bytes to keep the records before it, or \
                     move it aside to start empty",
                    path.display(),
                    c.offset,
                    c.why,
                    c.offset
                ),
            ))
        })?;
        if let Some((offset, why)) = replayed.torn {
            warn!(
                log = %path.display(),
                offset,
                dropped_bytes = bytes.len() - offset,
                "cut a torn record at the end of the log ({why}): a write a crash interrupted, \
                 never acknowledged"
            );
        }
        let items: usize = replayed.queues.iter().map(|q| q.items.len()).sum();
        let held: usize = replayed.queues.iter().map(|q| q.held.len()).sum();
        info!(
            data_dir = %shown,
            queues = replayed.queues.len(),
            items,
            held,
            sessions = replayed.sessions.len(),
            leases_returned = replayed.leases_returned,
            records = replayed.records,
            "recovered queues from the log (items of unacknowledged leases are back at the head)"
        );
        queues = replayed.queues;
        lease_ids = replayed.lease_ids;
        sessions = replayed.sessions;
    }
    Ok(Opened {
        opts,
        lock,
        newest,
        older,
        queues,
        lease_ids,
        sessions,
    })
}

/// Opens the data directory, restores the queues it holds into `core` and starts the log.
pub(crate) fn start(
    opts: DurableOptions,
    core: &mut depot_core::Manager<'_>,
) -> Result<Log, Error> {
    let mut opened = open(opts)?;
    let shown = opened.opts.dir.display().to_string();
    for q in std::mem::take(&mut opened.queues) {
        let handle = core.restore_queue(&q.name, q.spec).map_err(|e| {
            Error::Config(format!(
                "data dir {shown}: the log holds queue '{}' ({} items), which is neither \
                 declared nor can be made in a spare slot ({e}): declare it, or let clients \
                 create queues",
                q.name,
                q.items.len()
            ))
        })?;
        // Items given back may have filled the queue past its capacity, which the core takes
        // back (up to its storage); a queue declared smaller than the log's is refused.
        let capacity = (0..=u16::MAX)
            .map_while(|i| core.stat(i))
            .find(|s| s.info.handle == handle)
            .map_or(0, |s| s.info.spec.capacity);
        let shrunk = capacity < q.spec.capacity && q.items.len() > capacity as usize;
        for (item, deliveries) in &q.items {
            let restored = match shrunk {
                true => Err(depot_core::journal::RestoreError::Full),
                false => core.restore_item_delivered(handle, item, *deliveries),
            };
            restored.map_err(|e| {
                Error::Config(format!(
                    "data dir {shown}: queue '{}' cannot take the {} items the log holds ({e}): \
                     declare it at least as large as before (capacity {}, max_item {})",
                    q.name,
                    q.items.len(),
                    q.spec.capacity,
                    q.spec.max_item
                ))
            })?;
        }
        // Held last (nearest the queue) first: each goes in front of those before it.
        for item in q.held.iter().rev() {
            core.restore_held(handle, item).map_err(|e| {
                Error::Config(format!(
                    "data dir {shown}: queue '{}' cannot take back the {} items given back to \
                     it while it was full ({e}): declare it at least as large as before \
                     (capacity {}, max_item {}) or give it more room to park items",
                    q.name,
                    q.held.len(),
                    q.spec.capacity,
                    q.spec.max_item
                ))
            })?;
        }
    }
    core.restore_lease_ids(opened.lease_ids);
    let sessions = std::mem::take(&mut opened.sessions);
    let count = sessions.len();
    for (id, s) in sessions {
        if let Err(e) = core.restore_session(id, s.expired_below, s.puts) {
            // Without sessions served, no client can resume one: nothing to de-duplicate.
            warn!("data dir {shown}: {count} sessions in the log are not restored: {e}");
            break;
        }
    }
    Log::start(opened, core)
}

#[cfg(unix)]
fn lock_exclusive(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: `flock` on a descriptor this `File` owns; no memory is passed.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(unix))]
fn lock_exclusive(_: &File) -> io::Result<()> {
    Ok(())
}

/// The log a running manager appends to.
pub(crate) struct Log {
    opts: DurableOptions,
    _lock: File,
    seq: u64,
    file: File,
    size: u64,
    snapshot_size: u64,
    /// Records the core journaled since the last commit.
    pending: Arc<Mutex<Vec<u8>>>,
    /// Swapped with `pending` at each commit, so neither reallocates in the steady state.
    spare: Vec<u8>,
    unsynced: u64,
    last_sync: Instant,
    last_sync_wall: Option<SystemTime>,
    fsyncs: u64,
    compactions: u64,
    /// A compaction writing the next segment on a thread of its own, if one runs.
    compacting: Option<Compaction>,
}

/// A compaction off the event loop: a thread reads the segment's first `upto` bytes and
/// writes the next segment's snapshot from them; the loop keeps appending to the segment
/// meanwhile, and when the thread is done copies what it appended since to the new segment
/// and switches to it.
struct Compaction {
    upto: u64,
    started: Instant,
    thread: std::thread::JoinHandle<io::Result<(File, u64)>>,
}

impl Log {
    /// Starts a new segment from the manager's state (restored from `opened`), removes the
    /// old ones, and gives the core the journal that feeds the log.
    pub(crate) fn start(opened: Opened, core: &mut depot_core::Manager<'_>) -> Result<Log, Error> {
        let Opened {
            opts,
            lock,
            newest,
            older,
            queues: _,
            lease_ids: _,
            sessions: _,
        } = opened;
        let seq = newest.map_or(1, |n| n + 1);
        let pending = Arc::new(Mutex::new(Vec::with_capacity(64 << 10)));
        let (file, size) = write_snapshot(&opts.dir, seq, core)?;
        let mut log = Log {
            _lock: lock,
            seq,
            file,
            size,
            snapshot_size: size,
            pending: pending.clone(),
            spare: Vec::with_capacity(64 << 10),
            unsynced: 0,
            last_sync: Instant::now(),
            last_sync_wall: Some(SystemTime::now()),
            fsyncs: 1,
            compactions: 1,
            compacting: None,
            opts,
        };
        for old in newest
            .map(|n| segment_path(&log.opts.dir, n))
            .into_iter()
            .chain(older)
        {
            log.remove(&old);
        }
        core.set_journal(Box::new(Recorder(pending)) as Box<dyn Journal>);
        Ok(log)
    }

    fn remove(&mut self, path: &Path) {
        if let Err(e) = fs::remove_file(path) {
            warn!(log = %path.display(), "cannot remove a superseded log segment: {e}");
        }
    }

    /// Whether records wait to be written: replies must wait for them.
    pub(crate) fn dirty(&self) -> bool {
        !self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// Writes the records journaled since the last commit (and syncs, as the policy says):
    /// after it, the replies that depend on them may go out. Compacts when the log is long.
    pub(crate) fn commit(&mut self) -> io::Result<()> {
        std::mem::swap(
            &mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner),
            &mut self.spare,
        );
        if self.spare.is_empty() {
            return Ok(());
        }
        self.file.write_all(&self.spare)?;
        self.size += self.spare.len() as u64;
        self.unsynced += self.spare.len() as u64;
        self.spare.clear();
        match self.opts.fsync {
            Fsync::Always => self.sync()?,
            Fsync::Interval(d) if self.last_sync.elapsed() >= d => self.sync()?,
            _ => {}
        }
        if self.compacting.is_none()
            && self.size > self.opts.compact_after.max(2 * self.snapshot_size)
        {
            self.start_compaction();
        }
        Ok(())
    }

    /// Syncs if the interval policy says it is time; switches to a compacted segment once it
    /// is written.
    pub(crate) fn tick(&mut self) -> io::Result<()> {
        if self.sync_due().is_some_and(|t| t <= Instant::now()) {
            self.sync()?;
        }
        if self
            .compacting
            .as_ref()
            .is_some_and(|c| c.thread.is_finished())
        {
            self.finish_compaction()?;
        }
        Ok(())
    }

    /// Whether every commit syncs (`Fsync::Always`).
    pub(crate) fn syncs_every_commit(&self) -> bool {
        self.opts.fsync == Fsync::Always
    }

    /// When the log wants the event loop back: the interval policy's next sync, or a look at
    /// a running compaction.
    pub(crate) fn sync_due(&self) -> Option<Instant> {
        let sync = match self.opts.fsync {
            Fsync::Interval(d) if self.unsynced > 0 => Some(self.last_sync + d),
            _ => None,
        };
        let check = self
            .compacting
            .as_ref()
            .map(|_| Instant::now() + COMPACTION_CHECK);
        sync.into_iter().chain(check).min()
    }

    /// Starts writing the next segment, from this one's records so far, on a thread.
    fn start_compaction(&mut self) {
        let (dir, seq, upto) = (self.opts.dir.clone(), self.seq, self.size);
        let spawned = std::thread::Builder::new()
            .name("depot-compact".into())
            .spawn(move || {
                let mut bytes = Vec::with_capacity(upto as usize);
                File::open(segment_path(&dir, seq))?
                    .take(upto)
                    .read_to_end(&mut bytes)?;
                let (state, read) = read(&bytes).map_err(|c| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("the log is corrupt at byte {}: {}", c.offset, c.why),
                    )
                })?;
                if read.good_len as u64 != upto {
                    return Err(io::Error::other("the log ends in a torn record"));
                }
                drop(bytes);
                let tmp = segment_path(&dir, seq + 1).with_extension("log.tmp");
                snapshot_of_replay(&tmp, &state)
            });
        match spawned {
            Ok(thread) => {
                self.compacting = Some(Compaction {
                    upto,
                    started: Instant::now(),
                    thread,
                })
            }
            Err(e) => warn!("cannot start a compaction of the log: {e}"),
        }
    }

    /// Switches to the segment a compaction wrote, once what this one gained since is copied
    /// to it. A compaction that failed leaves this segment in use: the next try waits until
    /// it has doubled.
    fn finish_compaction(&mut self) -> io::Result<()> {
        let Some(c) = self.compacting.take() else {
            return Ok(());
        };
        let written = c
            .thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the compaction thread panicked")));
        let old = segment_path(&self.opts.dir, self.seq);
        let tmp = segment_path(&self.opts.dir, self.seq + 1).with_extension("log.tmp");
        let switched = written.and_then(|(mut file, snapshot)| {
            let pause = Instant::now();
            let mut tail = Vec::with_capacity((self.size - c.upto) as usize);
            let mut from = File::open(&old)?;
            io::Seek::seek(&mut from, io::SeekFrom::Start(c.upto))?;
            from.take(self.size - c.upto).read_to_end(&mut tail)?;
            file.write_all(&tail)?;
            file.sync_data()?;
            install(&self.opts.dir, self.seq + 1)?;
            Ok((file, snapshot, tail.len() as u64, pause.elapsed()))
        });
        match switched {
            Ok((file, snapshot, tail, pause)) => {
                info!(
                    from_bytes = self.size,
                    to_bytes = snapshot + tail,
                    written_ms = c.started.elapsed().as_millis() as u64,
                    switch_us = pause.as_micros() as u64,
                    "compacted the log (off the event loop, which paused only to switch)"
                );
                self.seq += 1;
                self.file = file;
                self.size = snapshot + tail;
                self.snapshot_size = snapshot;
                self.unsynced = 0;
                self.last_sync = Instant::now();
                self.last_sync_wall = Some(SystemTime::now());
                self.fsyncs += 1;
                self.compactions += 1;
                self.remove(&old);
            }
            Err(e) => {
                warn!("compacting the log failed, it stays as it is: {e}");
                let _ = fs::remove_file(&tmp);
                self.snapshot_size = self.size;
            }
        }
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()?;
        self.unsynced = 0;
        self.last_sync = Instant::now();
        self.last_sync_wall = Some(SystemTime::now());
        self.fsyncs += 1;
        Ok(())
    }

    /// The state metrics show.
    pub(crate) fn state(&self) -> Durability {
        Durability {
            data_dir: self.opts.dir.clone(),
            fsync: self.opts.fsync,
            log_bytes: self.size,
            unsynced_bytes: self.unsynced,
            last_fsync: self.last_sync_wall,
            fsyncs: self.fsyncs,
            compactions: self.compactions,
        }
    }

    /// Writes and syncs what is pending (at shutdown), after a running compaction ends.
    pub(crate) fn close(&mut self) -> io::Result<()> {
        self.commit()?;
        self.finish_compaction()?;
        if self.unsynced > 0 && self.opts.fsync != Fsync::Never {
            self.sync()?;
        }
        Ok(())
    }
}

/// A segment being written: its records are gathered in `rec` and written in large pieces.
struct SegmentWriter {
    w: BufWriter<File>,
    rec: Vec<u8>,
    size: u64,
}

impl SegmentWriter {
    /// Creates `tmp` with the log header.
    fn create(tmp: &Path) -> io::Result<SegmentWriter> {
        let mut w = BufWriter::with_capacity(1 << 20, File::create(tmp)?);
        w.write_all(MAGIC)?;
        w.write_all(&FORMAT.to_le_bytes())?;
        Ok(SegmentWriter {
            w,
            rec: Vec::with_capacity(64 << 10),
            size: HEADER as u64,
        })
    }

    /// Writes the gathered records once there are many.
    fn spill(&mut self) -> io::Result<()> {
        if self.rec.len() >= 64 << 10 {
            self.write()?;
        }
        Ok(())
    }

    fn write(&mut self) -> io::Result<()> {
        self.w.write_all(&self.rec)?;
        self.size += self.rec.len() as u64;
        self.rec.clear();
        Ok(())
    }

    /// Writes the rest and syncs: the file, open for appending, and its length.
    fn finish(mut self) -> io::Result<(File, u64)> {
        self.write()?;
        let file = self.w.into_inner().map_err(|e| e.into_error())?;
        file.sync_data()?;
        Ok((file, self.size))
    }
}

/// Renames segment `seq`'s `.tmp` file to its name, and makes the rename durable.
fn install(dir: &Path, seq: u64) -> io::Result<()> {
    let path = segment_path(dir, seq);
    fs::rename(path.with_extension("log.tmp"), &path)?;
    // The rename itself must reach the disk before the old segment goes.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Writes segment `seq` from the manager's state: to a `.tmp` file, synced, then renamed (so a
/// segment that exists is whole). Returns it open for appending, and its length.
fn write_snapshot(
    dir: &Path,
    seq: u64,
    core: &depot_core::Manager<'_>,
) -> Result<(File, u64), Error> {
    let path = segment_path(dir, seq);
    let written = snapshot_of_core(&path.with_extension("log.tmp"), core)
        .and_then(|done| install(dir, seq).map(|()| done));
    written.map_err(|e| {
        Error::Io(io::Error::new(
            e.kind(),
            format!("cannot write the log {}: {e}", path.display()),
        ))
    })
}

fn snapshot_of_core(tmp: &Path, core: &depot_core::Manager<'_>) -> io::Result<(File, u64)> {
    let mut out = SegmentWriter::create(tmp)?;
    for stat in (0..=u16::MAX).map_while(|i| core.stat(i)) {
        let handle = stat.info.handle;
        created(&mut out.rec, handle, stat.name, stat.info.spec);
        let counts = core.queue_deliveries(handle).into_iter().flatten();
        for ((a, b), deliveries) in core.queue_items(handle).into_iter().flatten().zip(counts) {
            match deliveries {
                0 => item_record(&mut out.rec, APPENDED, handle, &[a, b]),
                d => counted_record(&mut out.rec, APPENDED_COUNTED, handle, d, &[a, b]),
            }
            out.spill()?;
        }
        // Held items, the last to enter first, so replay puts each in front of the one before.
        let held: Vec<&[u8]> = core.queue_held(handle).collect();
        for item in held.into_iter().rev() {
            item_record(&mut out.rec, HELD, handle, &[item]);
        }
    }
    // Sessions' windows, least recently used first.
    for w in core.session_windows() {
        session_window(&mut out.rec, w.id(), w.expired_below(), w.puts());
    }
    // Outstanding leases, after every queue they name; and the ids used so far.
    let leases = core.leases();
    u64_record(&mut out.rec, LEASE_IDS, leases.id_floor());
    for (lease, handle) in leases.held() {
        for (item, deliveries) in leases.items(lease) {
            leased_record(&mut out.rec, lease, handle, deliveries, item);
            out.spill()?;
        }
    }
    out.finish()
}

/// The same snapshot as [`snapshot_of_core`], from the state a log's records built up (its
/// leases still outstanding): what a compaction off the event loop writes.
fn snapshot_of_replay(tmp: &Path, state: &Replay) -> io::Result<(File, u64)> {
    let mut out = SegmentWriter::create(tmp)?;
    let mut handles: Vec<(u16, usize)> = state.handles.iter().map(|(&h, &q)| (h, q)).collect();
    handles.sort_unstable();
    let handle_of = |q: usize| {
        handles
            .iter()
            .find(|h| h.1 == q)
            .map(|h| Handle::from_raw(h.0))
    };
    for &(h, q) in &handles {
        let (handle, queue) = (Handle::from_raw(h), &state.queues[q]);
        created(&mut out.rec, handle, &queue.name, queue.spec);
        for (item, deliveries) in &queue.items {
            match deliveries {
                0 => item_record(&mut out.rec, APPENDED, handle, &[item]),
                &d => counted_record(&mut out.rec, APPENDED_COUNTED, handle, d, &[item]),
            }
            out.spill()?;
        }
        for item in queue.held.iter().rev() {
            item_record(&mut out.rec, HELD, handle, &[item]);
        }
    }
    let mut sessions: Vec<_> = state.sessions.iter().collect();
    sessions.sort_by_key(|(_, s)| s.last);
    for (id, s) in sessions {
        let puts = s.puts.iter().map(|(&seq, &n)| (seq, n));
        session_window(&mut out.rec, id, s.expired_below, puts);
    }
    u64_record(&mut out.rec, LEASE_IDS, state.lease_ids);
    for (&lease, (q, items)) in &state.leases {
        let handle = handle_of(*q).unwrap_or(Handle::from_raw(0));
        for (item, deliveries) in items {
            leased_record(&mut out.rec, lease, handle, *deliveries, item);
            out.spill()?;
        }
    }
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(&[b"123456789"]), 0xCBF4_3926);
        assert_eq!(crc32(&[b"1234", b"56789"]), 0xCBF4_3926);
        assert_eq!(crc32(&[b""]), 0);
    }

    #[test]
    fn fsync_policies_parse_and_print() {
        for (text, policy) in [
            ("always", Fsync::Always),
            ("never", Fsync::Never),
            ("interval", Fsync::Interval(Duration::from_millis(100))),
            ("interval=250", Fsync::Interval(Duration::from_millis(250))),
        ] {
            assert_eq!(text.parse::<Fsync>(), Ok(policy));
            assert_eq!(policy.to_string().parse::<Fsync>(), Ok(policy));
        }
        for bad in [
            "",
            "sometimes",
            "interval=",
            "interval=0",
            "interval=-5",
            "Always",
        ] {
            assert!(bad.parse::<Fsync>().is_err(), "{bad}");
        }
    }

    fn log_of(records: &[Vec<u8>]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&FORMAT.to_le_bytes());
        for r in records {
            out.extend_from_slice(r);
        }
        out
    }

    fn spec() -> QueueSpec {
        QueueSpec {
            capacity: 10,
            max_item: 100,
            mode: QueueMode::Raw,
        }
    }

    fn records() -> Vec<Vec<u8>> {
        let mut recs = Vec::new();
        let mut one = |f: &dyn Fn(&mut Recorder)| {
            let mut r = Recorder(Arc::default());
            f(&mut r);
            recs.push(r.0.lock().unwrap().clone());
        };
        one(&|r| r.created(Handle::from_raw(3), "jobs", spec()));
        for i in 0..5u8 {
            one(&|r| r.appended(Handle::from_raw(3), &[i; 7]));
        }
        one(&|r| r.removed(Handle::from_raw(3), 2));
        one(&|r| r.returned(Handle::from_raw(3), b"back"));
        recs
    }

    fn items(r: &Replayed) -> Vec<Vec<u8>> {
        r.queues[0].items.iter().map(|(i, _)| i.clone()).collect()
    }

    /// Leases taken, acknowledged, given back and left outstanding: the outstanding ones come
    /// back at the head, oldest lease first, with their counts; ids start above the log's.
    #[test]
    fn outstanding_leases_come_back_at_the_head() {
        let mut recs = records(); // jobs: back, [2;7], [3;7], [4;7]
        let mut one = |f: &dyn Fn(&mut Recorder)| {
            let mut r = Recorder(Arc::default());
            f(&mut r);
            recs.push(r.0.lock().unwrap().clone());
        };
        let h = Handle::from_raw(3);
        one(&|r| {
            r.removed(h, 2);
            r.leased(1 << 24, h, b"back", 1);
            r.leased(1 << 24, h, &[2; 7], 1);
        });
        one(&|r| {
            r.removed(h, 1);
            r.leased(2 << 24, h, &[3; 7], 1);
        });
        one(&|r| r.lease_ended(2 << 24)); // acknowledged
        one(&|r| {
            r.removed(h, 1);
            r.leased(3 << 24, h, &[4; 7], 2);
        });
        one(&|r| {
            r.returned_leased(h, &[4; 7], 2);
            r.lease_ended(3 << 24);
        });
        one(&|r| r.appended(h, b"new"));
        let log = log_of(&recs);
        let r = replay(&log).unwrap();
        let counted: Vec<_> = r.queues[0].items.iter().cloned().collect();
        assert_eq!(
            counted,
            [
                (b"back".to_vec(), 1),
                (vec![2; 7], 1),
                (vec![4; 7], 2),
                (b"new".to_vec(), 0)
            ]
        );
        assert_eq!(r.leases_returned, 1);
        assert_eq!(r.lease_ids, (3 << 24) + 1);
        // Cut anywhere in the last lease's records: what was whole is kept.
        let before = log_of(&recs[..recs.len() - 2]);
        for cut in before.len()..log.len() {
            assert!(replay(&log[..cut]).is_ok(), "cut at {cut}");
        }
        // An end of a lease no record took is damage.
        let mut bad = recs.clone();
        let mut r = Vec::new();
        u64_record(&mut r, LEASE_ENDED, 9 << 24);
        bad.insert(2, r);
        assert!(replay(&log_of(&bad))
            .unwrap_err()
            .why
            .contains("no record took"));
    }

    /// Session records rebuild each session's window (the newest numbers, the counts grown),
    /// and held records the items outside the queue; a log of older kinds loads unchanged.
    #[test]
    fn sessions_and_held_items_replay() {
        let mut recs = records(); // jobs: back, [2;7], [3;7], [4;7]
        let old = replay(&log_of(&recs)).unwrap();
        assert!(old.sessions.is_empty() && old.queues[0].held.is_empty());
        let mut one = |f: &dyn Fn(&mut Recorder)| {
            let mut r = Recorder(Arc::default());
            f(&mut r);
            recs.push(r.0.lock().unwrap().clone());
        };
        let (a, b) = ([1u8; 16], [2u8; 16]);
        one(&|r| r.session_applied(&a, 5, 1));
        one(&|r| r.session_applied(&b, 1, 2));
        one(&|r| r.session_applied(&a, 6, 2));
        one(&|r| r.session_applied(&a, 6, 3));
        one(&|r| r.held(Handle::from_raw(3), b"x"));
        one(&|r| r.held(Handle::from_raw(3), b"y"));
        one(&|r| r.held_entered(Handle::from_raw(3), b"y"));
        let log = log_of(&recs);
        let r = replay(&log).unwrap();
        // `b` was named last: it is the most recently used.
        let ids: Vec<_> = r.sessions.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [b, a]);
        let puts: Vec<_> = r.sessions[1].1.puts.clone().into_iter().collect();
        assert_eq!(puts, [(5, 1), (6, 3)]);
        assert_eq!(r.queues[0].held, [b"x".to_vec()]);
        assert_eq!(r.queues[0].items.back().unwrap().0, b"y");
        // A window keeps the newest numbers; the older fall out.
        let mut s = RecoveredSession::default();
        for seq in 0..WINDOW as u64 + 2 {
            s.applied(seq, 1);
        }
        assert_eq!((s.expired_below, s.puts.len()), (2, WINDOW));
        s.applied(1, 1);
        assert!(!s.puts.contains_key(&1), "an expired number stays out");
        // A snapshot's window record gives the same window back.
        let mut w = Vec::new();
        let mut rec = vec![SESSION_WINDOW];
        rec.extend_from_slice(&a);
        rec.extend_from_slice(&7u64.to_le_bytes());
        for (seq, n) in [(7u64, 1u32), (9, 4)] {
            rec.extend_from_slice(&seq.to_le_bytes());
            rec.extend_from_slice(&n.to_le_bytes());
        }
        push_record(&mut w, &[&rec]);
        let r = replay(&log_of(&[w])).unwrap();
        assert_eq!(r.sessions[0].1.expired_below, 7);
        assert_eq!(
            r.sessions[0].1.puts.clone().into_iter().collect::<Vec<_>>(),
            [(7, 1), (9, 4)]
        );
        // Cut anywhere in the last record: what was whole is kept.
        let before = log_of(&recs[..recs.len() - 1]);
        for cut in before.len()..log.len() {
            let r = replay(&log[..cut]).unwrap_or_else(|e| panic!("cut at {cut}: {e:?}"));
            assert_eq!(r.queues[0].held.len(), 2, "cut at {cut}");
        }
        // An item entering that nothing held is damage.
        let mut bad = records();
        let mut r = Vec::new();
        item_record(&mut r, HELD_ENTERED, Handle::from_raw(3), &[b"z"]);
        bad.push(r);
        bad.push(records()[1].clone());
        assert!(replay(&log_of(&bad)).unwrap_err().why.contains("not held"));
    }

    /// The snapshot a compaction writes from a log's records replays to what the log does:
    /// items with their counts, held items, sessions' windows, leases still outstanding and
    /// the lease id floor; records appended after it apply to it as to the log.
    #[test]
    fn a_snapshot_from_the_records_replays_like_them() {
        let mut recs = records();
        let mut one = |f: &dyn Fn(&mut Recorder)| {
            let mut r = Recorder(Arc::default());
            f(&mut r);
            recs.push(r.0.lock().unwrap().clone());
        };
        let h = Handle::from_raw(3);
        one(&|r| r.created(Handle::from_raw(9), "other", spec()));
        one(&|r| r.appended(Handle::from_raw(9), b"o1"));
        one(&|r| {
            r.removed(h, 2);
            r.leased(7, h, b"back", 1);
            r.leased(7, h, &[2; 7], 1);
        });
        one(&|r| {
            r.removed(h, 1);
            r.leased(8, h, &[3; 7], 2);
        });
        one(&|r| {
            r.returned_leased(h, &[3; 7], 2);
            r.lease_ended(8);
        });
        one(&|r| r.held(h, b"h1"));
        one(&|r| r.held(h, b"h2"));
        one(&|r| r.session_applied(&[1; 16], 4, 2));
        one(&|r| r.session_applied(&[2; 16], 9, 1));
        one(&|r| r.session_applied(&[1; 16], 5, 1));
        let log = log_of(&recs);
        let (state, _) = read(&log).unwrap();
        let dir = std::env::temp_dir().join(format!("depot-snap-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let tmp = dir.join("snap.tmp");
        snapshot_of_replay(&tmp, &state).unwrap();
        let mut snap = fs::read(&tmp).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        let summary = |r: &Replayed| {
            let queues: Vec<_> = r
                .queues
                .iter()
                .map(|q| (q.name.clone(), q.spec, q.items.clone(), q.held.clone()))
                .collect();
            let sessions: Vec<_> = r
                .sessions
                .iter()
                .map(|(id, s)| (*id, s.expired_below, s.puts.clone()))
                .collect();
            (queues, sessions, r.leases_returned, r.lease_ids)
        };
        assert_eq!(
            summary(&replay(&snap).unwrap()),
            summary(&replay(&log).unwrap())
        );
        // What follows the snapshot applies to it by the same handles.
        let mut tail = Vec::new();
        let mut r = Recorder(Arc::default());
        r.lease_ended(7);
        r.appended(Handle::from_raw(9), b"o2");
        r.held_entered(h, b"h2");
        tail.extend_from_slice(&r.0.lock().unwrap());
        snap.extend_from_slice(&tail);
        let mut whole = log.clone();
        whole.extend_from_slice(&tail);
        let after = replay(&snap).unwrap();
        assert_eq!(summary(&after), summary(&replay(&whole).unwrap()));
        assert_eq!(after.leases_returned, 0);
        assert_eq!(after.queues[1].items.len(), 2);
    }

    #[test]
    fn a_log_replays_to_its_queues() {
        let r = replay(&log_of(&records())).unwrap();
        assert_eq!(r.records, 8);
        assert_eq!(r.torn, None);
        assert_eq!(r.queues[0].name, "jobs");
        assert_eq!(r.queues[0].spec, spec());
        assert_eq!(
            items(&r),
            vec![b"back".to_vec(), vec![2; 7], vec![3; 7], vec![4; 7]]
        );
    }

    /// A log cut at every byte offset of its last record recovers every record before it.
    #[test]
    fn a_torn_last_record_is_cut_at_every_offset() {
        let recs = records();
        let whole = log_of(&recs);
        let before = log_of(&recs[..recs.len() - 1]);
        let expected = items(&replay(&before).unwrap());
        for cut in before.len()..whole.len() {
            let r = replay(&whole[..cut]).unwrap_or_else(|e| panic!("cut at {cut}: {e:?}"));
            assert_eq!(items(&r), expected, "cut at {cut}");
            assert_eq!(r.good_len, before.len());
            assert_eq!(r.torn.is_some(), cut > before.len(), "cut at {cut}");
        }
        // The last record's bytes zeroed (the file was extended, the data never came).
        let mut zeroed = whole.clone();
        zeroed[before.len()..].fill(0);
        zeroed.extend_from_slice(&[0; 100]);
        assert_eq!(items(&replay(&zeroed).unwrap()), expected);
        // A short header is an empty log, torn.
        for cut in 0..HEADER {
            let r = replay(&whole[..cut]).unwrap();
            assert!(r.queues.is_empty());
        }
    }

    /// Damage with whole records after it is not a torn write: it is reported, with where.
    #[test]
    fn damage_in_the_middle_is_an_error() {
        let recs = records();
        let whole = log_of(&recs);
        let second = HEADER + recs[0].len();
        for flip in [second + 4, second + 9, second + RECORD_HEAD + 3] {
            let mut bad = whole.clone();
            bad[flip] ^= 0x40;
            let e = replay(&bad).unwrap_err();
            assert_eq!(e.offset, second, "flip at {flip}: {e:?}");
        }
        let mut bad = whole.clone();
        bad[0] = b'X';
        assert!(replay(&bad).is_err());
        // A record for a queue no record created.
        let orphan = log_of(&recs[1..]);
        assert!(replay(&orphan)
            .unwrap_err()
            .why
            .contains("no record created"));
        // A kind from the future.
        let mut future = recs.clone();
        let mut r = Vec::new();
        push_record(&mut r, &[&[200, 3, 0]]);
        future.insert(1, r);
        assert!(replay(&log_of(&future))
            .unwrap_err()
            .why
            .contains("unknown record kind"));
    }
}
