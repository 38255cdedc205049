//! Tests of the roster log and the version-2 state: the approval rules, the
//! state rules, chain checks, fork detection, and property tests over random
//! valid and invalid sequences.

use std::collections::BTreeMap;

use proptest::prelude::*;
use sha2::{Digest, Sha256};

use super::*;
use crate::identity::{Identity, ParticipantId};

/// Deterministic key pairs for tests: the participant id plus the Ed25519
/// and X25519 secrets derived from `label`.
pub(crate) fn keys(participant: &str, label: &str) -> Identity {
    let seed: [u8; 32] = Sha256::digest(format!("sign {label}")).into();
    let enc: [u8; 32] = Sha256::digest(format!("enc {label}")).into();
    Identity::from_secrets(ParticipantId::new(participant).unwrap(), &seed, &enc)
}

/// A test deployment: the secret keys of every identity and device, and the
/// log built so far.
pub(crate) struct World {
    pub identities: BTreeMap<String, Identity>,
    pub devices: BTreeMap<(String, String), Identity>,
    pub log: RosterLog,
    /// Bumped for every fresh device key so keys never repeat.
    pub generation: u32,
}

pub(crate) fn device_record(k: &Identity, label: &str) -> DeviceRecord {
    DeviceRecord {
        device: label.into(),
        suite: 1,
        sign_key: k.public().sign_key.to_bytes(),
        enc_key: k.public().enc_key,
    }
}

fn approve(entry: &mut SignedEntry, who: &str, key: &Identity) {
    entry.add_approval(Approval {
        participant: who.into(),
        signature: key.sign(&approval_message(&entry.body)),
    });
}

impl World {
    /// `members` (the first is the beneficiary, the second the chair) and
    /// `observers`, each with `devices` devices, one `plenary` channel with
    /// everyone, a quorum of `quorum`.
    pub fn new(members: &[&str], observers: &[&str], devices: usize, quorum: u32) -> Self {
        let mut identities = BTreeMap::new();
        let mut all_devices = BTreeMap::new();
        let mut participants = Vec::new();
        let mut everyone: Vec<(&str, u8)> = members.iter().map(|m| (*m, 0)).collect();
        everyone.extend(observers.iter().map(|o| (*o, 1)));
        everyone.sort();
        for (id, role) in everyone {
            let identity = keys(id, &format!("{id} identity"));
            let mut devs = Vec::new();
            for d in 0..devices {
                let label = format!("dev{d}");
                let k = keys(id, &format!("{id} {label} 0"));
                devs.push(device_record(&k, &label));
                all_devices.insert((id.to_string(), label), k);
            }
            participants.push(ParticipantRecord {
                id: id.into(),
                name: format!("{id} POC"),
                role,
                identity_key: identity.public().sign_key.to_bytes(),
                devices: devs,
            });
            identities.insert(id.to_string(), identity);
        }
        let mut member_ids: Vec<String> = members.iter().map(|m| m.to_string()).collect();
        member_ids.sort();
        let mut observer_ids: Vec<String> = observers.iter().map(|m| m.to_string()).collect();
        observer_ids.sort();
        let relay = keys("relay", "relay receipts");
        let record = StateRecord {
            beneficiary: Some(members[0].into()),
            chair: members[1].into(),
            quorum,
            relay_key: relay.public().sign_key.to_bytes(),
            participants,
            channels: vec![ChannelRecord {
                id: "plenary".into(),
                description: "everyone".into(),
                members: member_ids,
                observers: observer_ids,
                post: 0,
                max_tlp: 4,
            }],
        };
        let mut genesis = SignedEntry::new(&EntryBody {
            index: 0,
            prev_hash: [0; 32],
            kind: EntryKind::Genesis(record),
        });
        for who in [members[0], members[1]] {
            approve(&mut genesis, who, &identities[who]);
        }
        let log = RosterLog::from_genesis(genesis, None).unwrap();
        Self {
            identities,
            devices: all_devices,
            log,
            generation: 0,
        }
    }

