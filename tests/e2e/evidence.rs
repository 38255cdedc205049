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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auditor_proves_an_export_alone_and_names_each_tampering() {
    timed(async {
        let v2 = V2::new(limits()).await;
        let dir = v2.env.dir.path().to_path_buf();
        let ee = v2.client("EE").await;
        let ua = v2.client("UA").await;
        let pl = v2.client("PL").await;
        ee.send("back-office", &request()).await.unwrap();
        ua.sync(Duration::from_secs(20), |_| {}).await.unwrap();
        ua.send(
            "back-office",
            &Message::note(Tlp::Green, "Thanks", "PL, can you help?"),
        )
        .await
        .unwrap();
        pl.send(
            "back-office",
            &Message::note(Tlp::Amber, "Offer", "two responders from Monday"),
        )
        .await
        .unwrap();
        for c in [&ee, &ua, &pl] {
            c.sync(Duration::from_secs(20), |_| {}).await.unwrap();
        }

        // Every sent record carries the relay's receipt, checked against
        // relay_key; the export carries the content keys.
        let path = dir.join("ua.jsonl");
        export(&ua, "UA", &v2, &path);
        let base = lines(&path);
        assert_eq!(base[0]["version"], 2);
        assert!(
            base[0]["checkpoint"].is_string(),
            "sync leaves a checkpoint"
        );
        let (code, out) = audit(&path, &v2.deployment, &[]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("VERIFIED"), "{out}");
        let (code, out) = audit(&path, &v2.deployment, &["--json"]);
        assert_eq!(code, 0, "{out}");
        let report: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(report["records"], 3);
        assert_eq!(report["sent"], 1);
        assert_eq!(report["receipts"], 1, "UA's sent record has a receipt");
        assert_eq!(report["contents"], 3);
        assert_eq!(report["attachments"], 1);
        // Each of the three went to the two other members' devices.
        assert_eq!(report["wraps"], 6, "{report}");
        assert_eq!(report["checkpoints"].as_array().unwrap().len(), 1);

        // Another deployment is refused before anything else.
        let (code, out) = audit(&path, &[7; 32], &[]);
        assert_eq!(code, 3, "{out}");
        assert!(out.contains("deployment"), "{out}");

        let find = |subject: &str| {
            base.iter()
                .position(|l| l["subject"] == subject)
                .expect("the record is exported")
        };
        let req = find("Need DFIR team");
        let req_index = base[req]["index"].as_u64();
        tampered(
            &dir,
            "subject",
            &base,
            &v2.deployment,
            "content",
            req_index,
            |l| {
                l[req]["subject"] = "Need nothing".into();
            },
        );
        tampered(
            &dir,
            "body",
            &base,
            &v2.deployment,
            "content",
            req_index,
            |l| {
                l[req]["body"] = "a different body".into();
            },
        );
        tampered(
            &dir,
            "attachment",
            &base,
            &v2.deployment,
            "content",
            req_index,
            |l| {
                l[req]["attachments"][0]["data_b64"] = B64.encode(b"two substations").into();
            },
        );
        let other = find("Offer");
        tampered(
            &dir,
            "key",
            &base,
            &v2.deployment,
            "content_key",
            req_index,
            |l| {
                l[req]["content_key"] = l[other]["content_key"].clone();
            },
        );
        tampered(&dir, "swap", &base, &v2.deployment, "chain", Some(0), |l| {
            l.swap(1, 2);
        });
        tampered(&dir, "drop", &base, &v2.deployment, "chain", Some(1), |l| {
            l.remove(2);
        });
        tampered(
            &dir,
            "hash",
            &base,
            &v2.deployment,
            "record_hash",
            Some(0),
            |l| {
                l[1]["received_at_ms"] = (l[1]["received_at_ms"].as_u64().unwrap() + 1).into();
            },
        );
        // A redacted record keeps its place in the chain; one whose hash
        // was changed breaks the link to the next record.
        let redact = |l: &mut Vec<Value>, hash: Value| {
            l[1] = serde_json::json!({
                "type": "record",
                "index": 0,
                "prev_hash": l[1]["prev_hash"],
                "record_hash": hash,
                "redacted": true,
            });
        };
        let mut redacted = base.clone();
        let hash0 = base[1]["record_hash"].clone();
        redact(&mut redacted, hash0);
        let rpath = dir.join("redacted.jsonl");
        write_lines(&rpath, &redacted);
        let (code, out) = audit(&rpath, &v2.deployment, &[]);
        assert_eq!(code, 0, "a correctly redacted record still verifies: {out}");
        assert!(out.contains("(1 redacted)"), "{out}");
        tampered(
            &dir,
            "redacted-hash",
            &base,
            &v2.deployment,
            "chain",
            Some(1),
            |l| {
                redact(l, "00".repeat(32).into());
            },
        );
        // A checkpoint that does not match: the head of another archive.
        tampered(
            &dir,
            "checkpoint",
            &base,
            &v2.deployment,
            "checkpoint",
            None,
            |l| {
                let pl_path = dir.join("pl-for-checkpoint.jsonl");
                export(&pl, "PL", &v2, &pl_path);
                let pl_lines = lines(&pl_path);
                l[0]["checkpoint"] = pl_lines[0]["checkpoint"].clone();
            },
        );
        // The checkpoint handed over independently must agree as well: the
        // relay operator writes the one the relay keeps (the running relay
        // answers on its control socket).
        let cp_path = dir.join("cp.json");
        let relay_toml = v2.env.dep.dir.join("relay.toml");
        let o = run_bin(
            "tallinn-relay",
            &[
                "checkpoint",
                "--config",
                relay_toml.to_str().unwrap(),
                "--participant",
                "UA",
                "--out",
                cp_path.to_str().unwrap(),
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            stdout(&o).contains("checkpoint of 3 records"),
            "{}",
            stdout(&o)
        );
        let from_relay: Value =
            serde_json::from_str(&std::fs::read_to_string(&cp_path).unwrap()).unwrap();
        assert_eq!(from_relay["checkpoint_b64"], base[0]["checkpoint"]);
        let o = run_bin(
            "tallinn-relay",
            &[
                "checkpoint",
                "--config",
                relay_toml.to_str().unwrap(),
                "--participant",
                "NL",
            ],
        );
        assert!(
            !o.status.success(),
            "no checkpoint of a device that never synced"
        );
        let (code, out) = audit(
            &path,
            &v2.deployment,
            &["--checkpoint", cp_path.to_str().unwrap()],
        );
        assert_eq!(code, 0, "{out}");
        let mut short = base.clone();
        short.pop();
        short[0]["records"] = 2.into();
        short[0]["head_hash"] = short[2]["record_hash"].clone();
        short[0]["checkpoint"] = Value::Null;
        let short_path = dir.join("short.jsonl");
        write_lines(&short_path, &short);
        let (code, out) = audit(
            &short_path,
            &v2.deployment,
            &["--checkpoint", cp_path.to_str().unwrap()],
        );
        assert_eq!(code, 3, "an export that ends before the checkpoint: {out}");
        assert!(out.contains("records are missing"), "{out}");
        for c in [ee, ua, pl] {
            c.close().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrap_that_does_not_derive_is_quarantined_and_a_revoked_device_cannot_sign_later() {
    timed(async {
        let mut v2 = V2::new(limits()).await;
        let dir = v2.env.dir.path().to_path_buf();
        // EE, a doctored sender, gives Ukraine a wrap that is not the
        // committed content key's: queued in its outbox as if sealed there.
        let ee_id = v2.env.dep.id("EE");
        let sealed = seal_v2(
            &ee_id,
            "default",
            v2.log.current(),
            "back-office",
            &Message::note(Tlp::Amber, "UA left out", "only PL can read this"),
            now(),
        )
        .unwrap();
        let doctored = doctor_wrap(sealed.as_bytes(), &ee_id, "UA");
        {
            let ee = Client::open(v2.settings("EE")).unwrap();
            ee.outbox()
                .put(&OutboxEntry {
                    msg_id: sealed.msg_id(),
                    channel: "back-office".into(),
                    subject: "UA left out".into(),
                    created_at_ms: now(),
                    envelope: doctored,
                    content_key: *sealed.content_key(),
                    attempts: 0,
                })
                .unwrap();
        }
        let ee = v2.client("EE").await;
        let listed = ee.outbox().list().unwrap();
        assert!(listed.is_empty(), "the relay accepted it: {listed:?}");
        assert_eq!(ee.archive().len(), 1, "archived as sent");
        ee.send(
            "back-office",
            &Message::note(Tlp::Amber, "an honest one", "for everyone"),
        )
        .await
        .unwrap();
        let pl = v2.client("PL").await;
        pl.sync(Duration::from_secs(20), |_| {}).await.unwrap();
        // PL checks the beneficiary's wrap: quarantined with its own reason.
        let q = pl.archive().quarantined().unwrap();
        assert_eq!(q.len(), 1, "{q:?}");
        assert!(
            q[0].reason.contains("UA/default") && q[0].reason.contains("not derived"),
            "{}",
            q[0].reason
        );
        assert_eq!(pl.archive().len(), 1, "the honest one is archived");
        // EE's own archive holds it as sent; the auditor finds the wrap.
        let ee_path = dir.join("ee.jsonl");
        export(&ee, "EE", &v2, &ee_path);
        let (code, out) = audit(&ee_path, &v2.deployment, &["--json"]);
        assert_eq!(code, 3, "{out}");
        let report: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(report["failure"]["check"], "wrap", "{out}");
        assert_eq!(report["failure"]["record"], 0, "{out}");

        // PL's device `default` is revoked (epoch 1, a new `laptop`); a
        // message signed with the revoked key for epoch 1 does not verify.
        let pl_id = v2.env.dep.id("PL");
        let laptop =
            Identity::generate(tallinn_common::identity::ParticipantId::new("PL").unwrap());
        let e = v2.next(
            EntryKind::Devices {
                participant: "PL".into(),
                devices: vec![DeviceRecord {
                    device: "laptop".into(),
                    suite: 1,
                    sign_key: laptop.public().sign_key.to_bytes(),
                    enc_key: laptop.public().enc_key,
                }],
            },
            &["PL"],
        );
        assert_eq!(ee.submit_roster_entry(&e).await.unwrap(), 1);
        v2.log.append(e).unwrap();
        ee.sync(Duration::from_secs(20), |_| {}).await.unwrap();
        let ua = v2.client("UA").await;
        ua.sync(Duration::from_secs(20), |_| {}).await.unwrap();
        let ua_path = dir.join("ua-revoked.jsonl");
        export(&ua, "UA", &v2, &ua_path);
        let (code, out) = audit(&ua_path, &v2.deployment, &[]);
        assert_eq!(code, 0, "{out}");
        // The thief's envelope: PL/default, sealed to epoch 1's recipients.
        let state = v2.log.current();
        let recipients: Vec<(String, String, [u8; 32])> = state
            .recipient_devices("EE", "default", "back-office")
            .unwrap()
            .iter()
            .filter(|(p, _)| p.id.as_str() != "PL")
            .map(|(p, d)| {
                (
                    p.id.as_str().to_string(),
                    d.device.as_str().to_string(),
                    d.enc_key,
                )
            })
            .collect();
        let list: Vec<(&str, &str, [u8; 32])> = recipients
            .iter()
            .map(|(p, d, k)| (p.as_str(), d.as_str(), *k))
            .collect();
        let msg = Message::note(Tlp::Amber, "from a stolen laptop", "trust me");
        let forged = seal_v2_to(
            &pl_id,
            "default",
            "back-office",
            1,
            &list,
            &msg,
            now(),
            &mut rand::rng(),
        )
        .unwrap();
        let mut forged_lines = lines(&ua_path);
        let mut line = forged_lines
            .iter()
            .find(|l| l["type"] == "record")
            .unwrap()
            .clone();
        let h = UntrustedEnvelope::decode(forged.as_bytes())
            .unwrap()
            .claimed_header()
            .clone();
        line["envelope_b64"] = B64.encode(forged.as_bytes()).into();
        line["msg_id"] = h.msg_id.to_hex().into();
        line["sender"] = "PL".into();
        line["sent_at_ms"] = h.sent_at_ms.into();
        line["subject"] = "from a stolen laptop".into();
        line["content_key"] = hex::encode(forged.content_key()).into();
        let last = forged_lines.len() - 1;
        let index = forged_lines[last]["index"].as_u64().unwrap() + 1;
        line["index"] = index.into();
        line["prev_hash"] = forged_lines[last]["record_hash"].clone();
        forged_lines.push(line);
        forged_lines[0]["records"] = (index + 1).into();
        tampered(
            &dir,
            "revoked",
            &forged_lines,
            &v2.deployment,
            "signature",
            Some(index),
            |_| {},
        );
        for c in [ee, pl, ua] {
            c.close().await;
        }
    })
    .await;
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
    std::fs::set_permissions(to, std::fs::metadata(from).unwrap().permissions()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_archive_is_refused_until_recovered_and_the_recovery_is_recorded() {
    timed(async {
        let v2 = V2::new(limits()).await;
        let pdir = v2.env.dep.participant_dir("PL");
        v2.pin("PL");
        let cli = |args: &[&str]| v2.env.cli("PL", args);
        let ee = v2.client("EE").await;
        ee.send("back-office", &Message::note(Tlp::Amber, "first", "1"))
            .await
            .unwrap();
        let o = cli(&["sync"]);
        assert!(o.status.success(), "{}", stderr(&o));
        // A copy of PL's data directory, taken now.
        let data: PathBuf = pdir.join("data");
        let saved = v2.env.dir.path().join("pl-data-copy");
        copy_dir(&data, &saved);
        for s in ["second", "third"] {
            ee.send("back-office", &Message::note(Tlp::Amber, s, "more"))
                .await
                .unwrap();
        }
        let o = cli(&["sync"]);
        assert!(o.status.success(), "{}", stderr(&o));
        // The old copy is put back: the next sync refuses, saying why.
        std::fs::remove_dir_all(&data).unwrap();
        copy_dir(&saved, &data);
        let o = cli(&["sync"]);
        assert!(!o.status.success());
        let err = stderr(&o);
        assert!(
            err.contains("this archive holds 1 records") && err.contains("older copy"),
            "{err}"
        );
        assert!(err.contains("tallinn archive recover"), "{err}");
        // Nothing was archived meanwhile.
        let o = cli(&["inbox", "--json"]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(stdout(&o).matches("\"subject\"").count(), 1);
        // The explicit way forward, recorded.
        let o = cli(&["archive", "recover"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let out = stdout(&o);
        assert!(out.contains("recovered"), "{out}");
        assert!(out.contains("2 records the checkpoint covered"), "{out}");
        let o = cli(&["sync"]);
        assert!(o.status.success(), "{}", stderr(&o));
        ee.send("back-office", &Message::note(Tlp::Amber, "fourth", "after"))
            .await
            .unwrap();
        let o = cli(&["sync"]);
        assert!(o.status.success(), "{}", stderr(&o));
        // PL's own message: the relay's receipt is kept and shown.
        let o = cli(&[
            "send",
            "--channel",
            "back-office",
            "--tlp",
            "AMBER",
            "--subject",
            "receipted",
            "--body",
            "x",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let o = cli(&["inbox", "--mine", "--json"]);
        let mine: Value = serde_json::from_str(&stdout(&o)).unwrap();
        let id = mine[0]["msg_id"].as_str().unwrap().to_string();
        let o = cli(&["show", &id, "--json"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let shown: Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert!(
            shown["receipt"]["status"]
                .as_str()
                .unwrap()
                .starts_with("valid"),
            "{shown}"
        );
        let o = cli(&["show", &id]);
        assert!(stdout(&o).contains("Receipt   valid"), "{}", stdout(&o));
        let export_path = v2.env.dir.path().join("pl-after-recovery.jsonl");
        let o = cli(&["archive", "export", "--out", export_path.to_str().unwrap()]);
        assert!(o.status.success(), "{}", stderr(&o));
        let l = lines(&export_path);
        assert_eq!(l[0]["recoveries"].as_array().unwrap().len(), 1);
        assert!(l
            .iter()
            .any(|r| r["subject"] == "receipted" && r["receipt_b64"].is_string()));
        assert_eq!(l[0]["recoveries"][0]["records"], 1);
        let (code, out) = audit(&export_path, &v2.deployment, &[]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("archive recoveries: 1"), "{out}");
        ee.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_withheld_from_one_recipient_is_found_by_cross_checking_exports() {
    use tallinn_relay::store::{SledStore, Store};
    timed(async {
        let mut v2 = V2::new(limits()).await;
        let dir = v2.env.dir.path().to_path_buf();
        let ee = v2.client("EE").await;
        let (_, seq) = ee
            .send(
                "back-office",
                &Message::note(Tlp::Amber, "withheld", "PL never sees this"),
            )
            .await
            .unwrap();
        let ua = v2.client("UA").await;
        ua.sync(Duration::from_secs(20), |_| {}).await.unwrap();
        ee.close().await;
        ua.close().await;
        drop((ee, ua));
        // The relay "loses" the message for PL: its cursor jumps past it.
        v2.env.stop_relay().await;
        {
            let store = SledStore::open(&v2.env.dep.dir.join("relay-data")).unwrap();
            store.ack("PL", "default", seq, now()).unwrap();
            store.flush().unwrap();
        }
        let relay = v2.env.dep.start_relay_with(None, limits()).await.unwrap();
        v2.env.addr = relay.local_addr();
        v2.env.dep.set_relay_addr(v2.env.addr).unwrap();
        v2.env.relay = Some(relay);
        let ee = v2.client("EE").await;
        ee.send(
            "back-office",
            &Message::note(Tlp::Amber, "later", "PL gets this one"),
        )
        .await
        .unwrap();
        let pl = v2.client("PL").await;
        let ua = v2.client("UA").await;
        for c in [&ee, &pl, &ua] {
            c.sync(Duration::from_secs(20), |_| {}).await.unwrap();
        }
        let mut paths = Vec::new();
        for (c, who) in [(&ee, "EE"), (&ua, "UA"), (&pl, "PL")] {
            let p = dir.join(format!("cross-{who}.jsonl"));
            export(c, who, &v2, &p);
            paths.push(p);
        }
        let dep = hex::encode(v2.deployment);
        let cross = |files: &[&PathBuf]| {
            let mut args = vec!["cross", "--deployment", dep.as_str(), "--json"];
            args.extend(files.iter().map(|p| p.to_str().unwrap()));
            let o = run_bin("tallinn-audit", &args);
            (o.status.code().unwrap_or(-1), stdout(&o) + &stderr(&o))
        };
        let (code, out) = cross(&[&paths[0], &paths[1]]);
        assert_eq!(code, 0, "EE and UA agree: {out}");
        let (code, out) = cross(&[&paths[0], &paths[1], &paths[2]]);
        assert_eq!(code, 3, "{out}");
        let report: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(report["failure"]["check"], "missing", "{out}");
        let detail = report["failure"]["detail"].as_str().unwrap();
        assert!(
            detail.contains(&format!("seq {seq}")) && detail.contains("PL/default"),
            "{detail}"
        );
        for c in [ee, pl, ua] {
            c.close().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_redacts_what_no_hold_covers_and_the_chain_still_verifies() {
    timed(async {
        let v2 = V2::new(limits()).await;
        let dir = v2.env.dir.path().to_path_buf();
        let pdir = v2.env.dep.participant_dir("PL");
        let config = pdir.join("client.toml");
        let text = std::fs::read_to_string(&config).unwrap();
        let pin = format!("deployment = \"{}\"\n", hex::encode(v2.deployment));
        std::fs::write(&config, format!("{text}{pin}")).unwrap();
        let cli = |args: &[&str]| {
            let o = v2.env.cli("PL", args);
            assert!(o.status.success(), "{args:?}: {}", stderr(&o));
            stdout(&o)
        };
        let out = cli(&[
            "archive",
            "hold",
            "add",
            "--channel",
            "plenary",
            "--reason",
            "case 7",
        ]);
        assert!(out.contains("legal hold 1 placed"), "{out}");
        let o = v2
            .env
            .cli("PL", &["archive", "hold", "add", "--reason", "no scope"]);
        assert_eq!(o.status.code(), Some(2), "a hold needs a scope");
        let ee = v2.client("EE").await;
        ee.send(
            "back-office",
            &Message::note(Tlp::Amber, "to the back office", "b"),
        )
        .await
        .unwrap();
        ee.send("plenary", &Message::note(Tlp::Green, "to the plenary", "p"))
            .await
            .unwrap();
        cli(&["sync"]);

        // A selective export: the other record redacted, the chain whole.
        let sel = dir.join("plenary-only.jsonl");
        cli(&[
            "archive",
            "export",
            "--out",
            sel.to_str().unwrap(),
            "--channel",
            "plenary",
        ]);
        let l = lines(&sel);
        assert_eq!(l[0]["selection"]["channel"], "plenary");
        assert_eq!(l.iter().filter(|x| x["redacted"] == true).count(), 1);
        assert!(l.iter().any(|x| x["subject"] == "to the plenary"));
        assert!(!l.iter().any(|x| x["subject"] == "to the back office"));
        let (code, out) = audit(&sel, &v2.deployment, &[]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("(1 redacted)"), "{out}");

        // Retention of a moment: everything has expired; the hold keeps
        // the plenary message.
        let text = std::fs::read_to_string(&config).unwrap();
        std::fs::write(&config, format!("{text}retention_days = 0.000000001\n")).unwrap();
        let out = cli(&["archive", "retention", "--json"]);
        let r: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(r["redacted"], 1, "{out}");
        assert_eq!(r["held"], 1, "{out}");
        cli(&["archive", "verify", "--deep"]);
        let inbox: Value = serde_json::from_str(&cli(&["inbox", "--json"])).unwrap();
        assert_eq!(inbox.as_array().unwrap().len(), 1, "{inbox}");
        assert_eq!(inbox[0]["subject"], "to the plenary");
        let full = dir.join("after-retention.jsonl");
        cli(&["archive", "export", "--out", full.to_str().unwrap()]);
        let l = lines(&full);
        assert_eq!(l[0]["holds"].as_array().unwrap().len(), 1);
        assert_eq!(l[0]["holds"][0]["reason"], "case 7");
        assert_eq!(l[0]["holds"][0]["scope"]["channel"], "plenary");
        let (code, out) = audit(&full, &v2.deployment, &[]);
        assert_eq!(code, 0, "{out}");
        assert!(
            out.contains("(1 redacted)") && out.contains("legal holds: 1"),
            "{out}"
        );

        // Released: the hold stays recorded, and retention goes on.
        cli(&["archive", "hold", "release", "1"]);
        let o = v2.env.cli("PL", &["archive", "hold", "release", "1"]);
        assert!(!o.status.success(), "released twice");
        let out = cli(&["archive", "retention", "--json"]);
        let r: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(r["redacted"], 1, "{out}");
        cli(&["archive", "verify"]);
        let holds: Value =
            serde_json::from_str(&cli(&["archive", "hold", "list", "--json"])).unwrap();
        assert!(holds[0]["released_at_ms"].is_u64(), "{holds}");
        let full = dir.join("all-redacted.jsonl");
        cli(&["archive", "export", "--out", full.to_str().unwrap()]);
        let (code, out) = audit(&full, &v2.deployment, &[]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("(2 redacted)"), "{out}");
        ee.close().await;
    })
    .await;
}
