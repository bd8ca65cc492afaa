//! Queue proxies: raw bytes and typed.

use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use std::collections::VecDeque;

use depot_core::reconnect::refused_for_now;
use depot_core::value;
use depot_core::wire::{ErrorCode, Items, Op, QueueSize, Wait};

use super::conn::{Outcome, TrySendError};
use super::python::PyQueue;
use super::{Batch, Client, ConnRef};
use crate::Error;

/// A queue on the manager, items as bytes. `Clone + Send + Sync + 'static`: it holds a clone
/// of its [`Client`], so clones and threads share the one connection; methods take `&self`.
#[derive(Debug, Clone)]
pub struct RawQueue {
    pub(crate) client: Client,
    pub(crate) name: String,
    pub(crate) handle: depot_core::Handle,
    pub(crate) spec: depot_core::QueueSpec,
    /// The queue on a Python manager, if the client speaks Python's protocol.
    pub(crate) py: Option<std::sync::Arc<PyQueue>>,
}

impl RawQueue {
    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The most items the queue holds (`u32::MAX` on a Python manager, which does not say).
    pub fn capacity(&self) -> u32 {
        self.spec.capacity
    }

    /// The largest item, in bytes (on a Python manager, the largest depot sends it).
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
        if let Some(py) = &self.py {
            return py.qsize();
        }
        self.size().map(|s| s.len)
    }

    /// Whether the queue is empty now.
    pub fn empty(&self) -> Result<bool, Error> {
        if let Some(py) = &self.py {
            return py.empty();
        }
        self.size().map(|s| s.len == 0)
    }

    /// Whether a non-blocking put would fail now (by item count or by bytes).
    pub fn full(&self) -> Result<bool, Error> {
        if let Some(py) = &self.py {
            return py.full();
        }
        self.size().map(|s| s.full)
    }

    /// Marks one got item as processed.
    pub fn task_done(&self) -> Result<(), Error> {
        if let Some(py) = &self.py {
            return py.task_done();
        }
        let op = Op::TaskDone {
            handle: self.handle,
        };
        let outcome = self
            .client
            .with_conn("task_done", None, |_| op, |c, _| c.call(op))?;
        self.done(outcome, 0)
    }

    /// Waits until every item put has been marked done.
    pub fn join(&self) -> Result<(), Error> {
        if let Some(py) = &self.py {
            return py.join();
        }
        let handle = self.handle;
        let outcome = self.blocking(Wait::Forever, |wait, _| Op::Join { handle, wait })?;
        self.done(outcome, 0)
    }

    /// Puts every item in order, packed into as few `PutMany` requests as frames allow, several
    /// in flight at once; each waits for room as long as it takes. On failure the error comes
    /// back once every reply is in; the items before the one that failed are queued. (A
    /// Python manager takes them one `put` at a time.) A client that reconnects sends the
    /// batches in flight on a lost connection again, with their numbers, in order.
    pub fn put_many(&self, items: &[&[u8]]) -> Result<(), Error> {
        let max = self.largest_put()?;
        for item in items {
            fits(item, max)?;
        }
        if let Some(py) = &self.py {
            return items
                .iter()
                .try_for_each(|item| py.put(item, Wait::Forever));
        }
        let handle = self.handle;
        // (request id, first item, end, number in the session), oldest first.
        let mut in_flight: VecDeque<(u32, usize, usize, u64)> = VecDeque::new();
        let mut next = 0;
        let mut first_error = None;
        let mut packed = Vec::new();
        self.client.with_conn(
            "put_many",
            None,
            |s| batch_op(handle, &[], 0, s),
            |conn, session| {
                let budget = conn.max_item().clamp(1, BATCH_BYTES);
                // Batches sent on a lost connection go again first, as they were.
                for (id, from, to, seq) in in_flight.iter_mut() {
                    let (_, bytes) = pack(&items[*from..*to], usize::MAX, &mut packed);
                    *id = conn.send(batch_op(handle, &packed[..bytes], *seq, session))?;
                }
                loop {
                    while next < items.len()
                        && in_flight.len() < BATCHES_IN_FLIGHT
                        && first_error.is_none()
                    {
                        let (end, bytes) = pack(&items[next..], budget, &mut packed);
                        let seq = self.client.next_seq();
                        let op = batch_op(handle, &packed[..bytes], seq, session);
                        let sent = if in_flight.is_empty() {
                            conn.send(op).map_err(TrySendError::Failed)
                        } else {
                            conn.try_send(op)
                        };
                        match sent {
                            Ok(id) => {
                                in_flight.push_back((id, next, next + end, seq));
                                next += end;
                            }
                            Err(TrySendError::Busy) => break,
                            Err(TrySendError::Failed(e)) if e.is_connection_lost() => {
                                return Err(e)
                            }
                            Err(TrySendError::Failed(e)) => first_error = Some(e),
                        }
                    }
                    conn.flush()?;
                    let Some(&(id, from, to, _)) = in_flight.front() else {
                        return Ok(());
                    };
                    let outcome = conn.wait_reply(id)?;
                    in_flight.pop_front();
                    match outcome {
                        // A stopping manager took the items before `count` and refused the
                        // rest: they go again, as a batch of their own with a new number, with
                        // the batches after them (as if the connection were lost).
                        Outcome::Accepted {
                            count,
                            error: Some(code),
                        } if refused_for_now(code) => {
                            let rest = from + count as usize;
                            if rest < to {
                                in_flight.push_front((id, rest, to, self.client.next_seq()));
                            }
                            return Err(Error::request(code, ""));
                        }
                        Outcome::Accepted { count, error } => {
                            if let Some(code) = error {
                                let at = from + count as usize;
                                let size = items.get(at).map_or(0, |i| i.len());
                                let e = self.done(Outcome::Error(code), size).err();
                                first_error
                                    .get_or_insert(e.unwrap_or_else(|| self.failed_code(code)));
                            } else if from + count as usize != to {
                                first_error.get_or_insert(self.failed_code(ErrorCode::Full));
                            }
                        }
                        other => {
                            first_error.get_or_insert(self.failed(other));
                        }
                    }
                }
            },
        )?;
        first_error.map_or(Ok(()), Err)
    }

    /// Gets `n` items in queue order, as many at a time as a `GetMany` reply carries; waits for
    /// each as long as it takes. If a request fails after some items were taken, those items
    /// are returned (fewer than `n`) and the failure is reported by the next call: an item
    /// that left the queue is never dropped. [`Self::get_batch`] does the same without an
    /// allocation per item.
    pub fn get_many(&self, n: usize) -> Result<Vec<Vec<u8>>, Error> {
        self.get_batch(n).map(Vec::from)
    }

    /// [`Self::get_many`], the items kept packed in one [`Batch`] as the replies carried them.
    pub fn get_batch(&self, n: usize) -> Result<Batch, Error> {
        let mut items = Batch::default();
        if let Some(py) = &self.py {
            while items.len() < n {
                match py.get(Wait::Forever) {
                    Ok(item) => items.push(&item),
                    Err(e) if items.is_empty() => return Err(e),
                    Err(_) => break,
                }
            }
            return Ok(items);
        }
        let mut first_error = None;
        let request = Op::GetMany {
            handle: self.handle,
            max_items: 0,
            max_bytes: 0,
            wait: Wait::Forever,
        };
        let got = self.client.with_conn(
            "get_many",
            None,
            |_| request,
            |conn, _| self.get_batches(conn, n, &mut items, &mut first_error),
        );
        match (got, first_error) {
            (Err(e), _) | (Ok(()), Some(e)) if items.is_empty() => Err(e),
            _ => Ok(items),
        }
    }

    /// [`Self::get_many`] on one connection. Several `GetMany` are kept in flight while the
    /// queue has items, so a reply's round trip does not stall the consumer: the oldest one
    /// waits as long as it takes, the others take what is there now (`NoWait`) and stop the
    /// refill when one finds the queue empty. The manager answers one connection's requests in
    /// order, so replies hold items in queue order; together they never ask for more than
    /// `n`. After an error the replies still in flight are collected (they may hold items).
    fn get_batches(
        &self,
        conn: &super::conn::Conn,
        n: usize,
        items: &mut Batch,
        first_error: &mut Option<Error>,
    ) -> Result<(), Error> {
        let handle = self.handle;
        // (request id, items asked, whether it waits), oldest first.
        let mut in_flight: VecDeque<(u32, usize, bool)> = VecDeque::new();
        // Items one reply carries: unknown (all) until a reply shows their size.
        let mut per_reply = n;
        let mut dry = false;
        loop {
            let asked: usize = in_flight.iter().map(|r| r.1).sum();
            let mut open = n.saturating_sub(items.len() + asked);
            while open > 0 && in_flight.len() < BATCHES_IN_FLIGHT && first_error.is_none() {
                let waits = in_flight.is_empty();
                if dry && !waits {
                    break;
                }
                let max = open.min(per_reply);
                let op = Op::GetMany {
                    handle,
                    max_items: u32::try_from(max).unwrap_or(u32::MAX),
                    max_bytes: BATCH_BYTES as u32,
                    wait: if waits { Wait::Forever } else { Wait::NoWait },
                };
                let id = if waits {
                    conn.send(op)?
                } else {
                    match conn.try_send(op) {
                        Ok(id) => id,
                        Err(TrySendError::Busy) => break,
                        Err(TrySendError::Failed(e)) => return Err(e),
                    }
                };
                in_flight.push_back((id, max, waits));
                open -= max;
            }
            conn.flush()?;
            let Some((id, _, waits)) = in_flight.pop_front() else {
                return Ok(());
            };
            match conn.wait_reply(id)? {
                Outcome::Items(got) if !got.is_empty() => {
                    per_reply = (BATCH_BYTES / got.packed_per_item().max(1)).max(1);
                    dry = false;
                    items.append(got);
                }
                // The queue was empty: no more requests that do not wait, for now.
                Outcome::Items(_) => dry |= !waits,
                Outcome::Error(ErrorCode::Empty) if !waits => dry = true,
                // No room to park it (other callers' blocked requests hold it): it is sent
                // again once replies have freed some, as a blocking `get` is.
                Outcome::Refused { progress } => conn.wait_for_room(progress)?,
                other => {
                    first_error.get_or_insert(self.failed(other));
                }
            }
        }
    }

    fn conn(&self) -> Result<ConnRef<'_>, Error> {
        self.client.conn()
    }

    /// The largest item a put may carry: the queue's limit, and the connection's frames'.
    fn largest_put(&self) -> Result<usize, Error> {
        Ok(match self.py {
            Some(_) => self.max_item(),
            None => self.max_item().min(self.conn()?.max_item()),
        })
    }

    fn check_size(&self, item: &[u8]) -> Result<(), Error> {
        fits(item, self.largest_put()?)
    }

    fn put_with(&self, item: &[u8], wait: Wait) -> Result<(), Error> {
        self.check_size(item)?;
        if let Some(py) = &self.py {
            return py.put(item, wait);
        }
        let handle = self.handle;
        // One number for every try: the manager applies it once.
        let seq = self.client.next_seq();
        let outcome = self.blocking(wait, |wait, session| {
            if session {
                Op::PutSeq {
                    seq,
                    handle,
                    item,
                    wait,
                }
            } else {
                Op::Put { handle, item, wait }
            }
        })?;
        self.done(outcome, item.len())
    }

    fn get_with(&self, wait: Wait) -> Result<Vec<u8>, Error> {
        if let Some(py) = &self.py {
            return py.get(wait);
        }
        let handle = self.handle;
        match self.blocking(wait, |wait, _| Op::Get { handle, wait })? {
            Outcome::Item(item) => Ok(item),
            other => Err(self.failed(other)),
        }
    }

    /// A request that may block on the manager. The manager refuses to park it when this
    /// connection's other blocked requests hold all the room it has for their replies (other
    /// threads share the connection); it is then sent again, with what is left of its time,
    /// once those have made progress. A client that reconnects sends it again on a new
    /// connection, as `retry` allows, with what is left of its time (`op` learns whether the
    /// connection holds the client's session).
    pub(super) fn blocking<'a>(
        &self,
        wait: Wait,
        op: impl Fn(Wait, bool) -> Op<'a>,
    ) -> Result<Outcome, Error> {
        let start = std::time::Instant::now();
        let end = match wait {
            Wait::Millis(ms) => Some(start + Duration::from_millis(ms.into())),
            _ => None,
        };
        let mut first = true;
        self.client.with_conn(
            "this call",
            end,
            |s| op(wait, s),
            |conn, session| {
                let mut current = wait;
                loop {
                    if let (false, Some(end)) = (first, end) {
                        let left = end.saturating_duration_since(std::time::Instant::now());
                        if left.is_zero() {
                            return Ok(Outcome::Error(ErrorCode::Timeout));
                        }
                        current = wait_for(left);
                    }
                    first = false;
                    match conn.call(op(current, session))? {
                        Outcome::Refused { progress } => conn.wait_for_room(progress)?,
                        other => return Ok(other),
                    }
                }
            },
        )
    }

    fn size(&self) -> Result<QueueSize, Error> {
        let op = Op::Size {
            handle: self.handle,
        };
        match self
            .client
            .with_conn("qsize", None, |_| op, |c, _| c.call(op))?
        {
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
                max: self.max_item().min(self.conn()?.max_item()),
            }),
            other => Err(self.failed(other)),
        }
    }

    fn failed(&self, outcome: Outcome) -> Error {
        self.client.unexpected(outcome, &self.name)
    }

    fn failed_code(&self, code: ErrorCode) -> Error {
        super::code_error(code, &self.name)
    }
}