    /// The next entry's unsigned body.
    pub fn body(&self, kind: EntryKind) -> SignedEntry {
        SignedEntry::new(&EntryBody {
            index: self.log.epoch() + 1,
            prev_hash: self.log.head_hash(),
            kind,
        })
    }

    /// An amendment approved by `signers`.
    pub fn amend(&self, record: StateRecord, signers: &[&str]) -> SignedEntry {
        let mut e = self.body(EntryKind::Amend(record));
        for s in signers {
            approve(&mut e, s, &self.identities[*s]);
        }
        e
    }

    /// A devices entry for `participant` approved by `signer`.
    pub fn devices_entry(
        &self,
        participant: &str,
        devices: Vec<DeviceRecord>,
        signer: &str,
    ) -> SignedEntry {
        let mut e = self.body(EntryKind::Devices {
            participant: participant.into(),
            devices,
        });
        approve(&mut e, signer, &self.identities[signer]);
        e
    }

    /// Fresh keys for a device of `participant`.
    pub fn fresh_device(&mut self, participant: &str, label: &str) -> DeviceRecord {
        self.generation += 1;
        let k = keys(
            participant,
            &format!("{participant} {label} {}", self.generation),
        );
        let r = device_record(&k, label);
        self.devices.insert((participant.into(), label.into()), k);
        r
    }

    pub fn record(&self) -> StateRecord {
        self.log.current().record().clone()
    }

    pub fn current_devices(&self, participant: &str) -> Vec<DeviceRecord> {
        self.record()
            .participants
            .into_iter()
            .find(|p| p.id == participant)
            .unwrap()
            .devices
    }
}

fn world() -> World {
    // UA beneficiary, EE chair, quorum 3 of 4 members.
    World::new(&["UA", "EE", "GB", "PL"], &["NATO"], 1, 3)
}

#[test]
fn genesis_needs_chair_and_beneficiary() {
    let w = world();
    assert_eq!(w.log.epoch(), 0);
    assert_eq!(w.log.deployment(), w.log.entries()[0].hash());
    assert_eq!(w.log.current().chair().as_str(), "EE");
    let genesis = w.log.entries()[0].clone();
    for drop in ["UA", "EE"] {
        let mut g = genesis.clone();
        g.approvals.retain(|a| a.participant != drop);
        let err = RosterLog::from_genesis(g, None).unwrap_err();
        assert!(
            matches!(&err, LogError::MissingApproval { participant, .. } if participant == drop),
            "{err}"
        );
    }
    let wrong = [7u8; 32];
    assert!(matches!(
        RosterLog::from_genesis(genesis.clone(), Some(&wrong)),
        Err(LogError::WrongDeployment { .. })
    ));
    let fp = genesis.hash();
    RosterLog::from_genesis(genesis, Some(&fp)).unwrap();
}

fn with_lithuania(w: &mut World) -> StateRecord {
    let mut r = w.record();
    let lt = keys("LT", "LT identity");
    let dev = w.fresh_device("LT", "dev0");
    let identity_key = lt.public().sign_key.to_bytes();
    w.identities.insert("LT".into(), lt);
    r.participants.push(ParticipantRecord {
        id: "LT".into(),
        name: "Lithuania".into(),
        role: 0,
        identity_key,
        devices: vec![dev],
    });
    r.participants.sort_by(|a, b| a.id.cmp(&b.id));
    let plenary = &mut r.channels[0];
    plenary.members.push("LT".into());
    plenary.members.sort();
    r
}

