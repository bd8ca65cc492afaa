//! Sizing and owning every buffer the core manager borrows.
//!
//! The core allocates nothing: it borrows queue storage, per-connection receive, transmit and
//! parked-put buffers, and a waiter pool. [`Plan`] sizes them from the builder's options once,
//! [`Storage`] owns them for the life of the event loop, and [`Storage::split`] lends them out.
//!
//! Connection buffers come from three large zeroed allocations (`vec![0u8; n]`), which the
//! allocator takes from fresh, lazily mapped pages: only the pages a connection has actually
//! used are resident, so an idle connection costs a page or two of each, not its full size.
//! Three arenas rather than three buffers per connection also keep the number of memory
//! mappings small with tens of thousands of connections.

use depot_core::client::PUT_OVERHEAD;
use depot_core::wire::{
    item_reply_bound, valid_name, QueueSpec, HEADER_LEN, MAX_MAX_FRAME, SMALL_REPLY_BOUND, TAG_LEN,
};
use depot_core::{Connection, ManagerConfig, ObjectSlot, Waiter};

use super::builder::{ManagerBuilder, QueueOptions};
use crate::Error;

/// Queue storage is capped here unless `storage_bytes` says otherwise.
const DEFAULT_STORAGE_CAP: usize = 64 << 20;
/// A receive buffer at least this large lets a client pipeline many small requests in one
/// read; it costs nothing until used (see the module docs).
const MIN_RX: usize = 64 << 10;
/// The most connections a manager accepts to serve, whatever the builder says.
const MAX_CONNECTIONS: usize = 1 << 20;
/// The most address space the connection buffers may reserve.
const MAX_RESERVED: usize = 256 << 30;
/// Bytes of per-item length prefix in queue storage.
const ITEM_PREFIX: usize = 4;

/// Everything the event loop needs to know to build the core manager.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) authkey: Vec<u8>,
    /// Declared queues: name, limits, storage bytes.
    pub(crate) queues: Vec<(String, QueueSpec, usize)>,
    /// Storage bytes of each spare slot clients may create queues in.
    pub(crate) spares: Vec<usize>,
    pub(crate) config: ManagerConfig,
    pub(crate) max_connections: usize,
    pub(crate) rx_len: usize,
    pub(crate) tx_len: usize,
    pub(crate) park_len: usize,
    pub(crate) waiters: usize,
}

impl Plan {
    /// Checks the builder's options and sizes every buffer.
    pub(crate) fn new(b: &ManagerBuilder) -> Result<Plan, Error> {
        let authkey = b
            .authkey
            .clone()
            .ok_or_else(|| Error::Config("an authkey is required".into()))?;
        if b.max_connections == 0 || b.max_connections > MAX_CONNECTIONS {
            return Err(Error::Config(format!(
                "max_connections must be 1 to {MAX_CONNECTIONS}, not {}",
                b.max_connections
            )));
        }
        let mut queues = Vec::with_capacity(b.queues.len());
        for (name, opts) in &b.queues {
            if !valid_name(name) {
                return Err(Error::InvalidName(name.clone()));
            }
            if queues.iter().any(|(n, _, _)| n == name) {
                return Err(Error::Config(format!("queue '{name}' declared twice")));
            }
            let (spec, storage) =
                checked(opts).map_err(|e| Error::Config(format!("queue '{name}': {e}")))?;
            queues.push((name.clone(), spec, storage));
        }
        let mut spares = Vec::new();
        let mut allow_create = false;
        let mut largest = queues.iter().map(|(_, s, _)| s.max_item).max().unwrap_or(0);
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
        // one ordinary reply beyond what blocked requests reserve), and the park buffer the
        // item of one blocked put.
        let rx_len = (HEADER_LEN + TAG_LEN + PUT_OVERHEAD + largest).max(MIN_RX);
        let tx_len = 2 * item_reply_bound(largest) + 4 * (TAG_LEN + SMALL_REPLY_BOUND);
        let tx_len = tx_len.max(MIN_RX / 2);
        let config = ManagerConfig {
            max_frame: (rx_len - HEADER_LEN).min(MAX_MAX_FRAME as usize) as u32,
            handshake_timeout_ms: millis(b.handshake_timeout),
            frame_timeout_ms: millis(b.frame_timeout),
            write_stall_timeout_ms: millis(b.write_stall_timeout),
            allow_remote_shutdown: b.allow_remote_shutdown,
            allow_create,
            ..ManagerConfig::default()
        };
        // The arenas are reserved, not resident (see the module docs), but an allocation the
        // system refuses would abort the process: refuse absurd sizes here instead.
        // Linux's default overcommit policy refuses one allocation larger than RAM and swap.
        let limit = memory_total().unwrap_or(MAX_RESERVED).min(MAX_RESERVED);
        let arena = rx_len.max(tx_len).saturating_mul(b.max_connections);
        if arena > limit {
            return Err(Error::Config(format!(
                "{} connections with items of up to {largest} bytes would reserve {} MiB \
                 for buffers, more than this machine's {} MiB: lower max_connections or \
                 max_item",
                b.max_connections,
                arena >> 20,
                limit >> 20
            )));
        }
        Ok(Plan {
            authkey,
            queues,
            spares,
            config,
            max_connections: b.max_connections,
            rx_len,
            tx_len,
            park_len: largest,
            // Enough for every connection to block twice; more queue behind in their input.
            waiters: (b.max_connections * 2).max(256),
        })
    }
}

