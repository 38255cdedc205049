//! The relay's commit log at replay (a file a crash may have torn or a
//! disk corrupted). Property: the intact records re-encode to exactly the
//! bytes replay kept, and what it discarded is the rest.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tallinn_relay::store::wal::{encode_record, replay_bytes};

fuzz_target!(|data: &[u8]| {
    let replay = replay_bytes(data);
    let kept = data.len() as u64 - replay.discarded_bytes;
    let mut again = Vec::new();
    for r in &replay.records {
        again.extend_from_slice(&encode_record(r));
    }
    assert_eq!(again.len() as u64, kept);
    assert_eq!(&again[..], &data[..again.len()]);
    assert_eq!(replay.stopped.is_some(), replay.discarded_bytes > 0);
});
