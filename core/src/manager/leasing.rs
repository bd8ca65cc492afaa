//! Acknowledged gets in the manager: `GetLeased`, `Ack`, `Nack`, lease expiry and dead-letter
//! queues. The lease state itself lives in `crate::lease`; this is the glue to queues and
//! connections.
//!
//! Items that come back (nack, expiry, closed connection) go to the head of their queue in
//! their order, ahead of items never delivered, each with its delivery count. Several leases
//! coming back at once (a closed connection's, or expiring together) are put back newest first,
//! so they stand at the head in the order they were taken. An item whose count reached its queue's dead-letter limit goes to the tail of the
//! dead-letter queue instead (or, if that queue refuses it, back to the head as well).

use super::Manager;
#[cfg(feature = "leases")]
use super::{State, Take, NONE};
#[cfg(feature = "leases")]
use crate::codec::{tag, Writer};
#[cfg(feature = "leases")]
use crate::lease::LeaseStore;
#[cfg(feature = "leases")]
use crate::queue::Queue;
use crate::time::Instant;
use crate::wire::{ErrorCode, Handle, Reply, Wait, HEADER_LEN, LEASE_REPLY_OVERHEAD, TAG_LEN};

/// Bytes a `Leased` reply whose items and delivery counts take `body` bytes can take on the
/// wire, frame included.
pub(super) const fn reply_bound(body: usize) -> usize {
    HEADER_LEN + TAG_LEN + LEASE_REPLY_OVERHEAD + body
}

#[cfg(feature = "leases")]
impl<'a> Manager<'a> {
    /// Serves acknowledged gets (`GetLeased`) with `store` keeping the leased items; without
    /// it every leased get is answered `LeaseLimit`.
    pub fn serve_leases(&mut self, store: LeaseStore<'a>) {
        self.leases = store;
    }

    /// Items of queue `queue` delivered `max_deliveries` times under a lease and then not
    /// acknowledged go to the tail of `dead_letter` instead of back to `queue`'s head
    /// (`max_deliveries` 0: never). `NoSuchObject` if either is not a queue; `InvalidSpec` if
    /// they are the same.
    pub fn set_dead_letter(
        &mut self,
        queue: Handle,
        dead_letter: Handle,
        max_deliveries: u8,
    ) -> Result<(), ErrorCode> {
        if queue == dead_letter {
            return Err(ErrorCode::InvalidSpec);
        }
        self.registry.queue(dead_letter)?;
        let q = self.registry.queue(queue)?;
        q.dead_letter = (max_deliveries > 0).then_some((dead_letter, max_deliveries));
        Ok(())
    }

    /// Gives leases granted from now on ids at or above `floor`: call after restoring from a
    /// journal, with the highest lease id it names plus one, so an id of an earlier run never
    /// names a new lease.
    pub fn restore_lease_ids(&mut self, floor: u64) {
        self.leases.skip_ids_below(floor);
    }

