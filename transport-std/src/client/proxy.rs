//! Queue proxies: raw bytes and typed.

use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use std::collections::VecDeque;

use depot_core::value;
use depot_core::wire::{ErrorCode, Op, QueueSize, Wait};

use super::conn::{Conn, Outcome, SendError, SLOTS};
use super::Client;
use crate::Error;

/// A queue on the manager, items as bytes. Cheap to clone; methods take `&self`.
#[derive(Debug, Clone)]
pub struct RawQueue<'c> {
    pub(crate) client: &'c Client,
    pub(crate) name: String,
    pub(crate) handle: depot_core::Handle,
    pub(crate) spec: depot_core::QueueSpec,
}

impl RawQueue<'_> {
    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The most items the queue holds.
    pub fn capacity(&self) -> u32 {
        self.spec.capacity
    }

    /// The largest item, in bytes.
    pub fn max_item(&self) -> usize {
        self.spec.max_item as usize
    }

    /// Appends `item`, waiting while the queue is full.
    pub fn put(&self, item: &[u8]) -> Result<(), Error> {
        self.put_with(item, Wait::Forever)
    }

    /// Appends `item`, waiting at most `timeout` for room; `Err(Timeout)` then.
    pub fn put_timeout(&self, item: &[u8], timeout: Duration) -> Result<(), Error> {
        self.put_with(item, wait_for(timeout))
    }

    /// Appends `item` if there is room now; `Err(Full)` otherwise.
    pub fn put_nowait(&self, item: &[u8]) -> Result<(), Error> {
        self.put_with(item, Wait::NoWait)
    }

    /// Takes the oldest item, waiting while the queue is empty.
    pub fn get(&self) -> Result<Vec<u8>, Error> {
        self.get_with(Wait::Forever)
    }

    /// Takes the oldest item, waiting at most `timeout`; `Err(Timeout)` then.
    pub fn get_timeout(&self, timeout: Duration) -> Result<Vec<u8>, Error> {
        self.get_with(wait_for(timeout))
    }

    /// Takes the oldest item if there is one; `Err(Empty)` otherwise.
    pub fn get_nowait(&self) -> Result<Vec<u8>, Error> {
        self.get_with(Wait::NoWait)
    }

    /// Items in the queue now.
    pub fn qsize(&self) -> Result<u32, Error> {
        self.size().map(|s| s.len)
    }

    /// Whether the queue is empty now.
    pub fn empty(&self) -> Result<bool, Error> {
        self.size().map(|s| s.len == 0)
    }

    /// Whether a non-blocking put would fail now (by item count or by bytes).
    pub fn full(&self) -> Result<bool, Error> {
        self.size().map(|s| s.full)
    }

    /// Marks one got item as processed.
    pub fn task_done(&self) -> Result<(), Error> {
        let outcome = self.conn().call(Op::TaskDone {
            handle: self.handle,
        })?;
        self.done(outcome, 0)
    }

    /// Waits until every item put has been marked done.
    pub fn join(&self) -> Result<(), Error> {
        let handle = self.handle;
        let outcome = self.blocking(Wait::Forever, |wait| Op::Join { handle, wait })?;
        self.done(outcome, 0)
    }

    /// Puts every item in order, with up to 256 requests in flight at once (each a blocking
    /// put). On failure the first error is returned once every reply is in: the items before
    /// it are queued, later ones may be.
    pub fn put_many(&self, items: &[&[u8]]) -> Result<(), Error> {
        for item in items {
            self.check_size(item)?;
        }
        let conn = self.conn();
        let mut in_flight = VecDeque::with_capacity(SLOTS.min(items.len()));
        let mut next = 0;
        let mut first_error = None;
        loop {
            while next < items.len() && in_flight.len() < SLOTS && first_error.is_none() {
                let op = Op::Put {
                    handle: self.handle,
                    item: items[next],
                    wait: Wait::Forever,
                };
                // With nothing of ours in flight there is nothing to wait for but a free slot.
                let sent = if in_flight.is_empty() {
                    conn.send(op).map_err(SendError::Failed)
                } else {
                    conn.try_send(op)
                };
                match sent {
                    Ok(id) => {
                        in_flight.push_back((id, items[next].len()));
                        next += 1;
                    }
                    Err(SendError::Busy) => break,
                    Err(SendError::Failed(e)) => first_error = Some(e),
                }
            }
            conn.flush()?;
            let Some((id, size)) = in_flight.pop_front() else {
                break;
            };
            let outcome = conn.wait_reply(id)?;
            if let Err(e) = self.done(outcome, size) {
                first_error.get_or_insert(e);
            }
            // Take every reply that came in with it before sending more, so the window refills
            // in one write rather than one write per reply.
            while let Some(&(id, size)) = in_flight.front() {
                let Some(outcome) = conn.take_reply(id) else {
                    break;
                };
                in_flight.pop_front();
                if let Err(e) = self.done(outcome, size) {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Gets `n` items (blocking gets), with many requests in flight at once; the items come in
    /// queue order.
    ///
    /// The manager parks only as many blocked gets per connection as it has output room
    /// reserved for (and refuses the rest with "too many blocked requests"), so the window of
    /// requests in flight shrinks when gets are refused and grows again as items arrive.
    pub fn get_many(&self, n: usize) -> Result<Vec<Vec<u8>>, Error> {
        let conn = self.conn();
        let mut items = Vec::with_capacity(n);
        let mut in_flight = VecDeque::with_capacity(SLOTS.min(n));
        let mut window = SLOTS.min(n).max(1);
        let mut unsent = n;
        let mut first_error = None;
        loop {
            while unsent > 0 && in_flight.len() < window && first_error.is_none() {
                let op = Op::Get {
                    handle: self.handle,
                    wait: Wait::Forever,
                };
                let sent = if in_flight.is_empty() {
                    conn.send(op).map_err(SendError::Failed)
                } else {
                    conn.try_send(op)
                };
                match sent {
                    Ok(id) => {
                        in_flight.push_back(id);
                        unsent -= 1;
                    }
                    Err(SendError::Busy) => break,
                    Err(SendError::Failed(e)) => first_error = Some(e),
                }
            }
            conn.flush()?;
            let Some(id) = in_flight.pop_front() else {
                break;
            };
            let mut outcome = conn.wait_reply(id)?;
            loop {
                match outcome {
                    Outcome::Item(item) => {
                        items.push(item);
                        window = (window + 1).min(SLOTS);
                    }
                    Outcome::Refused { progress } if first_error.is_none() => {
                        unsent += 1;
                        // Only the requests still in flight fit; resend when they are answered.
                        window = in_flight.len().max(1);
                        if in_flight.is_empty() {
                            conn.wait_for_room(progress)?;
                        }
                        break;
                    }
                    other => {
                        first_error.get_or_insert(self.failed(other));
                    }
                }
                // Take every reply that came in with it before sending more, so the window
                // refills in one write rather than one write per reply.
                let Some(next) = in_flight.front().and_then(|&id| conn.take_reply(id)) else {
                    break;
                };
                in_flight.pop_front();
                outcome = next;
            }
        }
        first_error.map_or(Ok(items), Err)
    }

    fn conn(&self) -> &Conn {
        self.client.conn()
    }

    fn check_size(&self, item: &[u8]) -> Result<(), Error> {
        let max = self.max_item().min(self.conn().max_item());
        if item.len() > max {
            return Err(Error::TooLarge {
                size: item.len(),
                max,
            });
        }
        Ok(())
    }

    fn put_with(&self, item: &[u8], wait: Wait) -> Result<(), Error> {
        self.check_size(item)?;
        let handle = self.handle;
        let outcome = self.blocking(wait, |wait| Op::Put { handle, item, wait })?;
        self.done(outcome, item.len())
    }

    fn get_with(&self, wait: Wait) -> Result<Vec<u8>, Error> {
        let handle = self.handle;
        match self.blocking(wait, |wait| Op::Get { handle, wait })? {
            Outcome::Item(item) => Ok(item),
            other => Err(self.failed(other)),
        }
    }

    /// A request that may block on the manager. The manager refuses to park it when this
    /// connection's other blocked requests hold all the room it has for their replies (other
    /// threads share the connection); it is then sent again, with what is left of its time,
    /// once those have made progress.
    fn blocking<'a>(&self, wait: Wait, op: impl Fn(Wait) -> Op<'a>) -> Result<Outcome, Error> {
        let start = std::time::Instant::now();
        let mut current = wait;
        loop {
            match self.conn().call(op(current))? {
                Outcome::Refused { progress } => {
                    self.conn().wait_for_room(progress)?;
                    if let Wait::Millis(ms) = wait {
                        let total = Duration::from_millis(ms.into());
                        let left = total.saturating_sub(start.elapsed());
                        if left.is_zero() {
                            return Ok(Outcome::Error(ErrorCode::Timeout));
                        }
                        current = wait_for(left);
                    }
                }
                other => return Ok(other),
            }
        }
    }

    fn size(&self) -> Result<QueueSize, Error> {
        match self.conn().call(Op::Size {
            handle: self.handle,
        })? {
            Outcome::Size(size) => Ok(size),
            other => Err(self.failed(other)),
        }
    }

    /// `Ok` for `Done`; otherwise the error, with `size` for an item found too large.
    fn done(&self, outcome: Outcome, size: usize) -> Result<(), Error> {
        match outcome {
            Outcome::Done => Ok(()),
            Outcome::Error(ErrorCode::TooLarge) if size > 0 => Err(Error::TooLarge {
                size,
                max: self.max_item().min(self.conn().max_item()),
            }),
            other => Err(self.failed(other)),
        }
    }

    fn failed(&self, outcome: Outcome) -> Error {
        self.client.unexpected(outcome, &self.name)
    }
}

/// A blocking call's wait: milliseconds rounded up, so a short timeout still waits; a timeout
/// beyond what the wire can say waits for ever.
fn wait_for(timeout: Duration) -> Wait {
    let ms = timeout.as_nanos().div_ceil(1_000_000);
    match u32::try_from(ms) {
        Ok(ms) => Wait::Millis(ms),
        Err(_) => Wait::Forever,
    }
}

/// A queue on the manager with items of type `T`, each item one value of the value model
/// (CBOR; PROTOCOL.md, "Items: the value model"), so the CLI, firmware and Python clients read
/// and write the same items.
#[derive(Debug)]
pub struct Queue<'c, T> {
    raw: RawQueue<'c>,
    _items: PhantomData<fn(T) -> T>,
}

impl<T> Clone for Queue<'_, T> {
    fn clone(&self) -> Self {
        Queue {
            raw: self.raw.clone(),
            _items: PhantomData,
        }
    }
}

