//! Version-1 envelope tests: round trips, tampering, policy, batch
//! verification, and hostile bytes.

use super::v1::seal_raw;
use super::*;
use crate::identity::Identity;
use crate::identity::ParticipantId;
use crate::message::{Attachment, Kind, Loe, Priority, State, Tlp};
use crate::message::{Message, MsgId};
use crate::roster::Roster;
use ed25519_dalek::VerifyingKey;
use proptest::prelude::*;
use rand::Rng;
use std::collections::BTreeMap;

/// A roster plus every participant's identity.
pub(super) struct World {
    pub roster: Roster,
    pub ids: BTreeMap<String, Identity>,
}

/// Builds a world with the given (id, role) people and channels TOML.
pub(super) fn world(people: &[(&str, &str)], channels: &str) -> World {
    let mut ids = BTreeMap::new();
    let mut text = String::new();
    for (id, role) in people {
        let ident = Identity::generate(ParticipantId::new(*id).unwrap());
        text.push_str(&ident.roster_entry(id, role));
        ids.insert(id.to_string(), ident);
    }
    text.push_str(channels);
    World {
        roster: Roster::parse(&text).unwrap(),
        ids,
    }
}

fn tallinn() -> World {
    let people: Vec<(&str, &str)> = [
        "US", "CA", "DK", "EE", "FR", "DE", "IT", "NL", "PL", "SE", "GB", "UA",
    ]
    .iter()
    .map(|id| (*id, "member"))
    .chain([("NATO", "observer"), ("EU", "observer")])
    .collect();
    world(
        &people,
        "[[channel]]\nid = \"plenary\"\nmembers = [\"*\"]\nobservers = [\"NATO\", \"EU\"]\n\
         [[channel]]\nid = \"pair\"\nmembers = [\"UA\", \"EE\"]\n\
         [[channel]]\nid = \"trio\"\nmembers = [\"UA\", \"EE\", \"PL\"]\n",
    )
}

fn all_messages() -> Vec<Message> {
    let mut out = Vec::new();
    let kinds = [
        Kind::Note,
        Kind::Request {
            loe: Loe::Immediate,
            category: "incident-response".into(),
            priority: Priority::Critical,
        },
        Kind::Offer {
            request: MsgId([7; 16]),
        },
        Kind::Status {
            about: MsgId([9; 16]),
            state: State::InProgress,
        },
    ];
    for kind in kinds {
        for tlp in Tlp::ALL {
            out.push(Message {
                kind: kind.clone(),
                tlp,
                reply_to: Some(MsgId([1; 16])),
                subject: format!("{} {}", kind.name(), tlp),
                body: "body text".into(),
                attachments: vec![Attachment {
                    name: "a.txt".into(),
                    media_type: "text/plain".into(),
                    data: b"hello".to_vec(),
                }],
            });
        }
    }
    out
}

#[test]
fn round_trip_every_kind_and_tlp_with_1_2_and_14_recipients() {
    let w = tallinn();
    let ua = &w.ids["UA"];
    for (channel, n) in [("pair", 1usize), ("trio", 2), ("plenary", 13)] {
        let recips = w.roster.recipients("UA", channel).unwrap();
        assert_eq!(recips.len(), n);
        for m in all_messages() {
            let sealed = seal(ua, &w.roster, channel, &m, 1_700_000_000_000).unwrap();
            for r in &recips {
                let opened = open(sealed.as_bytes(), &w.roster, &w.ids[r.id().as_str()]).unwrap();
                assert_eq!(opened.message(), &m);
                assert_eq!(opened.header().sender, "UA");
                assert_eq!(opened.header().channel, channel);
                assert_eq!(opened.header().msg_id, sealed.msg_id());
            }
        }
    }
    // 14 recipients: a channel of 15 (all 12 members, 2 observers, plus
    // the sender makes 14 recipients when an extra member posts).
    let mut people: Vec<(String, &str)> = (0..13).map(|i| (format!("M{i}"), "member")).collect();
    people.push(("O1".into(), "observer"));
    people.push(("O2".into(), "observer"));
    let refs: Vec<(&str, &str)> = people.iter().map(|(a, b)| (a.as_str(), *b)).collect();
    let w = world(
        &refs,
        "[[channel]]\nid = \"all\"\nmembers = [\"*\"]\nobservers = [\"O1\", \"O2\"]\n",
    );
    let recips = w.roster.recipients("M0", "all").unwrap();
    assert_eq!(recips.len(), 14);
    for m in all_messages() {
        let sealed = seal(&w.ids["M0"], &w.roster, "all", &m, 5).unwrap();
        for r in &recips {
            let opened = open(sealed.as_bytes(), &w.roster, &w.ids[r.id().as_str()]).unwrap();
            assert_eq!(opened.message(), &m);
        }
    }
}

