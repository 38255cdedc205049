//! Envelopes from the network: decode, verify against the roster (single
//! and batch, which must agree), strict per-recipient verification, and
//! open as every recipient. The first byte picks the mode: even, the rest
//! is envelope bytes as received; odd, the rest is a `SealedBody` that the
//! target signs with UA's key first, so the checks after the signature
//! (header, recipients, wraps, key commitment, decryption) are reached too.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tallinn_common::defaults::ENVELOPE_SIGNATURE_CONTEXT;
use tallinn_common::envelope::{Envelope, UntrustedEnvelope};
use tallinn_fuzz::world::{world, World};

fn fixture() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(world)
}

fuzz_target!(|data: &[u8]| {
    let w = fixture();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        let mut m = ENVELOPE_SIGNATURE_CONTEXT.to_vec();
        m.extend_from_slice(rest);
        let env = Envelope {
            body: rest.to_vec(),
            signature: w.ua.sign(&m),
        };
        match postcard::to_allocvec(&env) {
            Ok(b) => b,
            Err(_) => return,
        }
    };
    let Ok(untrusted) = UntrustedEnvelope::decode(&bytes) else {
        return;
    };
    let single = untrusted.clone().verify(&w.roster);
    // A batch of two takes the batch path. It may accept what a strict
    // check refuses only for a signature with a small-order R, which only
    // the key holder can make (PROTOCOL.md §10 item 32); never the reverse.
    let batch = UntrustedEnvelope::verify_many(vec![untrusted.clone(), untrusted], &w.roster);
    if single.is_ok() {
        assert!(
            batch.iter().all(Result::is_ok),
            "the batch refused what a strict check accepts"
        );
    }
    let Ok(verified) = single else { return };
    for me in [&w.ua, &w.ee, &w.nato] {
        if let Ok(opened) = verified.open(me) {
            // What opened re-verifies strictly.
            let again = UntrustedEnvelope::decode(&bytes).expect("decoded once");
            assert!(
                UntrustedEnvelope::verify_each_strict(vec![again], &w.roster)
                    .into_iter()
                    .all(|r| r.is_ok())
            );
            assert_eq!(opened.msg_id(), verified.msg_id());
            assert_eq!(opened.envelope(), &bytes[..]);
        }
    }
});
