//! Passphrases: asked on a hidden prompt on the terminal (never echoed),
//! a new one twice; or, where no person is at a terminal, taken from
//! `TALLINN_PASSPHRASE_FILE` (a systemd credential) or
//! `TALLINN_PASSPHRASE`. Always held in [`Zeroizing`].

use zeroize::Zeroizing;

use super::*;

/// A file holding the passphrase (its first line), e.g. a systemd
/// credential: `LoadCredentialEncrypted=passphrase` and
/// `Environment=TALLINN_PASSPHRASE_FILE=%d/passphrase`.
pub const PASSPHRASE_FILE_ENV: &str = "TALLINN_PASSPHRASE_FILE";

/// The shortest passphrase accepted for a new key.
pub const MIN_PASSPHRASE: usize = 12;

/// The passphrase given in the environment, taken out of it at start.
static FROM_ENV: std::sync::OnceLock<Option<Zeroizing<String>>> = std::sync::OnceLock::new();

/// Takes `TALLINN_PASSPHRASE` out of the environment (call first thing in
/// `main`, before any thread starts): children (`$EDITOR`) do not inherit
/// it, and a long-running agent does not keep it in `/proc/PID/environ`.
pub fn take_env() {
    let value = std::env::var(PASSPHRASE_ENV).ok().map(Zeroizing::new);
    if value.is_some() {
        std::env::remove_var(PASSPHRASE_ENV);
    }
    let _ = FROM_ENV.set(value);
}

/// A passphrase asked once and kept for this process (the agent only:
/// it reopens the key after a rotation without asking again; it holds the
/// unlocked key anyway).
static REMEMBERED: std::sync::Mutex<Option<Zeroizing<String>>> = std::sync::Mutex::new(None);
static REMEMBER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Keeps the next passphrase asked for this process's later loads.
pub(super) fn remember() {
    REMEMBER.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// The longest passphrase file read.
const MAX_PASSPHRASE_FILE: u64 = 4096;

fn interactive() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

fn from_env() -> Result<Option<Zeroizing<String>>> {
    if let Some(path) = std::env::var_os(PASSPHRASE_FILE_ENV) {
        let what = || {
            format!(
                "reading {PASSPHRASE_FILE_ENV} {}",
                Path::new(&path).display()
            )
        };
        let file = std::fs::File::open(&path).with_context(what)?;
        let mut text = Zeroizing::new(String::with_capacity(MAX_PASSPHRASE_FILE as usize));
        std::io::Read::read_to_string(
            &mut std::io::Read::take(file, MAX_PASSPHRASE_FILE),
            &mut text,
        )
        .with_context(what)?;
        let line = text.lines().next().unwrap_or_default();
        return Ok(Some(Zeroizing::new(line.to_string())));
    }
    if let Some(Some(p)) = FROM_ENV.get() {
        return Ok(Some(p.clone()));
    }
    // Not taken at start (a library caller): read it here.
    Ok(std::env::var(PASSPHRASE_ENV).ok().map(Zeroizing::new))
}

fn ask(prompt: &str) -> Result<Zeroizing<String>> {
    let term = console::Term::stderr();
    term.write_str(prompt)?;
    Ok(Zeroizing::new(
        term.read_secure_line().context("reading the passphrase")?,
    ))
}

/// The passphrase of an existing key file: from the environment, else
/// asked once on a hidden prompt.
///
/// # Errors
/// No terminal and nothing in the environment (says what to set).
pub(super) fn existing(path: &Path) -> Result<Zeroizing<String>> {
    if let Some(p) = from_env()? {
        return Ok(p);
    }
    if let Some(p) = REMEMBERED.lock().unwrap_or_else(|e| e.into_inner()).clone() {
        return Ok(p);
    }
    if !interactive() {
        bail!(
            "secret key file {} is passphrase-protected: run this in a terminal to be asked, or set {PASSPHRASE_FILE_ENV} (a file) or {PASSPHRASE_ENV}",
            path.display()
        );
    }
    let p = ask(&format!("Passphrase for {}: ", path.display()))?;
    if REMEMBER.load(std::sync::atomic::Ordering::SeqCst) {
        *REMEMBERED.lock().unwrap_or_else(|e| e.into_inner()) = Some(p.clone());
    }
    Ok(p)
}

/// A new passphrase: from the environment, else asked twice on a hidden
/// prompt until both agree (three tries); at least [`MIN_PASSPHRASE`]
/// characters.
///
/// # Errors
/// Too short, no agreement, or no terminal and nothing in the environment.
pub(super) fn new() -> Result<Zeroizing<String>> {
    let check = |p: &str| {
        if p.chars().count() < MIN_PASSPHRASE {
            bail!("the passphrase must be at least {MIN_PASSPHRASE} characters");
        }
        Ok(())
    };
    if let Some(p) = from_env()? {
        check(&p)?;
        return Ok(p);
    }
    if !interactive() {
        if std::io::stdin().is_terminal() {
            // Reading a terminal without the hidden prompt would echo it.
            bail!("standard error is not a terminal, so the passphrase cannot be asked hidden: run without redirecting stderr, or set {PASSPHRASE_FILE_ENV}");
        }
        // Scripts: the first line of standard input.
        let mut line = Zeroizing::new(String::with_capacity(1024));
        std::io::stdin()
            .read_line(&mut line)
            .context("reading the passphrase from standard input")?;
        let p = Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_string());
        check(&p)?;
        return Ok(p);
    }
    for _ in 0..3 {
        let first = ask(&format!(
            "New passphrase for the key (at least {MIN_PASSPHRASE} characters): "
        ))?;
        if let Err(e) = check(&first) {
            eprintln!("{e}");
            continue;
        }
        let again = ask("The same passphrase again: ")?;
        if *first == *again {
            return Ok(first);
        }
        eprintln!("the two passphrases differ; once more");
    }
    bail!("no passphrase agreed after three tries; nothing was written")
}
