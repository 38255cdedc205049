//! Evidence an auditor can check alone: content-proven exports verified by
//! `tallinn-audit` with no private key (and each kind of tampering named),
//! the beneficiary's wrap checked at receipt, relay receipts, the rollback
//! of an archive caught by its checkpoint, and a withheld message found by
//! cross-checking exports.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::Value;
use tallinn_client::outbox::OutboxEntry;
use tallinn_client::Client;
use tallinn_common::defaults::ENVELOPE_SIGNATURE_CONTEXT_V2;
use tallinn_common::envelope::{seal_v2, seal_v2_to, Envelope, SealedBodyV2, UntrustedEnvelope};
use tallinn_common::identity::Identity;
use tallinn_common::message::{Attachment, Kind, Loe, Message, Priority, Tlp};
use tallinn_common::roster::{DeviceRecord, EntryKind};

use crate::roster::v2::V2;
use crate::util::*;

mod audit;
mod custody;

fn now() -> u64 {
    tallinn_common::unix_ms(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap(),
    )
}

/// Exports `c`'s archive (version 2) to `path`.
fn export(c: &Client, who: &str, v2: &V2, path: &Path) {
    let file = std::fs::File::create(path).unwrap();
    tallinn_client::export::export(
        c.archive(),
        &v2.env.dep.roster,
        "",
        who,
        "default",
        now(),
        file,
        |_| {},
    )
    .unwrap();
}

/// Runs `tallinn-audit verify` on `path`; (exit code, stdout).
fn audit(path: &Path, deployment: &[u8; 32], extra: &[&str]) -> (i32, String) {
    let dep = hex::encode(deployment);
    let mut args = vec![
        "verify",
        path.to_str().unwrap(),
        "--deployment",
        dep.as_str(),
    ];
    args.extend_from_slice(extra);
    let o = run_bin("tallinn-audit", &args);
    (o.status.code().unwrap_or(-1), stdout(&o) + &stderr(&o))
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn write_lines(path: &Path, lines: &[Value]) {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(path, text).unwrap();
}

/// A copy of the export with `edit` applied, audited: must fail (exit 3)
/// naming `check` and, where given, the record.
fn tampered(
    dir: &Path,
    name: &str,
    base: &[Value],
    deployment: &[u8; 32],
    check: &str,
    record: Option<u64>,
    edit: impl FnOnce(&mut Vec<Value>),
) {
    let mut copy = base.to_vec();
    edit(&mut copy);
    let path = dir.join(format!("{name}.jsonl"));
    write_lines(&path, &copy);
    let (code, out) = audit(&path, deployment, &["--json"]);
    assert_eq!(code, 3, "{name}: expected exit 3, got {code}: {out}");
    let report: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(report["ok"], false, "{name}: {out}");
    assert_eq!(report["failure"]["check"], check, "{name}: {out}");
    if let Some(r) = record {
        assert_eq!(report["failure"]["record"], r, "{name}: {out}");
    }
}

/// An envelope `sender` sealed honestly, except that the wrap for
/// `victim` is replaced by one that does not derive from the content key,
/// then signed again: a doctored sender.
pub(crate) fn doctor_wrap(envelope: &[u8], sender: &Identity, victim: &str) -> Vec<u8> {
    let env: Envelope = postcard::from_bytes(envelope).unwrap();
    let mut body: SealedBodyV2 = postcard::from_bytes(&env.body).unwrap();
    let w = body
        .recipients
        .iter_mut()
        .find(|w| w.participant == victim)
        .expect("the victim is a recipient");
    let last = w.ct.len() - 1;
    w.ct[last] ^= 1;
    let body = postcard::to_allocvec(&body).unwrap();
    let mut signed = ENVELOPE_SIGNATURE_CONTEXT_V2.to_vec();
    signed.extend_from_slice(&body);
    let signature = sender.sign(&signed);
    postcard::to_allocvec(&Envelope { body, signature }).unwrap()
}

fn request() -> Message {
    Message {
        kind: Kind::Request {
            loe: Loe::Immediate,
            category: "incident-response".into(),
            priority: Priority::High,
        },
        attachments: vec![Attachment {
            name: "scope.txt".into(),
            media_type: "text/plain".into(),
            data: b"three substations".to_vec(),
        }],
        ..Message::note(Tlp::Amber, "Need DFIR team", "energy sector, Kyiv region")
    }
}
