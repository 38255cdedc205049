//! A real durability barrier for a sled 0.34 database.
//!
//! `sled::Db::flush` ends with `sync_file_range(2)` on Linux, which writes
//! the dirty pages of the log but neither the file's metadata (its grown
//! size) nor the device's volatile write cache: after a power cut, data that
//! sled called flushed can be gone. Every place that promises durability
//! (the relay's `Accepted`, the client's archive and outbox) therefore calls
//! [`SledLog::sync`] after `flush`: `fdatasync(2)` on sled's log file, which
//! does both. An fsync acts on the inode, so a second, read-only descriptor
//! of the same file is enough.

use std::fs::File;
use std::io;
use std::path::Path;

/// An open descriptor of a sled database's log file (`<dir>/db`).
#[derive(Debug)]
pub struct SledLog {
    file: File,
}

impl SledLog {
    /// Opens the log of the sled database in `dir` (after sled opened it) and
    /// makes its directory entry durable.
    ///
    /// # Errors
    /// The file or directory cannot be opened or synced.
    pub fn open(dir: &Path) -> io::Result<Self> {
        let file = File::open(dir.join("db"))?;
        // A freshly created `db` must survive a crash too: sync its directory.
        File::open(dir)?.sync_all()?;
        Ok(Self { file })
    }

    /// `fdatasync` of the log: everything sled flushed is on stable storage.
    ///
    /// # Errors
    /// The kernel reported a write-back failure.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_and_syncs_an_existing_log() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("db"), b"log").unwrap();
        let log = SledLog::open(dir.path()).unwrap();
        log.sync().unwrap();
    }

    #[test]
    fn missing_log_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = SledLog::open(dir.path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
