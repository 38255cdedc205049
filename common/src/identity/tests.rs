use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::*;

fn fast_params() -> KdfParams {
    KdfParams {
        m_cost_kib: 256,
        t_cost: 1,
        p_cost: 1,
    }
}

fn id(s: &str) -> ParticipantId {
    ParticipantId::new(s).unwrap()
}

#[test]
fn ids_are_validated() {
    assert!(ParticipantId::new("UA").is_ok());
    assert!(ParticipantId::new("back-office_2").is_ok());
    assert!(ParticipantId::new("").is_err());
    assert!(ParticipantId::new("a".repeat(33)).is_err());
    assert!(ParticipantId::new("U A").is_err());
    assert!(ParticipantId::new("UÄ").is_err());
    assert!(DeviceId::new("front-office").is_ok());
    let err = DeviceId::new("front office").unwrap_err().to_string();
    assert!(
        err.contains("device") && err.contains("front office"),
        "{err}"
    );
}

#[test]
fn debug_never_shows_secrets() {
    let ident = Identity::generate(id("EE"));
    let dbg = format!("{ident:?}");
    let toml = ident.to_secret_toml();
    let secret_line = toml.lines().find(|l| l.starts_with("sign_secret")).unwrap();
    let secret_b64 = secret_line.split('"').nth(1).unwrap();
    assert!(!dbg.contains(secret_b64));
    assert!(!dbg.contains(&hex::encode(ident.sign.as_bytes())));
    assert!(dbg.contains("EE"));
}

#[test]
fn fingerprint_format() {
    let fp = Fingerprint::of(&[1u8; 32], &[2u8; 32]);
    let s = fp.to_string();
    let groups: Vec<&str> = s.split(' ').collect();
    assert_eq!(groups.len(), 5);
    assert!(groups.iter().all(|g| g.len() == 8));
    let full = Sha256::new()
        .chain_update([1u8; 32])
        .chain_update([2u8; 32])
        .finalize();
    assert_eq!(s.replace(' ', ""), hex::encode(&full[..20]));
}

#[test]
fn plain_and_protected_forms_round_trip_and_a_wrong_passphrase_fails() {
    let p = Path::new("k");
    let ident = Identity::generate(id("PL"));
    let plain = ident.to_secret_toml();
    let back = Identity::from_secret_toml(&plain, None, p).unwrap();
    assert_eq!(back.public(), ident.public());
    assert_eq!(back.enc_secret(), ident.enc_secret());

    let text = ident
        .to_protected_toml(b"correct horse", fast_params())
        .unwrap();
    assert!(text.contains("argon2id"));
    assert!(!text.contains(&B64.encode(ident.sign.as_bytes())));
    let back = Identity::from_secret_toml(&text, Some(b"correct horse"), p).unwrap();
    assert_eq!(back.public(), ident.public());
    let err = Identity::from_secret_toml(&text, Some(b"battery staple"), p).unwrap_err();
    assert!(matches!(err, IdentityError::WrongPassphrase(_)), "{err}");
    let err = Identity::from_secret_toml(&text, None, p).unwrap_err();
    assert!(matches!(err, IdentityError::PassphraseRequired(_)), "{err}");
}

#[test]
fn protected_file_cannot_be_moved_to_another_id() {
    let ident = Identity::generate(id("PL"));
    let text = ident.to_protected_toml(b"pw", fast_params()).unwrap();
    let moved = text.replace("id = \"PL\"", "id = \"DE\"");
    let err = Identity::from_secret_toml(&moved, Some(b"pw"), Path::new("x")).unwrap_err();
    assert!(matches!(err, IdentityError::WrongPassphrase(_)));
}

#[test]
fn hostile_kdf_params_are_refused_before_work() {
    let ident = Identity::generate(id("PL"));
    let text = ident.to_protected_toml(b"pw", fast_params()).unwrap();
    let hostile = text.replace("m_cost_kib = 256", "m_cost_kib = 4000000000");
    let err = Identity::from_secret_toml(&hostile, Some(b"pw"), Path::new("x")).unwrap_err();
    assert!(matches!(err, IdentityError::BadKdfParams { .. }), "{err}");
}

#[test]
fn malformed_files_are_typed_errors_without_secrets() {
    let p = Path::new("k");
    for text in [
        "",
        "id = \"UA\"",
        "id = \"UA\"\nsign_secret = \"!!!\"\nenc_secret = \"AAAA\"",
        "id = \"U A\"\nsign_secret = \"AAAA\"\nenc_secret = \"AAAA\"",
        "id = \"UA\"\nsign_secret = \"AAAA\"\nenc_secret = \"AAAA\"",
        "\u{0}\u{1}garbage",
    ] {
        let err = Identity::from_secret_toml(text, None, p).unwrap_err();
        assert!(
            matches!(err, IdentityError::Malformed { .. }),
            "{text:?}: {err}"
        );
    }
    // A well-formed key with a typo'd field name must not echo the secret.
    let ident = Identity::generate(id("UA"));
    let text = ident.to_secret_toml().replace("enc_secret", "enc_secrt");
    let secret = B64.encode(ident.sign.as_bytes());
    let err = Identity::from_secret_toml(&text, None, p).unwrap_err();
    assert!(!err.to_string().contains(&secret), "{err}");
}

#[test]
fn storage_keys_are_label_separated() {
    let ident = Identity::generate(id("UA"));
    assert_ne!(
        *ident.derive_storage_key(b"a"),
        *ident.derive_storage_key(b"b")
    );
    assert_eq!(
        *ident.derive_storage_key(b"a"),
        *ident.derive_storage_key(b"a")
    );
}
