use depot_core::client::ClientConfig;
use depot_core::wire::{Op, QueueSpec, Reply, Wait};
use depot_core::*;

#[test]
fn handshake_put_get() {
    let mut storage = [0u8; 4096];
    let mut objects = [ObjectSlot::queue(
        "task_queue",
        QueueSpec {
            capacity: 10,
            max_item: 64,
            mode: depot_core::QueueMode::Raw,
        },
        &mut storage,
    )
    .unwrap()];
    // Lent storage, as firmware gives it.
    let (mut rx, mut tx, mut park) = ([0u8; 2048], [0u8; 2048], [0u8; 128]);
    let mut conns = [Connection::new(&mut rx, &mut tx)];
    let mut waiters = [Waiter::EMPTY; 8];
    let resources = Resources {
        objects: (&mut objects).into(),
        connections: (&mut conns).into(),
        waiters: (&mut waiters).into(),
        parked: ParkStore::slots(&mut park, 64),
    };
    let mut m = Manager::new(ManagerConfig::default(), b"producer", resources);
    let id = m.accept(Instant::ZERO, [1; 32], &[]).unwrap();
    let (mut crx, mut ctx) = ([0u8; 2048], [0u8; 2048]);
    let mut slots = [RequestSlot::FREE; 4];
    let mut c = Client::new(
        ClientConfig::default(),
        b"producer",
        [2; 32],
        Instant::ZERO,
        &mut crx,
        &mut ctx,
        &mut slots,
    );
    let now = Instant::ZERO;
    let mut connected = false;
    let mut got = None;
    let mut sent = false;
    for _ in 0..20 {
        let out = c.poll_transmit().to_vec();
        c.handle_transmitted(out.len());
        assert_eq!(m.handle_input(id, now, &out), out.len());
        let back = m.poll_transmit(id).to_vec();
        m.handle_transmitted(id, now, back.len());
        c.handle_input(&back);
        while let Some(ev) = c.poll_event() {
            match ev {
                Event::Connected => connected = true,
                Event::Reply {
                    reply: Reply::Opened(info),
                    ..
                } => {
                    c.send(
                        now,
                        Op::Put {
                            handle: info.handle,
                            item: b"hello",
                            wait: Wait::NoWait,
                        },
                    )
                    .unwrap();
                    c.send(
                        now,
                        Op::Get {
                            handle: info.handle,
                            wait: Wait::Forever,
                        },
                    )
                    .unwrap();
                    break;
                }
                Event::Reply {
                    reply: Reply::Item { item, .. },
                    ..
                } => got = Some(item.to_vec()),
                Event::Closed(e) => panic!("closed: {e}"),
                _ => {}
            }
        }
        if connected && !sent {
            c.send(now, Op::Open { name: "task_queue" }).unwrap();
            sent = true;
        }
    }
    assert!(connected);
    assert_eq!(got.as_deref(), Some(&b"hello"[..]));
}