/// Item 8: what an `Opened` carries is what was verified and opened.
#[test]
fn opened_carries_the_exact_bytes_and_key_and_hides_them_in_debug() {
    let w = tallinn();
    let m = Message::note(Tlp::Red, "secret subject", "secret body");
    let sealed = seal(&w.ids["UA"], &w.roster, "pair", &m, 1).unwrap();
    let opened = open(sealed.as_bytes(), &w.roster, &w.ids["EE"]).unwrap();
    assert_eq!(opened.envelope(), sealed.as_bytes());
    assert_eq!(opened.content_key(), sealed.content_key());
    assert_eq!(opened.msg_id(), sealed.msg_id());
    assert_eq!(opened.message(), &m);
    let debug = format!("{opened:?}");
    assert!(!debug.contains("secret"), "{debug}");
    assert!(!debug.contains(&hex::encode(sealed.content_key())));
}

#[test]
fn every_single_byte_flip_of_body_or_signature_is_caught() {
    let w = tallinn();
    let m = Message::note(Tlp::Green, "s", "b");
    let sealed = seal(&w.ids["UA"], &w.roster, "pair", &m, 1).unwrap();
    let env: Envelope = postcard::from_bytes(sealed.as_bytes()).unwrap();
    let ee = &w.ids["EE"];
    for i in 0..env.body.len() {
        let mut e = env.clone();
        e.body[i] ^= 0x01;
        let bytes = postcard::to_allocvec(&e).unwrap();
        let err = open(&bytes, &w.roster, ee).unwrap_err();
        assert!(
            matches!(
                err,
                EnvelopeError::BadSignature
                    | EnvelopeError::Malformed(_)
                    | EnvelopeError::UnsupportedVersion(_)
                    | EnvelopeError::UnknownSender(_)
                    | EnvelopeError::UnknownChannel(_)
                    | EnvelopeError::RecipientsMismatch { .. }
            ),
            "byte {i}: {err:?}"
        );
    }
    for i in 0..64 {
        let mut e = env.clone();
        e.signature[i] ^= 0x80;
        let bytes = postcard::to_allocvec(&e).unwrap();
        assert_eq!(
            open(&bytes, &w.roster, ee).unwrap_err(),
            EnvelopeError::BadSignature,
            "signature byte {i}"
        );
    }
    // Also every byte of the whole encoded envelope: never a panic, never Ok.
    let raw = sealed.as_bytes();
    for i in 0..raw.len() {
        let mut b = raw.to_vec();
        b[i] ^= 0x01;
        assert!(open(&b, &w.roster, ee).is_err(), "envelope byte {i}");
    }
}

#[test]
fn sender_copy_opens_with_its_content_key() {
    let w = tallinn();
    let m = Message::note(Tlp::Amber, "mine", "b");
    let sealed = seal(&w.ids["UA"], &w.roster, "trio", &m, 1).unwrap();
    let v = UntrustedEnvelope::decode(sealed.as_bytes())
        .unwrap()
        .verify(&w.roster)
        .unwrap();
    assert_eq!(
        v.open_with_content_key(sealed.content_key())
            .unwrap()
            .message(),
        &m
    );
    assert_eq!(
        v.open_with_content_key(&[0u8; 32]).unwrap_err(),
        EnvelopeError::CommitmentMismatch
    );
}

