//! A consistent copy of a running store: the data directory a relay
//! starts from after a restore (README, "Backup and restore").
//!
//! The copy runs under the writer lock, so no message is appended while
//! it is taken: every message accepted before the copy began is in it,
//! the sequence counter in it is the live one (a restored relay never
//! hands out a seq twice), and the copy is a state the relay was in.
//! Sends wait meanwhile (their `Accepted` is delayed, never lost); cursor
//! updates and GC go on, which can only make the copy redeliver a message
//! a device acknowledged during the copy (clients deduplicate). The new
//! database is flushed and `fdatasync`ed, and the files beside it (the
//! relay's stateless-reset and receipt keys) are copied with their mode.

use std::path::Path;

use super::keys::NEXT_SEQ_KEY;
use super::sled_store::SledStore;
use super::{BackupReport, StoreError, WAL_FILES};

/// Files in a data directory that belong to sled or are transient; every
/// other regular file is copied.
fn is_sled_or_transient(name: &str) -> bool {
    name == "db"
        || name == "conf"
        || name == "blobs"
        || name.starts_with("snap.")
        || name == "control.sock"
        || WAL_FILES.contains(&name)
}

fn io(what: &str, e: std::io::Error) -> StoreError {
    StoreError::Flush(format!("backup: {what}: {e}"))
}

impl SledStore {
    pub(super) fn backup_to(&self, dir: &Path) -> Result<BackupReport, StoreError> {
        let inner = &self.inner;
        inner.check_failed()?;
        if dir.exists() {
            let mut entries = std::fs::read_dir(dir).map_err(|e| io("reading the target", e))?;
            if entries.next().is_some() {
                return Err(StoreError::Flush(format!(
                    "backup: {} exists and is not empty; give a new folder",
                    dir.display()
                )));
            }
        }
        // Never inside the data directory: a restore would nest it.
        let data = std::fs::canonicalize(&inner.dir).map_err(|e| io("the data directory", e))?;
        let mut probe = Some(dir);
        while let Some(p) = probe {
            if let Ok(c) = std::fs::canonicalize(p) {
                if c.starts_with(&data) {
                    return Err(StoreError::Flush(format!(
                        "backup: {} is inside the data directory {}; give a folder outside it",
                        dir.display(),
                        data.display()
                    )));
                }
                break;
            }
            probe = p.parent();
        }
        tallinn_host::durable::private_dir(dir).map_err(|e| io("creating the target", e))?;
        let copy = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .open()?;
        let tree = copy.open_tree("relay")?;
        let mut report = BackupReport {
            dir: dir.to_path_buf(),
            ..Default::default()
        };
        {
            let w = inner.state.lock().map_err(|_| StoreError::Poisoned)?;
            let mut batch = sled::Batch::default();
            let mut in_batch = 0;
            for kv in inner.tree.iter() {
                let (k, v) = kv?;
                report.keys += 1;
                report.bytes += (k.len() + v.len()) as u64;
                batch.insert(k, v);
                in_batch += 1;
                if in_batch == 1024 {
                    tree.apply_batch(std::mem::take(&mut batch))?;
                    in_batch = 0;
                }
            }
            tree.apply_batch(batch)?;
            // The live counter, not the last checkpoint's.
            tree.insert(NEXT_SEQ_KEY, &w.next_seq.to_be_bytes())?;
            report.last_seq = w.next_seq.saturating_sub(1);
        }
        copy.flush()?;
        drop(tree);
        drop(copy);
        tallinn_host::durable::SledLog::open(dir)
            .and_then(|l| l.sync())
            .map_err(|e| io("syncing the copy", e))?;
        for entry in
            std::fs::read_dir(&inner.dir).map_err(|e| io("listing the data directory", e))?
        {
            let entry = entry.map_err(|e| io("listing the data directory", e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let meta = entry.metadata().map_err(|e| io(&name, e))?;
            if !meta.is_file() || is_sled_or_transient(&name) {
                continue;
            }
            let target = dir.join(&name);
            std::fs::copy(entry.path(), &target).map_err(|e| io(&name, e))?;
            std::fs::File::open(&target)
                .and_then(|f| f.sync_all())
                .map_err(|e| io(&name, e))?;
            report.files.push(name);
        }
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("syncing the target folder", e))?;
        Ok(report)
    }
}
