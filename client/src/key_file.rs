//! Reading and writing a participant's secret key file: created with mode
//! 0600 (never over an existing file), synced with its directory; read only
//! if neither group nor others can read it, and only up to
//! [`defaults::MAX_SECRET_FILE_LEN`] bytes. The file's two TOML forms
//! (plain and passphrase-protected) are `tallinn-common`'s
//! ([`Identity::to_secret_toml`], [`Identity::to_protected_toml`],
//! [`Identity::from_secret_toml`]), which does no I/O.

use std::io::{Read, Write};
use std::path::Path;

use tallinn_common::defaults;
use tallinn_common::identity::{Identity, IdentityError, KdfParams};
use zeroize::Zeroizing;

/// The secret key file of an [`Identity`] on disk. Bring it into scope
/// (`use tallinn_client::key_file::SecretKeyFile as _;`) to call
/// `identity.write_secret_file(..)` and `Identity::read_secret_file(..)`.
pub trait SecretKeyFile: Sized {
    /// Writes the secret key file to a new file created with mode 0600,
    /// synced with its directory. Passphrase-protected if `passphrase` is
    /// given.
    ///
    /// # Errors
    /// [`IdentityError::AlreadyExists`] if the file exists,
    /// [`IdentityError::Io`] on other failures (the new file is removed
    /// again, so a retry does not find a partial key in its way).
    fn write_secret_file(
        &self,
        path: &Path,
        passphrase: Option<&[u8]>,
        params: KdfParams,
    ) -> Result<(), IdentityError>;

    /// Reads a secret key file, refusing one that group or others can read.
    ///
    /// # Errors
    /// [`IdentityError::InsecurePermissions`], [`IdentityError::Io`], and
    /// the errors of [`Identity::from_secret_toml`].
    fn read_secret_file(path: &Path, passphrase: Option<&[u8]>) -> Result<Self, IdentityError>;

    /// Whether a secret key file is passphrase-protected (without
    /// decrypting it).
    ///
    /// # Errors
    /// As [`SecretKeyFile::read_secret_file`], minus decryption.
    fn secret_file_is_protected(path: &Path) -> Result<bool, IdentityError>;
}

impl SecretKeyFile for Identity {
    fn write_secret_file(
        &self,
        path: &Path,
        passphrase: Option<&[u8]>,
        params: KdfParams,
    ) -> Result<(), IdentityError> {
        let text = match passphrase {
            Some(p) => self.to_protected_toml(p, params)?,
            None => self.to_secret_toml(),
        };
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let io = |action| {
            move |source: std::io::Error| IdentityError::Io {
                action,
                path: path.into(),
                source,
            }
        };
        let mut file = opts.open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                IdentityError::AlreadyExists(path.into())
            } else {
                io("creating")(e)
            }
        })?;
        let written = file
            .write_all(text.as_bytes())
            .map_err(io("writing"))
            .and_then(|()| file.sync_all().map_err(io("syncing")))
            .and_then(|()| {
                // The new name is durable only once its directory is.
                tallinn_host::durable::sync_parent(path).map_err(io("syncing the directory of"))
            });
        if written.is_err() {
            // The file is ours (create_new): a half-written or unsynced
            // key must not block the next attempt as "already exists".
            let _ = std::fs::remove_file(path);
        }
        written
    }

    fn read_secret_file(path: &Path, passphrase: Option<&[u8]>) -> Result<Self, IdentityError> {
        let text = read_text(path)?;
        Self::from_secret_toml(&text, passphrase, path)
    }

    fn secret_file_is_protected(path: &Path) -> Result<bool, IdentityError> {
        let text = read_text(path)?;
        Ok(text.lines().any(|l| l.trim_start().starts_with("kdf")))
    }
}

/// The text of a secret key file: refused if group or others can read it
/// or if it is larger than [`defaults::MAX_SECRET_FILE_LEN`]; read into a
/// buffer reserved up front, so no reallocation leaves a copy of a secret
/// behind un-zeroized.
fn read_text(path: &Path) -> Result<Zeroizing<String>, IdentityError> {
    let io = |action| {
        move |source: std::io::Error| IdentityError::Io {
            action,
            path: path.into(),
            source,
        }
    };
    let file = std::fs::File::open(path).map_err(io("opening"))?;
    let meta = file.metadata().map_err(io("reading metadata of"))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(IdentityError::InsecurePermissions {
                path: path.into(),
                mode,
            });
        }
    }
    let max = defaults::MAX_SECRET_FILE_LEN;
    if meta.len() > max {
        return Err(IdentityError::Malformed {
            path: path.into(),
            reason: format!("larger than {max} bytes"),
        });
    }
    // invariant: MAX_SECRET_FILE_LEN (64 KiB) fits in usize.
    let cap = usize::try_from(max).expect("invariant: 64 KiB fits in usize") + 1;
    let mut text = Zeroizing::new(String::with_capacity(cap));
    file.take(max)
        .read_to_string(&mut text)
        .map_err(io("reading"))?;
    Ok(text)
}

#[cfg(test)]
mod tests;
