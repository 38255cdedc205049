//! Custody of the archive: an underived wrap quarantined and a revoked
//! device's later signature refused, a rolled-back archive refused until
//! recovered, retention and legal holds.

use super::*;

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
