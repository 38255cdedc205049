//! Setting up a version-2 deployment on the relay side: the relay's receipt
//! key pair, the unsigned genesis built from a version-1 roster file, and
//! installing the signed genesis into the relay's store.
//!
//! The ceremony (README, "Initialise a deployment"):
//! 1. `tallinn-relay roster init --config relay.toml --chair EE --out genesis.entry`
//!    creates `receipt.key` in the data directory (mode 0600; the relay
//!    signs its receipts with it) and writes the unsigned genesis;
//! 2. the chair and the beneficiary each run `tallinn roster approve
//!    genesis.entry` on their own machine (the file is plain text);
//! 3. `tallinn-relay roster install --config relay.toml --entry genesis.entry`
//!    verifies the approvals and installs it (the relay stopped); it prints
//!    the deployment fingerprint every participant compares out of band.

use std::path::{Path, PathBuf};

use tallinn_common::roster::{EntryBody, EntryKind, LogError, Roster, RosterLog, SignedEntry};

use crate::store::{SledStore, Store, StoreError};

/// The receipt key file in the relay's data directory.
pub const RECEIPT_KEY_FILE: &str = "receipt.key";

/// Why a genesis step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GenesisError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The receipt key file is not ours.
    #[error(
        "{0}: not a receipt key file (expected one line `receipt_secret = \"<base64 32 bytes>\"`)"
    )]
    BadKeyFile(PathBuf),
    /// The entry does not verify.
    #[error("the genesis does not verify: {0}")]
    Invalid(#[from] LogError),
    /// The store could not be opened or written.
    #[error("relay store: {0}")]
    Store(#[from] StoreError),
    /// The store already holds a roster log.
    #[error("the relay already runs a roster log (deployment {0}); a genesis is installed once")]
    AlreadyInstalled(String),
}

/// Creates the relay's receipt key pair in `data_dir` (mode 0600, never
/// overwritten) or loads the existing one; returns the public key.
///
/// # Errors
/// [`GenesisError`].
pub fn receipt_key(data_dir: &Path) -> Result<ed25519_dalek::VerifyingKey, GenesisError> {
    tallinn_host::durable::private_dir(data_dir).map_err(|source| GenesisError::Io {
        path: data_dir.to_path_buf(),
        source,
    })?;
    let path = data_dir.join(RECEIPT_KEY_FILE);
    crate::receipt_key::ReceiptKey::load_or_create(&path)
        .map(|k| k.public())
        .map_err(|e| match e {
            crate::receipt_key::ReceiptKeyError::Io { path, source } => {
                GenesisError::Io { path, source }
            }
            crate::receipt_key::ReceiptKeyError::BadKeyFile(p) => GenesisError::BadKeyFile(p),
        })
}

/// The unsigned genesis of a version-1 roster (migration: each key pair is
/// its participant's identity key and its device `default`).
pub fn genesis_from_v1(
    roster: &Roster,
    chair: &str,
    quorum: u32,
    relay_key: &ed25519_dalek::VerifyingKey,
) -> SignedEntry {
    SignedEntry::new(&EntryBody {
        index: 0,
        prev_hash: [0; 32],
        kind: EntryKind::Genesis(roster.to_state_record(chair, quorum, relay_key.to_bytes())),
    })
}

/// A majority of the members: the default quorum.
pub fn default_quorum(roster: &Roster) -> u32 {
    let members = roster
        .participants()
        .filter(|p| p.role == tallinn_common::roster::Role::Member)
        .count();
    u32::try_from(members / 2 + 1).unwrap_or(u32::MAX)
}

/// Verifies a signed genesis (against `deployment` when given) and installs
/// it as entry 0 of the store in `data_dir`. The relay must be stopped (the
/// store is locked while it runs). Returns the verified log.
///
/// # Errors
/// [`GenesisError`]: invalid, wrong deployment, or a log already there.
pub fn install(
    data_dir: &Path,
    genesis: SignedEntry,
    deployment: Option<&[u8; 32]>,
    now_ms: u64,
) -> Result<RosterLog, GenesisError> {
    let log = RosterLog::from_genesis(genesis, deployment)?;
    tallinn_host::durable::private_dir(data_dir).map_err(|source| GenesisError::Io {
        path: data_dir.to_path_buf(),
        source,
    })?;
    let store = SledStore::open(data_dir)?;
    if let Some((first, _)) = store.roster_log()?.first() {
        return Err(GenesisError::AlreadyInstalled(hex::encode(first.hash())));
    }
    store.append_roster_entry(0, &log.entries()[0], now_ms)?;
    Ok(log)
}
