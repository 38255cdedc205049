//! Key rotation: old-key messages still open, then the old secret is gone
//! from disk; a device without the identity key rotates through its
//! identity device.

use super::*;

/// Every file under `dir`, recursively.
fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_rotation_old_key_messages_open_then_the_old_secret_is_gone_from_disk() {
    timed(async {
        let v2 = V2::new(limits()).await;
        let pdir = v2.env.dep.participant_dir("PL");
        let config = pdir.join("client.toml");
        let text = std::fs::read_to_string(&config).unwrap();
        std::fs::write(
            &config,
            format!(
                "{text}deployment = \"{}\"\nenc_key_grace_days = 0\n",
                hex::encode(v2.deployment)
            ),
        )
        .unwrap();
        let log_path = v2.env.dir.path().join("pl-agent.log");
        let cli = |args: &[&str]| {
            let o = v2.env.cli("PL", args);
            assert!(
                o.status.success(),
                "{args:?}: {}\nthe agent's log:\n{}",
                stderr(&o),
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
            stdout(&o)
        };
        cli(&["sync"]);
        // PL runs the agent from here on: the rotation and the sync
        // borrow the archive from it, and it opens the new key after.
        let text = std::fs::read_to_string(&config).unwrap();
        std::fs::write(
            &config,
            format!(
                "{text}agent_socket = \"{}\"\n",
                v2.env
                    .dir
                    .path()
                    .join("run")
                    .join("pl-agent.sock")
                    .display()
            ),
        )
        .unwrap();
        let agent_log = v2.env.dir.path().join("pl-agent.log");
        struct Agent(std::process::Child);
        impl Drop for Agent {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let mut agent = Agent(
            v2.env
                .cli_command("PL", &["agent"])
                .env_remove("TALLINN_PASSPHRASE")
                .env("RUST_LOG", "tallinn_client=info")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap(),
        );
        {
            use std::io::BufRead as _;
            let err = agent.0.stderr.take().unwrap();
            let mut lines = std::io::BufReader::new(err).lines();
            let log_path = agent_log.clone();
            let ready = tokio::task::spawn_blocking(move || {
                let mut seen = Vec::new();
                for l in lines.by_ref().map_while(Result::ok) {
                    if l.contains("agent for PL") {
                        // Keep draining so the agent never blocks on
                        // stderr; its log goes to a file for a failure.
                        std::thread::spawn(move || {
                            use std::io::Write as _;
                            let mut log = std::fs::File::create(log_path).unwrap();
                            for l in lines.by_ref().map_while(Result::ok) {
                                let _ = writeln!(log, "{l}");
                            }
                        });
                        return Ok(());
                    }
                    seen.push(l);
                }
                Err(seen)
            });
            let r = tokio::time::timeout(WAIT, ready).await.unwrap().unwrap();
            assert!(r.is_ok(), "the agent did not start: {r:?}");
        }
        let key_text = std::fs::read_to_string(pdir.join("identity.key")).unwrap();
        let old_b64 = key_text
            .lines()
            .find_map(|l| l.strip_prefix("enc_secret = \""))
            .unwrap()
            .trim_end_matches('"')
            .to_string();
        use base64::Engine as _;
        let old_raw = base64::engine::general_purpose::STANDARD
            .decode(&old_b64)
            .unwrap();
        // Sealed to PL's current key while PL is offline.
        let ua = v2.client("UA").await;
        ua.send(
            "plenary",
            &Message::note(Tlp::Amber, "before the rotation", "b"),
        )
        .await
        .unwrap();
        let out = cli(&["device", "rotate"]);
        assert!(out.contains("rotated at epoch 1"), "{out}");
        assert!(!std::fs::read_to_string(pdir.join("identity.key"))
            .unwrap()
            .contains(&old_b64));
        let out = cli(&["sync"]);
        assert!(out.contains("1 retired encryption key(s) erased"), "{out}");
        // Through the agent, which took the archive back with the new key.
        let inbox = cli(&["inbox"]);
        assert!(inbox.contains("before the rotation"), "{inbox}");
        let status = cli(&["outbox"]);
        assert!(status.contains("outbox is empty"), "{status}");
        assert!(
            agent.0.try_wait().unwrap().is_none(),
            "the agent is still running"
        );
        // The old secret is nowhere under PL's directory any more.
        for f in files(&pdir) {
            let bytes = std::fs::read(&f).unwrap();
            assert!(
                !bytes
                    .windows(old_raw.len())
                    .any(|w| w == old_raw.as_slice()),
                "{} holds the old secret",
                f.display()
            );
            assert!(
                !String::from_utf8_lossy(&bytes).contains(&old_b64),
                "{} holds the old secret (base64)",
                f.display()
            );
            assert!(
                !f.to_string_lossy().contains(".retired-"),
                "{}",
                f.display()
            );
        }
        // Sealed to the new key: opens too; the whole archive verifies,
        // the record sealed to the erased key included.
        ua.sync(Duration::from_secs(20), |_| {}).await.unwrap();
        assert_eq!(ua.roster().epoch(), Some(1));
        ua.send(
            "plenary",
            &Message::note(Tlp::Amber, "after the rotation", "b"),
        )
        .await
        .unwrap();
        cli(&["sync"]);
        assert!(cli(&["inbox"]).contains("after the rotation"));
        assert!(cli(&["archive", "verify", "--deep"]).contains("archive OK"));
        assert!(cli(&["roster", "log"]).contains("devices of PL: [default]"));

        // The export carries the roster log: an auditor re-verifies every
        // record against the state of its own epoch, across the change.
        let export = pdir.join("export.jsonl");
        cli(&["archive", "export", "--out", export.to_str().unwrap()]);
        let text = std::fs::read_to_string(&export).unwrap();
        let mut lines = text.lines();
        let header: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(header["deployment"], hex::encode(v2.deployment));
        let entries: Vec<SignedEntry> = header["roster_log"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                SignedEntry::decode(
                    &base64::engine::general_purpose::STANDARD
                        .decode(e.as_str().unwrap())
                        .unwrap(),
                )
                .unwrap()
            })
            .collect();
        let log = RosterLog::from_entries(entries, Some(&v2.deployment)).unwrap();
        assert_eq!(log.epoch(), 1);
        let mut records = 0;
        for line in lines {
            let r: serde_json::Value = serde_json::from_str(line).unwrap();
            let env = base64::engine::general_purpose::STANDARD
                .decode(r["envelope_b64"].as_str().unwrap())
                .unwrap();
            tallinn_common::envelope::UntrustedEnvelope::decode(&env)
                .unwrap()
                .verify(&log)
                .unwrap();
            records += 1;
        }
        assert!(records >= 2, "{records}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_without_the_identity_key_rotates_through_its_identity_device() {
    timed(async {
        let v2 = V2::new(limits()).await;
        let pdir = v2.env.dep.participant_dir("PL");
        let config = pdir.join("client.toml");
        let text = std::fs::read_to_string(&config).unwrap();
        let pin = format!("deployment = \"{}\"\n", hex::encode(v2.deployment));
        std::fs::write(&config, format!("{text}{pin}")).unwrap();
        let run = |cfg: &std::path::Path, args: &[&str]| {
            let mut full = vec!["--config", cfg.to_str().unwrap()];
            full.extend_from_slice(args);
            let o = run_bin("tallinn", &full);
            assert!(o.status.success(), "{args:?}: {}", stderr(&o));
            stdout(&o)
        };
        run(&config, &["sync"]);
        let laptop_key = pdir.join("laptop.key");
        run(
            &config,
            &[
                "device",
                "add",
                "laptop",
                "--out",
                laptop_key.to_str().unwrap(),
            ],
        );
        let laptop = pdir.join("client-laptop.toml");
        std::fs::write(
            &laptop,
            text.replace("identity = \"identity.key\"", "identity = \"laptop.key\"")
                .replace("device = \"default\"", "device = \"laptop\"")
                .replace("roster = \"../roster.toml\"", "roster = \"none.toml\"")
                + &pin
                + "enc_key_grace_days = 0\n",
        )
        .unwrap();
        run(&laptop, &["sync"]);
        let old_b64 = std::fs::read_to_string(&laptop_key)
            .unwrap()
            .lines()
            .find_map(|l| {
                l.strip_prefix("enc_secret = \"")
                    .map(|v| v.trim_end_matches('"').to_string())
            })
            .unwrap();

        // The laptop requests; the identity device approves and submits.
        let out = run(&laptop, &["device", "rotate"]);
        let id = out
            .lines()
            .find_map(|l| l.split("proposal ").nth(1))
            .unwrap()[..12]
            .to_string();
        run(&config, &["sync"]);
        let shown = run(&config, &["roster", "approve", &id]);
        assert!(shown.contains("devices of PL after it"), "{shown}");
        let ok = run(&config, &["roster", "submit", &id]);
        assert!(ok.contains("epoch 2"), "{ok}");

        // A message sealed to the new key; the laptop's next sync opens
        // it, completes the rotation and erases the old secret.
        let ua = v2.client("UA").await;
        let mut st = ua.state();
        while ua.roster().epoch() < Some(2) {
            tokio::time::timeout(Duration::from_secs(20), st.changed())
                .await
                .unwrap()
                .unwrap();
        }
        ua.send(
            "plenary",
            &Message::note(Tlp::Amber, "for the rotated laptop", "b"),
        )
        .await
        .unwrap();
        let out = run(&laptop, &["sync"]);
        assert!(out.contains("rotation completed"), "{out}");
        assert!(run(&laptop, &["inbox"]).contains("for the rotated laptop"));
        let now = std::fs::read_to_string(&laptop_key).unwrap();
        assert!(!now.contains(&old_b64), "the key file has the new secret");
        for f in files(&pdir) {
            let bytes = std::fs::read(&f).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(&old_b64),
                "{} holds the old secret",
                f.display()
            );
        }
        assert!(run(&laptop, &["archive", "verify", "--deep"]).contains("archive OK"));
    })
    .await;
}
