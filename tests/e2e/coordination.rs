//! The coordination work (issue 14) against a real relay running the
//! roster log: announcements posted by the chair alone (relay and every
//! recipient, at each epoch), direct conversations that always include
//! Ukraine and an observer only when named, TLP ceilings (refused at send,
//! flagged at receipt, RED left out of exports), history shared with a late
//! joiner (and forged shares quarantined), and the CLI of `requests` and
//! `share`.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tallinn_client::archive::Filter;
use tallinn_client::outbox::{OutboxEntry, Refusal};
use tallinn_client::{Client, ClientError};
use tallinn_common::envelope::{seal_v2, seal_v2_to, SealedEnvelope};
use tallinn_common::message::{Message, Tlp};
use tallinn_common::roster::{EntryKind, PostError};
use tallinn_common::wire::ErrorCode;

use crate::roster::v2::V2;
use crate::util::*;

/// Seven members including the beneficiary and the chair (EE): the quorum.
pub(crate) const QUORUM: [&str; 7] = ["CA", "DE", "DK", "EE", "FR", "PL", "UA"];

pub(crate) fn now() -> u64 {
    tallinn_common::unix_ms(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap(),
    )
}

pub(crate) fn note(tlp: Tlp, subject: &str) -> Message {
    Message::note(tlp, subject, "body")
}

/// Every device of `ids` in the current roster, but `except`.
pub(crate) fn devices(
    v2: &V2,
    ids: &[&str],
    except: (&str, &str),
) -> Vec<(String, String, [u8; 32])> {
    let s = v2.log.current();
    let mut out = Vec::new();
    for id in ids {
        let p = s.participant(id).unwrap();
        for d in p.devices.values() {
            if (p.id.as_str(), d.device.as_str()) != except {
                out.push((p.id.to_string(), d.device.to_string(), d.enc_key));
            }
        }
    }
    out.sort();
    out
}

/// A doctored sender: `from` seals `m` into `channel` for exactly `to`,
/// whatever the roster says.
fn forge(
    v2: &V2,
    from: &str,
    channel: &str,
    to: &[(String, String, [u8; 32])],
    m: &Message,
) -> SealedEnvelope {
    let list: Vec<(&str, &str, [u8; 32])> = to
        .iter()
        .map(|(p, d, k)| (p.as_str(), d.as_str(), *k))
        .collect();
    seal_v2_to(
        &v2.env.dep.id(from),
        "default",
        channel,
        v2.log.epoch(),
        &list,
        m,
        now(),
        &mut rand::rng(),
    )
    .unwrap()
}

/// Sends `sealed` from `who`'s outbox as if its own client had sealed it;
/// the relay's refusal, if it refused.
async fn via_outbox(v2: &V2, who: &str, channel: &str, sealed: &SealedEnvelope) -> Option<Refusal> {
    {
        let c = Client::open(v2.settings(who)).unwrap();
        c.outbox()
            .put(&OutboxEntry {
                msg_id: sealed.msg_id(),
                channel: channel.into(),
                subject: "doctored".into(),
                created_at_ms: now(),
                envelope: sealed.as_bytes().to_vec(),
                content_key: *sealed.content_key(),
                attempts: 0,
            })
            .unwrap();
    }
    let c = v2.client(who).await;
    let refusal = c
        .outbox()
        .list()
        .unwrap()
        .into_iter()
        .find(|l| l.entry.msg_id == sealed.msg_id())
        .and_then(|l| l.refused);
    c.close().await;
    drop(c);
    refusal
}

/// Plays a compromised relay: stops it, writes `items` (envelope, device
/// recipients) into its store past every check, starts it again.
async fn inject(v2: &mut V2, sender: &str, items: Vec<(&SealedEnvelope, &[&str])>) {
    use tallinn_relay::store::{device_recipient, LogEntry, SledStore, Store};
    v2.env.stop_relay().await;
    {
        let store = SledStore::open(&v2.env.dep.dir.join("relay-data")).unwrap();
        for (sealed, to) in items {
            store
                .append(
                    sealed.msg_id(),
                    &LogEntry {
                        received_at_ms: now(),
                        sender: sender.into(),
                        recipients: to.iter().map(|p| device_recipient(p, "default")).collect(),
                        envelope: sealed.as_bytes().to_vec(),
                    },
                )
                .unwrap();
        }
        store.flush().unwrap();
    }
    v2.env.restart_relay().await;
}