#[test]
fn not_a_recipient() {
    let w = tallinn();
    let sealed = seal(
        &w.ids["UA"],
        &w.roster,
        "pair",
        &Message::note(Tlp::Red, "s", ""),
        1,
    )
    .unwrap();
    let err = open(sealed.as_bytes(), &w.roster, &w.ids["PL"]).unwrap_err();
    assert_eq!(err, EnvelopeError::NotARecipient);
    // The sender itself is not a recipient either.
    let err = open(sealed.as_bytes(), &w.roster, &w.ids["UA"]).unwrap_err();
    assert_eq!(err, EnvelopeError::NotARecipient);
}

#[test]
fn wrong_key_is_a_decrypt_error() {
    let w = tallinn();
    let sealed = seal(
        &w.ids["UA"],
        &w.roster,
        "pair",
        &Message::note(Tlp::Red, "s", ""),
        1,
    )
    .unwrap();
    // Someone holding the id "EE" but a different encryption key.
    let impostor = Identity::generate(ParticipantId::new("EE").unwrap());
    let verified = UntrustedEnvelope::decode(sealed.as_bytes())
        .unwrap()
        .verify(&w.roster)
        .unwrap();
    assert_eq!(
        verified.open(&impostor).unwrap_err(),
        EnvelopeError::DecryptFailed
    );
}

#[test]
fn commitment_mismatch_is_rejected() {
    let w = tallinn();
    let ua = &w.ids["UA"];
    let recips: Vec<(&str, [u8; 32])> = w
        .roster
        .recipients("UA", "pair")
        .unwrap()
        .iter()
        .map(|p| (p.id().as_str(), p.public.enc_key))
        .collect();
    let key = [5u8; 32];
    let other = key_commitment(&[6u8; 32]);
    let sealed = seal_raw(
        ua,
        "pair",
        &recips,
        &Message::note(Tlp::Amber, "s", "b"),
        1,
        &key,
        MsgId([1; 16]),
        other,
        &mut rand::rng(),
    )
    .unwrap();
    let err = open(sealed.as_bytes(), &w.roster, &w.ids["EE"]).unwrap_err();
    assert_eq!(err, EnvelopeError::CommitmentMismatch);
}

#[test]
fn resigned_ciphertext_with_changed_sender_fails() {
    let w = tallinn();
    let sealed = seal(
        &w.ids["UA"],
        &w.roster,
        "trio",
        &Message::note(Tlp::Red, "s", "b"),
        1,
    )
    .unwrap();
    let env: Envelope = postcard::from_bytes(sealed.as_bytes()).unwrap();
    let mut body: SealedBodyV1 = postcard::from_bytes(&env.body).unwrap();
    // PL claims UA's message as its own and re-signs it. The recipient set
    // for PL's post differs by one (UA instead of PL): fix it up too, so
    // only the AAD binding can catch the forgery.
    body.header.sender = "PL".into();
    let pl_wrap = body
        .recipients
        .iter()
        .position(|r| r.recipient == "PL")
        .unwrap();
    body.recipients[pl_wrap].recipient = "UA".into();
    body.recipients
        .sort_by(|a, b| a.recipient.cmp(&b.recipient));
    let new_body = postcard::to_allocvec(&body).unwrap();
    let forged = Envelope {
        signature: w.ids["PL"].sign(&signed_message(1, &new_body)),
        body: new_body,
    };
    let bytes = postcard::to_allocvec(&forged).unwrap();
    let verified = UntrustedEnvelope::decode(&bytes)
        .unwrap()
        .verify(&w.roster)
        .unwrap();
    assert_eq!(
        verified.open(&w.ids["EE"]).unwrap_err(),
        EnvelopeError::DecryptFailed
    );
}

