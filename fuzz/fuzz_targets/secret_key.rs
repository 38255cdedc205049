//! Secret key files: parse (without a passphrase: a protected file is
//! refused before any KDF work). Property: an accepted file writes back to
//! one that reads as the same identity.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tallinn_common::identity::Identity;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.key");
    let Ok(id) = Identity::from_secret_toml(text, None, path) else {
        return;
    };
    let again = Identity::from_secret_toml(&id.to_secret_toml(), None, path)
        .expect("a written key file reads back");
    assert_eq!(again.public(), id.public());
});
