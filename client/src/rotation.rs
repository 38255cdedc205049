//! Forward secrecy by rotation (version 2): a device replaces its X25519
//! encryption secret, keeps the old one only while messages sealed to it
//! may still arrive, then erases it.
//!
//! Files next to the key file `K` (same format and passphrase protection):
//! - `K.retired-<ms>`: an old key file, retired at `<ms>` (Unix ms); the
//!   client tries it when a delivery does not open with `K`;
//! - `K.next`: a rotation in progress (written before anything else).
//!
//! `tallinn device rotate` writes `K.next`, has the archive secret wrapped
//! under it ([`crate::archive::Archive::prepare_rewrap`]), renames `K` to
//! `K.retired-<now>` and `K.next` to `K` (directory synced), promotes the
//! wrap, then submits the `Devices` entry naming the new public key. A crash
//! or a refused submission leaves a *pending* rotation, which is harmless
//! (the roster still names the old key, and the old secret is kept as
//! retired) and which the next `device rotate` completes.
//!
//! A retired secret is erased (overwritten, synced, unlinked, directory
//! synced) once it is not the roster's current key for this device and
//! either `enc_key_grace_days` have passed since it was retired, or a sync
//! drained the relay's backlog at least [`DRAIN_MARGIN`] after it was
//! retired: by then every message sealed to it has arrived (the relay
//! accepts the previous epoch for `roster_grace_secs`, 60 s by default).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tallinn_common::identity::Identity;
use tallinn_host::durable::sync_parent;

use crate::key_file::SecretKeyFile as _;

/// How long after a retirement a drained sync proves that nothing sealed to
/// the old key is still on its way (the relay's grace, clocks, retries).
pub const DRAIN_MARGIN: Duration = Duration::from_secs(600);

/// One retired key file.
#[derive(Debug)]
pub struct Retired {
    /// Its path.
    pub path: PathBuf,
    /// When it was retired (ms since the epoch).
    pub retired_at_ms: u64,
    /// The old keys.
    pub identity: Identity,
}

fn name_of(key: &Path) -> String {
    key.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The `K.next` path of a key file.
pub fn next_path(key: &Path) -> PathBuf {
    key.with_file_name(format!("{}.next", name_of(key)))
}

/// The retired key files of `key`, oldest first.
///
/// # Errors
/// An unreadable retired key file (wrong passphrase, permissions).
pub fn load_retired(key: &Path, passphrase: Option<&[u8]>) -> anyhow::Result<Vec<Retired>> {
    let dir = key
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let prefix = format!("{}.retired-", name_of(key));
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(out);
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(ms) = name
            .strip_prefix(&prefix)
            .and_then(|t| t.parse::<u64>().ok())
        else {
            continue;
        };
        let identity = Identity::read_secret_file(&e.path(), passphrase)?;
        out.push(Retired {
            path: e.path(),
            retired_at_ms: ms,
            identity,
        });
    }
    out.sort_by_key(|r| r.retired_at_ms);
    Ok(out)
}

/// Switches the key files: `key` becomes `key.retired-<now_ms>`, `key.next`
/// becomes `key`; the directory is synced.
///
/// # Errors
/// I/O errors (nothing is lost: both files stay on disk).
pub fn switch(key: &Path, now_ms: u64) -> std::io::Result<PathBuf> {
    let retired = key.with_file_name(format!("{}.retired-{now_ms}", name_of(key)));
    std::fs::rename(key, &retired)?;
    std::fs::rename(next_path(key), key)?;
    sync_parent(key)?;
    Ok(retired)
}

/// Erases a retired key file: overwritten with zeros and synced, then
/// unlinked, and the directory synced.
///
/// # Errors
/// I/O errors.
pub fn erase(path: &Path) -> std::io::Result<()> {
    let len = std::fs::metadata(path)?.len();
    {
        let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
        f.write_all(&vec![0u8; usize::try_from(len).unwrap_or(0)])?;
        f.sync_all()?;
    }
    std::fs::remove_file(path)?;
    sync_parent(path)
}

/// Whether a retired key may be erased now.
pub fn erasable(
    r: &Retired,
    still_in_roster: bool,
    now_ms: u64,
    grace: Duration,
    drained_at_ms: Option<u64>,
) -> bool {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    !still_in_roster
        && (now_ms >= r.retired_at_ms.saturating_add(ms(grace))
            || drained_at_ms.is_some_and(|d| d >= r.retired_at_ms.saturating_add(ms(DRAIN_MARGIN))))
}
