//! Client archive values read back from disk (which an attacker with the
//! files may edit): record values (sealed and, to reach the decoder past
//! the AEAD, plaintext sealed here under the known key) and the
//! authenticated head. Property: a record that decodes re-encodes to the
//! same bytes' value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tallinn_client::archive::{
    check_head_value, decode_record_plaintext, decode_record_value, seal_record_value,
};

const KEY: [u8; 32] = [7; 32];

fuzz_target!(|data: &[u8]| {
    let Some((&index, rest)) = data.split_first() else {
        return;
    };
    let index = u64::from(index);
    let _ = check_head_value(&KEY, rest);
    let _ = decode_record_value(&KEY, index, rest);
    let sealed = seal_record_value(&KEY, index, rest);
    let via_seal = decode_record_value(&KEY, index, &sealed);
    let direct = decode_record_plaintext(index, rest);
    assert_eq!(via_seal.is_ok(), direct.is_ok());
    if let Ok(r) = direct {
        assert_eq!(r.index, index);
        assert!(via_seal.is_ok_and(|v| v == r));
    }
});