#[test]
fn amend_needs_quorum_beneficiary_and_chair() {
    let mut w = world();
    let r = with_lithuania(&mut w);
    let cases: &[(&[&str], &str)] = &[
        (&["EE", "GB", "PL"], "beneficiary"),
        (&["GB", "PL", "UA"], "chair"),
        (&["EE", "UA"], "quorum"),
        (&["EE", "NATO", "UA"], "observer"),
        (&["EE", "LT", "UA"], "newcomer"),
    ];
    for (signers, why) in cases {
        let e = w.amend(r.clone(), signers);
        let err = w.log.check_next(&e).unwrap_err();
        let ok = match *why {
            "beneficiary" => {
                matches!(&err, LogError::MissingApproval { role: "beneficiary", participant, .. } if participant == "UA")
            }
            "chair" => {
                matches!(&err, LogError::MissingApproval { role: "chair", participant, .. } if participant == "EE")
            }
            "quorum" => matches!(
                err,
                LogError::BelowQuorum {
                    got: 2,
                    need: 3,
                    ..
                }
            ),
            _ => matches!(err, LogError::NotAnApprover { .. }),
        };
        assert!(ok, "{why}: {err}");
    }
    let e = w.amend(r, &["EE", "PL", "UA"]);
    assert_eq!(w.log.append(e).unwrap(), Appended::New(1));
    assert!(w.log.current().participant("LT").is_some());
    assert!(w.log.state_at(0).unwrap().participant("LT").is_none());
}

#[test]
fn a_forged_or_misplaced_approval_is_refused() {
    let mut w = world();
    let r = with_lithuania(&mut w);
    let mut e = w.amend(r.clone(), &["EE", "PL", "UA"]);
    e.approvals[0].signature[0] ^= 1;
    assert!(matches!(
        w.log.check_next(&e),
        Err(LogError::BadApproval { .. })
    ));
    // UA's device key is not its identity key.
    let mut e = w.amend(r.clone(), &["EE", "PL"]);
    e.add_approval(Approval {
        participant: "UA".into(),
        signature: w.devices[&("UA".to_string(), "dev0".to_string())]
            .sign(&approval_message(&e.body)),
    });
    assert!(matches!(
        w.log.check_next(&e),
        Err(LogError::BadApproval { .. })
    ));
    // Approvals out of order.
    let mut e = w.amend(r, &["EE", "PL", "UA"]);
    e.approvals.swap(0, 2);
    assert!(matches!(
        w.log.check_next(&e),
        Err(LogError::ApprovalsNotSorted(1))
    ));
}

#[test]
fn devices_entries_are_signed_by_their_own_participant_only() {
    let mut w = world();
    let mut devs = w.current_devices("GB");
    devs.push(w.fresh_device("GB", "dev1"));
    let by_other = w.devices_entry("GB", devs.clone(), "UA");
    assert!(matches!(
        w.log.check_next(&by_other),
        Err(LogError::DevicesNotSelfSigned { .. })
    ));
    let mut two = w.devices_entry("GB", devs.clone(), "GB");
    approve(&mut two, "UA", &w.identities["UA"]);
    assert!(matches!(
        w.log.check_next(&two),
        Err(LogError::DevicesNotSelfSigned { .. })
    ));
    let e = w.devices_entry("GB", devs, "GB");
    w.log.append(e).unwrap();
    assert_eq!(w.log.current().participant("GB").unwrap().devices.len(), 2);
}

#[test]
fn an_amendment_cannot_touch_another_participants_devices() {
    let mut w = world();
    let mut r = w.record();
    let planted = w.fresh_device("GB", "planted");
    let gb = r.participants.iter_mut().find(|p| p.id == "GB").unwrap();
    gb.devices.push(planted);
    let e = w.amend(r, &["EE", "PL", "UA"]);
    assert!(matches!(
        w.log.check_next(&e),
        Err(LogError::AmendChangesDevices { participant, .. }) if participant == "GB"
    ));
}

#[test]
fn a_revoked_key_never_returns() {
    let mut w = world();
    let old = w.current_devices("PL");
    let fresh = w.fresh_device("PL", "dev0");
    let e = w.devices_entry("PL", vec![fresh], "PL");
    w.log.append(e).unwrap();
    let again = w.devices_entry("PL", old, "PL");
    assert!(matches!(
        w.log.check_next(&again),
        Err(LogError::RetiredKey { .. })
    ));
}

