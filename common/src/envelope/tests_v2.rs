//! Version-2 envelope tests: device recipients (the sender's own other
//! devices included), derived wraps, epochs, revocation, and version-1
//! envelopes verified under the migrated genesis.

use hpke::{Deserializable as _, Serializable as _};
use rand::RngExt as _;

use super::wraps::{derived_enc, ephemeral_ikm};
use super::*;
use crate::message::{Message, Tlp};
use crate::roster::tests::World;
use crate::roster::{RosterState, SignedEntry};

fn world() -> World {
    // UA beneficiary, EE chair; two devices each; NATO observes.
    World::new(&["UA", "EE", "GB"], &["NATO"], 2, 2)
}

fn note() -> Message {
    Message::note(Tlp::Amber, "subject", "body")
}

fn seal_from(w: &World, p: &str, d: &str) -> SealedEnvelope {
    let keys = &w.devices[&(p.to_string(), d.to_string())];
    seal_v2(
        keys,
        d,
        w.log.current(),
        "plenary",
        &note(),
        1_700_000_000_000,
    )
    .unwrap()
}

#[test]
fn every_device_and_the_senders_sibling_opens_it() {
    let w = world();
    let sealed = seal_from(&w, "GB", "dev0");
    let state = w.log.current();
    let v = UntrustedEnvelope::decode(sealed.as_bytes())
        .unwrap()
        .verify(state.as_ref())
        .unwrap();
    assert_eq!(v.header().version, 2);
    assert_eq!(v.header().roster_epoch, Some(0));
    assert_eq!(v.header().sender_device.as_deref(), Some("dev0"));
    let listed: Vec<(String, String)> = v
        .recipient_devices()
        .map(|(p, d)| (p.to_string(), d.unwrap().to_string()))
        .collect();
    assert_eq!(
        listed.len(),
        7,
        "4 participants x 2 devices, minus the sender"
    );
    assert!(listed.contains(&("GB".into(), "dev1".into())));
    assert_eq!(
        v.recipients().collect::<Vec<_>>(),
        ["EE", "GB", "NATO", "UA"]
    );
    for ((p, d), keys) in &w.devices {
        let r = v.open_as(keys, Some(d));
        if p == "GB" && d == "dev0" {
            assert_eq!(r.unwrap_err(), EnvelopeError::NotARecipient);
        } else {
            let opened = r.unwrap();
            assert_eq!(opened.message(), &note());
            assert_eq!(opened.content_key(), sealed.content_key());
        }
    }
    // The device label matters: dev0's keys cannot open dev1's wrap.
    let keys = &w.devices[&("UA".to_string(), "dev0".to_string())];
    assert_eq!(
        v.open_as(keys, Some("dev1")).unwrap_err(),
        EnvelopeError::DecryptFailed
    );
    // Opening by participant alone is refused for version 2.
    assert_eq!(v.open(keys).unwrap_err(), EnvelopeError::NotARecipient);
}

#[test]
fn wraps_are_derived_from_the_content_key_and_recomputable() {
    let w = world();
    let sealed = seal_from(&w, "UA", "dev1");
    let state = w.log.current();
    let v = UntrustedEnvelope::decode(sealed.as_bytes())
        .unwrap()
        .verify(state.as_ref())
        .unwrap();
    v.verify_wraps(sealed.content_key(), state).unwrap();
    let body: SealedBodyV2 = {
        let env: Envelope = postcard::from_bytes(sealed.as_bytes()).unwrap();
        postcard::from_bytes(&env.body).unwrap()
    };
    for wk in &body.recipients {
        let ikm = ephemeral_ikm(
            sealed.content_key(),
            &sealed.msg_id(),
            &wk.participant,
            &wk.device,
        );
        // hpke's own DeriveKeyPair gives the same ephemeral public key.
        let (_, pk) = <HpkeKem as hpke::Kem>::derive_keypair(ikm.as_slice());
        assert_eq!(pk.to_bytes().as_slice(), &wk.enc);
        assert_eq!(derived_enc(&ikm), wk.enc);
    }
    // A wrong content key is caught by the commitment.
    assert_eq!(
        v.verify_wraps(&[9; 32], state).unwrap_err(),
        EnvelopeError::CommitmentMismatch
    );
}

