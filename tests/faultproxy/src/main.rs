//! `faultproxy`: forward TCP from a listening address to a manager, injecting faults.

use std::process::ExitCode;
use std::time::Duration;

use faultproxy::{FaultProxy, Faults};

const HELP: &str = "\
faultproxy: a TCP forwarder that injects faults between clients and a server.

USAGE:
    faultproxy --listen ADDR --upstream ADDR [OPTIONS]

OPTIONS:
    --listen ADDR             where clients connect (e.g. 127.0.0.1:6000)
    --upstream ADDR           where connections are forwarded (e.g. 127.0.0.1:5000)
    --latency MS              hold every chunk this long, each way
    --bandwidth BYTES         forward at most this many bytes per second, each way, per
                              connection
    --drop-every MS           close every connection (FIN both ways) at this interval
    --reset-every MS          reset every connection (RST both ways) at this interval
    --half-close-every MS     at this interval, close each connection's client-to-server
                              direction only: the server sees the end of its input, the
                              client is not told until the server closes
    --pause-every MS          at this interval, stop forwarding for --pause-for
    --pause-for MS            how long a pause lasts (default 500)
    --faults-after MS         forward faithfully until a first client has connected and for
                              this long after (its handshake goes through), then inject the
                              faults
    -h, --help                print this help
";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("faultproxy: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let (mut listen, mut upstream) = (None, None);
    let mut faults = Faults::default();
    let mut pause_every = None;
    let mut pause_for = Duration::from_millis(500);
    let mut after = Duration::ZERO;
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            print!("{HELP}");
            return Ok(());
        }
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        let ms = |v: String| {
            v.parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| format!("{arg}: not a number of milliseconds: {v}"))
        };
        match arg.as_str() {
            "--listen" => listen = Some(value()?),
            "--upstream" => upstream = Some(value()?),
            "--latency" => faults.latency = ms(value()?)?,
            "--bandwidth" => {
                let v = value()?;
                let n = v
                    .parse()
                    .map_err(|_| format!("--bandwidth: not a number: {v}"))?;
                faults.bandwidth = Some(n);
            }
            "--drop-every" => faults.drop_every = Some(ms(value()?)?),
            "--reset-every" => faults.reset_every = Some(ms(value()?)?),
            "--half-close-every" => faults.half_close_every = Some(ms(value()?)?),
            "--pause-every" => pause_every = Some(ms(value()?)?),
            "--pause-for" => pause_for = ms(value()?)?,
            "--faults-after" => after = ms(value()?)?,
            other => return Err(format!("unknown option {other} (see --help)")),
        }
    }
    faults.pause = pause_every.map(|every| (every, pause_for));
    let listen = listen.ok_or("--listen is required (see --help)")?;
    let upstream = upstream.ok_or("--upstream is required (see --help)")?;
    let upstream = upstream
        .parse()
        .map_err(|e| format!("--upstream {upstream}: {e}"))?;
    let first = if after.is_zero() {
        faults
    } else {
        Faults::default()
    };
    let proxy = FaultProxy::start(&listen, upstream, first).map_err(|e| e.to_string())?;
    eprintln!("faultproxy: {} -> {upstream}", proxy.addr());
    if !after.is_zero() {
        while proxy.stats().accepted == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(after);
        proxy.set_faults(faults);
        eprintln!("faultproxy: faults on");
    }
    loop {
        std::thread::park();
    }
}
