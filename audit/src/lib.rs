//! `tallinn-audit`: checks an archive export (`PROTOCOL.md` §12.5, version
//! 2) with nothing but the export, the deployment fingerprint agreed out of
//! band and, optionally, a checkpoint fetched from elsewhere. No private key,
//! no relay, no client: it depends on `tallinn-common` alone.
//!
//! - [`verify`] walks one export: the roster log from the pinned genesis,
//!   every envelope signature against the device key of its epoch, every
//!   content against its content key and the signed commitment, every wrap
//!   (the beneficiary's included), every record hash and chain link, the head
//!   against the signed checkpoint(s), the relay's receipts and the
//!   attachment hashes. It stops at the first failure and names it.
//! - [`cross`] holds several verified exports against each other: a message
//!   one export shows as accepted into a conversation that another export's
//!   device was a recipient of must appear in that export too, or fall in a
//!   redacted range of it, unless that export ends before the message's seq.
//!
//! Results are [`report::Report`]s, printed as text or JSON by the binary.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cross;
pub mod report;
pub mod verify;

pub use report::{CrossReport, Failure, Report};

/// Parses a deployment fingerprint: 64 hex digits, in groups or not
/// (spaces, `:` and `-` are ignored).
///
/// # Errors
/// A message saying what is wrong.
pub fn parse_fingerprint(s: &str) -> Result<[u8; 32], String> {
    let digits: String = s
        .chars()
        .filter(|c| !matches!(c, ' ' | ':' | '-' | '\t'))
        .collect();
    let bytes = hex::decode(&digits)
        .map_err(|_| "a deployment fingerprint is 64 hex digits".to_string())?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| "a deployment fingerprint is 64 hex digits".to_string())
}