#[test]
fn state_rules_apply_to_every_entry() {
    let w = world();
    let mut r = w.record();
    r.channels[0].members.retain(|m| m != "UA");
    let e = w.amend(r, &["EE", "PL", "UA"]);
    assert!(matches!(
        w.log.check_next(&e),
        Err(LogError::State {
            error: RosterError::MissingBeneficiary { .. },
            ..
        })
    ));
    let mut r = w.record();
    r.participants.swap(0, 1);
    let e = w.amend(r, &["EE", "PL", "UA"]);
    assert!(matches!(
        w.log.check_next(&e),
        Err(LogError::State {
            error: RosterError::NotSorted(_),
            ..
        })
    ));
    let mut r = w.record();
    r.quorum = 5;
    let e = w.amend(r, &["EE", "PL", "UA"]);
    assert!(matches!(
        w.log.check_next(&e),
        Err(LogError::State {
            error: RosterError::BadQuorum { .. },
            ..
        })
    ));
    let mut r = w.record();
    r.chair = "NATO".into();
    let e = w.amend(r, &["EE", "PL", "UA"]);
    assert!(matches!(
        w.log.check_next(&e),
        Err(LogError::State {
            error: RosterError::BadChair(_),
            ..
        })
    ));
}

#[test]
fn non_canonical_bodies_are_refused() {
    let w = world();
    let mut e = w.amend(w.record(), &["EE", "PL", "UA"]);
    // index 1 as an overlong varint: 0x81 0x00 instead of 0x01.
    assert_eq!(e.body[0], 1);
    e.body.splice(0..1, [0x81, 0x00]);
    let err = w.log.check_next(&e).unwrap_err();
    assert!(
        matches!(err, LogError::NotCanonical | LogError::Malformed(_)),
        "{err}"
    );
    let mut e = w.amend(w.record(), &["EE", "PL", "UA"]);
    e.body.push(0);
    assert!(matches!(w.log.check_next(&e), Err(LogError::Malformed(_))));
}

#[test]
fn reordered_truncated_and_forked_logs_are_detected() {
    let mut w = world();
    let mut r = w.record();
    r.quorum = 2;
    let e1 = w.amend(r, &["EE", "PL", "UA"]);
    w.log.append(e1.clone()).unwrap();
    let mut r = w.record();
    r.chair = "PL".into();
    let e2 = w.amend(r, &["EE", "UA"]);
    w.log.append(e2.clone()).unwrap();
    let genesis = w.log.entries()[0].clone();

    // Reordered.
    let err = RosterLog::from_entries([genesis.clone(), e2.clone(), e1.clone()], None).unwrap_err();
    assert!(
        matches!(
            err,
            LogError::WrongIndex {
                expected: 1,
                got: 2
            }
        ),
        "{err}"
    );
    // Repeated.
    let err = RosterLog::from_entries([genesis.clone(), e1.clone(), e1.clone()], None).unwrap_err();
    assert!(matches!(err, LogError::WrongIndex { .. }), "{err}");
    // Truncated: a head below the known epoch.
    assert!(matches!(
        w.log.check_claimed_head(1, &e1.hash()),
        Err(LogError::Truncated {
            known: 2,
            offered: 1
        })
    ));
    w.log.check_claimed_head(2, &e2.hash()).unwrap();
    // The same entry again is known, not a fork.
    assert_eq!(w.log.append(e1.clone()).unwrap(), Appended::Known(1));
    // A fork: a different, validly approved entry at index 2.
    let mut other = RosterLog::from_entries([genesis, e1], None).unwrap();
    let mut r = other.current().record().clone();
    r.chair = "GB".into();
    let mut fork = SignedEntry::new(&EntryBody {
        index: 2,
        prev_hash: other.head_hash(),
        kind: EntryKind::Amend(r),
    });
    for s in ["EE", "UA"] {
        approve(&mut fork, s, &w.identities[s]);
    }
    other.append(fork.clone()).unwrap();
    match w.log.append(fork.clone()).unwrap_err() {
        LogError::Fork(ev) => {
            assert_eq!(ev.index, 2);
            assert_eq!(ev.ours, e2);
            assert_eq!(ev.theirs, fork);
        }
        e => panic!("expected a fork, got {e}"),
    }
    // An invalid entry at a held index is refused, not evidence.
    let mut bad = fork;
    bad.approvals.pop();
    assert!(!matches!(w.log.append(bad), Err(LogError::Fork(_)) | Ok(_)));
}

