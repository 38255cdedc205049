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

/// How long [`retry_while_locked`] waits for a database lock: a database
/// closed in the same process (a restart in place, a client reopened)
/// releases its file lock only once its background threads finished, a
/// moment after the drop.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs `open` until it stops failing with sled's "could not acquire lock"
/// error, for at most [`LOCK_WAIT`]; any other outcome (success, another
/// error, a lock still held after the wait: another process uses the
/// database) is returned as it is.
///
/// # Errors
/// Whatever `open` returned last.
pub fn retry_while_locked<T, E: std::fmt::Display>(
    mut open: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match open() {
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
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

/// Makes the directory entry of `path` durable (a file just created,
/// renamed or removed): syncs its parent directory, the current directory
/// for a bare file name.
///
/// # Errors
/// The directory cannot be opened or synced.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// Creates `dir` (and missing parents) with mode 0700, or checks that an
/// existing one is not accessible to group or others: the relay's store and
/// a client's archive hold metadata (who talks to whom, when) even where the
/// contents are encrypted.
///
/// # Errors
/// `PermissionDenied` naming the directory and the `chmod 700` fix when it
/// exists with group or other bits; any I/O error creating it.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "data directory {} is accessible to group or others (mode {mode:04o}); fix it with `chmod 700 {}`",
                    dir.display(),
                    dir.display()
                ),
            ));
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir)
    }
}

/// Checks that the secret file behind `file` is readable by its owner only.
///
/// # Errors
/// `PermissionDenied` naming `path` and the `chmod 600` fix.
pub fn check_private_file(file: &File, path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file.metadata()?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "secret file {} is readable by group or others (mode {mode:04o}); fix it with `chmod 600 {}`",
                    path.display(),
                    path.display()
                ),
            ));
        }
    }
    let _ = (file, path);
    Ok(())
}

#[cfg(test)]
mod private_tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn private_dir_creates_0700_and_refuses_open_ones() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/b");
        private_dir(&d).unwrap();
        assert_eq!(
            std::fs::metadata(&d).unwrap().permissions().mode() & 0o777,
            0o700
        );
        private_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = private_dir(&d).unwrap_err();
        assert!(e.to_string().contains("chmod 700"), "{e}");
    }

    #[test]
    fn readable_secret_file_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("k");
        std::fs::write(&p, b"x").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = check_private_file(&File::open(&p).unwrap(), &p).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        check_private_file(&File::open(&p).unwrap(), &p).unwrap();
    }

    #[test]
    fn sync_parent_syncs_the_directory_a_name_lives_in() {
        let t = tempfile::tempdir().unwrap();
        sync_parent(&t.path().join("new.key")).unwrap();
        // A bare name lives in the current directory.
        sync_parent(Path::new("new.key")).unwrap();
        let e = sync_parent(&t.path().join("missing/new.key")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn a_lock_released_soon_is_waited_for_other_errors_are_not() {
        let mut tries = 0;
        let r: Result<u32, String> = retry_while_locked(|| {
            tries += 1;
            if tries < 3 {
                Err("could not acquire lock on db".into())
            } else {
                Ok(7)
            }
        });
        assert_eq!(r, Ok(7));
        let mut tries = 0;
        let r: Result<u32, String> = retry_while_locked(|| {
            tries += 1;
            Err("corrupt".into())
        });
        assert_eq!((r, tries), (Err("corrupt".into()), 1));
    }
}
