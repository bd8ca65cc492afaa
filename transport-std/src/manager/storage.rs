//! Sizing the core manager's storage from the builder's options.
//!
//! The core owns what it is given here: queue storage, a waiter pool, a heap park store for
//! the items of blocked puts, and one connection slot per connection served at once. A
//! connection's buffers are allocated when it has bytes to hold and given back when they
//! empty, or, while its client keeps sending, once it has been quiet for a second
//! (`Manager::buffer_memory`), so memory follows the traffic, not `max_connections`.

use depot_core::client::PUT_OVERHEAD;
use depot_core::manager::PythonStorage;
use depot_core::python::pickle::Node;
use depot_core::python::ScratchStore;
use depot_core::wire::{
    item_reply_bound, valid_name, QueueSpec, HEADER_LEN, MAX_MAX_FRAME, SMALL_REPLY_BOUND, TAG_LEN,
};
use depot_core::{Connection, LeaseStore, ManagerConfig, ObjectSlot, ParkStore, Resources, Waiter};

use tracing::warn;

use super::builder::{ManagerBuilder, QueueOptions};
use super::durable::DurableOptions;
use crate::Error;

/// Queue storage is capped here unless `storage_bytes` says otherwise.
const DEFAULT_STORAGE_CAP: usize = 64 << 20;
/// Frames at least this large let a client batch many small items in one request; a buffer
/// only grows to it when a frame that large arrives.
const MIN_RX: usize = 64 << 10;
/// The most connections a manager accepts to serve, whatever the builder says.
const MAX_CONNECTIONS: usize = 1 << 20;
/// Connections served at once unless the builder or the file descriptor limit says otherwise.
const DEFAULT_CONNECTIONS: usize = 16384;
/// File descriptors kept for other than connections: the listener, the poll and its waker,
/// standard streams, a metrics endpoint, the reserve used to refuse clients when out of
/// descriptors, and whatever else the application opens.
const FD_HEADROOM: usize = 32;
/// The most bytes the items of blocked puts may hold at once, over all connections.
const PARK_BUDGET: usize = 64 << 20;
/// Bytes of per-item length prefix in queue storage.
const ITEM_PREFIX: usize = 4;
/// Queue storage at least this large is backed by huge pages where the system offers them.
const HUGE_PAGES_FROM: usize = 4 << 20;

/// Everything the event loop needs to know to build the core manager.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) authkey: Option<Vec<u8>>,
    pub(crate) keyring: Option<depot_core::Keyring<'static>>,
    /// Declared queues: name, limits, storage bytes.
    pub(crate) queues: Vec<(String, QueueSpec, usize)>,
    /// Declared objects beside queues: name, kind, limits, storage bytes.
    pub(crate) objects: Vec<(String, depot_core::wire::ObjectKind, QueueSpec, usize)>,
    /// Registered calls' handlers, by name.
    pub(crate) handlers: std::collections::HashMap<String, super::builder::CallHandler>,
    /// Storage bytes of each spare slot clients may create queues in.
    pub(crate) spares: Vec<usize>,
    pub(crate) config: ManagerConfig,
    pub(crate) max_connections: usize,
    pub(crate) rx_len: usize,
    pub(crate) tx_len: usize,
    pub(crate) waiters: usize,
    /// The largest item of any queue.
    pub(crate) largest: usize,
    pub(crate) max_leased: usize,
    pub(crate) dead_letters: Vec<(String, String, u8)>,
    /// Where the queues are kept, if not in memory only.
    pub(crate) durable: Option<DurableOptions>,
    /// Client sessions remembered at once.
    pub(crate) sessions: usize,
    /// The engine that keeps the queues, if not this manager.
    pub(crate) backend: Option<super::backend::BackendPlan>,
    pub(crate) busy_poll: std::time::Duration,
}

