//! `tallinn-audit`: verify archive exports with no private key.
//!
//! Exit status: 0 everything holds; 3 something does not (the report names
//! the first failure); 1 a file could not be read; 2 usage.

#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use serde_json::Value;
use tallinn_audit::{cross, parse_fingerprint, verify};
use tallinn_common::evidence::export::checkpoint_from_b64;
use tallinn_common::evidence::SignedCheckpoint;

/// Verifies Tallinn Relay archive exports (version 2) from the export, the
/// deployment fingerprint and nothing else: no private key, no relay, no
/// client.
#[derive(Parser)]
#[command(name = "tallinn-audit", version, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Verify one export: roster log, signatures, contents, wraps, chain,
    /// head, checkpoints, receipts, attachments.
    Verify {
        /// The export (JSON Lines, `tallinn archive export`).
        export: PathBuf,
        /// The deployment fingerprint agreed out of band (64 hex digits,
        /// groups allowed).
        #[arg(long)]
        deployment: String,
        /// A checkpoint fetched independently (from the relay, or handed
        /// over earlier): the export must reach it and agree with it.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Verify several exports and check them against each other: every
    /// message accepted for a device must be in that device's export.
    Cross {
        /// The exports.
        #[arg(required = true, num_args = 2..)]
        exports: Vec<PathBuf>,
        /// The deployment fingerprint agreed out of band.
        #[arg(long)]
        deployment: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn open(path: &Path) -> Result<BufReader<File>> {
    Ok(BufReader::new(File::open(path).with_context(|| {
        format!("cannot read {}", path.display())
    })?))
}

/// A checkpoint file: JSON with `checkpoint_b64` (as `tallinn archive
/// checkpoint` and `tallinn-relay checkpoint` write it), or the bare base64.
fn read_checkpoint(path: &Path) -> Result<SignedCheckpoint> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let b64 = match serde_json::from_str::<Value>(&text) {
        Ok(v) => v
            .get("checkpoint_b64")
            .and_then(Value::as_str)
            .map(str::to_string)
            .with_context(|| format!("{}: no checkpoint_b64 member", path.display()))?,
        Err(_) => text.trim().to_string(),
    };
    checkpoint_from_b64(&b64).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn run(cli: Cli) -> Result<bool> {
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Verify {
            export,
            deployment,
            checkpoint,
            json,
        } => {
            let deployment = parse_fingerprint(&deployment).map_err(anyhow::Error::msg)?;
            let checkpoint = checkpoint.as_deref().map(read_checkpoint).transpose()?;
            let v = verify::verify(
                &export.display().to_string(),
                open(&export)?,
                &deployment,
                checkpoint.as_ref(),
            );
            if json {
                writeln!(out, "{}", v.report.json())?;
            } else {
                write!(out, "{}", v.report.text())?;
            }
            Ok(v.report.ok())
        }
        Command::Cross {
            exports,
            deployment,
            json,
        } => {
            let deployment = parse_fingerprint(&deployment).map_err(anyhow::Error::msg)?;
            let mut verified = Vec::with_capacity(exports.len());
            for e in &exports {
                verified.push(verify::verify(
                    &e.display().to_string(),
                    open(e)?,
                    &deployment,
                    None,
                ));
            }
            let r = cross::cross(verified);
            if json {
                writeln!(out, "{}", r.json())?;
            } else {
                write!(out, "{}", r.text())?;
            }
            Ok(r.ok())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(3),
        Err(e) => {
            let text: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!(
                "tallinn-audit: {}",
                tallinn_common::text::escape_line(&text.join(": "))
            );
            ExitCode::from(1)
        }
    }
}
