//! The fixed deployment the envelope fuzz target verifies and opens
//! against: three participants with constant secrets and one channel. Also
//! compiled into `tallinn-fuzz-seeds` (the seed-corpus generator in the
//! `tests` crate) through `#[path]`, so seeds and target agree.

use tallinn_common::identity::{Identity, ParticipantId};
use tallinn_common::roster::Roster;

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
    World {
        roster,
        ua,
        ee,
        nato,
    }
}
