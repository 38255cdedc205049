//! Smoke tests of the `tallinn` binary that need no relay. (Having an
//! integration test here also makes `cargo test --workspace` build the
//! binary that the end-to-end suite in `tests/` runs.)

use std::process::Command;

#[test]
fn version_and_help() {
    let out = Command::new(env!("CARGO_BIN_EXE_tallinn"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("tallinn "));
    let out = Command::new(env!("CARGO_BIN_EXE_tallinn"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in [
        "keygen", "send", "request", "offer", "status", "sync", "listen", "inbox", "archive",
    ] {
        assert!(help.contains(cmd), "{cmd} in --help");
    }
}

#[test]
fn missing_config_is_an_error_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tallinn"))
        .args(["inbox"])
        .env("XDG_CONFIG_HOME", dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: loading the client config"), "{err}");
}
