//! # depot-std
//!
//! depot on std TCP: the host manager and the blocking client with typed proxies.
#![warn(missing_docs)]

mod client;
mod error;
mod manager;

pub use client::{Client, Queue, QueueStat, RawQueue};
pub use error::Error;
pub use manager::{Manager, ManagerBuilder, ManagerHandle, QueueOptions};
