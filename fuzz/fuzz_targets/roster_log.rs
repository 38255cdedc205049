//! Roster-log entries from the network or a peer: decode a `SignedEntry`
//! and offer it to the fuzz deployment's log (`check_entry` against the
//! genesis state, fork detection at index 0). The first byte picks the
//! mode: bit 0 clear, the rest is `postcard(SignedEntry)` as received; bit
//! 0 set, the rest is an entry body that the target has approved first, by
//! UA (beneficiary and chair) and EE, or (bit 1 set) by EE alone as its own
//! `Devices` entry needs, so the rules after the signatures (chain, kinds,
//! state rules, retired keys) are reached too.
//! Property: an entry the log accepts yields a state that re-validates, and
//! a second log verified from the genesis reaches the same state.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tallinn_common::roster::{
    approval_message, Appended, Approval, RosterLog, RosterState, SignedEntry,
};
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
    let entry = if mode & 1 == 0 {
        match SignedEntry::decode(rest) {
            Ok(e) => e,
            Err(_) => return,
        }
    } else {
        let mut e = SignedEntry {
            body: rest.to_vec(),
            approvals: Vec::new(),
        };
        let signers: &[(&str, &tallinn_common::identity::Identity)] = if mode & 2 == 0 {
            &[("EE", &w.ee), ("UA", &w.ua)]
        } else {
            &[("EE", &w.ee)]
        };
        for (id, key) in signers {
            e.add_approval(Approval {
                participant: (*id).into(),
                signature: key.sign(&approval_message(&e.body)),
            });
        }
        e
    };
    let mut log = w.log.clone();
    if let Ok(Appended::New(epoch)) = log.append(entry) {
        let state = log.current();
        assert_eq!(state.epoch(), epoch);
        let again = RosterState::validate(state.record().clone(), epoch, *state.entry_hash())
            .expect("an applied state re-validates");
        assert_eq!(&again, state.as_ref());
        let fp = log.deployment();
        let other = RosterLog::from_entries(log.entries().to_vec(), Some(&fp))
            .expect("an accepted log re-verifies");
        assert_eq!(other.current(), log.current());
    }
});