/// Amends the roster with `edit`, approved by the quorum, through `via`.
pub(crate) async fn amend(
    v2: &mut V2,
    via: &Client,
    edit: impl FnOnce(&mut tallinn_common::roster::StateRecord),
) {
    let mut record = v2.log.current().record().clone();
    edit(&mut record);
    let e = v2.next(EntryKind::Amend(record), &QUORUM);
    via.submit_roster_entry(&e).await.unwrap();
    v2.log.append(e).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announcements_are_posted_by_the_chair_alone_at_each_epoch() {
    timed(async {
        let mut v2 = V2::new(limits()).await;
        let ee = v2.client("EE").await;
        ee.send("announcements", &note(Tlp::Green, "Plenary on Thursday"))
            .await
            .unwrap();
        // PL's own client refuses before sealing anything.
        let pl = v2.client("PL").await;
        match pl
            .send("announcements", &note(Tlp::Green, "not the chair"))
            .await
        {
            Err(ClientError::NotAllowed(PostError::ChairOnly { chair, .. })) => {
                assert_eq!(chair, "EE")
            }
            other => panic!("PL posted to announcements: {other:?}"),
        }
        assert!(pl.outbox().list().unwrap().is_empty());
        pl.close().await;
        drop(pl);
        ee.close().await;
        drop(ee);
        // A doctored PL client: the relay refuses.
        let readers = [
            "CA", "DE", "DK", "EE", "EU", "FR", "GB", "IT", "NATO", "NL", "PL", "SE", "UA", "US",
        ];
        let to = devices(&v2, &readers, ("PL", "default"));
        let forged = forge(
            &v2,
            "PL",
            "announcements",
            &to,
            &note(Tlp::Green, "PL speaks for the chair"),
        );
        let refusal = via_outbox(&v2, "PL", "announcements", &forged)
            .await
            .expect("the relay refused it");
        assert_eq!(refusal.code, ErrorCode::ReadOnly, "{refusal:?}");
        assert!(refusal.reason.contains("chair (EE)"), "{}", refusal.reason);
        // A doctored relay delivers one anyway: every recipient quarantines it.
        let forged = forge(
            &v2,
            "PL",
            "announcements",
            &to,
            &note(Tlp::Green, "forwarded anyway"),
        );
        inject(&mut v2, "PL", vec![(&forged, &["UA", "GB", "NATO"][..])]).await;
        for who in ["UA", "GB", "NATO"] {
            let c = v2.client(who).await;
            let q = c.archive().quarantined().unwrap();
            assert_eq!(q.len(), 1, "{who}: {q:?}");
            assert!(
                q[0].reason.contains("chair (EE) only"),
                "{who}: {}",
                q[0].reason
            );
            assert!(c.archive().get(&forged.msg_id()).unwrap().is_none());
            c.close().await;
            drop(c);
        }

        // The chair passes to Poland through the roster log.
        let pl = v2.client("PL").await;
        amend(&mut v2, &pl, |r| r.chair = "PL".into()).await;
        pl.sync(Duration::from_secs(20), |_| {}).await.unwrap();
        let (from_pl, _) = pl
            .send(
                "announcements",
                &note(Tlp::Green, "The new chair greets you"),
            )
            .await
            .unwrap();
        pl.close().await;
        drop(pl);
        let ee = v2.client("EE").await;
        assert!(matches!(
            ee.send("announcements", &note(Tlp::Green, "still me?"))
                .await,
            Err(ClientError::NotAllowed(PostError::ChairOnly { .. }))
        ));
        ee.close().await;
        drop(ee);
        let to = devices(&v2, &readers, ("EE", "default"));
        let forged = forge(
            &v2,
            "EE",
            "announcements",
            &to,
            &note(Tlp::Green, "the old chair"),
        );
        let refusal = via_outbox(&v2, "EE", "announcements", &forged)
            .await
            .expect("the relay refused the old chair");
        assert!(refusal.reason.contains("chair (PL)"), "{}", refusal.reason);
        let ua = v2.client("UA").await;
        assert!(ua.archive().get(&from_pl).unwrap().is_some());
        assert!(ua.archive().get(&forged.msg_id()).unwrap().is_none());
        ua.close().await;
        drop(ua);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_conversations_always_include_ukraine_and_observers_only_when_named() {
    timed(async {
        let mut v2 = V2::new(limits()).await;
        let pl = v2.client("PL").await;
        assert_eq!(
            pl.direct_conversation(&["UA".into()]).unwrap(),
            ("@PL+UA".to_string(), vec![])
        );
        assert_eq!(
            pl.direct_conversation(&["GB".into()]).unwrap(),
            ("@GB+PL+UA".to_string(), vec!["UA".to_string()])
        );
        let (bilateral, _) = pl
            .send("@PL+UA", &note(Tlp::Red, "bilateral, RED"))
            .await
            .unwrap();
        match pl
            .send("@GB+PL", &note(Tlp::Amber, "without Ukraine"))
            .await
        {
            Err(ClientError::NotAllowed(PostError::Conversation { reason, .. })) => {
                assert!(reason.contains("beneficiary UA"), "{reason}")
            }
            other => panic!("sent without the beneficiary: {other:?}"),
        }
        pl.close().await;
        drop(pl);
        // The relay refuses a doctored PL client's conversation without
        // Ukraine, and one that adds an observer nobody named.
        let no_ua = forge(
            &v2,
            "PL",
            "@GB+PL",
            &devices(&v2, &["GB"], ("", "")),
            &note(Tlp::Amber, "no UA"),
        );
        let r = via_outbox(&v2, "PL", "@GB+PL", &no_ua)
            .await
            .expect("refused");
        assert_eq!(r.code, ErrorCode::NotAMember, "{r:?}");
        assert!(r.reason.contains("beneficiary UA"), "{}", r.reason);
        let plus_nato = forge(
            &v2,
            "PL",
            "@PL+UA",
            &devices(&v2, &["NATO", "UA"], ("", "")),
            &note(Tlp::Amber, "NATO listens in"),
        );
        let r = via_outbox(&v2, "PL", "@PL+UA", &plus_nato)
            .await
            .expect("refused");
        assert_eq!(r.code, ErrorCode::RecipientsMismatch, "{r:?}");
        assert!(r.reason.contains("NATO"), "{}", r.reason);
        // A doctored relay delivers both: each recipient refuses them.
        let no_ua = forge(
            &v2,
            "PL",
            "@GB+PL",
            &devices(&v2, &["GB"], ("", "")),
            &note(Tlp::Amber, "no UA"),
        );
        let plus_nato = forge(
            &v2,
            "PL",
            "@PL+UA",
            &devices(&v2, &["NATO", "UA"], ("", "")),
            &note(Tlp::Amber, "NATO listens in"),
        );
        inject(
            &mut v2,
            "PL",
            vec![(&no_ua, &["GB"][..]), (&plus_nato, &["UA", "NATO"][..])],
        )
        .await;
        for (who, why) in [
            ("GB", "beneficiary UA"),
            ("UA", "unexpected \"NATO/default\""),
            ("NATO", "unexpected \"NATO/default\""),
        ] {
            let c = v2.client(who).await;
            let q = c.archive().quarantined().unwrap();
            assert_eq!(q.len(), 1, "{who}: {q:?}");
            assert!(q[0].reason.contains(why), "{who}: {}", q[0].reason);
            c.close().await;
            drop(c);
        }
        // Ukraine has the bilateral message, unflagged (RED is allowed in
        // direct conversations); GB and the observers never had it.
        let ua = v2.client("UA").await;
        let r = ua.archive().get(&bilateral).unwrap().unwrap();
        assert_eq!(r.channel, "@PL+UA");
        assert_eq!(ua.archive().tlp_violation(r.index).unwrap(), None);
        let page = ua
            .archive()
            .search(
                &Filter {
                    channel: Some("@PL+UA".into()),
                    ..Default::default()
                },
                10,
            )
            .unwrap();
        assert_eq!(
            page.len(),
            1,
            "search shows the conversation like a channel"
        );
        ua.close().await;
        drop(ua);
        let gb = v2.client("GB").await;
        assert!(gb.archive().get(&bilateral).unwrap().is_none());
        gb.close().await;
        drop(gb);
    })
    .await;
}

/// Exports `c` (version 2) with or without TLP:RED, audits it; returns the
/// lines and the audit report.
pub(crate) fn export_and_audit(
    c: &Client,
    who: &str,
    v2: &V2,
    path: &Path,
    red: bool,
) -> (Vec<Value>, Value) {
    let file = std::fs::File::create(path).unwrap();
    let options = tallinn_client::export::ExportOptions {
        recover_key: None,
        selection: tallinn_client::export::Selection {
            include_tlp_red: red,
            ..Default::default()
        },
    };
    tallinn_client::export::export_with(
        c.archive(),
        &v2.env.dep.roster,
        "",
        who,
        "default",
        now(),
        &options,
        file,
        |_| {},
    )
    .unwrap();
    let dep = hex::encode(v2.deployment);
    let o = run_bin(
        "tallinn-audit",
        &[
            "verify",
            path.to_str().unwrap(),
            "--deployment",
            &dep,
            "--json",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let report: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let lines = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (lines, report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tlp_ceilings_are_refused_at_send_flagged_at_receipt_and_red_stays_out_of_exports() {
    timed(async {
        let v2 = V2::new(limits()).await;
        let pl = v2.client("PL").await;
        match pl
            .send("plenary", &note(Tlp::Red, "RED to fourteen parties"))
            .await
        {
            Err(e @ ClientError::AboveTlp { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains("TLP:AMBER+STRICT") && text.contains("--to"),
                    "{text}"
                );
            }
            other => panic!("RED went to plenary: {other:?}"),
        }
        assert!(pl.outbox().list().unwrap().is_empty(), "nothing stored");
        pl.send("plenary", &note(Tlp::AmberStrict, "at the ceiling"))
            .await
            .unwrap();
        let (red, _) = pl
            .send("@PL+UA", &note(Tlp::Red, "RED, bilateral"))
            .await
            .unwrap();
        pl.close().await;
        drop(pl);
        // A doctored sender seals RED into plenary; the relay cannot see
        // the label and forwards it; every recipient flags it.
        let violation = seal_v2(
            &v2.env.dep.id("PL"),
            "default",
            v2.log.current(),
            "plenary",
            &note(Tlp::Red, "RED where observers read"),
            now(),
        )
        .unwrap();
        assert!(via_outbox(&v2, "PL", "plenary", &violation).await.is_none());
        let ua = v2.client("UA").await;
        let r = ua.archive().get(&violation.msg_id()).unwrap().unwrap();
        assert_eq!(
            ua.archive().tlp_violation(r.index).unwrap(),
            Some((Tlp::Red, Tlp::AmberStrict))
        );
        assert_eq!(ua.archive().stats().unwrap().tlp_violations, 1);
        let nato = v2.client("NATO").await;
        let r = nato.archive().get(&violation.msg_id()).unwrap().unwrap();
        assert!(nato.archive().tlp_violation(r.index).unwrap().is_some());
        nato.close().await;
        drop(nato);

        // UA's export leaves both RED messages out, keeping their marking,
        // and still verifies; with --include-tlp-red they are there in full.
        let dir = v2.env.dir.path().to_path_buf();
        let (lines, report) = export_and_audit(&ua, "UA", &v2, &dir.join("ua.jsonl"), false);
        let withheld: Vec<&Value> = lines.iter().filter(|l| l["withheld"] == "tlp").collect();
        assert_eq!(withheld.len(), 2, "{lines:?}");
        assert!(withheld
            .iter()
            .all(|l| l["tlp"] == "RED" && l.get("subject").is_none()));
        assert!(!lines.iter().any(|l| l["msg_id"] == red.to_hex()));
        assert_eq!(report["withheld_tlp"], 2, "{report}");
        let (lines, report) = export_and_audit(&ua, "UA", &v2, &dir.join("ua-red.jsonl"), true);
        assert!(lines
            .iter()
            .any(|l| l["msg_id"] == red.to_hex() && l["tlp"] == "RED"));
        assert_eq!(report["withheld_tlp"], 0, "{report}");
        // Every exported record carries its marking.
        assert!(lines[1..].iter().all(|l| l["tlp"].is_string()), "{lines:?}");
        ua.close().await;
        drop(ua);
    })
    .await;
}