#[test]
fn readdressing_to_another_channel_fails() {
    let w = tallinn();
    let sealed = seal(
        &w.ids["UA"],
        &w.roster,
        "pair",
        &Message::note(Tlp::Red, "s", "b"),
        1,
    )
    .unwrap();
    let env: Envelope = postcard::from_bytes(sealed.as_bytes()).unwrap();
    let mut body: SealedBodyV1 = postcard::from_bytes(&env.body).unwrap();
    body.header.channel = "trio".into();
    let moved = Envelope {
        body: postcard::to_allocvec(&body).unwrap(),
        signature: env.signature,
    };
    let bytes = postcard::to_allocvec(&moved).unwrap();
    assert_eq!(
        open(&bytes, &w.roster, &w.ids["EE"]).unwrap_err(),
        EnvelopeError::BadSignature
    );
}

#[test]
fn policy_violations_are_caught_by_verify() {
    let w = tallinn();
    let note = Message::note(Tlp::Clear, "s", "");
    // Observer posting (built with the low-level sealer).
    let nato = &w.ids["NATO"];
    let recips: Vec<(&str, [u8; 32])> = w
        .roster
        .channel("plenary")
        .unwrap()
        .members
        .iter()
        .map(|id| {
            (
                id.as_str(),
                w.roster.participant(id.as_str()).unwrap().public.enc_key,
            )
        })
        .collect();
    let s = seal_to(nato, "plenary", &recips, &note, 1, &mut rand::rng()).unwrap();
    let e = UntrustedEnvelope::decode(s.as_bytes())
        .unwrap()
        .verify(&w.roster)
        .unwrap_err();
    assert_eq!(e, EnvelopeError::ReadOnly("NATO".into()));
    assert_eq!(e.code(), ErrorCode::ReadOnly);
    // And seal refuses outright.
    assert_eq!(
        seal(nato, &w.roster, "plenary", &note, 1).unwrap_err(),
        EnvelopeError::ReadOnly("NATO".into())
    );
    // Unknown channel.
    let s = seal_to(&w.ids["UA"], "nowhere", &recips, &note, 1, &mut rand::rng()).unwrap();
    let e = UntrustedEnvelope::decode(s.as_bytes())
        .unwrap()
        .verify(&w.roster)
        .unwrap_err();
    assert_eq!(e, EnvelopeError::UnknownChannel("nowhere".into()));
    // Non-member.
    let s = seal_to(&w.ids["PL"], "pair", &recips, &note, 1, &mut rand::rng()).unwrap();
    let e = UntrustedEnvelope::decode(s.as_bytes())
        .unwrap()
        .verify(&w.roster)
        .unwrap_err();
    assert!(matches!(e, EnvelopeError::NotAMember { .. }), "{e}");
    // Recipients missing an observer.
    let ee = &w.ids["EE"];
    let without_eu: Vec<(&str, [u8; 32])> = w
        .roster
        .recipients("EE", "plenary")
        .unwrap()
        .iter()
        .filter(|p| p.id().as_str() != "EU")
        .map(|p| (p.id().as_str(), p.public.enc_key))
        .collect();
    let s = seal_to(ee, "plenary", &without_eu, &note, 1, &mut rand::rng()).unwrap();
    let e = UntrustedEnvelope::decode(s.as_bytes())
        .unwrap()
        .verify(&w.roster)
        .unwrap_err();
    assert_eq!(
        e,
        EnvelopeError::RecipientsMismatch {
            channel: "plenary".into(),
            detail: "missing EU".into()
        }
    );
    // Recipients with the sender itself added.
    let mut with_self = w
        .roster
        .recipients("EE", "pair")
        .unwrap()
        .iter()
        .map(|p| (p.id().as_str(), p.public.enc_key))
        .collect::<Vec<_>>();
    with_self.push(("EE", ee.public().enc_key));
    let s = seal_to(ee, "pair", &with_self, &note, 1, &mut rand::rng()).unwrap();
    let e = UntrustedEnvelope::decode(s.as_bytes())
        .unwrap()
        .verify(&w.roster)
        .unwrap_err();
    assert!(matches!(e, EnvelopeError::RecipientsMismatch { .. }), "{e}");
    // Duplicate recipient.
    let mut dup = w
        .roster
        .recipients("EE", "pair")
        .unwrap()
        .iter()
        .map(|p| (p.id().as_str(), p.public.enc_key))
        .collect::<Vec<_>>();
    dup.push(dup[0]);
    let s = seal_to(ee, "pair", &dup, &note, 1, &mut rand::rng()).unwrap();
    let e = UntrustedEnvelope::decode(s.as_bytes())
        .unwrap()
        .verify(&w.roster)
        .unwrap_err();
    assert!(matches!(e, EnvelopeError::RecipientsMismatch { .. }), "{e}");
}