impl Plan {
    /// Checks the builder's options and sizes every buffer.
    pub(crate) fn new(b: &ManagerBuilder) -> Result<Plan, Error> {
        let authkey = b.authkey.clone();
        if authkey.is_none() && b.keyring.is_none() {
            return Err(Error::Config("an authkey or a keyring is required".into()));
        }
        let keyring = b.keyring.clone();
        if let Some(keyring) = &keyring {
            keyring
                .check()
                .map_err(|e| Error::Config(format!("keyring: {e}")))?;
        }
        let fd_room = fd_room();
        let max_connections = match b.max_connections {
            Some(n) if n == 0 || n > MAX_CONNECTIONS => {
                return Err(Error::Config(format!(
                    "max_connections must be 1 to {MAX_CONNECTIONS}, not {n}"
                )));
            }
            Some(n) if fd_room.is_some_and(|room| n > room) => {
                let room = fd_room.unwrap_or(n);
                warn!(
                    "max_connections {n} is more than the file descriptor limit allows \
                     (`ulimit -n`); serving at most {room}"
                );
                room
            }
            Some(n) => n,
            None => fd_room.map_or(DEFAULT_CONNECTIONS, |room| room.min(DEFAULT_CONNECTIONS)),
        };
        let max_handshaking = b
            .max_handshaking
            .unwrap_or(max_connections / 2)
            .clamp(1, max_connections);
        let mut queues = Vec::with_capacity(b.queues.len());
        for (name, opts) in &b.queues {
            if !valid_name(name) {
                return Err(Error::Config(format!(
                    "invalid queue name '{}': 1 to 32 bytes, no control characters",
                    name.escape_debug()
                )));
            }
            if queues.iter().any(|(n, _, _)| n == name) {
                return Err(Error::Config(format!("queue '{name}' declared twice")));
            }
            let (spec, storage) =
                checked(opts).map_err(|e| Error::Config(format!("queue '{name}': {e}")))?;
            queues.push((name.clone(), spec, storage));
        }
        let mut objects = Vec::with_capacity(b.objects.len());
        for &(ref name, kind, capacity, max_item) in &b.objects {
            if !valid_name(name) {
                return Err(Error::Config(format!(
                    "invalid object name '{}': 1 to 32 bytes, no control characters",
                    name.escape_debug()
                )));
            }
            let taken = queues.iter().any(|(n, _, _)| n == name)
                || objects.iter().any(|(n, _, _, _)| n == name);
            if taken {
                return Err(Error::Config(format!("'{name}' declared twice")));
            }
            let spec = QueueSpec {
                capacity,
                max_item,
                mode: depot_core::QueueMode::Value,
            };
            let storage = match kind {
                depot_core::wire::ObjectKind::Value
                | depot_core::wire::ObjectKind::Dict
                | depot_core::wire::ObjectKind::List => max_item as usize,
                _ => 0,
            };
            objects.push((name.clone(), kind, spec, storage));
        }
        let mut spares = Vec::new();
        let mut allow_create = false;
        let object_bytes = objects.iter().map(|(_, _, _, n)| *n as u32);
        let mut largest = queues
            .iter()
            .map(|(_, s, _)| s.max_item)
            .chain(object_bytes)
            .max()
            .unwrap_or(0);
        if let Some((count, opts)) = b.create {
            let (spec, storage) =
                checked(&opts).map_err(|e| Error::Config(format!("allow_create: {e}")))?;
            allow_create = true;
            spares = vec![storage; count];
            largest = largest.max(spec.max_item);
        }
        let largest = largest.max(1) as usize;
        // The receive buffer must hold the largest put's frame, the transmit buffer the
        // largest get's reply with room to spare for other replies (the core keeps room for
        // one ordinary reply beyond what blocked requests reserve). Both are limits: the
        // buffers grow to them only when a frame needs it.
        let rx_len = (HEADER_LEN + TAG_LEN + PUT_OVERHEAD + largest).max(MIN_RX);
        let tx_len = 2 * item_reply_bound(largest.max(MIN_RX)) + 4 * (TAG_LEN + SMALL_REPLY_BOUND);
        let config = ManagerConfig {
            max_frame: (rx_len - HEADER_LEN).min(MAX_MAX_FRAME as usize) as u32,
            handshake_timeout_ms: millis(b.handshake_timeout),
            frame_timeout_ms: millis(b.frame_timeout),
            write_stall_timeout_ms: millis(b.write_stall_timeout),
            allow_remote_shutdown: b.allow_remote_shutdown,
            allow_create,
            max_handshaking: max_handshaking.try_into().unwrap_or(u32::MAX),
            max_handshaking_per_source: b.max_handshaking_per_source.try_into().unwrap_or(u32::MAX),
            throttle: b.throttle,
            encryption: b.encryption,
            prefer_aes_gcm: crate::aes_gcm_is_fast(),
            ..ManagerConfig::default()
        };
        Ok(Plan {
            authkey,
            keyring,
            queues,
            objects,
            handlers: b.handlers.iter().cloned().collect(),
            spares,
            config,
            max_connections,
            rx_len,
            tx_len,
            largest,
            max_leased: b.max_leased,
            dead_letters: b.dead_letters.clone(),
            durable: b.data_dir.clone().map(|dir| DurableOptions {
                dir,
                fsync: b.fsync,
                compact_after: b.compact_after,
            }),
            // Enough for every connection to block twice; more queue behind in their input.
            waiters: (max_connections * 2).max(256),
            sessions: b.sessions,
            busy_poll: b.busy_poll,
            backend: match (&b.backend, &b.data_dir) {
                (Some(_), Some(_)) => {
                    return Err(Error::Config(
                        "a data directory and a backend exclude each other".into(),
                    ))
                }
                (backend, _) => backend.clone(),
            },
        })
    }
}

