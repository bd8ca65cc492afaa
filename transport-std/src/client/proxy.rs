//! Queue proxies: raw bytes and typed.

use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

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
        let _ = item;
        todo!()
    }
    /// Appends `item`, waiting at most `timeout` for room; `Err(Timeout)` then.
    pub fn put_timeout(&self, item: &[u8], timeout: Duration) -> Result<(), Error> {
        let _ = (item, timeout);
        todo!()
    }
    /// Appends `item` if there is room now; `Err(Full)` otherwise.
    pub fn put_nowait(&self, item: &[u8]) -> Result<(), Error> {
        let _ = item;
        todo!()
    }
    /// Takes the oldest item, waiting while the queue is empty.
    pub fn get(&self) -> Result<Vec<u8>, Error> {
        todo!()
    }
    /// Takes the oldest item, waiting at most `timeout`; `Err(Timeout)` then.
    pub fn get_timeout(&self, timeout: Duration) -> Result<Vec<u8>, Error> {
        let _ = timeout;
        todo!()
    }
    /// Takes the oldest item if there is one; `Err(Empty)` otherwise.
    pub fn get_nowait(&self) -> Result<Vec<u8>, Error> {
        todo!()
    }
    /// Items in the queue now.
    pub fn qsize(&self) -> Result<u32, Error> {
        todo!()
    }
    /// Whether the queue is empty now.
    pub fn empty(&self) -> Result<bool, Error> {
        todo!()
    }
    /// Whether a non-blocking put would fail now.
    pub fn full(&self) -> Result<bool, Error> {
        todo!()
    }
    /// Marks one got item as processed.
    pub fn task_done(&self) -> Result<(), Error> {
        todo!()
    }
    /// Waits until every item put has been marked done.
    pub fn join(&self) -> Result<(), Error> {
        todo!()
    }
    /// Puts every item in order, many requests in flight at once.
    pub fn put_many(&self, items: &[&[u8]]) -> Result<(), Error> {
        let _ = items;
        todo!()
    }
    /// Gets `n` items, many requests in flight at once.
    pub fn get_many(&self, n: usize) -> Result<Vec<Vec<u8>>, Error> {
        let _ = n;
        todo!()
    }
}

/// A queue on the manager with items of type `T`, encoded with postcard.
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
    /// Takes the oldest item, waiting while the queue is empty.
    pub fn get(&self) -> Result<T, Error> {
        decode(&self.raw.get()?)
    }
    /// Takes the oldest item, waiting at most `timeout`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, Error> {
        decode(&self.raw.get_timeout(timeout)?)
    }
    /// Takes the oldest item if there is one.
    pub fn get_nowait(&self) -> Result<T, Error> {
        decode(&self.raw.get_nowait()?)
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
    /// Gets `n` items, many requests in flight at once.
    pub fn get_many(&self, n: usize) -> Result<Vec<T>, Error> {
        self.raw.get_many(n)?.iter().map(|b| decode(b)).collect()
    }
}

fn encode<T: Serialize>(item: &T) -> Result<Vec<u8>, Error> {
    postcard::to_allocvec(item).map_err(|e| Error::Codec(e.to_string()))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    postcard::from_bytes(bytes).map_err(|e| Error::Codec(e.to_string()))
}
