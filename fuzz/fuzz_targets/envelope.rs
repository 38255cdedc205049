//! Envelopes from the network, both versions: decode, verify against the
//! version-1 roster and the version-2 state (single and batch, which must
//! agree), strict per-recipient verification, open as every recipient
//! (device `default` for version 2) and recompute version-2 wraps. The
//! first byte picks the mode: bit 0 clear, the rest is envelope bytes as
//! received; bit 0 set, the rest is a body that the target signs with UA's
//! key first (bit 1 picks the `tallinn/2` signing label), so the checks
//! after the signature (header, recipients, wraps, key commitment,
//! decryption) are reached too.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tallinn_common::defaults::{ENVELOPE_SIGNATURE_CONTEXT, ENVELOPE_SIGNATURE_CONTEXT_V2};
use tallinn_common::envelope::{Envelope, Policy, UntrustedEnvelope};
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
        let mut m = if mode & 2 == 0 {
            ENVELOPE_SIGNATURE_CONTEXT.to_vec()
        } else {
            ENVELOPE_SIGNATURE_CONTEXT_V2.to_vec()
        };
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
    check(w, &bytes, untrusted.clone(), &w.roster);
    check(w, &bytes, untrusted, w.log.current().as_ref());
});

fn check<P: Policy>(w: &World, bytes: &[u8], untrusted: UntrustedEnvelope, policy: &P) {
    let single = untrusted.clone().verify(policy);
    // A batch of two takes the batch path. It may accept what a strict
    // check refuses only for a signature with a small-order R, which only
    // the key holder can make (PROTOCOL.md §10 item 32); never the reverse.
    let batch = UntrustedEnvelope::verify_many(vec![untrusted.clone(), untrusted], policy);
    if single.is_ok() {
        assert!(
            batch.iter().all(Result::is_ok),
            "the batch refused what a strict check accepts"
        );
    }
    let Ok(verified) = single else { return };
    for me in [&w.ua, &w.ee, &w.nato] {
        if let Ok(opened) = verified.open_as(me, Some("default")) {
            // What opened re-verifies strictly.
            let again = UntrustedEnvelope::decode(bytes).expect("decoded once");
            assert!(UntrustedEnvelope::verify_each_strict(vec![again], policy)
                .into_iter()
                .all(|r| r.is_ok()));
            assert_eq!(opened.msg_id(), verified.msg_id());
            assert_eq!(opened.envelope(), bytes);
            // Recomputing the wraps never panics (version 1 is refused).
            let _ = verified.verify_wraps(opened.content_key(), w.log.current());
        }
    }
}