fn millis(d: std::time::Duration) -> u32 {
    d.as_millis().clamp(1, u128::from(u32::MAX)) as u32
}

/// The limits and storage bytes of one queue, or why they cannot work.
fn checked(opts: &QueueOptions) -> Result<(QueueSpec, usize), String> {
    let biggest = MAX_MAX_FRAME as usize - HEADER_LEN - TAG_LEN - PUT_OVERHEAD;
    if opts.capacity == 0 {
        return Err("capacity must be at least 1".into());
    }
    if opts.max_item == 0 || opts.max_item as usize > biggest {
        return Err(format!("max_item must be 1 to {biggest} bytes"));
    }
    let one = opts.max_item as usize + ITEM_PREFIX;
    let storage = match opts.storage_bytes {
        Some(n) if n < one => {
            return Err(format!(
                "storage_bytes {n} cannot hold one item of {} bytes",
                opts.max_item
            ))
        }
        Some(n) => n,
        None => (opts.capacity as usize)
            .saturating_mul(one)
            .min(DEFAULT_STORAGE_CAP)
            .max(one),
    };
    let spec = QueueSpec {
        capacity: opts.capacity,
        max_item: opts.max_item,
        mode: opts.mode,
    };
    Ok((spec, storage))
}

/// Storage for serving Python `BaseManager` clients on the same port: one set for the whole
/// manager (it decodes one request at a time), sized for items as large as any queue takes.
pub(crate) fn python(plan: &Plan) -> PythonStorage<'static> {
    // About two nodes per value in an item, a memo slot per container or string.
    let nodes = (plan.largest / 2).clamp(4096, 1 << 20);
    let scratch = || ScratchStore {
        nodes: vec![Node::None; nodes].into(),
        stack: vec![0; 1024].into(),
        memo: vec![0; nodes / 2].into(),
    };
    PythonStorage {
        request: scratch(),
        item: vec![0; plan.largest].into(),
        reply: scratch(),
        join: vec![0; plan.largest].into(),
    }
}

/// The store of leased items: records for `plan.max_leased` items, their bytes on the heap.
pub(crate) fn leases(plan: &Plan) -> LeaseStore<'static> {
    LeaseStore::heap(plan.max_leased, PARK_BUDGET)
}

/// Sets each queue's dead-letter queue, by name.
pub(crate) fn dead_letters(core: &mut depot_core::Manager, plan: &Plan) -> Result<(), Error> {
    let handle = |core: &depot_core::Manager, name: &str| {
        (0..=u16::MAX)
            .map_while(|i| core.stat(i))
            .find(|s| s.name == name)
            .map(|s| s.info.handle)
            .ok_or_else(|| Error::Config(format!("dead-letter setting: no queue '{name}'")))
    };
    for (queue, dead, max) in &plan.dead_letters {
        let (q, d) = (handle(core, queue)?, handle(core, dead)?);
        core.set_dead_letter(q, d, *max)
            .map_err(|e| Error::Config(format!("dead-letter queue of '{queue}': {e}")))?;
    }
    Ok(())
}

/// Builds the core manager's storage as `plan` sizes it.
pub(crate) fn resources(plan: &Plan) -> Result<Resources<'static>, Error> {
    let mut objects =
        Vec::with_capacity(plan.queues.len() + plan.objects.len() + plan.spares.len());
    for (name, spec, storage) in &plan.queues {
        let slot = ObjectSlot::queue(name, *spec, queue_storage(*storage))
            .map_err(|e| Error::Config(format!("queue '{name}': {e}")))?;
        objects.push(slot);
    }
    for (name, kind, spec, storage) in &plan.objects {
        let slot = ObjectSlot::declare(name, *kind, *spec, vec![0u8; *storage])
            .map_err(|e| Error::Config(format!("{} '{name}': {e}", kind.name())))?;
        objects.push(slot);
    }
    objects.extend(
        plan.spares
            .iter()
            .map(|s| ObjectSlot::spare(queue_storage(*s))),
    );
    let connections: Vec<Connection<'static>> = (0..plan.max_connections)
        .map(|_| Connection::owned(plan.rx_len, plan.tx_len))
        .collect();
    Ok(Resources {
        objects: objects.into(),
        connections: connections.into(),
        waiters: vec![Waiter::EMPTY; plan.waiters].into(),
        parked: ParkStore::heap(PARK_BUDGET),
    })
}