#[test]
fn unknown_sender_and_stale_key() {
    let w = tallinn();
    let stranger = Identity::generate(ParticipantId::new("XX").unwrap());
    let note = Message::note(Tlp::Clear, "s", "");
    let s = seal_to(
        &stranger,
        "pair",
        &[("EE", [9; 32])],
        &note,
        1,
        &mut rand::rng(),
    )
    .unwrap();
    let e = UntrustedEnvelope::decode(s.as_bytes())
        .unwrap()
        .verify(&w.roster)
        .unwrap_err();
    assert_eq!(e, EnvelopeError::UnknownSender("XX".into()));
    assert_eq!(e.code(), ErrorCode::UnknownParticipant);
    let stale = Identity::generate(ParticipantId::new("UA").unwrap());
    assert_eq!(
        seal(&stale, &w.roster, "pair", &note, 1).unwrap_err(),
        EnvelopeError::SenderKeyMismatch("UA".into())
    );
}

#[test]
fn trailing_bytes_and_bad_versions_are_malformed() {
    let w = tallinn();
    let sealed = seal(
        &w.ids["UA"],
        &w.roster,
        "pair",
        &Message::note(Tlp::Red, "s", ""),
        1,
    )
    .unwrap();
    let mut b = sealed.as_bytes().to_vec();
    b.push(0);
    assert!(matches!(
        UntrustedEnvelope::decode(&b).unwrap_err(),
        EnvelopeError::Malformed(_)
    ));
    let env: Envelope = postcard::from_bytes(sealed.as_bytes()).unwrap();
    let mut body: SealedBodyV1 = postcard::from_bytes(&env.body).unwrap();
    body.header.version = 9;
    let e = Envelope {
        body: postcard::to_allocvec(&body).unwrap(),
        signature: env.signature,
    };
    assert_eq!(
        UntrustedEnvelope::decode(&postcard::to_allocvec(&e).unwrap()).unwrap_err(),
        EnvelopeError::UnsupportedVersion(9)
    );
}

#[test]
fn batch_verification() {
    let w = tallinn();
    let note = Message::note(Tlp::Clear, "s", "");
    let envs: Vec<UntrustedEnvelope> = ["UA", "EE", "PL"]
        .iter()
        .map(|s| {
            let sealed = seal(&w.ids[*s], &w.roster, "trio", &note, 1).unwrap();
            UntrustedEnvelope::decode(sealed.as_bytes()).unwrap()
        })
        .collect();
    let keys: Vec<VerifyingKey> = ["UA", "EE", "PL"]
        .iter()
        .map(|s| w.roster.participant(s).unwrap().public.sign_key)
        .collect();
    let items: Vec<(&UntrustedEnvelope, &VerifyingKey)> = envs.iter().zip(keys.iter()).collect();
    assert!(verify_signatures_batch(&items).is_ok());
    let swapped = vec![(items[0].0, items[1].1), items[1], items[2]];
    assert_eq!(
        verify_signatures_batch(&swapped),
        Err(EnvelopeError::BadSignature)
    );
}