/// A `PutMany` of the packed `items`, numbered `seq` in the client's session if it has one.
fn batch_op(handle: depot_core::Handle, items: &[u8], seq: u64, session: bool) -> Op<'_> {
    let (items, wait) = (Items(items), Wait::Forever);
    if session {
        Op::PutManySeq {
            seq,
            handle,
            items,
            wait,
        }
    } else {
        Op::PutMany {
            handle,
            items,
            wait,
        }
    }
}

/// `Ok` if `item` is at most `max` bytes, else `TooLarge`.
pub(crate) fn fits(item: &[u8], max: usize) -> Result<(), Error> {
    if item.len() > max {
        return Err(Error::TooLarge {
            size: item.len(),
            max,
        });
    }
    Ok(())
}

/// Bytes of packed items one batch request carries at most.
pub(crate) const BATCH_BYTES: usize = 60 * 1024;
/// Batch requests kept in flight at once.
pub(crate) const BATCHES_IN_FLIGHT: usize = 4;

/// Packs items from the front of `items` into `out` until `budget` bytes (at least one item):
/// `(items packed, bytes used)`.
pub(crate) fn pack(items: &[&[u8]], budget: usize, out: &mut Vec<u8>) -> (usize, usize) {
    out.clear();
    let mut count = 0;
    for item in items {
        let len = Items::packed_len(item.len());
        if count > 0 && out.len() + len > budget {
            break;
        }
        let at = out.len();
        out.resize(at + len, 0);
        Items::push(out, at, item);
        count += 1;
    }
    (count, out.len())
}

