//! Creating files that hold plaintext (exports of TLP:RED material): mode
//! 0600 from the first byte, never through a symlink, never over an existing
//! file unless asked, and never visible half-written under the final name.
//!
//! The data goes to a fresh temporary file beside the target (created with
//! `O_CREAT|O_EXCL`, which refuses any existing path, a symlink included,
//! and mode 0600), is synced, and is then linked to the target name
//! (`link(2)`, which fails if the name exists) or, with `force`, renamed over
//! it (`rename(2)` replaces a symlink itself, never the file it points to).
//! The directory is synced last.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A file being written; [`PrivateFile::commit`] makes it appear.
pub struct PrivateFile {
    file: io::BufWriter<File>,
    tmp: PathBuf,
    target: PathBuf,
    force: bool,
    done: bool,
}

fn open_new(path: &Path) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
}

impl PrivateFile {
    /// Starts writing `target`.
    ///
    /// # Errors
    /// `AlreadyExists` (with a hint to use `--force`) if `target` exists and
    /// `force` is false, whatever it is (a file, a directory, a symlink);
    /// any I/O error creating the temporary file.
    pub fn create(target: &Path, force: bool) -> io::Result<Self> {
        if !force && target.symlink_metadata().is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists; refusing to overwrite it (pass --force to replace it)",
                    target.display()
                ),
            ));
        }
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = target.file_name().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "the output path names no file")
        })?;
        let mut last = None;
        for _ in 0..16 {
            let mut tmp_name = std::ffi::OsString::from(".");
            tmp_name.push(name);
            tmp_name.push(format!(".tmp-{:016x}", rand::random::<u64>()));
            let tmp = dir.join(tmp_name);
            match open_new(&tmp) {
                Ok(file) => {
                    return Ok(Self {
                        file: io::BufWriter::new(file),
                        tmp,
                        target: target.to_path_buf(),
                        force,
                        done: false,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no temporary name")))
    }

    /// Syncs the data and gives it the target name.
    ///
    /// # Errors
    /// `AlreadyExists` if the target appeared meanwhile (without `force`);
    /// any I/O error. The temporary file is removed on every failure.
    pub fn commit(mut self) -> io::Result<()> {
        self.file.flush()?;
        self.file.get_ref().sync_all()?;
        if self.force {
            std::fs::rename(&self.tmp, &self.target)?;
        } else {
            std::fs::hard_link(&self.tmp, &self.target).map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    io::Error::new(
                        e.kind(),
                        format!(
                            "{} exists; refusing to overwrite it (pass --force to replace it)",
                            self.target.display()
                        ),
                    )
                } else {
                    e
                }
            })?;
            std::fs::remove_file(&self.tmp)?;
        }
        self.done = true;
        tallinn_host::durable::sync_parent(&self.target)
    }
}

impl Write for PrivateFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for PrivateFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(path: &Path, force: bool, data: &[u8]) -> io::Result<()> {
        let mut f = PrivateFile::create(path, force)?;
        f.write_all(data)?;
        f.commit()
    }

    #[test]
    fn mode_0600_no_overwrite_no_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("export.jsonl");
        write(&out, false, b"one").unwrap();
        let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let e = write(&out, false, b"two").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert!(e.to_string().contains("--force"), "{e}");
        assert_eq!(std::fs::read(&out).unwrap(), b"one");
        write(&out, true, b"three").unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"three");

        // A symlink planted at the name is never followed.
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let link = dir.path().join("link.jsonl");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(write(&link, false, b"evil").is_err());
        write(&link, true, b"replaced").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert!(!std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        // No temporary files left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
    }

    #[test]
    fn an_unfinished_file_never_appears() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("x");
        {
            let mut f = PrivateFile::create(&out, false).unwrap();
            f.write_all(b"partial").unwrap();
        }
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
    }
}
