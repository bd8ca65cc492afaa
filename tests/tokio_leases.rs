//! Acknowledged gets with the async client over real sockets.

use std::time::Duration;

use depot::tokio::Client;
use depot::{Manager, ManagerHandle};
use tokio::time::timeout;

const KEY: &[u8] = b"producer";
const LEASE: Duration = Duration::from_secs(60);

fn start() -> ManagerHandle {
    Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(KEY)
        .queue("q", 16)
        .start()
        .expect("manager starts")
}

/// Ack removes; nack and dropping a lease put the item back at the head, counted; an expired
/// lease comes back by itself.
#[tokio::test]
async fn ack_nack_drop_and_expiry() {
    let m = start();
    let client = Client::connect(m.address(), KEY).await.unwrap();
    let q = client.queue::<u32>("q").await.unwrap();
    q.put_many(&[1, 2]).await.unwrap();
    let a = q.get_leased(LEASE).await.unwrap();
    assert_eq!((*a, a.delivery()), (1, 1));
    a.nack().await.unwrap();
    let b = q.get_leased(LEASE).await.unwrap();
    assert_eq!((*b, b.delivery()), (1, 2));
    drop(b);
    let c = q.get_leased(Duration::from_millis(100)).await.unwrap();
    assert_eq!((*c, c.delivery()), (1, 3));
    let d = q.get_leased(LEASE).await.unwrap();
    assert_eq!((*d, d.delivery()), (2, 1));
    d.ack().await.unwrap();
    // `c`'s lease runs out: its item comes back.
    let e = q
        .get_leased_timeout(LEASE, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!((*e, e.delivery()), (1, 4));
    assert!(c.ack().await.is_err(), "an expired lease cannot be acked");
    e.ack_nowait().unwrap();
    assert_eq!(q.qsize().await.unwrap(), 0);
}

/// A leased get whose future is dropped while it waits loses nothing: the item put afterwards
/// is there for the next consumer, first delivered or given back.
#[tokio::test]
async fn dropped_leased_get_loses_nothing() {
    let m = start();
    let client = Client::connect(m.address(), KEY).await.unwrap();
    let q = client.queue::<u32>("q").await.unwrap();
    let waiting = q.get_leased(LEASE);
    assert!(timeout(Duration::from_millis(50), waiting).await.is_err());
    q.put(&9).await.unwrap();
    let got = q
        .get_leased_timeout(LEASE, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(*got, 9);
    got.ack().await.unwrap();
}
