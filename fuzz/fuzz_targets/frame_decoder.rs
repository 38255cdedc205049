//! Frames from the network: the streaming decoder fed in arbitrary chunks,
//! and the one-frame decoder. Property: whatever decodes re-encodes to a
//! frame that decodes to the same value, and chunking never changes what
//! the stream decodes to.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tallinn_common::wire::{decode_frame, encode_frame, FrameDecoder};

const MAX: u32 = 64 * 1024;

fn drain(d: &mut FrameDecoder, out: &mut Vec<String>) -> bool {
    loop {
        match d.next_frame() {
            Ok(Some(f)) => {
                let again = encode_frame(&f);
                let back = decode_frame(&again[4..]).expect("a decoded frame re-decodes");
                assert_eq!(back, f);
                out.push(format!("{f:?}"));
            }
            Ok(None) => return true,
            Err(_) => return false,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = decode_frame(data);
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    // Whole, and in chunks of a size taken from the first byte.
    let mut whole = FrameDecoder::new(MAX);
    whole.extend(rest);
    let mut a = Vec::new();
    let a_ok = drain(&mut whole, &mut a);
    let mut chunked = FrameDecoder::new(MAX);
    let mut b = Vec::new();
    let mut b_ok = true;
    for chunk in rest.chunks(usize::from(split).max(1)) {
        chunked.extend(chunk);
        if !drain(&mut chunked, &mut b) {
            b_ok = false;
            break;
        }
    }
    assert_eq!(a, b, "chunking changed the decoded frames");
    assert_eq!(a_ok, b_ok, "chunking changed whether the stream fails");
});