#[test]
fn verify_many_matches_verify_one_by_one() {
    let w = tallinn();
    let note = Message::note(Tlp::Clear, "s", "");
    let sealed = |who: &str| {
        seal(&w.ids[who], &w.roster, "trio", &note, 1)
            .unwrap()
            .into_bytes()
    };
    let decode = |b: &[u8]| UntrustedEnvelope::decode(b).unwrap();
    let good: Vec<Vec<u8>> = ["UA", "EE", "PL", "UA"].iter().map(|s| sealed(s)).collect();
    let all = UntrustedEnvelope::verify_many(good.iter().map(|b| decode(b)).collect(), &w.roster);
    assert!(all.iter().all(Result::is_ok));
    // One flipped signature bit: only that one fails, the rest pass.
    let mut bad = good.clone();
    let last = bad[2].len() - 1;
    bad[2][last] ^= 1;
    let mixed = UntrustedEnvelope::verify_many(bad.iter().map(|b| decode(b)).collect(), &w.roster);
    let codes: Vec<Option<EnvelopeError>> = mixed.into_iter().map(Result::err).collect();
    assert_eq!(
        codes,
        vec![None, None, Some(EnvelopeError::BadSignature), None]
    );
    // Policy failures are still reported per envelope after a good batch.
    let other_roster = tallinn().roster;
    let foreign =
        UntrustedEnvelope::verify_many(good.iter().map(|b| decode(b)).collect(), &other_roster);
    assert!(foreign.iter().all(Result::is_err), "keys of another roster");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = UntrustedEnvelope::decode(&bytes);
        let _ = postcard::from_bytes::<SealedBodyV1>(&bytes);
        let _ = postcard::from_bytes::<Envelope>(&bytes);
        let _ = postcard::from_bytes::<HeaderV1>(&bytes);
    }

    #[test]
    fn mutated_envelopes_never_panic_and_never_open(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        truncate in proptest::option::of(any::<usize>()),
    ) {
        let w = tallinn_small();
        let sealed = seal(&w.ids["UA"], &w.roster, "pair", &Message::note(Tlp::Red, "s", "b"), 1).unwrap();
        let mut b = sealed.as_bytes().to_vec();
        let mut changed = false;
        for (pos, val) in edits {
            let i = pos % b.len();
            changed |= b[i] != val;
            b[i] = val;
        }
        if let Some(t) = truncate {
            let t = t % b.len();
            changed |= t != b.len();
            b.truncate(t);
        }
        let res = open(&b, &w.roster, &w.ids["EE"]);
        if changed {
            prop_assert!(res.is_err());
        }
    }

    #[test]
    fn envelope_encoding_round_trips(body in proptest::collection::vec(any::<u8>(), 0..300), sig in any::<[u8; 32]>()) {
        let mut signature = [0u8; 64];
        signature[..32].copy_from_slice(&sig);
        let e = Envelope { body, signature };
        let bytes = postcard::to_allocvec(&e).unwrap();
        prop_assert_eq!(postcard::from_bytes::<Envelope>(&bytes).unwrap(), e);
    }
}