/// `len` zeroed bytes for a queue's ring. The allocator maps large ones lazily, so they cost
/// memory only as the ring's tail first reaches each page; for a large ring, Linux is asked to
/// back all but its first 2 MiB with 2-MiB pages (transparent huge pages, where enabled for
/// `madvise` or always), so that first touch is one fault per 2 MiB instead of one per 4 KiB:
/// a backlog of 100 MB of items costs 50 faults instead of 25,000 (pipelined 1-KiB items:
/// about +8 %, BENCHMARKS.md). The first 2 MiB keep 4-KiB pages: a queue that holds little (its
/// ring starts over at the front whenever it empties) then costs little. What the queue may
/// hold, and so the most memory it can take, is unchanged.
fn queue_storage(len: usize) -> Vec<u8> {
    let storage = vec![0u8; len];
    if len >= HUGE_PAGES_FROM {
        advise_huge_pages(&storage);
    }
    storage
}

#[cfg(target_os = "linux")]
fn advise_huge_pages(storage: &[u8]) {
    const HUGE: usize = 2 << 20;
    let start = storage.as_ptr() as usize;
    // The whole huge pages inside `storage` past its first 2 MiB (madvise wants a page-aligned
    // start).
    let (from, to) = (
        (start + HUGE).next_multiple_of(HUGE),
        (start + storage.len()) / HUGE * HUGE,
    );
    if to > from {
        #[allow(unsafe_code)]
        // SAFETY: `from..to` lies inside `storage`'s allocation; MADV_HUGEPAGE changes how
        // the kernel backs those pages, never their contents. A refusal (no transparent huge
        // pages in this kernel) leaves 4-KiB pages, as without the call.
        let _ = unsafe { libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_HUGEPAGE) };
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages(_storage: &[u8]) {}

/// How many connections the process's file descriptor limit leaves room for (`None`: no limit
/// known).
#[cfg(not(unix))]
fn fd_room() -> Option<usize> {
    None
}

/// How many connections the process's file descriptor limit leaves room for (`None`: no limit
/// known).
#[cfg(unix)]
fn fd_room() -> Option<usize> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` writes one `rlimit` to the pointer, which is valid and exclusive.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if rc != 0 || limit.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    let soft = usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX);
    Some(soft.saturating_sub(FD_HEADROOM).max(1))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The VmFlags of the mapping of /proc/self/smaps that holds `addr`.
    fn vm_flags(addr: usize) -> String {
        let smaps =
            std::fs::read_to_string("/proc/self/smaps").expect("Linux has /proc/self/smaps");
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ') {
                if let Some((lo, hi)) = range.split_once('-') {
                    if let (Ok(lo), Ok(hi)) =
                        (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
                    {
                        inside = (lo..hi).contains(&addr);
                        continue;
                    }
                }
            }
            if inside {
                if let Some(flags) = line.strip_prefix("VmFlags:") {
                    return flags.to_owned();
                }
            }
        }
        panic!("no mapping holds {addr:#x}");
    }

    /// A large queue's ring asks for huge pages (`hg`, MADV_HUGEPAGE) where the kernel has
    /// them, past its first 2 MiB; a small one does not.
    #[test]
    fn a_large_queue_ring_asks_for_huge_pages() {
        let advised = |addr: usize| vm_flags(addr).split_whitespace().any(|f| f == "hg");
        let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled");
        let large = queue_storage(HUGE_PAGES_FROM * 2);
        let start = large.as_ptr() as usize;
        // Without transparent huge pages in the kernel the advice is refused.
        assert_eq!(advised(start + large.len() / 2), thp.is_ok(), "{thp:?}");
        assert!(!advised(start), "the first 2 MiB keep small pages");
        let small = queue_storage(64 << 10);
        assert!(!advised(small.as_ptr() as usize));
    }
}