/// RAM plus swap, in bytes, where the system says (Linux).
fn memory_total() -> Option<usize> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<usize> {
        let line = info.lines().find(|l| l.starts_with(name))?;
        let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib.saturating_mul(1024))
    };
    Some(field("MemTotal:")?.saturating_add(field("SwapTotal:").unwrap_or(0)))
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

/// The buffers of one manager, owned for the life of its event loop.
pub(crate) struct Storage {
    queues: Vec<Vec<u8>>,
    spares: Vec<Vec<u8>>,
    rx: Vec<u8>,
    tx: Vec<u8>,
    park: Vec<u8>,
    waiters: Vec<Waiter>,
}

/// What [`Storage::split`] lends to the core manager.
pub(crate) struct Parts<'a> {
    pub(crate) objects: Vec<ObjectSlot<'a>>,
    pub(crate) conns: Vec<Connection<'a>>,
    pub(crate) waiters: &'a mut [Waiter],
}

impl Storage {
    /// Allocates every buffer `plan` asks for (zeroed, so untouched pages stay unmapped).
    pub(crate) fn allocate(plan: &Plan) -> Storage {
        let n = plan.max_connections;
        Storage {
            queues: plan.queues.iter().map(|(_, _, s)| vec![0u8; *s]).collect(),
            spares: plan.spares.iter().map(|s| vec![0u8; *s]).collect(),
            rx: vec![0u8; n * plan.rx_len],
            tx: vec![0u8; n * plan.tx_len],
            park: vec![0u8; n * plan.park_len],
            waiters: vec![Waiter::EMPTY; plan.waiters],
        }
    }

    /// Lends the buffers out as the core's object slots, connections and waiter pool.
    pub(crate) fn split<'a>(&'a mut self, plan: &Plan) -> Result<Parts<'a>, Error> {
        let mut objects = Vec::with_capacity(self.queues.len() + self.spares.len());
        for ((name, spec, _), storage) in plan.queues.iter().zip(self.queues.iter_mut()) {
            let slot = ObjectSlot::queue(name, *spec, storage)
                .map_err(|e| Error::Config(format!("queue '{name}': {e}")))?;
            objects.push(slot);
        }
        objects.extend(self.spares.iter_mut().map(|s| ObjectSlot::spare(s)));
        let conns = self
            .rx
            .chunks_exact_mut(plan.rx_len)
            .zip(self.tx.chunks_exact_mut(plan.tx_len))
            .zip(self.park.chunks_exact_mut(plan.park_len))
            .map(|((rx, tx), park)| Connection::new(rx, tx, park))
            .collect();
        Ok(Parts {
            objects,
            conns,
            waiters: &mut self.waiters,
        })
    }
}
