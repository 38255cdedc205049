use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tallinn_common::identity::{Identity, IdentityError, KdfParams, ParticipantId};

use super::SecretKeyFile as _;

fn fast_params() -> KdfParams {
    KdfParams {
        m_cost_kib: 256,
        t_cost: 1,
        p_cost: 1,
    }
}

fn ident(id: &str) -> Identity {
    Identity::generate(ParticipantId::new(id).unwrap())
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn plain_file_round_trip_mode_0600_and_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ua.key");
    let ua = ident("UA");
    ua.write_secret_file(&path, None, KdfParams::default())
        .unwrap();
    assert_eq!(mode(&path), 0o600);
    let back = Identity::read_secret_file(&path, None).unwrap();
    assert_eq!(back.public(), ua.public());
    assert_eq!(*back.to_secret_toml(), *ua.to_secret_toml());
    assert!(!Identity::secret_file_is_protected(&path).unwrap());
    let err = ident("UA")
        .write_secret_file(&path, None, KdfParams::default())
        .unwrap_err();
    assert!(matches!(err, IdentityError::AlreadyExists(_)), "{err}");
    // The first key is still there.
    let again = Identity::read_secret_file(&path, None).unwrap();
    assert_eq!(again.public(), ua.public());
}

#[test]
fn a_file_group_or_others_can_read_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ua.key");
    ident("UA")
        .write_secret_file(&path, None, KdfParams::default())
        .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = Identity::read_secret_file(&path, None).unwrap_err();
    assert!(
        matches!(err, IdentityError::InsecurePermissions { mode: 0o644, .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains("chmod 600") && msg.contains("0644"), "{msg}");
    // Asking whether it is protected reads the secrets too: refused alike.
    let err = Identity::secret_file_is_protected(&path).unwrap_err();
    assert!(
        matches!(err, IdentityError::InsecurePermissions { mode: 0o644, .. }),
        "{err}"
    );
}

#[test]
fn a_protected_file_needs_its_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pl.key");
    let pl = ident("PL");
    pl.write_secret_file(&path, Some(b"correct horse"), fast_params())
        .unwrap();
    assert_eq!(mode(&path), 0o600);
    assert!(Identity::secret_file_is_protected(&path).unwrap());
    let text = std::fs::read_to_string(&path).unwrap();
    let plain = pl.to_secret_toml();
    let secret = plain
        .lines()
        .find(|l| l.starts_with("sign_secret"))
        .and_then(|l| l.split('"').nth(1))
        .unwrap();
    assert!(!text.contains(secret));
    let back = Identity::read_secret_file(&path, Some(b"correct horse")).unwrap();
    assert_eq!(back.public(), pl.public());
    let err = Identity::read_secret_file(&path, Some(b"battery staple")).unwrap_err();
    assert!(matches!(err, IdentityError::WrongPassphrase(_)), "{err}");
    let err = Identity::read_secret_file(&path, None).unwrap_err();
    assert!(matches!(err, IdentityError::PassphraseRequired(_)), "{err}");
}

#[test]
fn an_oversized_or_missing_file_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.key");
    let len = usize::try_from(tallinn_common::defaults::MAX_SECRET_FILE_LEN).unwrap() + 1;
    std::fs::write(&path, vec![b'#'; len]).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = Identity::read_secret_file(&path, None).unwrap_err();
    assert!(matches!(err, IdentityError::Malformed { .. }), "{err}");
    // Never read whole: a hostile file of any size is refused by its size.
    let err = Identity::secret_file_is_protected(&path).unwrap_err();
    assert!(matches!(err, IdentityError::Malformed { .. }), "{err}");
    let err = Identity::read_secret_file(&dir.path().join("none.key"), None).unwrap_err();
    assert!(
        matches!(
            err,
            IdentityError::Io {
                action: "opening",
                ..
            }
        ),
        "{err}"
    );
}