#[test]
fn signed_entries_round_trip_and_refuse_garbage() {
    let w = world();
    let g = &w.log.entries()[0];
    assert_eq!(&SignedEntry::decode(&g.encode()).unwrap(), g);
    assert_eq!(&SignedEntry::from_text(&g.to_text()).unwrap(), g);
    assert!(SignedEntry::from_text("not base64!").is_err());
    let mut bytes = g.encode();
    bytes.push(0);
    assert!(SignedEntry::decode(&bytes).is_err());
    assert!(SignedEntry::decode(&vec![0xff; defaults_len() + 1]).is_err());
}

fn defaults_len() -> usize {
    crate::defaults::MAX_ROSTER_ENTRY_LEN
}

#[test]
fn recipient_devices_include_the_senders_other_devices() {
    let w = World::new(&["UA", "EE", "GB"], &["NATO"], 2, 2);
    let s = w.log.current();
    let r: Vec<(String, String)> = s
        .recipient_devices("GB", "dev0", "plenary")
        .unwrap()
        .into_iter()
        .map(|(p, d)| (p.id.to_string(), d.device.to_string()))
        .collect();
    assert_eq!(r.len(), 7);
    assert!(r.contains(&("GB".into(), "dev1".into())));
    assert!(!r.contains(&("GB".into(), "dev0".into())));
    let mut sorted = r.clone();
    sorted.sort();
    assert_eq!(r, sorted);
    assert!(matches!(
        s.recipient_devices("GB", "laptop", "plenary"),
        Err(PostError::UnknownDevice { .. })
    ));
    assert!(matches!(
        s.recipient_devices("NATO", "dev0", "plenary"),
        Err(PostError::ReadOnly { .. })
    ));
}

#[test]
fn chair_only_channels_accept_the_chair_alone() {
    let w = world();
    let mut r = w.record();
    r.channels[0].post = 1;
    let e = w.amend(r, &["EE", "PL", "UA"]);
    let s = w.log.check_next(&e).unwrap();
    s.check_post("EE", "plenary").unwrap();
    assert!(matches!(
        s.check_post("UA", "plenary"),
        Err(PostError::ChairOnly { .. })
    ));
}

/// The world with a `direct` rule channel (every member, NATO as a
/// nameable observer, RED allowed) and plenary capped at AMBER+STRICT.
fn world_with_direct() -> RosterState {
    let w = world();
    let mut r = w.record();
    r.channels[0].max_tlp = 3;
    let mut members: Vec<String> = ["EE", "GB", "PL", "UA"].map(String::from).to_vec();
    members.sort();
    r.channels.insert(
        0,
        ChannelRecord {
            id: "direct".into(),
            description: "direct conversations".into(),
            members,
            observers: vec!["NATO".into()],
            post: 0,
            max_tlp: 4,
        },
    );
    let e = w.amend(r, &["EE", "PL", "UA"]);
    w.log.check_next(&e).unwrap()
}

