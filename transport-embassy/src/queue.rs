//! Queue proxies: raw bytes, and typed items in the value model (CBOR; PROTOCOL.md, "Items:
//! the value model"), the encoding every depot client uses.
//!
//! Each method is Python's namesake: `put(item, wait)`, `get(wait)`, `qsize()`, `task_done()`,
//! `join(wait)`. [`Wait`] picks the mode: `NoWait` fails at once with `Empty`/`Full`,
//! `Forever` blocks, `Millis(ms)` blocks at most that long and then fails with `Timeout`. A
//! blocked call costs the manager a parked waiter, not a task; the client just awaits.

use core::future::Future;
use core::marker::PhantomData;

use depot_core::value;
use depot_core::wire::{ObjectInfo, Op, Reply, Wait};
use serde::de::DeserializeOwned;
use serde::Serialize;

#[cfg(not(feature = "sessions"))]
use crate::client::Progress;
use crate::client::{done, unexpected, Client};
use crate::Error;
#[cfg(not(feature = "sessions"))]
use core::future::poll_fn;
#[cfg(not(feature = "sessions"))]
use core::task::Poll;

/// A queue on the manager, items as raw bytes. A cheap copyable handle on the client: give a
/// copy to each task that uses the queue; their calls share the one connection.
#[derive(Clone, Copy)]
pub struct RawQueue<'c, 'a> {
    client: &'c Client<'a>,
    info: ObjectInfo,
}

impl<'c, 'a> RawQueue<'c, 'a> {
    pub(crate) fn new(client: &'c Client<'a>, info: ObjectInfo) -> Self {
        RawQueue { client, info }
    }

    /// Handle and limits, for [`Client::attach`] later.
    pub fn info(&self) -> ObjectInfo {
        self.info
    }

    /// Appends `item`.
    pub fn put<'i>(
        &self,
        item: &'i [u8],
        wait: Wait,
    ) -> impl Future<Output = Result<(), Error>> + use<'c, 'a, 'i> {
        let handle = self.info.handle;
        self.client.call(Op::Put { handle, item, wait }, done)
    }

    /// Takes the oldest item into `buf` and returns its length. `buf` must hold the queue's
    /// largest item (`info().spec.max_item`), checked before anything is sent, so an item is
    /// never taken off the queue and then lost for want of room.
    pub async fn get(&self, wait: Wait, buf: &mut [u8]) -> Result<usize, Error> {
        if buf.len() < self.info.spec.max_item as usize {
            return Err(Error::Depot(depot_core::Error::TooLarge));
        }
        self.get_with(wait, |item| {
            buf[..item.len()].copy_from_slice(item);
            Ok(item.len())
        })
        .await
    }

    /// Takes the oldest item and hands its bytes to `f` in place (no copy).
    pub fn get_with<R, F>(
        &self,
        wait: Wait,
        mut f: F,
    ) -> impl Future<Output = Result<R, Error>> + use<'c, 'a, R, F>
    where
        F: FnMut(&[u8]) -> Result<R, Error>,
    {
        let handle = self.info.handle;
        self.client
            .call(Op::Get { handle, wait }, move |reply| match reply {
                Reply::Item { item, .. } => f(item),
                other => Err(unexpected(other)),
            })
    }

    /// Items in the queue now.
    pub fn qsize(&self) -> impl Future<Output = Result<u32, Error>> + use<'c, 'a> {
        let handle = self.info.handle;
        self.client.call(Op::Size { handle }, |reply| match reply {
            Reply::Size(size) => Ok(size.len),
            other => Err(unexpected(other)),
        })
    }

    /// Marks one item taken by a `get` as processed (JoinableQueue).
    pub fn task_done(&self) -> impl Future<Output = Result<(), Error>> + use<'c, 'a> {
        let handle = self.info.handle;
        self.client.call(Op::TaskDone { handle }, done)
    }

    /// Waits until every item put has been marked done.
    pub fn join(&self, wait: Wait) -> impl Future<Output = Result<(), Error>> + use<'c, 'a> {
        let handle = self.info.handle;
        self.client.call(Op::Join { handle, wait }, done)
    }
}

/// A queue of `T`s, each item one value, as the host's typed proxies, the CLI and Python
/// clients write them. `N` bytes of scratch (default 64) on the stack of each `put` hold the
/// encoded item; a `get` decodes in place, borrowing nothing past the call.
pub struct Queue<'c, 'a, T, const N: usize = 64> {
    raw: RawQueue<'c, 'a>,
    _items: PhantomData<fn(T) -> T>,
}

impl<T, const N: usize> Clone for Queue<'_, '_, T, N> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T, const N: usize> Copy for Queue<'_, '_, T, N> {}

impl<'c, 'a, T, const N: usize> Queue<'c, 'a, T, N>
where
    T: Serialize + DeserializeOwned,
{
    pub(crate) fn new(raw: RawQueue<'c, 'a>) -> Self {
        Queue {
            raw,
            _items: PhantomData,
        }
    }

    /// The raw proxy underneath.
    pub fn raw(&self) -> &RawQueue<'c, 'a> {
        &self.raw
    }

    /// Appends `item`; `Error::Encode` if it does not encode into `N` bytes.
    #[cfg(feature = "sessions")]
    pub async fn put(&self, item: &T, wait: Wait) -> Result<(), Error> {
        let mut scratch = [0u8; N];
        let len = value::to_slice(item, &mut scratch).map_err(|_| Error::Encode)?;
        self.raw.put(&scratch[..len], wait).await
    }

    /// Appends `item`; `Error::Encode` if it does not encode into `N` bytes.
    ///
    /// The item is encoded at once into scratch the future owns, and the future is the
    /// call's own: no state machine around it.
    #[cfg(not(feature = "sessions"))]
    // It borrows `self` and `item` as the async form (with `sessions`) does, so turning that
    // feature on never breaks a caller.
    pub fn put<'s, 'i>(
        &'s self,
        item: &'i T,
        wait: Wait,
    ) -> impl Future<Output = Result<(), Error>> + use<'s, 'c, 'a, 'i, T, N> {
        let mut scratch = [0u8; N];
        let encoded = value::to_slice(item, &mut scratch).map_err(|_| Error::Encode);
        let handle = self.raw.info.handle;
        let mut call = Progress::new(self.raw.client, true);
        poll_fn(move |cx| {
            let len = match encoded {
                Ok(len) => len,
                Err(e) => return Poll::Ready(Err(e)),
            };
            let item = scratch.get(..len).unwrap_or_default();
            call.poll_with(cx, &Op::Put { handle, item, wait }, &mut done)
        })
    }

    /// Takes the oldest item; `Error::Decode` if it is not a `T`.
    pub fn get(&self, wait: Wait) -> impl Future<Output = Result<T, Error>> + use<'c, 'a, T, N> {
        self.raw.get_with(wait, |bytes| {
            value::from_slice(bytes).map_err(|e| Error::Decode(e.into()))
        })
    }

    /// Items in the queue now.
    pub fn qsize(&self) -> impl Future<Output = Result<u32, Error>> + use<'c, 'a, T, N> {
        self.raw.qsize()
    }

    /// Marks one item taken by a `get` as processed.
    pub fn task_done(&self) -> impl Future<Output = Result<(), Error>> + use<'c, 'a, T, N> {
        self.raw.task_done()
    }

    /// Waits until every item put has been marked done.
    pub fn join(&self, wait: Wait) -> impl Future<Output = Result<(), Error>> + use<'c, 'a, T, N> {
        self.raw.join(wait)
    }
}
