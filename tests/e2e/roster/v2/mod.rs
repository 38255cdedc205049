//! Version-2 clients (the library) against a relay running the log.

mod devices;
mod rotation;

use std::time::Duration;

use tallinn_client::archive::{Filter, Quarantined};
use tallinn_client::{Client, Settings};
use tallinn_common::envelope::seal_v2;
use tallinn_common::identity::{Identity, ParticipantId};
use tallinn_common::message::{Message, Tlp};
use tallinn_common::roster::{
    approval_message, Approval, DeviceRecord, EntryBody, EntryKind, ParticipantRecord, RosterLog,
    SignedEntry,
};
use tallinn_relay::{genesis, Limits};

use crate::util::*;

/// A migrated deployment: genesis from the version-1 roster (EE chair,
/// quorum 7, UA beneficiary), installed, relay started.
pub struct V2 {
    pub env: Env,
    pub log: RosterLog,
    pub deployment: [u8; 32],
}

impl V2 {
    pub async fn new(limits: Limits) -> Self {
        let mut env = Env::new().await;
        env.stop_relay().await;
        let data = env.dep.dir.join("relay-data");
        let key = genesis::receipt_key(&data).unwrap();
        let mut g = genesis::genesis_from_v1(&env.dep.roster, "EE", 7, &key);
        for who in ["EE", "UA"] {
            approve(&mut g, who, &env.dep.id(who));
        }
        let log = genesis::install(&data, g, None, now()).unwrap();
        let relay = env.dep.start_relay_with(None, limits).await.unwrap();
        env.addr = relay.local_addr();
        env.dep.set_relay_addr(env.addr).unwrap();
        env.relay = Some(relay);
        let deployment = log.deployment();
        Self {
            env,
            log,
            deployment,
        }
    }

    /// Pins the deployment in `id`'s `client.toml` (for the CLI).
    pub fn pin(&self, id: &str) {
        let config = self.env.dep.participant_dir(id).join("client.toml");
        let text = std::fs::read_to_string(&config).unwrap();
        let pin = format!("deployment = \"{}\"\n", hex::encode(self.deployment));
        std::fs::write(&config, format!("{text}{pin}")).unwrap();
    }

    pub fn settings(&self, id: &str) -> Settings {
        let mut s = self.env.settings(id, "default");
        s.deployment = Some(self.deployment);
        s
    }

    pub async fn client(&self, id: &str) -> Client {
        let c = Client::connect(self.settings(id)).await.unwrap();
        c.discard_events();
        c.sync(Duration::from_secs(20), |_| {}).await.unwrap();
        c
    }

    /// The next entry of kind `kind`, approved by `signers`' identity keys.
    pub fn next(&self, kind: EntryKind, signers: &[&str]) -> SignedEntry {
        let mut e = SignedEntry::new(&EntryBody {
            index: self.log.epoch() + 1,
            prev_hash: self.log.head_hash(),
            kind,
        });
        for s in signers {
            approve(&mut e, s, &self.env.dep.id(s));
        }
        e
    }
}

pub fn approve(e: &mut SignedEntry, who: &str, key: &Identity) {
    e.add_approval(Approval {
        participant: who.into(),
        signature: key.sign(&approval_message(&e.body)),
    });
}

fn now() -> u64 {
    tallinn_common::unix_ms(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap(),
    )
}

const SEVEN: [&str; 7] = ["CA", "DE", "DK", "EE", "FR", "PL", "UA"];

fn count(c: &Client, subject: &str) -> usize {
    c.archive()
        .search(
            &Filter {
                text: Some(subject.into()),
                ..Filter::default()
            },
            100,
        )
        .unwrap()
        .len()
}
