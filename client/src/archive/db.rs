//! The client's sled database with a real durability barrier.

use super::*;

/// The client's sled database (archive and outbox trees) with a real
/// durability barrier: [`ArchiveDb::flush`] is sled's flush followed by an
/// `fdatasync` of its log (see [`tallinn_host::durable`]).
#[derive(Clone)]
pub struct ArchiveDb {
    sled: sled::Db,
    log: std::sync::Arc<tallinn_host::durable::SledLog>,
}

impl ArchiveDb {
    /// Opens (or creates) the database in `dir`.
    ///
    /// # Errors
    /// [`ArchiveError::Db`] (including "in use by another process"),
    /// [`ArchiveError::Io`] if its log file cannot be opened for syncing.
    pub fn open(dir: &std::path::Path) -> Result<Self, ArchiveError> {
        let config = sled::Config::new().path(dir).flush_every_ms(Some(1000));
        // A database this process just closed releases its lock a moment
        // after the drop; another process holding it is still an error.
        let sled = tallinn_host::durable::retry_while_locked(|| config.open()).map_err(|e| {
            if e.to_string().contains("could not acquire lock") {
                ArchiveError::InUse(dir.display().to_string())
            } else {
                ArchiveError::Db(e)
            }
        })?;
        let log = std::sync::Arc::new(tallinn_host::durable::SledLog::open(dir)?);
        Ok(Self { sled, log })
    }

    /// Opens a tree of the database.
    ///
    /// # Errors
    /// [`ArchiveError::Db`].
    pub fn open_tree(&self, name: &str) -> Result<sled::Tree, ArchiveError> {
        Ok(self.sled.open_tree(name)?)
    }

    /// Makes every write so far durable: sled's flush, then `fdatasync`.
    ///
    /// # Errors
    /// [`ArchiveError::Db`] or [`ArchiveError::Io`].
    pub fn flush(&self) -> Result<(), ArchiveError> {
        self.sled.flush()?;
        self.log.sync()?;
        Ok(())
    }

    /// Bytes on disk.
    ///
    /// # Errors
    /// [`ArchiveError::Db`].
    pub fn size_on_disk(&self) -> Result<u64, ArchiveError> {
        Ok(self.sled.size_on_disk()?)
    }
}
