//! History for a late joiner (`tallinn share`, PROTOCOL.md §18.5)
//! against a real relay: a participant admitted later receives what it
//! missed, verified against the roster of each original's epoch; forged
//! shares are quarantined; the auditor proves shared records and
//! cross-checks exports without false alarms.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tallinn_client::archive::Filter;
use tallinn_client::Client;
use tallinn_common::envelope::seal_v2;
use tallinn_common::identity::{Identity, ParticipantId};
use tallinn_common::message::{Kind, Loe, Message, Priority, Tlp};
use tallinn_common::roster::{DeviceRecord, ParticipantRecord, Role};

use crate::coordination::{amend, export_and_audit, note, now};
use crate::evidence::doctor_wrap;
use crate::roster::v2::V2;
use crate::util::*;

/// A client for a participant admitted after the migration: its own keys
/// and archive, UA's connection settings.
fn late_settings(v2: &V2, keys: Identity, dir: &Path) -> tallinn_client::Settings {
    let mut s = v2.settings("UA");
    s.identity = Arc::new(keys);
    s.archive_dir = dir.to_path_buf();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_shared_with_a_late_joiner_is_verified_and_forgeries_are_quarantined() {
    timed(async {
        let mut v2 = V2::new(limits()).await;
        let ee = v2.client("EE").await;
        let request = Message {
            kind: Kind::Request {
                loe: Loe::Immediate,
                category: "hardware".into(),
                priority: Priority::High,
            },
            ..note(Tlp::Amber, "Generators for Kharkiv")
        };
        let (req, _) = ee.send("plenary", &request).await.unwrap();
        let (green, _) = ee
            .send("plenary", &note(Tlp::Green, "Minutes of the last plenary"))
            .await
            .unwrap();
        let (strict, _) = ee
            .send("plenary", &note(Tlp::AmberStrict, "Not for newcomers"))
            .await
            .unwrap();
        let (back, _) = ee
            .send("back-office", &note(Tlp::Amber, "Back office only"))
            .await
            .unwrap();

        // Lithuania is admitted: a member, in every all-member channel.
        let lt = Identity::generate(ParticipantId::new("LT").unwrap());
        let (lt_sign, lt_enc) = (lt.public().sign_key.to_bytes(), lt.public().enc_key);
        let members: Vec<String> = v2
            .log
            .current()
            .participants()
            .filter(|p| p.role == Role::Member)
            .map(|p| p.id.to_string())
            .collect();
        amend(&mut v2, &ee, |r| {
            r.participants.push(ParticipantRecord {
                id: "LT".into(),
                name: "Lithuania".into(),
                role: 0,
                identity_key: lt_sign,
                devices: vec![DeviceRecord {
                    device: "default".into(),
                    suite: 1,
                    sign_key: lt_sign,
                    enc_key: lt_enc,
                }],
            });
            r.participants.sort_by(|a, b| a.id.cmp(&b.id));
            for c in &mut r.channels {
                if members.iter().all(|m| c.members.contains(m)) {
                    c.members.push("LT".into());
                    c.members.sort();
                }
            }
        })
        .await;
        ee.sync(Duration::from_secs(20), |_| {}).await.unwrap();

        // The chair shares plenary's history; AMBER+STRICT is refused, and
        // a back-office message can never reach LT.
        let (conv, added) = ee.direct_conversation(&["LT".into()]).unwrap();
        assert_eq!(conv, "@EE+LT+UA");
        assert_eq!(added, ["UA"]);
        let mut history = ee
            .archive()
            .search(
                &Filter {
                    channel: Some("plenary".into()),
                    ..Default::default()
                },
                100,
            )
            .unwrap();
        history.reverse();
        history.push(ee.archive().get(&back).unwrap().unwrap());
        let outcome = ee.share(&conv, &history).unwrap();
        let by_id = |id| outcome.iter().find(|(m, _)| *m == id).unwrap().1.clone();
        assert!(by_id(req).is_ok() && by_id(green).is_ok(), "{outcome:?}");
        assert!(by_id(strict).unwrap_err().contains("AMBER+STRICT"));
        assert!(by_id(back)
            .unwrap_err()
            .contains("LT does not read back-office"));

        // Two forged shares: content that does not match the original's
        // commitment, and an original whose signature fails.
        let original = ee.archive().get(&green).unwrap().unwrap();
        let wrong_key = Message {
            kind: Kind::Share {
                envelope: original.envelope.clone(),
                content_key: [7; 32],
            },
            ..Message::note(Tlp::Green, "", "")
        };
        let mut bad_sig = original.envelope.clone();
        let last = bad_sig.len() - 1;
        bad_sig[last] ^= 1;
        let forged_sig = Message {
            kind: Kind::Share {
                envelope: bad_sig,
                content_key: original.content_key.unwrap(),
            },
            ..Message::note(Tlp::Green, "", "")
        };
        // A third: an original whose wrap for Ukraine is not the committed
        // key's (every direct recipient would have quarantined it).
        let undelivered = seal_v2(
            &v2.env.dep.id("EE"),
            "default",
            v2.log.current(),
            "plenary",
            &note(Tlp::Green, "Ukraine cannot read this"),
            now(),
        )
        .unwrap();
        let bad_wrap = Message {
            kind: Kind::Share {
                envelope: doctor_wrap(undelivered.as_bytes(), &v2.env.dep.id("EE"), "UA"),
                content_key: *undelivered.content_key(),
            },
            ..Message::note(Tlp::Green, "", "")
        };
        for m in [&wrong_key, &forged_sig, &bad_wrap] {
            ee.send(&conv, m).await.unwrap();
        }
        ee.sync(Duration::from_secs(20), |_| {}).await.unwrap();
        ee.close().await;
        drop(ee);

        let lt_dir = v2.env.dir.path().join("LT-data");
        let lt_client = Client::connect(late_settings(&v2, lt, &lt_dir))
            .await
            .unwrap();
        lt_client.discard_events();
        lt_client
            .sync(Duration::from_secs(20), |_| {})
            .await
            .unwrap();
        let a = lt_client.archive();
        for id in [req, green] {
            let r = a.get(&id).unwrap().unwrap();
            assert_eq!(r.direction, tallinn_client::archive::Direction::Shared);
            assert_eq!(r.sender, "EE", "the original's sender");
            let share = a.record(r.index - 1).unwrap().unwrap();
            assert_eq!(share.sender, "EE");
            assert_eq!(share.channel, "@EE+LT+UA");
        }
        assert!(a.get(&strict).unwrap().is_none());
        let q = a.quarantined().unwrap();
        assert_eq!(q.len(), 3, "{q:?}");
        assert!(
            q.iter()
                .any(|q| q.reason.contains("the original: the wrap for UA/default")),
            "{q:?}"
        );
        assert!(
            q.iter().any(|q| q.reason.contains("key commitment")),
            "{q:?}"
        );
        assert!(
            q.iter().any(|q| q
                .reason
                .contains("does not verify under the roster of its epoch")),
            "{q:?}"
        );
        // The shared request is a case in LT's tracker.
        let cases = a
            .cases(&tallinn_client::archive::CaseQuery {
                states: vec![],
                loe: None,
                priority: None,
                scope: tallinn_client::archive::CaseScope::All,
                unanswered: true,
                limit: 10,
            })
            .unwrap();
        assert_eq!(cases.len(), 1);
        assert_eq!(cases[0].facts.request, req);
        // Its export proves each shared record against the Share before it.
        let (_, report) = export_and_audit(
            &lt_client,
            "LT",
            &v2,
            &v2.env.dir.path().join("lt.jsonl"),
            false,
        );
        assert_eq!(report["shared"], 2, "{report}");
        // A selective export of the conversation the shares came in does not
        // hand out the originals' content keys: a Share is selected as its
        // original (plenary), so both are written redacted.
        let sel_path = v2.env.dir.path().join("lt-conversation.jsonl");
        let options = tallinn_client::export::ExportOptions {
            recover_key: None,
            selection: tallinn_client::export::Selection {
                channel: Some("@EE+LT+UA".into()),
                ..Default::default()
            },
        };
        tallinn_client::export::export_with(
            lt_client.archive(),
            &v2.env.dep.roster,
            "",
            "LT",
            "default",
            now(),
            &options,
            std::fs::File::create(&sel_path).unwrap(),
            |_| {},
        )
        .unwrap();
        let text = std::fs::read_to_string(&sel_path).unwrap();
        assert!(
            !text.contains("\"name\":\"share\""),
            "a Share exported outside its original's selection"
        );
        // Cross-checked with the sharer's own export: no false alarm (a
        // shared record carries its Share's seq, not the original's).
        let dir = v2.env.dir.path().to_path_buf();
        let ee = v2.client("EE").await;
        export_and_audit(&ee, "EE", &v2, &dir.join("ee.jsonl"), false);
        ee.close().await;
        drop(ee);
        let dep = hex::encode(v2.deployment);
        let lt_path = dir.join("lt.jsonl");
        let o = run_bin(
            "tallinn-audit",
            &[
                "cross",
                "--deployment",
                &dep,
                lt_path.to_str().unwrap(),
                dir.join("ee.jsonl").to_str().unwrap(),
            ],
        );
        assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
        // A doctored export: the Share before a shared record replaced by a
        // line withheld for TLP:RED (the chain still holds) is refused.
        let mut lines: Vec<Value> = std::fs::read_to_string(&lt_path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let at = lines
            .iter()
            .position(|l| l["direction"] == "shared")
            .unwrap();
        let share = lines[at - 1].clone();
        lines[at - 1] = serde_json::json!({
            "type": "record",
            "index": share["index"],
            "prev_hash": share["prev_hash"],
            "record_hash": share["record_hash"],
            "redacted": true,
            "withheld": "tlp",
            "tlp": "RED",
        });
        let doctored = dir.join("lt-doctored.jsonl");
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(&doctored, text).unwrap();
        let o = run_bin(
            "tallinn-audit",
            &[
                "verify",
                doctored.to_str().unwrap(),
                "--deployment",
                &dep,
                "--json",
            ],
        );
        assert_eq!(o.status.code(), Some(3), "{}{}", stdout(&o), stderr(&o));
        let report: Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(report["failure"]["check"], "share", "{report}");

        // Ukraine, always in the conversation, already had both: the shares
        // are archived, the originals not twice.
        let ua = v2.client("UA").await;
        assert_eq!(
            ua.archive().get(&req).unwrap().unwrap().direction,
            tallinn_client::archive::Direction::Received
        );
        ua.close().await;
        drop(ua);
        lt_client.close().await;
        drop(lt_client);
    })
    .await;
}
