//! The fixed deployment the envelope fuzz target verifies and opens
//! against: three participants with constant secrets and one channel. Also
//! compiled into `tallinn-fuzz-seeds` (the seed-corpus generator in the
//! `tests` crate) through `#[path]`, so seeds and target agree.

use tallinn_common::identity::{Identity, ParticipantId};
use tallinn_common::roster::{
    approval_message, Approval, EntryBody, EntryKind, Roster, RosterLog, SignedEntry,
};

/// Identities and roster of the fuzz deployment.
pub struct World {
    /// The roster: UA and EE members, NATO observer, channel `plenary`.
    pub roster: Roster,
    /// Member, beneficiary; the signer of "signed" fuzz inputs.
    pub ua: Identity,
    /// Member; opens what it receives.
    pub ee: Identity,
    /// Observer; opens what it receives.
    pub nato: Identity,
    /// The version-2 roster log: the migrated genesis of `roster` (each
    /// key pair is its participant's identity key and its device
    /// `default`), UA beneficiary and chair, approved by UA.
    pub log: RosterLog,
}

fn identity(id: &str, secret: u8) -> Identity {
    // invariant: constant, valid ids.
    let id = ParticipantId::new(id).expect("invariant: valid id");
    Identity::from_secrets(id, &[secret; 32], &[secret.wrapping_add(1); 32])
}

/// The fuzz deployment.
pub fn world() -> World {
    let ua = identity("UA", 1);
    let ee = identity("EE", 3);
    let nato = identity("NATO", 5);
    let text = format!(
        "beneficiary = \"UA\"\n\n{}\n{}\n{}\n[[channel]]\nid = \"plenary\"\n\
         members = [\"*\"]\nobservers = [\"NATO\"]\n",
        ua.roster_entry("Ukraine", "member"),
        ee.roster_entry("Estonia", "member"),
        nato.roster_entry("NATO", "observer"),
    );
    // invariant: the text above is a valid roster.
    let roster = Roster::parse(&text).expect("invariant: valid roster");
    let relay = identity("relay", 7);
    let record = roster.to_state_record("UA", 1, relay.public().sign_key.to_bytes());
    let mut genesis = SignedEntry::new(&EntryBody {
        index: 0,
        prev_hash: [0; 32],
        kind: EntryKind::Genesis(record),
    });
    genesis.add_approval(Approval {
        participant: "UA".into(),
        signature: ua.sign(&approval_message(&genesis.body)),
    });
    // invariant: the genesis above is valid.
    let log = RosterLog::from_genesis(genesis, None).expect("invariant: valid genesis");
    World {
        roster,
        ua,
        ee,
        nato,
        log,
    }
}
