//! `tallinn-audit` alone: an export proven and each tampering named; a
//! message withheld from one recipient found by cross-checking exports.

use super::*;

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
