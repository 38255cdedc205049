//! Saving a received attachment: the sender's file name is untrusted, so
//! it is made safe before it names anything on disk — one plain name
//! inside the chosen folder, never a path, a hidden file or a terminal
//! escape — and the bytes are checked against the size and SHA-256 the
//! message states before they are written (0600, never over a file).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The longest name written, in bytes (most file systems allow 255).
const MAX_NAME: usize = 200;

/// A safe file name for an attachment called `name` (the `n`th, from 1):
/// path separators, control and format characters become `_`; a leading
/// dot or dash becomes `_` (no hidden files, no `.` or `..`, no `-rf`); an empty result
/// becomes `attachment-N`; at most 200 bytes, the extension kept.
pub fn safe_name(name: &str, n: usize) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c == '/'
                || c == '\\'
                || c == '\0'
                || c.is_control()
                || is_format(c)
                || tallinn_common::text::is_unsafe(c)
            {
                '_'
            } else {
                c
            }
        })
        .collect();
    s = s.trim().to_string();
    // No hidden file, and no name a shell glob turns into an option.
    if s.starts_with('.') || s.starts_with('-') {
        s.replace_range(..1, "_");
    }
    if s.chars().all(|c| c == '_' || c == '.') {
        s = format!("attachment-{n}");
    }
    if s.len() > MAX_NAME {
        let ext = s
            .rsplit_once('.')
            .map(|(_, e)| e)
            .filter(|e| e.len() <= 16)
            .map(|e| format!(".{e}"))
            .unwrap_or_default();
        let mut cut = MAX_NAME - ext.len();
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s = format!("{}{ext}", &s[..cut]);
    }
    s
}

/// Bidirectional overrides, zero-width and other invisible characters that
/// make a name read differently from what it is.
fn is_format(c: char) -> bool {
    matches!(c,
        '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}' | '\u{00ad}'
    )
}

/// Why an attachment was not saved.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// The bytes are not what the message states.
    #[error("attachment {name:?}: {what} does not match the message (expected {expected}, got {got}); nothing written")]
    Mismatch {
        /// The safe name.
        name: String,
        /// `size` or `SHA-256`.
        what: &'static str,
        /// Stated.
        expected: String,
        /// Found.
        got: String,
    },
    /// Writing failed.
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// Writes `data` as `safe_name(name)` inside `dir` (created 0700 if
/// missing), after checking it against `size` and `sha256_hex`. An
/// existing file is kept: the new one gets ` (2)`, ` (3)`... before its
/// extension. Returns the path written.
///
/// # Errors
/// [`SaveError`].
pub fn save(
    dir: &Path,
    name: &str,
    n: usize,
    data: &[u8],
    size: u64,
    sha256_hex: &str,
) -> Result<PathBuf, SaveError> {
    let safe = safe_name(name, n);
    if data.len() as u64 != size {
        return Err(SaveError::Mismatch {
            name: safe,
            what: "size",
            expected: size.to_string(),
            got: data.len().to_string(),
        });
    }
    let got = hex::encode(Sha256::digest(data));
    if !got.eq_ignore_ascii_case(sha256_hex) {
        return Err(SaveError::Mismatch {
            name: safe,
            what: "SHA-256",
            expected: sha256_hex.to_string(),
            got,
        });
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SaveError::Io { path, source }
    };
    if !dir.exists() {
        tallinn_host::durable::private_dir(dir).map_err(io(dir))?;
    }
    let (stem, ext) = match safe.rsplit_once('.') {
        Some((s, e)) if !s.is_empty() => (s.to_string(), format!(".{e}")),
        _ => (safe.clone(), String::new()),
    };
    for i in 1..1000 {
        let file = if i == 1 {
            safe.clone()
        } else {
            format!("{stem} ({i}){ext}")
        };
        let path = dir.join(&file);
        // The name is one plain component: joined, it stays in `dir`.
        debug_assert_eq!(path.parent(), Some(dir));
        let mut f = match crate::private_file::PrivateFile::create(&path, false) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io(&path)(e)),
        };
        f.write_all(data).map_err(io(&path))?;
        match f.commit() {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io(&path)(e)),
        }
    }
    Err(io(dir)(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        format!("999 files named like {safe} exist"),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_become_one_plain_name() {
        for (given, want) in [
            ("report.pdf", "report.pdf"),
            ("../../x", "_._.._x"),
            ("/etc/passwd", "_etc_passwd"),
            (".bashrc", "_bashrc"),
            ("..", "attachment-3"),
            (".", "attachment-3"),
            ("", "attachment-3"),
            ("a\u{1b}[2Jb\u{7}.txt", "a_[2Jb_.txt"),
            ("evil\u{202e}fdp.exe", "evil_fdp.exe"),
            ("C:\\Windows\\x.dll", "C:_Windows_x.dll"),
            ("nul\0byte", "nul_byte"),
            ("-rf", "_rf"),
            ("a\u{61c}b", "a_b"),
        ] {
            let got = safe_name(given, 3);
            assert_eq!(got, want, "{given:?}");
            assert!(!got.contains('/') && !got.starts_with('.'), "{got:?}");
            assert!(!got.chars().any(char::is_control), "{got:?}");
        }
        let long = format!("{}.pdf", "é".repeat(300));
        let s = safe_name(&long, 1);
        assert!(s.len() <= MAX_NAME && s.ends_with(".pdf"), "{s}");
    }

    #[test]
    fn checks_before_writing_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let data = b"evidence";
        let sha = hex::encode(Sha256::digest(data));
        let p1 = save(dir.path(), "a.txt", 1, data, 8, &sha).unwrap();
        let p2 = save(dir.path(), "a.txt", 1, data, 8, &sha).unwrap();
        assert_eq!(p1, dir.path().join("a.txt"));
        assert_eq!(p2, dir.path().join("a (2).txt"));
        assert!(matches!(
            save(dir.path(), "b.txt", 1, data, 9, &sha),
            Err(SaveError::Mismatch { what: "size", .. })
        ));
        assert!(matches!(
            save(dir.path(), "b.txt", 1, data, 8, &"00".repeat(32)),
            Err(SaveError::Mismatch {
                what: "SHA-256",
                ..
            })
        ));
        assert!(!dir.path().join("b.txt").exists());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&p1).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