#[test]
fn a_sender_giving_one_device_a_different_key_is_caught_by_verify_wraps() {
    let w = world();
    let state = w.log.current();
    let sender = &w.devices[&("EE".to_string(), "dev0".to_string())];
    let sealed = seal_from(&w, "EE", "dev0");
    let env: Envelope = postcard::from_bytes(sealed.as_bytes()).unwrap();
    let mut body: SealedBodyV2 = postcard::from_bytes(&env.body).unwrap();
    // Replace UA/dev0's wrap with a randomly drawn one of another key.
    let header_bytes = postcard::to_allocvec(&body.header).unwrap();
    let ua = state.device("UA", "dev0").unwrap().enc_key;
    let pk = <HpkeKem as hpke::Kem>::PublicKey::from_bytes(&ua).unwrap();
    let other_key: [u8; 32] = rand::rng().random();
    let (enc, ct) = hpke::single_shot_seal_with_rng::<HpkeAead, HpkeKdf, HpkeKem>(
        &hpke::OpModeS::Base,
        &pk,
        crate::defaults::HPKE_WRAP_INFO_V2,
        &other_key,
        &wraps::wrap_aad(&header_bytes, "UA", "dev0"),
        &mut rand::rng(),
    )
    .unwrap();
    let i = body
        .recipients
        .iter()
        .position(|r| r.participant == "UA" && r.device == "dev0")
        .unwrap();
    body.recipients[i].enc.copy_from_slice(&enc.to_bytes());
    body.recipients[i].ct = ct;
    let new_body = postcard::to_allocvec(&body).unwrap();
    let forged = postcard::to_allocvec(&Envelope {
        signature: sender.sign(&signed_message(2, &new_body)),
        body: new_body,
    })
    .unwrap();
    let v = UntrustedEnvelope::decode(&forged)
        .unwrap()
        .verify(state.as_ref())
        .unwrap();
    // The signature and policy pass; the wraps do not.
    assert!(matches!(
        v.verify_wraps(sealed.content_key(), state),
        Err(EnvelopeError::WrapMismatch { participant, device }) if participant == "UA" && device == "dev0"
    ));
}

#[test]
fn the_epoch_must_be_the_states_and_a_revoked_device_cannot_sign_later() {
    let mut w = world();
    let sealed = seal_from(&w, "GB", "dev1");
    // GB revokes dev1 at epoch 1.
    let devs: Vec<_> = w
        .current_devices("GB")
        .into_iter()
        .filter(|d| d.device != "dev1")
        .collect();
    let e: SignedEntry = w.devices_entry("GB", devs, "GB");
    w.log.append(e).unwrap();
    // The old envelope verifies against its own epoch's state...
    let old = w.log.state_at(0).unwrap();
    UntrustedEnvelope::decode(sealed.as_bytes())
        .unwrap()
        .verify(old.as_ref())
        .unwrap();
    // ...and not against the new one.
    assert!(matches!(
        UntrustedEnvelope::decode(sealed.as_bytes())
            .unwrap()
            .verify(w.log.current().as_ref()),
        Err(EnvelopeError::EpochMismatch {
            envelope: 0,
            state: 1
        })
    ));
    // The revoked device signing for epoch 1 is refused.
    let keys = &w.devices[&("GB".to_string(), "dev1".to_string())];
    let state: &RosterState = w.log.current();
    assert!(matches!(
        seal_v2(keys, "dev1", state, "plenary", &note(), 1),
        Err(EnvelopeError::UnknownDevice { .. })
    ));
    let list: Vec<(&str, &str, [u8; 32])> = state
        .recipient_devices("GB", "dev0", "plenary")
        .unwrap()
        .iter()
        .map(|(p, d)| (p.id.as_str(), d.device.as_str(), d.enc_key))
        .collect();
    let forged = seal_v2_to(
        keys,
        "dev1",
        "plenary",
        1,
        &list,
        &note(),
        1,
        &mut rand::rng(),
    )
    .unwrap();
    assert!(matches!(
        UntrustedEnvelope::decode(forged.as_bytes())
            .unwrap()
            .verify(state),
        Err(EnvelopeError::UnknownDevice { .. })
    ));
}

#[test]
fn leaving_out_a_device_or_the_beneficiary_is_a_recipients_mismatch() {
    let w = world();
    let state = w.log.current();
    let keys = &w.devices[&("EE".to_string(), "dev0".to_string())];
    let full: Vec<(&str, &str, [u8; 32])> = state
        .recipient_devices("EE", "dev0", "plenary")
        .unwrap()
        .iter()
        .map(|(p, d)| (p.id.as_str(), d.device.as_str(), d.enc_key))
        .collect();
    for skip in [("UA", "dev1"), ("EE", "dev1")] {
        let list: Vec<_> = full
            .iter()
            .copied()
            .filter(|(p, d, _)| (*p, *d) != skip)
            .collect();
        let s = seal_v2_to(
            keys,
            "dev0",
            "plenary",
            0,
            &list,
            &note(),
            1,
            &mut rand::rng(),
        )
        .unwrap();
        let err = UntrustedEnvelope::decode(s.as_bytes())
            .unwrap()
            .verify(state.as_ref())
            .unwrap_err();
        assert!(
            matches!(&err, EnvelopeError::RecipientsMismatch { detail, .. } if detail.contains(&format!("{}/{}", skip.0, skip.1))),
            "{err}"
        );
    }
}

