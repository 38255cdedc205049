//! Writes the seed corpora of the fuzz targets (`fuzz/seeds/<target>/`)
//! from the protocol's own artefacts: the envelope test vectors, the
//! default roster, real frames, commit-log records and archive records.
//! Run from the repository root after a format change:
//! `cargo run -p tallinn-tests --bin tallinn-fuzz-seeds`. The fuzz
//! deployment comes from `fuzz/src/world.rs`, shared with the targets.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tallinn_client::archive::{Direction, Record};
use tallinn_common::envelope::{seal, seal_v2, Envelope};
use tallinn_common::message::{Message, MsgId, Tlp};
use tallinn_common::roster::{EntryBody, EntryKind};
use tallinn_common::wire::{self, ErrorCode, Frame};
use tallinn_relay::store::wal::{encode_record, WalRecord};
use tallinn_relay::store::LogEntry;

#[path = "../../../fuzz/src/world.rs"]
#[allow(dead_code)]
mod world;

fn write(root: &Path, target: &str, name: &str, bytes: &[u8]) -> Result<()> {
    let dir = root.join(target);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("seed-{name}"));
    std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
}

fn main() -> Result<()> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let root = repo.join("fuzz/seeds");
    let w = world::world();
    let note = Message::note(Tlp::Amber, "Energy DFIR", "two teams, 48 h");
    let sealed = seal(&w.ua, &w.roster, "plenary", &note, 1_764_000_000_000)?;

    // Envelopes: as received (mode 0) and as a body to sign (mode 1).
    let mut raw = vec![0u8];
    raw.extend_from_slice(sealed.as_bytes());
    write(&root, "envelope", "sealed", &raw)?;
    let env: Envelope = postcard::from_bytes(sealed.as_bytes())?;
    let mut body = vec![1u8];
    body.extend_from_slice(&env.body);
    write(&root, "envelope", "body", &body)?;
    let vectors: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        repo.join("common/tests/vectors/envelope-v1.json"),
    )?)?;
    for (i, v) in vectors
        .as_array()
        .context("vectors: a JSON array")?
        .iter()
        .enumerate()
    {
        let hex = v["envelope"].as_str().context("vector without envelope")?;
        let mut bytes = vec![0u8];
        bytes.extend_from_slice(&hex::decode(hex)?);
        write(&root, "envelope", &format!("vector-{i}"), &bytes)?;
    }

    // Version 2: sealed by UA's device `default` against the migrated
    // genesis, as received (mode 0) and as a body to sign with the
    // `tallinn/2` label (mode 3), and the v2 vectors.
    let sealed2 = seal_v2(
        &w.ua,
        "default",
        w.log.current(),
        "plenary",
        &note,
        1_764_000_000_000,
    )?;
    let mut raw = vec![0u8];
    raw.extend_from_slice(sealed2.as_bytes());
    write(&root, "envelope", "sealed-v2", &raw)?;
    let env2: Envelope = postcard::from_bytes(sealed2.as_bytes())?;
    let mut body = vec![3u8];
    body.extend_from_slice(&env2.body);
    write(&root, "envelope", "body-v2", &body)?;
    let vectors: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        repo.join("common/tests/vectors/envelope-v2.json"),
    )?)?;
    for (i, v) in vectors
        .as_array()
        .context("v2 vectors: a JSON array")?
        .iter()
        .enumerate()
    {
        let hex = v["envelope"].as_str().context("vector without envelope")?;
        let mut bytes = vec![0u8];
        bytes.extend_from_slice(&hex::decode(hex)?);
        write(&root, "envelope", &format!("vector-v2-{i}"), &bytes)?;
    }

    // Roster log: the genesis as received (mode 0; a known entry), and
    // bodies for the target to approve (mode 1): an amendment raising the
    // quorum and a devices entry of EE (which needs EE's approval alone).
    let genesis = &w.log.entries()[0];
    let mut g = vec![0u8];
    g.extend_from_slice(&genesis.encode());
    write(&root, "roster_log", "genesis", &g)?;
    let state = w.log.current();
    let mut amended = state.record().clone();
    amended.quorum = 2;
    let amend = EntryBody {
        index: 1,
        prev_hash: *state.entry_hash(),
        kind: EntryKind::Amend(amended),
    };
    let mut a = vec![1u8];
    a.extend_from_slice(&amend.encode());
    write(&root, "roster_log", "amend", &a)?;
    let ee = state
        .record()
        .participants
        .iter()
        .find(|p| p.id == "EE")
        .context("EE in the fuzz world")?;
    let devices = EntryBody {
        index: 1,
        prev_hash: *state.entry_hash(),
        kind: EntryKind::Devices {
            participant: "EE".into(),
            devices: ee.devices.clone(),
        },
    };
    let mut d = vec![3u8];
    d.extend_from_slice(&devices.encode());
    write(&root, "roster_log", "devices", &d)?;

    // Frames: one of each kind, and a stream of several.
    let frames = [
        Frame::Hello {
            relay_name: "relay".into(),
            nonce: [9; 32],
        },
        wire::sign_auth(&w.ee, "front-office", &[1; 32], &[2; 32]),
        Frame::Welcome {
            participant: "EE".into(),
            device: "front-office".into(),
            pending: 3,
        },
        Frame::Send {
            envelope: sealed.as_bytes().to_vec(),
        },
        Frame::Accepted {
            msg_id: sealed.msg_id(),
            seq: 7,
        },
        Frame::Rejected {
            msg_id: sealed.msg_id(),
            code: ErrorCode::ClockSkew,
            reason: "clock".into(),
        },
        Frame::Deliver {
            seq: 7,
            received_at_ms: 5,
            envelope: sealed.as_bytes().to_vec(),
        },
        Frame::Ack { up_to_seq: 7 },
        Frame::Error {
            code: ErrorCode::Replaced,
            reason: "replaced".into(),
        },
    ];
    let mut stream = vec![16u8];
    for (i, f) in frames.iter().enumerate() {
        let bytes = wire::encode_frame(f);
        let mut one = vec![255u8];
        one.extend_from_slice(&bytes);
        write(&root, "frame_decoder", &format!("frame-{i}"), &one)?;
        stream.extend_from_slice(&bytes);
    }
    write(&root, "frame_decoder", "stream", &stream)?;

    // Rosters and key files.
    write(
        &root,
        "roster",
        "default",
        &std::fs::read(repo.join("config/roster.toml"))?,
    )?;
    write(
        &root,
        "roster",
        "fuzz-world",
        w.roster.to_file().to_toml().as_bytes(),
    )?;
    write(
        &root,
        "secret_key",
        "plain",
        w.ee.to_secret_toml().as_bytes(),
    )?;

    // Commit log: two records, then a torn third.
    let mut log = Vec::new();
    for seq in 1..=3u64 {
        log.extend_from_slice(&encode_record(&WalRecord {
            seq,
            msg_id: MsgId([seq as u8; 16]),
            entry: LogEntry {
                received_at_ms: 1_764_000_000_000 + seq,
                sender: "UA".into(),
                recipients: vec!["EE".into(), "NATO".into()],
                envelope: sealed.as_bytes().to_vec(),
            },
        }));
    }
    write(&root, "commit_log", "torn", &log[..log.len() - 9])?;
    write(&root, "commit_log", "intact", &log)?;

    // Archive record plaintext (index 3).
    let opened = tallinn_common::envelope::open(sealed.as_bytes(), &w.roster, &w.ee)?;
    let record = Record {
        index: 3,
        prev_hash: [4; 32],
        direction: Direction::Received,
        seq: 7,
        received_at_ms: 1_764_000_000_005,
        msg_id: sealed.msg_id(),
        sender: "UA".into(),
        channel: "plenary".into(),
        sent_at_ms: 1_764_000_000_000,
        message: opened.message().clone(),
        envelope: sealed.as_bytes().to_vec(),
        content_key: None,
    };
    let mut rec = vec![3u8];
    rec.extend_from_slice(&postcard::to_allocvec(&record)?);
    write(&root, "archive_record", "received", &rec)?;
    println!("seed corpora written to {}", root.display());
    Ok(())
}