fn tallinn_small() -> World {
    use std::sync::OnceLock;
    type Secrets = Vec<(String, [u8; 32], [u8; 32])>;
    static W: OnceLock<(String, Secrets)> = OnceLock::new();
    // Deterministic small world shared by proptest cases (key generation
    // per case would dominate the test time).
    let (text, secrets) = W.get_or_init(|| {
        let mut text = String::new();
        let mut secrets = Vec::new();
        for id in ["UA", "EE"] {
            let mut s = [0u8; 32];
            let mut e = [0u8; 32];
            rand::rng().fill_bytes(&mut s);
            rand::rng().fill_bytes(&mut e);
            let ident = Identity::from_secrets(ParticipantId::new(id).unwrap(), &s, &e);
            text.push_str(&ident.roster_entry(id, "member"));
            secrets.push((id.to_string(), s, e));
        }
        text.push_str("[[channel]]\nid = \"pair\"\nmembers = [\"UA\", \"EE\"]\n");
        (text, secrets)
    });
    World {
        roster: Roster::parse(text).unwrap(),
        ids: secrets
            .iter()
            .map(|(id, s, e)| {
                (
                    id.clone(),
                    Identity::from_secrets(ParticipantId::new(id.as_str()).unwrap(), s, e),
                )
            })
            .collect(),
    }
}

/// Re-signs `bytes` (an envelope sealed by `who`) with a signature whose
/// R carries the order-2 torsion point T: R' = rB + T, s = r + k·a with
/// k = H(R' || A || M). s·B = R' + k·A fails by exactly T, so strict
/// verification refuses it; ed25519-dalek's batch check sums
/// z·(R' + k·A - s·B) with a 128-bit z derived from the inputs, which
/// cancels T whenever z is even: half of all such signatures pass a
/// batch. Only the key holder can make one.
fn torsion_signed(who: &Identity, bytes: &[u8], seed: u8) -> Vec<u8> {
    use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
    use curve25519_dalek::Scalar;
    use sha2::Sha512;
    let mut env: Envelope = postcard::from_bytes(bytes).unwrap();
    let a = who.signing_key().to_scalar();
    let big_a = who.signing_key().verifying_key().to_bytes();
    let r = Scalar::from_bytes_mod_order([seed; 32]);
    let big_r = (ED25519_BASEPOINT_POINT * r + EIGHT_TORSION[4]).compress();
    let m = signed_message(1, &env.body);
    let h: [u8; 64] = Sha512::new()
        .chain_update(big_r.as_bytes())
        .chain_update(big_a)
        .chain_update(&m)
        .finalize()
        .into();
    let k = Scalar::from_bytes_mod_order_wide(&h);
    let s = r + k * a;
    env.signature[..32].copy_from_slice(big_r.as_bytes());
    env.signature[32..].copy_from_slice(s.as_bytes());
    postcard::to_allocvec(&env).unwrap()
}

#[test]
fn small_order_r_passes_the_batch_but_never_a_strict_check() {
    let w = tallinn();
    let ua = &w.ids["UA"];
    let good = seal(
        ua,
        &w.roster,
        "plenary",
        &Message::note(Tlp::Clear, "a", "b"),
        1,
    )
    .unwrap();
    let other = seal(
        ua,
        &w.roster,
        "plenary",
        &Message::note(Tlp::Clear, "c", "d"),
        2,
    )
    .unwrap();
    let decode = |b: &[u8]| UntrustedEnvelope::decode(b).unwrap();
    // The first nonce whose signature the batch accepts (the batch's z
    // is a function of its inputs, so this is deterministic; about one
    // in two nonces qualifies).
    let evil = (1..=64u8)
        .map(|seed| torsion_signed(ua, other.as_bytes(), seed))
        .find(|evil| {
            UntrustedEnvelope::verify_many(vec![decode(good.as_bytes()), decode(evil)], &w.roster)
                .iter()
                .all(Result::is_ok)
        })
        .expect("some nonce passes the batch check (the relay's path, PROTOCOL.md §10 item 32)");
    // Strictly verified alone: refused.
    assert!(matches!(
        decode(&evil).verify(&w.roster),
        Err(EnvelopeError::BadSignature)
    ));
    // A recipient's check refuses it whatever the batching.
    let client = UntrustedEnvelope::verify_each_strict(
        vec![decode(good.as_bytes()), decode(&evil)],
        &w.roster,
    );
    assert!(client[0].is_ok());
    assert!(matches!(client[1], Err(EnvelopeError::BadSignature)));
}