#[test]
fn direct_conversations_follow_the_addressing_rule() {
    use crate::message::Tlp;
    let s = world_with_direct();
    // PL and UA, the beneficiary: every device of both but PL's sending one.
    let to: Vec<String> = s
        .recipient_devices("PL", "dev0", "@PL+UA")
        .unwrap()
        .iter()
        .map(|(p, d)| format!("{}/{}", p.id, d.device))
        .collect();
    assert_eq!(to, ["UA/dev0"]);
    // An observer when named.
    let to = s.recipient_devices("PL", "dev0", "@NATO+PL+UA").unwrap();
    assert_eq!(to.len(), 2);
    assert_eq!(s.max_tlp("@PL+UA"), Some(Tlp::Red));
    assert_eq!(s.max_tlp("plenary"), Some(Tlp::AmberStrict));
    let refused = |sender: &str, conv: &str| match s.check_post(sender, conv) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("{sender} may post in {conv}"),
    };
    assert!(refused("PL", "@GB+PL").contains("beneficiary UA"));
    assert!(refused("PL", "@GB+UA").contains("sender PL is not in it"));
    assert!(refused("PL", "@LT+PL+UA").contains("LT is not in the roster"));
    assert!(refused("PL", "@UA+PL").contains("sorted"));
    assert!(refused("PL", "direct").contains("rule for direct conversations"));
    assert!(matches!(
        s.check_post("NATO", "@NATO+UA"),
        Err(PostError::ReadOnly { .. })
    ));
    // Without a `direct` rule there are no direct conversations.
    let plain = world();
    assert!(plain
        .log
        .current()
        .check_post("PL", "@PL+UA")
        .unwrap_err()
        .to_string()
        .contains("no direct conversations"));
}

#[test]
fn an_observer_not_in_the_direct_rule_cannot_be_named() {
    let w = World::new(&["UA", "EE", "GB", "PL"], &["EU", "NATO"], 1, 3);
    let mut r = w.record();
    r.channels.insert(
        0,
        ChannelRecord {
            id: "direct".into(),
            description: String::new(),
            members: r.channels[0].members.clone(),
            observers: vec!["NATO".into()],
            post: 0,
            max_tlp: 4,
        },
    );
    let e = w.amend(r, &["EE", "PL", "UA"]);
    let s = w.log.check_next(&e).unwrap();
    s.check_post("PL", "@NATO+PL+UA").unwrap();
    assert!(s
        .check_post("PL", "@EU+PL+UA")
        .unwrap_err()
        .to_string()
        .contains("EU may not take part"));
}

/// One step of a random roster history.
#[derive(Debug, Clone)]
enum Op {
    AddDevice(usize),
    RevokeDevice(usize),
    Rotate(usize),
    Chair(usize),
    Quorum(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..4usize).prop_map(Op::AddDevice),
        (0..4usize).prop_map(Op::RevokeDevice),
        (0..4usize).prop_map(Op::Rotate),
        (0..4usize).prop_map(Op::Chair),
        (1..=4u32).prop_map(Op::Quorum),
    ]
}

const MEMBERS: [&str; 4] = ["UA", "EE", "GB", "PL"];

