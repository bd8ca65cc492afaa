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