    /// The leased items, for statistics.
    pub fn leases(&self) -> &LeaseStore<'a> {
        &self.leases
    }

    /// The largest body (packed items and delivery counts) a `Leased` reply on connection `i`
    /// can carry.
    pub(super) fn lease_fit(&self, i: usize) -> usize {
        self.conns[i]
            .peer_max
            .saturating_sub(TAG_LEN + LEASE_REPLY_OVERHEAD)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn get_leased(
        &mut self,
        i: usize,
        id: u32,
        handle: Handle,
        wait: Wait,
        max_items: u32,
        max_bytes: u32,
        lease_ms: u32,
    ) {
        self.get(
            i,
            id,
            handle,
            wait,
            Take::leased(max_items, max_bytes, lease_ms),
        );
    }

    /// Takes `count` items (whose reply body is `body` bytes, counts included) off `handle`
    /// under a new lease for request `id` on connection `i`.
    pub(super) fn deliver_leased(
        &mut self,
        i: usize,
        id: u32,
        handle: Handle,
        count: u32,
        body: usize,
        lease_ms: u32,
    ) {
        let deadline = self.now.add_millis(lease_ms.into());
        let Ok(q) = self.registry.queue(handle) else {
            return;
        };
        let queue = &q.queue;
        let items = queue
            .iter()
            .zip(queue.deliveries())
            .take(count as usize)
            .map(|((a, b), d)| (a, b, d.saturating_add(1)));
        let Ok(lease) = self.leases.grant(i as u32, handle, deadline, items) else {
            return self.reply_error(i, id, ErrorCode::LeaseLimit);
        };
        let c = &mut self.conns[i];
        let State::Open(session) = &mut c.state else {
            self.leases.undo_grant(lease);
            return;
        };
        let was_idle = c.tx.is_empty();
        let pushed = c.tx.push_with(c.peer_max, &mut session.tx_mac, &mut |out| {
            encode_leased_reply(out, id, handle, lease, queue, count, body)
        });
        match pushed {
            Ok(()) => {
                for _ in 0..count {
                    q.queue.pop_front();
                }
                let leases = &self.leases;
                crate::journal::note(&mut self.journal, |j| {
                    j.removed(handle, count);
                    for (item, deliveries) in leases.items(lease) {
                        j.leased(lease, handle, item, deliveries);
                    }
                });
                self.output_queued(i, was_idle);
            }
            Err(_) => {
                self.leases.undo_grant(lease);
                self.begin_close(i, super::CloseReason::WriteStalled);
            }
        }
    }

    pub(super) fn ack(&mut self, i: usize, lease: u64) -> Reply<'static> {
        match self.leases.ack(i as u32, lease) {
            Ok(()) => {
                crate::journal::note(&mut self.journal, |j| j.lease_ended(lease));
                Reply::Done
            }
            Err(_) => Reply::Error(ErrorCode::NoSuchLease),
        }
    }

    pub(super) fn nack(&mut self, i: usize, lease: u64) -> Reply<'static> {
        if self.leases.queue_of(i as u32, lease).is_err() {
            return Reply::Error(ErrorCode::NoSuchLease);
        }
        self.requeue(lease);
        Reply::Done
    }

    /// Returns the leases connection `i` holds (it closed).
    pub(super) fn release_leases_of(&mut self, i: usize) {
        while let Some(lease) = self.leases.newest_of(i as u32) {
            self.requeue(lease);
        }
    }

    /// Returns the leases whose time ran out, newest first (so those that end together stand
    /// at the head in the order they were taken): O(log n) each.
    pub(super) fn expire_leases(&mut self, now: Instant) {
        while self.leases.take_expired(now) {
            while let Some(lease) = self.leases.pop_due() {
                self.requeue(lease);
            }
        }
    }

    /// Puts the items of `lease` back at the head of their queue (or into its dead-letter
    /// queue) and ends the lease; blocked getters get them at once.
    fn requeue(&mut self, lease: u64) {
        let Ok(handle) = self.leases.queue_of(NONE, lease) else {
            return;
        };
        // The store is taken out while its items are copied back, so the queues (and the park
        // store for an item with no room) can be changed meanwhile.
        let store = core::mem::replace(&mut self.leases, LeaseStore::none());
        let dead = self.registry.queue(handle).ok().and_then(|q| q.dead_letter);
        let is_dead = |deliveries: u8| dead.is_some_and(|(_, max)| deliveries >= max);
        // Last first, so they stand at the head in their order.
        for (item, deliveries) in store.items_last_first(lease) {
            if !is_dead(deliveries) {
                self.put_back(handle, item, deliveries);
            }
        }
        let mut moved = 0u32;
        for (item, deliveries) in store.items(lease) {
            let Some((dlq, _)) = dead.filter(|_| is_dead(deliveries)) else {
                continue;
            };
            let pushed = self.registry.queue(dlq).is_ok_and(|d| {
                super::fits_mode(d.queue.spec(), item) && d.queue.push(item).is_ok()
            });
            if pushed {
                crate::journal::note(&mut self.journal, |j| j.appended(dlq, item));
                moved += 1;
            } else {
                warn!("the dead-letter queue refused an item: it goes back to its queue");
                self.put_back(handle, item, deliveries);
            }
        }
        self.leases = store;
        self.leases.release(lease);
        crate::journal::note(&mut self.journal, |j| j.lease_ended(lease));
        self.settle(handle);
        if let (true, Some((dlq, _))) = (moved > 0, dead) {
            self.settle(dlq);
        }
    }

    /// Puts one item back at the head of `handle`, keeping its delivery count; one with no room
    /// there waits like a blocked put (and loses its count).
    fn put_back(&mut self, handle: Handle, item: &[u8], deliveries: u8) {
        let done = self
            .registry
            .queue(handle)
            .is_ok_and(|q| q.queue.push_front_delivered(item, deliveries));
        if done {
            crate::journal::note(&mut self.journal, |j| {
                j.returned_leased(handle, item, deliveries)
            });
        } else {
            self.return_item(handle, item);
        }
    }
}