/// Applies `op` to the world as a valid entry (approved by everyone for
/// amendments), returning it.
fn valid_entry(w: &mut World, op: &Op) -> SignedEntry {
    let all = ["EE", "GB", "PL", "UA"];
    match op {
        Op::AddDevice(i) | Op::Rotate(i) | Op::RevokeDevice(i) => {
            let p = MEMBERS[*i];
            let mut devs = w.current_devices(p);
            match op {
                Op::AddDevice(_) => {
                    let label = format!("d{}", w.generation);
                    let d = w.fresh_device(p, &label);
                    devs.push(d);
                    devs.sort_by(|a, b| a.device.cmp(&b.device));
                    if devs.len() > crate::defaults::MAX_DEVICES_PER_PARTICIPANT {
                        devs.truncate(1);
                    }
                }
                Op::Rotate(_) => {
                    if let Some(first) = devs.first().cloned() {
                        let fresh = w.fresh_device(p, &first.device);
                        devs[0] = fresh;
                    }
                }
                _ => {
                    devs.pop();
                }
            }
            w.devices_entry(p, devs, p)
        }
        Op::Chair(i) => {
            let mut r = w.record();
            r.chair = MEMBERS[*i].into();
            w.amend(r, &all)
        }
        Op::Quorum(q) => {
            let mut r = w.record();
            r.quorum = *q;
            w.amend(r, &all)
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// A random valid history folds, and a second party verifying the whole
    /// log from the genesis reaches the same state at every epoch.
    #[test]
    fn random_valid_histories_fold_identically(ops in prop::collection::vec(op(), 1..12)) {
        let mut w = world();
        for op in &ops {
            let e = valid_entry(&mut w, op);
            prop_assert!(matches!(w.log.append(e), Ok(Appended::New(_))));
        }
        let fp = w.log.deployment();
        let again = RosterLog::from_entries(w.log.entries().to_vec(), Some(&fp)).unwrap();
        prop_assert_eq!(again.epoch(), ops.len() as u64);
        for e in 0..=again.epoch() {
            prop_assert_eq!(again.state_at(e).unwrap(), w.log.state_at(e).unwrap());
        }
    }

    /// Any single corruption of a valid history (a flipped body byte, a
    /// dropped approval, two entries swapped, an entry dropped) is refused.
    #[test]
    fn corrupted_histories_are_refused(
        ops in prop::collection::vec(op(), 2..8),
        which in any::<prop::sample::Index>(),
        byte in any::<prop::sample::Index>(),
        how in 0..4u8,
    ) {
        let mut w = world();
        for op in &ops {
            let e = valid_entry(&mut w, op);
            w.log.append(e).unwrap();
        }
        let mut entries = w.log.entries().to_vec();
        let i = 1 + which.index(entries.len() - 1);
        match how {
            0 => {
                let b = byte.index(entries[i].body.len());
                entries[i].body[b] ^= 0x01;
            }
            1 => { entries[i].approvals.pop(); }
            2 => {
                let j = if i + 1 < entries.len() { i + 1 } else { i - 1 };
                if j == 0 { entries.remove(i); } else { entries.swap(i, j); }
            }
            _ => { entries.remove(i); if i == entries.len() { entries.push(w.log.entries()[i].clone()); entries.swap(i - 1, i); } }
        }
        let fp = w.log.deployment();
        prop_assert!(RosterLog::from_entries(entries, Some(&fp)).is_err());
    }
}

#[test]
fn a_version_1_roster_migrates_to_a_valid_genesis() {
    let text = super::v1::tests::roster_toml(
        &[("UA", "member"), ("EE", "member"), ("NATO", "observer")],
        "beneficiary = \"UA\"\n[[channel]]\nid = \"plenary\"\nmembers = [\"*\"]\nobservers = [\"NATO\"]\n",
    );
    // roster_toml puts the extra text after the participants; TOML wants the
    // top-level key first.
    let text = format!(
        "beneficiary = \"UA\"\n{}",
        text.replace("beneficiary = \"UA\"\n", "")
    );
    let v1 = Roster::parse(&text).unwrap();
    let relay = keys("relay", "relay");
    let record = v1.to_state_record("EE", 2, relay.public().sign_key.to_bytes());
    let entry = SignedEntry::new(&EntryBody {
        index: 0,
        prev_hash: [0; 32],
        kind: EntryKind::Genesis(record),
    });
    // Unsigned: refused for want of the beneficiary's approval.
    assert!(matches!(
        RosterLog::from_genesis(entry, None),
        Err(LogError::MissingApproval { .. })
    ));
    let state = RosterState::validate(
        v1.to_state_record("EE", 2, relay.public().sign_key.to_bytes()),
        0,
        [0; 32],
    )
    .unwrap();
    let ua = state.participant("UA").unwrap();
    let dev = ua.device("default").unwrap();
    assert_eq!(dev.sign_key, ua.identity_key);
    assert_eq!(dev.sign_key, v1.participant("UA").unwrap().public.sign_key);
    assert_eq!(
        state.channel("plenary").unwrap().members.len(),
        2,
        "\"*\" expanded to every member"
    );
}
