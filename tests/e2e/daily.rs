//! Daily use without the agent: saving attachments with hostile names,
//! the quarantine's retry and purge, and the outbox's drop.

use std::collections::BTreeMap;
use std::sync::Arc;

use tallinn_common::identity::{Identity, ParticipantId};
use tallinn_common::message::{Attachment, Message, Tlp};

use crate::util::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attachment_save_writes_only_inside_the_folder() {
    timed(async {
        let env = Env::new().await;
        let ua = env.client("UA", "default").await;
        let names = [
            "../../x",
            "/etc/passwd",
            ".bashrc",
            "evil\u{1b}]0;t\u{7}\u{202e}fdp.exe",
            "ok.txt",
        ];
        let mut m = Message::note(Tlp::Amber, "files", "see attached");
        for (i, n) in names.iter().enumerate() {
            m.attachments.push(Attachment {
                name: (*n).into(),
                media_type: "text/plain".into(),
                data: format!("content {i}").into_bytes(),
            });
        }
        let (id, _) = ua.send("front-office", &m).await.unwrap();
        ua.close().await;
        assert!(env.cli("EE", &["sync"]).status.success());

        let root = env.dir.path().join("save-here");
        std::fs::create_dir_all(&root).unwrap();
        let out_dir = root.join("inbox-files");
        let out = env.cli(
            "EE",
            &[
                "attachment",
                "save",
                &id.to_hex()[..8],
                "--out",
                out_dir.to_str().unwrap(),
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let mut written: Vec<String> = std::fs::read_dir(&out_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        written.sort();
        assert_eq!(
            written,
            [
                "_._.._x",
                "_bashrc",
                "_etc_passwd",
                "evil_]0;t__fdp.exe",
                "ok.txt"
            ],
            "one plain, visible name each"
        );
        // Nothing beside the folder, nothing above it.
        let beside: Vec<_> = std::fs::read_dir(&root).unwrap().collect();
        assert_eq!(beside.len(), 1, "{beside:?}");
        assert!(!env.dir.path().join("x").exists());
        for (i, w) in [
            "_._.._x",
            "_etc_passwd",
            "_bashrc",
            "evil_]0;t__fdp.exe",
            "ok.txt",
        ]
        .iter()
        .enumerate()
        {
            assert_eq!(
                std::fs::read_to_string(out_dir.join(w)).unwrap(),
                format!("content {i}")
            );
        }
        // The terminal never sees the raw name.
        let text = format!("{}{}", stdout(&out), stderr(&out));
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
        // One by name, never over the first.
        let out = env.cli(
            "EE",
            &[
                "attachment",
                "save",
                &id.to_hex(),
                "ok.txt",
                "--out",
                out_dir.to_str().unwrap(),
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(out_dir.join("ok (2).txt").exists());
        let out = env.cli("EE", &["attachment", "save", &id.to_hex(), "nope.pdf"]);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stderr(&out).contains("has no attachment"),
            "{}",
            stderr(&out)
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantine_retry_archives_what_verifies_now_and_purge_deletes_by_age() {
    timed(async {
        let env = Env::new().await;
        // EE's roster is out of date: it still has PL's old key.
        let mut stale: BTreeMap<String, Arc<Identity>> = env.dep.ids.clone();
        stale.insert(
            "PL".into(),
            Arc::new(Identity::generate(ParticipantId::new("PL").unwrap())),
        );
        let ee = env.dep.participant_dir("EE");
        std::fs::write(
            ee.join("roster-stale.toml"),
            tallinn_tests::deployment::roster_text(&stale),
        )
        .unwrap();
        let config = ee.join("client.toml");
        let good = std::fs::read_to_string(&config).unwrap();
        let use_stale = || {
            std::fs::write(&config, good.replace("../roster.toml", "roster-stale.toml")).unwrap()
        };
        use_stale();

        let pl = env.client("PL", "default").await;
        pl.send(
            "back-office",
            &Message::note(Tlp::Amber, "from the re-keyed PL", "x"),
        )
        .await
        .unwrap();
        assert!(env.cli("EE", &["sync"]).status.success());
        let q: serde_json::Value =
            serde_json::from_str(&stdout(&env.cli("EE", &["quarantine", "--json"]))).unwrap();
        assert_eq!(q.as_array().unwrap().len(), 1, "{q}");

        // Still stale: nothing verifies yet.
        let out = env.cli("EE", &["quarantine", "retry"]);
        assert!(stdout(&out).contains("0 archived"), "{}", stdout(&out));
        // The current roster: it verifies now, and leaves the quarantine.
        std::fs::write(&config, &good).unwrap();
        let out = env.cli("EE", &["quarantine", "retry"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            stdout(&out).contains("1 archived") && stdout(&out).contains("0 still"),
            "{}",
            stdout(&out)
        );
        assert!(stdout(&env.cli("EE", &["inbox"])).contains("from the re-keyed PL"));

        // Purge by age.
        use_stale();
        pl.send("back-office", &Message::note(Tlp::Amber, "again", "y"))
            .await
            .unwrap();
        pl.close().await;
        assert!(env.cli("EE", &["sync"]).status.success());
        let out = env.cli("EE", &["quarantine", "purge", "--older-than", "1h"]);
        assert!(stdout(&out).contains("0 quarantined"), "{}", stdout(&out));
        let out = env.cli("EE", &["quarantine", "purge", "--older-than", "0s"]);
        assert!(stdout(&out).contains("1 quarantined"), "{}", stdout(&out));
        let q: serde_json::Value =
            serde_json::from_str(&stdout(&env.cli("EE", &["quarantine", "--json"]))).unwrap();
        assert_eq!(q, serde_json::json!([]));
        let out = env.cli("EE", &["quarantine", "purge", "--older-than", "soon"]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    })
    .await;
}