/// A blocking call's wait: milliseconds rounded up, so a short timeout still waits; a timeout
/// beyond what the wire can say waits for ever.
pub(crate) fn wait_for(timeout: Duration) -> Wait {
    let ms = timeout.as_nanos().div_ceil(1_000_000);
    match u32::try_from(ms) {
        Ok(ms) => Wait::Millis(ms),
        Err(_) => Wait::Forever,
    }
}

/// A queue on the manager with items of type `T`, each item one value of the value model
/// (CBOR; PROTOCOL.md, "Items: the value model"), so the CLI, firmware and Python clients read
/// and write the same items.
///
/// `Clone + Send + Sync + 'static` (for any `T`): it holds a clone of its [`Client`], so it
/// can be moved into a thread; clones share the one connection.
#[derive(Debug)]
pub struct Queue<T> {
    raw: RawQueue,
    _items: PhantomData<fn(T) -> T>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            raw: self.raw.clone(),
            _items: PhantomData,
        }
    }
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    pub(crate) fn new(raw: RawQueue) -> Self {
        Queue {
            raw,
            _items: PhantomData,
        }
    }
    /// The raw-bytes proxy underneath.
    pub fn raw(&self) -> &RawQueue {
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
    /// Gets `n` items (fewer if a later request fails; see [`RawQueue::get_many`]). Each item
    /// is decoded on its own: one that is not a `T` is reported in its place as
    /// [`Error::Decode`], which holds its bytes, and the others are still delivered.
    pub fn get_many(&self, n: usize) -> Result<Vec<Result<T, Error>>, Error> {
        let batch = self.raw.get_batch(n)?;
        Ok(batch.iter().map(decode_slice).collect())
    }
    /// A blocking iterator for a consumer: each `next()` is a [`get`](Queue::get). It yields
    /// every error too (an item that cannot be decoded, a refused request), and ends after
    /// yielding the one that says the connection is over ([`Error::is_connection_lost`]:
    /// the manager stopped or went away).
    ///
    /// ```no_run
    /// # fn run(queue: depot_std::Queue<u32>) {
    /// for item in queue.iter() {
    ///     match item {
    ///         Ok(n) => println!("{n}"),
    ///         Err(e) => eprintln!("{e}"),
    ///     }
    /// }
    /// # }
    /// ```
    pub fn iter(&self) -> Iter<T> {
        Iter {
            queue: self.clone(),
            done: false,
        }
    }
}

