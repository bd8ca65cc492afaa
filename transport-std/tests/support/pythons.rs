//! The CPython interpreters the interop tests run against: `python3`, and the `python3.X`
//! launchers in `DEPOT_PYTHONS` (a directory `tests/extra-pythons` fills). Shared by the
//! test binaries of depot-std and depot-cli.

/// `python3`, then 3.9, 3.13 and 3.14 from `DEPOT_PYTHONS` when it is set (each must exist).
pub fn pythons() -> Vec<String> {
    let mut all = vec!["python3".to_owned()];
    match std::env::var("DEPOT_PYTHONS") {
        Ok(dir) => {
            for v in ["3.9", "3.13", "3.14"] {
                let p = format!("{dir}/python{v}");
                assert!(
                    std::path::Path::new(&p).exists(),
                    "{p} missing: run tests/extra-pythons {dir}"
                );
                all.push(p);
            }
        }
        Err(_) => eprintln!("DEPOT_PYTHONS not set: only python3 runs"),
    }
    all
}

/// `py SCRIPT PORT KEY ROLE`, output piped: one of the interop scripts in
/// `transport-std/tests/python`, as a client of the manager at 127.0.0.1:`port`.
#[allow(dead_code)]
pub fn script(py: &str, script: &str, port: u16, key: &str, role: &str) -> std::process::Command {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../transport-std/tests/python");
    let mut c = std::process::Command::new(py);
    c.arg(dir.join(script))
        .arg(port.to_string())
        .arg(key)
        .arg(role)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    c
}

/// Runs [`script`] to its end: what it printed (it must succeed).
#[allow(dead_code)]
pub fn run_script(py: &str, name: &str, port: u16, key: &str, role: &str) -> String {
    let out = script(py, name, port, key, role).output().unwrap();
    assert!(
        out.status.success(),
        "{py} {role}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
