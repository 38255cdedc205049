//! Roster files (TOML from an operator or a peer): parse and validate.
//! Property: an accepted roster's canonical form parses to the same
//! roster fingerprint.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tallinn_common::roster::Roster;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(roster) = Roster::parse(text) else {
        return;
    };
    let again = Roster::parse(&roster.to_file().to_toml()).expect("a canonical roster parses");
    assert_eq!(again.fingerprint(), roster.fingerprint());
});