impl<T: Serialize + DeserializeOwned> IntoIterator for &Queue<T> {
    type Item = Result<T, Error>;
    type IntoIter = Iter<T>;
    fn into_iter(self) -> Iter<T> {
        self.iter()
    }
}

/// The blocking iterator of [`Queue::iter`].
#[derive(Debug)]
pub struct Iter<T> {
    queue: Queue<T>,
    done: bool,
}

impl<T: Serialize + DeserializeOwned> Iterator for Iter<T> {
    type Item = Result<T, Error>;
    fn next(&mut self) -> Option<Result<T, Error>> {
        if self.done {
            return None;
        }
        let got = self.queue.get();
        if let Err(e) = &got {
            self.done = e.is_connection_lost();
        }
        Some(got)
    }
}

pub(crate) fn encode<T: Serialize>(item: &T) -> Result<Vec<u8>, Error> {
    value::to_writer(item, Vec::new()).map_err(|e| Error::Encode(Box::new(e)))
}

/// Decodes one item; one that is not a `T` is an [`Error::Decode`] holding a copy of its bytes.
pub(crate) fn decode_slice<T: DeserializeOwned>(item: &[u8]) -> Result<T, Error> {
    value::from_slice(item).map_err(|error| Error::Decode {
        error: Box::new(error),
        item: item.to_vec(),
    })
}

pub(crate) fn decode<T: DeserializeOwned>(item: Vec<u8>) -> Result<T, Error> {
    decode_slice(&item)
}