#[test]
fn version_1_envelopes_verify_under_the_migrated_genesis() {
    let v1w = super::tests_v1::world(
        &[("UA", "member"), ("EE", "member"), ("NATO", "observer")],
        "[[channel]]\nid = \"plenary\"\nmembers = [\"*\"]\nobservers = [\"NATO\"]\n",
    );
    let m = note();
    let sealed = seal(&v1w.ids["EE"], &v1w.roster, "plenary", &m, 7).unwrap();
    let relay_key = crate::roster::tests::keys("relay", "relay")
        .public()
        .sign_key
        .to_bytes();
    let genesis =
        RosterState::validate(v1w.roster.to_state_record("EE", 1, relay_key), 0, [0; 32]).unwrap();
    let v = UntrustedEnvelope::decode(sealed.as_bytes())
        .unwrap()
        .verify(&genesis)
        .unwrap();
    assert_eq!(v.open(&v1w.ids["UA"]).unwrap().message(), &m);
    assert_eq!(
        v.open_as(&v1w.ids["NATO"], Some("default"))
            .unwrap()
            .message(),
        &m
    );
    // A version-1 roster refuses version-2 envelopes.
    let w = world();
    let s2 = seal_from(&w, "EE", "dev0");
    assert_eq!(
        UntrustedEnvelope::decode(s2.as_bytes())
            .unwrap()
            .verify(&v1w.roster)
            .unwrap_err(),
        EnvelopeError::UnsupportedVersion(2)
    );
}

#[test]
fn bad_suites_and_versions_are_malformed() {
    let w = world();
    let s = seal_from(&w, "EE", "dev0");
    let env: Envelope = postcard::from_bytes(s.as_bytes()).unwrap();
    let mut body: SealedBodyV2 = postcard::from_bytes(&env.body).unwrap();
    body.header.suite = 2;
    let bytes = postcard::to_allocvec(&Envelope {
        body: postcard::to_allocvec(&body).unwrap(),
        signature: env.signature,
    })
    .unwrap();
    assert_eq!(
        UntrustedEnvelope::decode(&bytes).unwrap_err(),
        EnvelopeError::UnsupportedSuite(2)
    );
    let mut raw = env.clone();
    raw.body[0] = 3;
    assert_eq!(
        UntrustedEnvelope::decode(&postcard::to_allocvec(&raw).unwrap()).unwrap_err(),
        EnvelopeError::UnsupportedVersion(3)
    );
}

#[test]
fn batch_verification_of_v2_matches_one_by_one() {
    let w = world();
    let state = w.log.current();
    let mut envs: Vec<Vec<u8>> = ["UA", "EE", "GB"]
        .iter()
        .map(|p| seal_from(&w, p, "dev1").into_bytes())
        .collect();
    let one: Vec<bool> = envs
        .iter()
        .map(|b| {
            UntrustedEnvelope::decode(b)
                .unwrap()
                .verify(state.as_ref())
                .is_ok()
        })
        .collect();
    let many: Vec<bool> = UntrustedEnvelope::verify_many(
        envs.iter()
            .map(|b| UntrustedEnvelope::decode(b).unwrap())
            .collect(),
        state.as_ref(),
    )
    .iter()
    .map(Result::is_ok)
    .collect();
    assert_eq!(one, many);
    assert!(many.iter().all(|ok| *ok));
    // Corrupt one signature: only it fails, in both.
    let last = envs[1].len() - 1;
    envs[1][last] ^= 1;
    let many: Vec<bool> = UntrustedEnvelope::verify_many(
        envs.iter()
            .map(|b| UntrustedEnvelope::decode(b).unwrap())
            .collect(),
        state.as_ref(),
    )
    .iter()
    .map(Result::is_ok)
    .collect();
    assert_eq!(many, [true, false, true]);
}

#[test]
fn a_log_verifies_each_envelope_against_its_own_epoch() {
    let mut w = world();
    let at0 = seal_from(&w, "GB", "dev1");
    let devs: Vec<_> = w
        .current_devices("GB")
        .into_iter()
        .filter(|d| d.device != "dev1")
        .collect();
    let e = w.devices_entry("GB", devs, "GB");
    w.log.append(e).unwrap();
    let at1 = seal_from(&w, "GB", "dev0");
    for bytes in [at0.as_bytes(), at1.as_bytes()] {
        UntrustedEnvelope::decode(bytes)
            .unwrap()
            .verify(&w.log)
            .unwrap();
    }
    // An envelope from a future epoch is unknown until the log catches up.
    let behind =
        crate::roster::RosterLog::from_entries(w.log.entries()[..1].to_vec(), None).unwrap();
    assert_eq!(
        UntrustedEnvelope::decode(at1.as_bytes())
            .unwrap()
            .verify(&behind)
            .unwrap_err(),
        EnvelopeError::UnknownEpoch { epoch: 1, known: 0 }
    );
}
