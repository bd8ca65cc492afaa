//! The roles a child process can play (see `harness`): the examples, and small helpers.

use std::io::{BufRead, BufWriter, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use depot::core::wire::{Op, Wait};
use depot::Client;

use crate::raw::Session;

/// Plays `role`; unknown roles fail.
pub fn play(role: &str) -> ExitCode {
    match role {
        "manager" => crate::ex_manager::main(),
        "producer" => crate::ex_producer::main(),
        "consumer" => crate::ex_consumer::main(),
        "close" => crate::ex_close::main(),
        "all_in_one" => crate::ex_all_in_one::main(),
        "demo" => crate::ex_demo::main(),
        "load-producer" => exit(load_producer()),
        "load-consumer" => exit(load_consumer()),
        "get-one" => exit(get_one()),
        "put-one" => exit(put_one()),
        "worker" => exit(worker()),
        "half-frame" => exit(half_frame()),
        other => {
            eprintln!("unknown role {other}");
            ExitCode::from(3)
        }
    }
}

fn exit(r: Result<(), depot::Error>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// The value after `--name` on the command line.
fn arg(name: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .unwrap_or_else(|| panic!("role needs {name}"))
        .clone()
}

fn num(name: &str) -> u64 {
    arg(name).parse().expect("a number")
}

fn connect() -> Result<Client, depot::Error> {
    Client::connect(arg("--addr"), arg("--authkey"))
}

/// Puts the u32 values `--first` .. `--first + --count` (as values) into
/// `task_queue`, pipelined in batches.
fn load_producer() -> Result<(), depot::Error> {
    let client = connect()?;
    let queue = client.raw_queue("task_queue")?;
    let first = num("--first") as u32;
    let count = num("--count") as u32;
    // Items are values (the manager's queue holds values): u32s in the value encoding.
    let values: Vec<Vec<u8>> = (first..first + count)
        .map(|v| {
            let mut item = [0u8; 8];
            let n = depot::core::value::to_slice(&v, &mut item).expect("a u32 fits");
            item[..n].to_vec()
        })
        .collect();
    for batch in values.chunks(32) {
        let items: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
        queue.put_many(&items)?;
    }
    println!("done");
    Ok(())
}

/// Takes `--count` items from `task_queue` and prints each as a decimal u32 line.
fn load_consumer() -> Result<(), depot::Error> {
    let client = connect()?;
    let queue = client.raw_queue("task_queue")?;
    let count = num("--count") as usize;
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut got = 0;
    while got < count {
        let batch = queue.get_many((count - got).min(32))?;
        for item in &batch {
            let value: u32 = depot::core::value::from_slice(item).expect("a u32 item");
            writeln!(out, "{value}").expect("stdout");
        }
        got += batch.len();
    }
    out.flush().expect("stdout");
    Ok(())
}

/// Prints `ready`, takes one item from `--queue` (waiting at most `--timeout-ms` if given) and
/// prints `got ITEM`.
fn get_one() -> Result<(), depot::Error> {
    let client = connect()?;
    let queue = client.raw_queue(&arg("--queue"))?;
    println!("ready");
    let timeout = std::env::args().any(|a| a == "--timeout-ms");
    let item = if timeout {
        queue.get_timeout(Duration::from_millis(num("--timeout-ms")))?
    } else {
        queue.get()?
    };
    println!("got {}", String::from_utf8_lossy(&item));
    Ok(())
}

/// Puts `--value` into `--queue`.
fn put_one() -> Result<(), depot::Error> {
    let client = connect()?;
    client
        .raw_queue(&arg("--queue"))?
        .put(arg("--value").as_bytes())?;
    println!("put");
    Ok(())
}

/// Takes `--count` items from `--queue`, prints `got N`, waits for a line on stdin, then marks
/// each done and prints `done`.
fn worker() -> Result<(), depot::Error> {
    let client = connect()?;
    let queue = client.raw_queue(&arg("--queue"))?;
    let count = num("--count");
    for _ in 0..count {
        queue.get()?;
    }
    println!("got {count}");
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    for _ in 0..count {
        queue.task_done()?;
    }
    println!("done");
    Ok(())
}

/// Authenticates on a raw socket, sends the first half of a `put` frame into `--queue`, prints
/// `ready` and waits to be killed.
fn half_frame() -> Result<(), depot::Error> {
    let addr: SocketAddr = arg("--addr").parse().expect("an address");
    let mut session = Session::connect(addr, arg("--authkey").as_bytes()).expect("handshake");
    let handle = session.open(&arg("--queue"));
    let mut msgs = Vec::new();
    session.encode_request(
        Op::Put {
            handle,
            item: b"never arrives whole",
            wait: Wait::NoWait,
        },
        &mut msgs,
    );
    let frame = session.frame(&msgs);
    std::io::Write::write_all(&mut session.stream, &frame[..frame.len() / 2]).expect("write");
    println!("ready");
    std::thread::sleep(Duration::from_secs(60));
    Ok(())
}
