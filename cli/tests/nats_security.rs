//! depot gateways to NATS over TLS and with nkeys, and what `stat` and metrics say about the
//! backend: real `nats-server` processes configured by file (tests/install installs it;
//! certificates made here with the `openssl` command) and real `depot serve` processes.
//!
//! - a TLS-only server: a gateway given its CA puts and gets through it; one given another CA,
//!   none, or no TLS is refused with a clear error;
//! - a server that verifies client certificates: a gateway with one is served, one without is
//!   refused;
//! - an nkey-authorized server: the right seed is served, another seed is refused;
//! - a server in operator mode: a `.creds` file (user JWT and seed) logs in, a wrong seed is
//!   refused;
//! - `stat` shows a backend queue's real length; metrics show the connection lost and found
//!   again when the server restarts (over TLS too).

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use depot_std::Client;

mod serve;
use serve::{free_port, metric, scrape, temp_dir, Proc};

const KEY: &str = "gateway-security-key-0123456789ab";

/// The example user of the NATS documentation's nkey page.
const SEED: &str = "SUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VY";
const USER: &str = "UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4";

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("openssl runs (tests/install installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA `<name>.pem` / `<name>.key` in `dir`.
fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// A certificate `<name>.pem` / `<name>.key` signed by CA `ca`, with extensions `ext`.
fn make_cert(dir: &Path, ca: &str, name: &str, ext: &str) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, in `dir`.
fn certificates(dir: &Path) {
    make_ca(dir, "ca");
    make_ca(dir, "other-ca");
    make_cert(
        dir,
        "ca",
        "server",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    );
    make_cert(dir, "ca", "client", "extendedKeyUsage=clientAuth\n");
}

/// A `nats-server` with JetStream on `port`, configured by `conf` (beside listen and store).
fn nats_server(port: u16, dir: &Path, conf: &str) -> Proc {
    let store = dir.join(format!("store-{port}"));
    let file = dir.join(format!("nats-{port}.conf"));
    std::fs::write(
        &file,
        format!(
            "listen: \"127.0.0.1:{port}\"\njetstream {{ store_dir: {:?} }}\n{conf}\n",
            store.display().to_string()
        ),
    )
    .unwrap();
    serve::start_nats(&[OsStr::new("-c"), file.as_os_str()], port)
}

/// A `depot serve --backend URL ARGS` gateway serving queue `jobs`.
fn gateway(backend: &str, extra: &[&str]) -> (Proc, SocketAddr) {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let listen = addr.to_string();
    let args = ["--listen", &listen, "--queue", "jobs", "--backend", backend];
    let args: Vec<&OsStr> = args.iter().chain(extra).map(OsStr::new).collect();
    let child = serve::serve(
        &args,
        KEY,
        Duration::from_secs(20),
        Duration::from_millis(300),
    );
    (Proc(child), addr)
}

/// `depot serve --backend URL ARGS`, which must fail: its error output.
fn refused(backend: &str, extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_depot"))
        .args(["serve", "--listen", "127.0.0.1:0", "--queue", "jobs"])
        .args(["--backend", backend])
        .args(extra)
        .env("DEPOT_AUTHKEY", KEY)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "depot serve started: {extra:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Items go through the gateway at `addr` and come back in order.
fn round_trip(addr: SocketAddr) {
    let q = Client::connect(addr, KEY)
        .unwrap()
        .raw_queue("jobs")
        .unwrap();
    // The integers 0 to 23, each one byte of CBOR (`jobs` is a value queue).
    for i in 0..24u8 {
        q.put(&[i]).unwrap();
    }
    for i in 0..24u8 {
        assert_eq!(q.get().unwrap(), [i]);
    }
}

fn path(dir: &Path, name: &str) -> String {
    dir.join(name).to_str().unwrap().to_owned()
}

#[test]
fn gateways_reach_a_tls_only_server_with_its_ca_and_are_refused_without_it() {
    let dir = temp_dir("tls");
    certificates(&dir);
    let port = free_port();
    let conf = format!(
        "tls {{ cert_file: {:?}, key_file: {:?}, timeout: 2 }}",
        path(&dir, "server.pem"),
        path(&dir, "server.key")
    );
    let mut nats = nats_server(port, &dir, &conf);
    let ca = path(&dir, "ca.pem");
    let tls_url = format!("tls://127.0.0.1:{port}");
    let nats_url = format!("nats://127.0.0.1:{port}");

    let (_g, addr) = gateway(&tls_url, &["--backend-tls-ca", &ca]);
    round_trip(addr);
    // `--backend-tls` asks for TLS as tls:// does.
    let (_g2, addr2) = gateway(&nats_url, &["--backend-tls", "--backend-tls-ca", &ca]);
    round_trip(addr2);

    let err = refused(&tls_url, &["--backend-tls-ca", &path(&dir, "other-ca.pem")]);
    assert!(err.contains("invalid peer certificate"), "{err}");
    let err = refused(&nats_url, &[]);
    assert!(err.contains("requires TLS"), "{err}");
    let err = refused(&tls_url, &[]);
    assert!(err.contains("--backend-tls-ca"), "{err}");
    let err = refused(&tls_url, &["--backend-tls-ca", &path(&dir, "server.key")]);
    assert!(err.contains("no PEM certificate"), "{err}");

    // The server restarts: the gateway reconnects (a new TLS handshake) by itself.
    drop(nats);
    nats = nats_server(port, &dir, &conf);
    let q = Client::connect(addr, KEY)
        .unwrap()
        .raw_queue("jobs")
        .unwrap();
    eventually("a put through the reconnected gateway", || {
        q.put(&[1]).is_ok()
    });
    assert_eq!(q.get().unwrap(), [1]);
    drop(nats);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_server_that_verifies_clients_serves_a_gateway_with_a_certificate_only() {
    let dir = temp_dir("mtls");
    certificates(&dir);
    let port = free_port();
    let _nats = nats_server(
        port,
        &dir,
        &format!(
            "tls {{ cert_file: {:?}, key_file: {:?}, ca_file: {:?}, verify: true, timeout: 2 }}",
            path(&dir, "server.pem"),
            path(&dir, "server.key"),
            path(&dir, "ca.pem")
        ),
    );
    let url = format!("tls://127.0.0.1:{port}");
    let ca = path(&dir, "ca.pem");
    let (_g, addr) = gateway(
        &url,
        &[
            "--backend-tls-ca",
            &ca,
            "--backend-tls-cert",
            &path(&dir, "client.pem"),
            "--backend-tls-key",
            &path(&dir, "client.key"),
        ],
    );
    round_trip(addr);
    let err = refused(&url, &["--backend-tls-ca", &ca]);
    assert!(err.contains("TLS"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_nkey_server_serves_the_right_seed_and_refuses_another() {
    let dir = temp_dir("nkey");
    let port = free_port();
    let _nats = nats_server(
        port,
        &dir,
        &format!("authorization {{ users = [ {{ nkey: {USER:?} }} ] }}"),
    );
    let url = format!("nats://127.0.0.1:{port}");
    let seed = dir.join("user.nk");
    std::fs::write(&seed, format!("# the gateway's nkey\n{SEED}\n")).unwrap();
    let (_g, addr) = gateway(&url, &["--backend-nkey", seed.to_str().unwrap()]);
    round_trip(addr);

    let other = dir.join("other.nk");
    std::fs::write(&other, depot_nats::nkeys::encode_user_seed(&[7; 32])).unwrap();
    let err = refused(&url, &["--backend-nkey", other.to_str().unwrap()]);
    assert!(err.contains("Authorization Violation"), "{err}");

    // A seed with a typo is caught before any server is asked.
    std::fs::write(&other, SEED.replacen("SSL3", "SSL4", 1)).unwrap();
    let err = refused(&url, &["--backend-nkey", other.to_str().unwrap()]);
    assert!(err.contains("checksum"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `depot stat --json` of the gateway at `addr`.
fn stat(addr: SocketAddr) -> serde_json::Value {
    serde_json::from_str(&stat_text(addr, &["--json"])).unwrap()
}

/// `depot stat` of the gateway at `addr`, as printed.
fn stat_text(addr: SocketAddr, extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_depot"))
        .args(["stat", "--connect", &addr.to_string()])
        .args(extra)
        .env("DEPOT_AUTHKEY", KEY)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `stat --json`'s backend: (connected, server, reconnects, last error).
fn backend(stat: &serde_json::Value) -> (bool, String, u64, String) {
    let b = &stat["backend"];
    assert_eq!(b["kind"], "nats", "{stat}");
    assert!(b["since_ms"].is_u64(), "{stat}");
    (
        b["connected"].as_bool().unwrap(),
        b["server"].as_str().unwrap().to_owned(),
        b["reconnects"].as_u64().unwrap(),
        b["last_error"].as_str().unwrap().to_owned(),
    )
}

fn jobs_len(stat: &serde_json::Value) -> Option<u64> {
    stat["queues"]
        .as_array()?
        .iter()
        .find(|q| q["name"] == "jobs")?["len"]
        .as_u64()
}

/// Waits until `f` holds (lengths are asked of JetStream every second).
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "never: {what}");
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn stat_and_metrics_show_the_backend_queues_and_connection() {
    let dir = temp_dir("stat");
    let port = free_port();
    let mut nats = Some(nats_server(port, &dir, ""));
    let metrics = format!("127.0.0.1:{}", free_port());
    // A short ack_wait: see the end.
    let (_g, addr) = gateway(
        &format!("nats://127.0.0.1:{port}"),
        &["--metrics", &metrics, "--backend-ack-wait", "2"],
    );
    let q = Client::connect(addr, KEY)
        .unwrap()
        .raw_queue("jobs")
        .unwrap();
    for i in 0..7u8 {
        q.put(&[i]).unwrap();
    }
    eventually("stat shows 7 items", || jobs_len(&stat(addr)) == Some(7));
    let server = format!("127.0.0.1:{port}");
    assert_eq!(
        backend(&stat(addr)),
        (true, server.clone(), 0, String::new())
    );
    let text = stat_text(addr, &[]);
    assert!(text.contains("backend: nats\n"), "{text}");
    assert!(
        text.contains(&format!("connected to {server} for ")),
        "{text}"
    );
    assert!(text.contains("reconnects: 0\n"), "{text}");
    assert!(!text.contains("last error"), "{text}");
    assert_eq!(q.qsize().unwrap(), 7);
    q.get().unwrap();
    q.get().unwrap();
    eventually("stat shows 5 items", || jobs_len(&stat(addr)) == Some(5));
    let scraped = scrape(&metrics);
    assert!(
        scraped.contains("depot_queue_length{queue=\"jobs\"} 5"),
        "{scraped}"
    );
    assert!(scraped.contains("depot_backend_connected{kind=\"nats\""));
    assert_eq!(metric(&scraped, "depot_backend_connected{"), Some(1));

    nats.take().unwrap().stop();
    eventually("metrics show the backend disconnected", || {
        metric(&scrape(&metrics), "depot_backend_connected{") == Some(0)
    });
    // No stale length is claimed while JetStream cannot be asked.
    eventually("stat shows no length", || jobs_len(&stat(addr)) == Some(0));
    let (connected, last, reconnects, error) = backend(&stat(addr));
    assert_eq!((connected, last.as_str(), reconnects), (false, &*server, 1));
    assert!(!error.is_empty());
    let text = stat_text(addr, &[]);
    assert!(
        text.contains(&format!("disconnected from {server} for ")),
        "{text}"
    );
    assert!(text.contains("reconnects: 1\n"), "{text}");
    assert!(text.contains(&format!("last error: {error}")), "{text}");

    // Back: the gateway reconnects by itself, and the length shows again.
    let _nats = nats_server(port, &dir, "");
    eventually("metrics show the backend connected again", || {
        let m = scrape(&metrics);
        metric(&m, "depot_backend_connected{") == Some(1)
            && metric(&m, "depot_backend_reconnects_total") == Some(1)
    });
    eventually("stat shows 5 items again", || {
        jobs_len(&stat(addr)) == Some(5)
    });
    let (connected, now, reconnects, _) = backend(&stat(addr));
    assert_eq!((connected, now.as_str(), reconnects), (true, &*server, 1));
    let text = stat_text(addr, &[]);
    assert!(
        text.contains(&format!("connected to {server} for ")),
        "{text}"
    );
    // Every item is there. The one the gateway read ahead after the two gets may come last:
    // if its hold ended before NATS stopped, it was given back, and JetStream keeps it pending
    // across the restart and delivers it again after ack_wait.
    let mut taken = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while taken < 5 && Instant::now() < deadline {
        if q.get_timeout(Duration::from_secs(1)).is_ok() {
            taken += 1;
        }
    }
    assert_eq!(taken, 5);
    let rest = q.get_timeout(Duration::from_secs(3));
    assert!(rest.is_err(), "nothing more: {rest:?}");
    eventually("stat shows an empty queue", || {
        jobs_len(&stat(addr)) == Some(0)
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// A JWT of `claims` (issuer and subject added) signed by `issuer`.
fn jwt(
    issuer: &depot_nats::nkeys::KeyPair,
    subject: &str,
    name: &str,
    nats: serde_json::Value,
) -> String {
    use depot_nats::nkeys::base64url;
    let header = base64url(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let claims = serde_json::json!({
        "jti": format!("{name}-jti"),
        "iat": 1_700_000_000u64,
        "iss": issuer.public().unwrap(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let body = format!("{header}.{}", base64url(claims.to_string().as_bytes()));
    let sig = issuer.sign(body.as_bytes());
    format!("{body}.{sig}")
}

#[test]
fn a_creds_file_logs_in_to_a_server_in_operator_mode() {
    use depot_nats::nkeys::{encode_seed, KeyKind, KeyPair};
    let dir = temp_dir("creds");
    let operator = KeyPair::new(KeyKind::Operator, &[1; 32]).unwrap();
    let account = KeyPair::new(KeyKind::Account, &[2; 32]).unwrap();
    let user_seed = [3; 32];
    let user = KeyPair::new(KeyKind::User, &user_seed).unwrap();
    let (op_pub, acc_pub) = (operator.public().unwrap(), account.public().unwrap());
    let op_jwt = jwt(
        &operator,
        &op_pub,
        "depot-test",
        serde_json::json!({"type": "operator", "version": 2}),
    );
    let acc_jwt = jwt(
        &operator,
        &acc_pub,
        "depot",
        serde_json::json!({
            "limits": {
                "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                "wildcards": true, "conn": -1, "leaf": -1,
                "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1,
            },
            "type": "account",
            "version": 2,
        }),
    );
    let user_jwt = jwt(
        &account,
        &user.public().unwrap(),
        "gateway",
        serde_json::json!({
            "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
            "type": "user", "version": 2,
        }),
    );
    // JetStream needs a system account.
    let system = KeyPair::new(KeyKind::Account, &[5; 32]).unwrap();
    let sys_pub = system.public().unwrap();
    let sys_jwt = jwt(
        &operator,
        &sys_pub,
        "SYS",
        serde_json::json!({"type": "account", "version": 2}),
    );
    let port = free_port();
    let _nats = nats_server(
        port,
        &dir,
        &format!(
            "operator: {op_jwt:?}\nsystem_account: {sys_pub}\nresolver: MEMORY\n\
             resolver_preload: {{ {acc_pub}: {acc_jwt:?}, {sys_pub}: {sys_jwt:?} }}"
        ),
    );
    let url = format!("nats://127.0.0.1:{port}");
    let creds = |seed: &[u8; 32]| {
        format!(
            "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
            encode_seed(KeyKind::User, seed)
        )
    };
    let file = dir.join("gateway.creds");
    std::fs::write(&file, creds(&user_seed)).unwrap();
    let (_g, addr) = gateway(&url, &["--backend-creds", file.to_str().unwrap()]);
    round_trip(addr);

    // The JWT with another user's seed: the signature does not match the JWT's subject.
    std::fs::write(&file, creds(&[4; 32])).unwrap();
    let err = refused(&url, &["--backend-creds", file.to_str().unwrap()]);
    assert!(err.contains("Authorization Violation"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