/// Without the `leases` feature the manager holds no leases: `GetLeased`, `Ack` and `Nack` are
/// answered `NotAllowed` (PROTOCOL.md §17).
#[cfg(not(feature = "leases"))]
impl Manager<'_> {
    pub(super) fn lease_fit(&self, _i: usize) -> usize {
        0
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn get_leased(
        &mut self,
        i: usize,
        id: u32,
        _handle: Handle,
        _wait: Wait,
        _max_items: u32,
        _max_bytes: u32,
        _lease_ms: u32,
    ) {
        self.reply_error(i, id, ErrorCode::NotAllowed);
    }

    /// Never called: nothing is taken under a lease.
    pub(super) fn deliver_leased(
        &mut self,
        _i: usize,
        _id: u32,
        _handle: Handle,
        _count: u32,
        _body: usize,
        _lease_ms: u32,
    ) {
    }

    pub(super) fn ack(&mut self, _i: usize, _lease: u64) -> Reply<'static> {
        Reply::Error(ErrorCode::NotAllowed)
    }

    pub(super) fn nack(&mut self, _i: usize, _lease: u64) -> Reply<'static> {
        Reply::Error(ErrorCode::NotAllowed)
    }

    pub(super) fn release_leases_of(&mut self, _i: usize) {}

    pub(super) fn expire_leases(&mut self, _now: Instant) {}
}

#[cfg(feature = "leases")]
/// Writes `Message::Reply { id, reply: Reply::Leased { .. } }` as postcard would, for the first
/// `count` items of `queue`, whose packed size plus one byte each is `body`; `None` if `out` is
/// too small.
fn encode_leased_reply(
    out: &mut [u8],
    id: u32,
    handle: Handle,
    lease: u64,
    queue: &Queue,
    count: u32,
    body: usize,
) -> Option<usize> {
    let n = count as usize;
    let packed = body.checked_sub(n)?;
    let mut w = Writer::new(out);
    for v in [
        tag::MESSAGE_REPLY.into(),
        u64::from(id),
        tag::LEASED.into(),
        handle.0.into(),
        lease,
        n as u64,
    ] {
        w.varint(v);
    }
    for d in queue.deliveries().take(n) {
        w.raw(&[d.saturating_add(1)]);
    }
    w.varint(packed as u64);
    let mut written = 0;
    for (a, b) in queue.iter().take(n) {
        let len = a.len() + b.len();
        w.varint(len as u64);
        w.raw(a);
        w.raw(b);
        written += crate::wire::Items::packed_len(len);
    }
    if written != packed {
        return None;
    }
    w.finish()
}

#[cfg(all(test, feature = "leases"))]
mod tests {
    use super::*;
    use crate::wire::{Items, Message};

    /// The hand-written `Leased` reply is byte for byte what postcard writes.
    #[test]
    fn leased_reply_matches_postcard() {
        let mut storage = [0u8; 64];
        let spec = crate::wire::QueueSpec {
            capacity: 8,
            max_item: 20,
            mode: crate::wire::QueueMode::Raw,
        };
        let mut q = Queue::new(spec, &mut storage[..]).unwrap();
        // Wrap the ring so an item is stored in two pieces.
        q.push(&[1; 20]).unwrap();
        q.push(&[2; 20]).unwrap();
        q.pop_front();
        q.push(b"wrapping-item").unwrap();
        assert!(q.push_front_delivered(b"back", 3));
        let count = 3;
        let mut packed = [0u8; 64];
        let mut end = 0;
        for (a, b) in q.iter().take(count) {
            let mut item = [0u8; 20];
            item[..a.len()].copy_from_slice(a);
            item[a.len()..a.len() + b.len()].copy_from_slice(b);
            end = Items::push(&mut packed, end, &item[..a.len() + b.len()]).unwrap();
        }
        for (id, lease) in [(0, 1u64 << 24), (300_000, u64::MAX >> 1)] {
            let mut ours = [0u8; 128];
            let n = encode_leased_reply(&mut ours, id, Handle(7), lease, &q, 3, end + 3).unwrap();
            let msg = Message::Reply {
                id,
                reply: Reply::Leased {
                    handle: Handle(7),
                    lease,
                    deliveries: &[4, 1, 1],
                    items: Items(&packed[..end]),
                },
            };
            let mut theirs = [0u8; 128];
            let expect = postcard::to_slice(&msg, &mut theirs).unwrap();
            assert_eq!(&ours[..n], &*expect);
            assert!(
                encode_leased_reply(&mut ours[..n - 1], id, Handle(7), lease, &q, 3, end + 3)
                    .is_none()
            );
        }
    }
}