impl<'c, T: Serialize + DeserializeOwned> Queue<'c, T> {
    pub(crate) fn new(raw: RawQueue<'c>) -> Self {
        Queue {
            raw,
            _items: PhantomData,
        }
    }
    /// The raw-bytes proxy underneath.
    pub fn raw(&self) -> &RawQueue<'c> {
        &self.raw
    }
    /// The queue's name.
    pub fn name(&self) -> &str {
        self.raw.name()
    }
    /// The most items the queue holds.
    pub fn capacity(&self) -> u32 {
        self.raw.capacity()
    }
    /// The largest encoded item, in bytes.
    pub fn max_item(&self) -> usize {
        self.raw.max_item()
    }
    /// Appends `item`, waiting while the queue is full.
    pub fn put(&self, item: &T) -> Result<(), Error> {
        self.raw.put(&encode(item)?)
    }
    /// Appends `item`, waiting at most `timeout` for room.
    pub fn put_timeout(&self, item: &T, timeout: Duration) -> Result<(), Error> {
        self.raw.put_timeout(&encode(item)?, timeout)
    }
    /// Appends `item` if there is room now.
    pub fn put_nowait(&self, item: &T) -> Result<(), Error> {
        self.raw.put_nowait(&encode(item)?)
    }
    /// Takes the oldest item, waiting while the queue is empty. An item that is not a `T` is
    /// `Err(Error::Decode)`, which holds its bytes.
    pub fn get(&self) -> Result<T, Error> {
        decode(self.raw.get()?)
    }
    /// Takes the oldest item, waiting at most `timeout`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, Error> {
        decode(self.raw.get_timeout(timeout)?)
    }
    /// Takes the oldest item if there is one.
    pub fn get_nowait(&self) -> Result<T, Error> {
        decode(self.raw.get_nowait()?)
    }
    /// Items in the queue now.
    pub fn qsize(&self) -> Result<u32, Error> {
        self.raw.qsize()
    }
    /// Whether the queue is empty now.
    pub fn empty(&self) -> Result<bool, Error> {
        self.raw.empty()
    }
    /// Whether a non-blocking put would fail now.
    pub fn full(&self) -> Result<bool, Error> {
        self.raw.full()
    }
    /// Marks one got item as processed.
    pub fn task_done(&self) -> Result<(), Error> {
        self.raw.task_done()
    }
    /// Waits until every item put has been marked done.
    pub fn join(&self) -> Result<(), Error> {
        self.raw.join()
    }
    /// Puts every item in order, many requests in flight at once.
    pub fn put_many(&self, items: &[T]) -> Result<(), Error> {
        let encoded = items.iter().map(encode).collect::<Result<Vec<_>, _>>()?;
        let refs: Vec<&[u8]> = encoded.iter().map(Vec::as_slice).collect();
        self.raw.put_many(&refs)
    }
    /// Gets `n` items, many requests in flight at once. The first item that is not a `T`
    /// fails the call with `Err(Error::Decode)`; the items after it are dropped with it, so
    /// use the raw proxy where a queue may hold foreign items.
    pub fn get_many(&self, n: usize) -> Result<Vec<T>, Error> {
        self.raw.get_many(n)?.into_iter().map(decode).collect()
    }
}

fn encode<T: Serialize>(item: &T) -> Result<Vec<u8>, Error> {
    value::to_writer(item, Vec::new()).map_err(|e| Error::Encode(Box::new(e)))
}

fn decode<T: DeserializeOwned>(item: Vec<u8>) -> Result<T, Error> {
    value::from_slice(&item).map_err(|error| Error::Decode {
        error: Box::new(error),
        item,
    })
}
