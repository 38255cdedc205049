//! The demo's version-2 scenes, after the round: the deployment moves to
//! the signed roster log and lives through a year of changes, with a
//! message after each one.
//!
//! 1. Migration: the genesis from the roster file (EE chair, quorum 7),
//!    approved by the chair and Ukraine, installed; every client pins the
//!    deployment. GB's key becomes its `front-office` device and GB adds a
//!    `back-office` device with its own keys.
//! 2. Lithuania's admission, proposed by the chair: submitted first with a
//!    quorum but without Ukraine's approval (the relay refuses it), then
//!    approved by Ukraine and applied.
//! 3. The chair passes from Estonia to Poland.
//! 4. GB revokes its lost back-office laptop (its client stops, saying so)
//!    and enrols a new one.
//! 5. Poland rotates its encryption key.
//! 6. The coordination scenes ([`crate::coordination`]): the request
//!    tracker, the chair's announcements, a bilateral conversation at
//!    TLP:RED, plenary's history shared with Lithuania.
//!
//! At the end every participant syncs and every archive, the version-1
//! records of the round included, verifies against the state of each
//! record's own epoch.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use tallinn_client::archive::Filter;
use tallinn_client::key_file::SecretKeyFile as _;
use tallinn_client::{Client, ClientError, Settings};
use tallinn_common::identity::{Identity, KdfParams, ParticipantId};
use tallinn_common::message::{Message, Tlp};
use tallinn_common::roster::{
    approval_message, Approval, DeviceRecord, EntryBody, EntryKind, ParticipantRecord, RosterLog,
    SignedEntry,
};

use crate::deployment::{Deployment, MEMBERS, OBSERVERS};

const STEP: Duration = Duration::from_secs(30);

/// One archive at the end of the scenes.
#[derive(Debug, Clone)]
pub struct Row {
    /// Participant.
    pub participant: String,
    /// Device.
    pub device: String,
    /// Roster epoch the client is at.
    pub epoch: Option<u64>,
    /// Records in its archive.
    pub records: u64,
    /// Deep verification result.
    pub problem: Option<String>,
}

/// What the scenes produced.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Per archive.
    pub rows: Vec<Row>,
    /// Failed checks.
    pub failures: Vec<String>,
}

fn device_record(label: &str, keys: &Identity) -> DeviceRecord {
    DeviceRecord {
        device: label.into(),
        suite: 1,
        sign_key: keys.public().sign_key.to_bytes(),
        enc_key: keys.public().enc_key,
    }
}

/// The scenes' deployment state: the log as applied, the relay, clients.
struct World<'a> {
    dep: &'a Deployment,
    relay: SocketAddr,
    pin: [u8; 32],
    deployment: [u8; 32],
    log: RosterLog,
    /// Device keys other than the participants' key files.
    extra: BTreeMap<(String, String), Arc<Identity>>,
    failures: Vec<String>,
}

impl World<'_> {
    fn settings(&self, id: &str, device: &str) -> Result<Settings> {
        let mut s = match self.extra.get(&(id.to_string(), device.to_string())) {
            Some(keys) => {
                // A device created in these scenes: its own keys and archive.
                let mut s = self.dep.settings("UA", "default", self.relay, self.pin)?;
                s.identity = keys.clone();
                s.device = tallinn_common::identity::DeviceId::new(device)?;
                s.archive_dir = self
                    .dep
                    .participant_dir(id)
                    .join("data")
                    .join(format!("{id}-{device}"));
                tallinn_host::durable::private_dir(&s.archive_dir)?;
                s
            }
            None => self.dep.settings(id, device, self.relay, self.pin)?,
        };
        s.deployment = Some(self.deployment);
        Ok(s)
    }

    async fn client(&self, id: &str, device: &str) -> Result<Client> {
        let c = Client::connect(self.settings(id, device)?)
            .await
            .with_context(|| format!("{id}/{device} connecting"))?;
        c.discard_events();
        c.sync(STEP, |_| {})
            .await
            .with_context(|| format!("{id}/{device} syncing"))?;
        Ok(c)
    }

    /// The next entry, approved by `signers`' identity keys (their key
    /// files: the migration made each one its participant's identity key).
    fn entry(&self, kind: EntryKind, signers: &[&str]) -> SignedEntry {
        let mut e = SignedEntry::new(&EntryBody {
            index: self.log.epoch() + 1,
            prev_hash: self.log.head_hash(),
            kind,
        });
        for s in signers {
            let key = self.dep.id(s);
            e.add_approval(Approval {
                participant: (*s).into(),
                signature: key.sign(&approval_message(&e.body)),
            });
        }
        e
    }

    async fn submit(&mut self, via: &Client, e: SignedEntry, out: &mut dyn Write) -> Result<u64> {
        let epoch = via.submit_roster_entry(&e).await?;
        self.log.append(e).map_err(|e| anyhow!("{e}"))?;
        writeln!(out, "  the relay appended it: roster epoch {epoch}")?;
        Ok(epoch)
    }

    /// `from` posts in plenary; `to` must receive it.
    async fn message(
        &mut self,
        from: &Client,
        to: &Client,
        who: (&str, &str),
        subject: &str,
        out: &mut dyn Write,
    ) -> Result<()> {
        // The sender seals against the roster it has: wait until the
        // relay's push of the last change reached it (a message sealed in
        // the previous epoch's grace period goes to that epoch's devices).
        let target = self.log.epoch();
        let mut st = from.state();
        let _ = tokio::time::timeout(STEP, async {
            while from.roster().epoch() < Some(target) {
                if st.changed().await.is_err() {
                    break;
                }
            }
        })
        .await;
        from.send("plenary", &Message::note(Tlp::Green, subject, "in plenary"))
            .await
            .with_context(|| format!("sending {subject:?}"))?;
        // Wait for the event (the recipient archives it), bounded.
        let find = || -> Result<bool> {
            Ok(!to
                .archive()
                .search(
                    &Filter {
                        text: Some(subject.into()),
                        ..Filter::default()
                    },
                    10,
                )?
                .is_empty())
        };
        let mut st = to.state();
        let seen = tokio::time::timeout(STEP, async {
            loop {
                if find()? {
                    return Ok::<bool, anyhow::Error>(true);
                }
                if st.changed().await.is_err() {
                    return Ok(false);
                }
            }
        })
        .await
        .unwrap_or(Ok(false))?;
        if seen {
            writeln!(out, "  message {subject:?} received by {}/{}", who.0, who.1)?;
        } else {
            self.failures
                .push(format!("{}/{} did not receive {subject:?}", who.0, who.1));
        }
        Ok(())
    }
}

/// Runs the scenes against a deployment whose round already ran; starts its
/// own relay on the deployment's data.
///
/// # Errors
/// Setup failures; check failures are collected in the [`Report`].
pub async fn run(dep: &Deployment, out: &mut dyn Write) -> Result<Report> {
    // 1. Migration.
    writeln!(out, "\n== Version 2: the roster becomes a signed log")?;
    let data = dep.dir.join("relay-data");
    let receipt = tallinn_relay::genesis::receipt_key(&data)?;
    let mut record = dep.roster.to_state_record("EE", 7, receipt.to_bytes());
    for p in &mut record.participants {
        if p.id == "GB" {
            // GB's key pair is its front office; the back office gets its own.
            for d in &mut p.devices {
                d.device = "front-office".into();
            }
        }
    }
    let mut genesis = SignedEntry::new(&EntryBody {
        index: 0,
        prev_hash: [0; 32],
        kind: EntryKind::Genesis(record),
    });
    for who in ["EE", "UA"] {
        genesis.add_approval(Approval {
            participant: who.into(),
            signature: dep.id(who).sign(&approval_message(&genesis.body)),
        });
    }
    let log = tallinn_relay::genesis::install(&data, genesis, None, now_ms())?;
    let deployment = log.deployment();
    writeln!(
        out,
        "  genesis approved by the chair (EE) and Ukraine, installed; deployment fingerprint\n  {}",
        tallinn_common::roster::fingerprint_groups(&deployment)
    )?;
    pin_deployment(dep, &deployment)?;
    let relay = dep.start_relay(None).await?;
    dep.set_relay_addr(relay.local_addr())?;
    let mut w = World {
        dep,
        relay: relay.local_addr(),
        pin: relay.spki_pin(),
        deployment,
        log,
        extra: BTreeMap::new(),
        failures: Vec::new(),
    };
    let result = scenes(&mut w, out).await;
    relay.shutdown().await;
    let rows = result?;
    Ok(Report {
        rows,
        failures: w.failures,
    })
}

async fn scenes(w: &mut World<'_>, out: &mut dyn Write) -> Result<Vec<Row>> {
    let ua = w.client("UA", "default").await?;
    let ee = w.client("EE", "default").await?;
    let gb = w.client("GB", "front-office").await?;
    writeln!(
        out,
        "  clients pin the deployment and fetch the log (epoch 0)"
    )?;

    writeln!(
        out,
        "\n== GB gives its back-office laptop a device of its own"
    )?;
    // Under version 1 both offices shared GB's key; that installation's
    // config has no device in the log any more.
    let _ = std::fs::remove_file(w.dep.participant_dir("GB").join("client-back-office.toml"));
    let back = Identity::generate(ParticipantId::new("GB")?);
    write_device(w.dep, "GB", "back-office-laptop", &back)?;
    let front_keys = w.dep.id("GB");
    let e = w.entry(
        EntryKind::Devices {
            participant: "GB".into(),
            devices: vec![
                device_record("back-office-laptop", &back),
                device_record("front-office", &front_keys),
            ],
        },
        &["GB"],
    );
    w.submit(&gb, e, out).await?;
    w.extra
        .insert(("GB".into(), "back-office-laptop".into()), Arc::new(back));
    let gb_back = w.client("GB", "back-office-laptop").await?;
    w.message(
        &ua,
        &gb_back,
        ("GB", "back-office-laptop"),
        "Welcome to version 2",
        out,
    )
    .await?;

    writeln!(
        out,
        "\n== Lithuania asks to join; the chair proposes its admission"
    )?;
    let lt = Identity::generate(ParticipantId::new("LT")?);
    let lt_dir = w.dep.participant_dir("LT");
    std::fs::create_dir_all(&lt_dir)?;
    lt.write_secret_file(&lt_dir.join("identity.key"), None, KdfParams::default())?;
    let ua_config = std::fs::read_to_string(w.dep.participant_dir("UA").join("client.toml"))?;
    std::fs::write(
        lt_dir.join("client.toml"),
        ua_config.replace("Client of UA", "Client of LT"),
    )?;
    let mut record = w.log.current().record().clone();
    let all_members: Vec<String> = w
        .log
        .current()
        .participants()
        .filter(|p| p.role == tallinn_common::roster::Role::Member)
        .map(|p| p.id.to_string())
        .collect();
    record.participants.push(ParticipantRecord {
        id: "LT".into(),
        name: "Lithuania".into(),
        role: 0,
        identity_key: lt.public().sign_key.to_bytes(),
        devices: vec![device_record("default", &lt)],
    });
    record.participants.sort_by(|a, b| a.id.cmp(&b.id));
    for c in &mut record.channels {
        if all_members.iter().all(|m| c.members.contains(m)) {
            c.members.push("LT".into());
            c.members.sort();
        }
    }
    let without_ua = w.entry(
        EntryKind::Amend(record.clone()),
        &["CA", "DE", "DK", "EE", "FR", "IT", "PL"],
    );
    writeln!(
        out,
        "  seven members approve (a quorum), Ukraine not yet; submitted anyway:"
    )?;
    match ee.submit_roster_entry(&without_ua).await {
        Err(ClientError::RosterRefused(why)) => writeln!(out, "  REFUSED by the relay: {why}")?,
        other => w.failures.push(format!(
            "an admission without Ukraine was not refused: {other:?}"
        )),
    }
    writeln!(out, "  Ukraine reviews and approves; submitted again:")?;
    let with_ua = w.entry(
        EntryKind::Amend(record),
        &["CA", "DE", "DK", "EE", "FR", "IT", "PL", "UA"],
    );
    w.submit(&ee, with_ua, out).await?;
    w.extra
        .insert(("LT".into(), "default".into()), Arc::new(lt));
    let lt_client = w.client("LT", "default").await?;
    w.message(
        &lt_client,
        &ua,
        ("UA", "default"),
        "Lithuania says hello",
        out,
    )
    .await?;

    writeln!(out, "\n== The chair passes from Estonia to Poland")?;
    let mut record = w.log.current().record().clone();
    record.chair = "PL".into();
    let e = w.entry(
        EntryKind::Amend(record),
        &["CA", "DE", "DK", "EE", "FR", "PL", "UA"],
    );
    w.submit(&ee, e, out).await?;
    let pl = w.client("PL", "default").await?;
    w.message(
        &pl,
        &ee,
        ("EE", "default"),
        "The new chair greets the plenary",
        out,
    )
    .await?;

    writeln!(
        out,
        "\n== GB's back-office laptop is lost: revoked, a new one enrolled"
    )?;
    let laptop = Identity::generate(ParticipantId::new("GB")?);
    write_device(w.dep, "GB", "laptop-2", &laptop)?;
    let e = w.entry(
        EntryKind::Devices {
            participant: "GB".into(),
            devices: vec![
                device_record("front-office", &front_keys),
                device_record("laptop-2", &laptop),
            ],
        },
        &["GB"],
    );
    w.submit(&gb, e, out).await?;
    let mut st = gb_back.state();
    let fatal = tokio::time::timeout(STEP, async {
        loop {
            if let Some(f) = st.borrow_and_update().fatal.clone() {
                return Some(f);
            }
            if st.changed().await.is_err() {
                return None;
            }
        }
    })
    .await
    .ok()
    .flatten();
    match fatal {
        Some(f) => writeln!(out, "  the lost laptop's client stops: {f}")?,
        None => w
            .failures
            .push("the revoked back-office client did not stop".into()),
    }
    gb_back.close().await;
    drop(gb_back);
    w.extra
        .insert(("GB".into(), "laptop-2".into()), Arc::new(laptop));
    let gb_laptop = w.client("GB", "laptop-2").await?;
    w.message(
        &ua,
        &gb_laptop,
        ("GB", "laptop-2"),
        "Hello to GB's new laptop",
        out,
    )
    .await?;

    writeln!(
        out,
        "\n== Poland rotates its encryption key (forward secrecy)"
    )?;
    pl.close().await;
    drop(pl);
    let old = w.dep.id("PL");
    let next = old.with_new_enc_secret();
    let key_path = w.dep.participant_dir("PL").join("identity.key");
    next.write_secret_file(
        &tallinn_client::rotation::next_path(&key_path),
        None,
        KdfParams::default(),
    )?;
    {
        let c = Client::open(w.settings("PL", "default")?)?;
        c.archive().prepare_rewrap(&next)?;
        tallinn_client::rotation::switch(&key_path, now_ms())?;
        c.archive().commit_rewrap()?;
    }
    let mut devices = w
        .log
        .current()
        .record()
        .participants
        .iter()
        .find(|p| p.id == "PL")
        .map(|p| p.devices.clone())
        .unwrap_or_default();
    for d in &mut devices {
        d.enc_key = next.public().enc_key;
    }
    let e = w.entry(
        EntryKind::Devices {
            participant: "PL".into(),
            devices,
        },
        &["PL"],
    );
    let mut s = w.settings("PL", "default")?;
    s.identity = Arc::new(next);
    s.retired = vec![old];
    let pl = Client::connect(s).await?;
    pl.discard_events();
    w.submit(&pl, e, out).await?;
    w.message(
        &ua,
        &pl,
        ("PL", "default"),
        "Sealed to Poland's new key",
        out,
    )
    .await?;
    crate::coordination::scenes(
        crate::coordination::Clients {
            ua: &ua,
            ee: &ee,
            gb: &gb,
            lt: &lt_client,
            pl: &pl,
        },
        &mut w.failures,
        out,
    )
    .await?;
    for c in [&ua, &ee, &gb, &gb_laptop, &lt_client, &pl] {
        c.close().await;
    }
    // PL's keys are the rotated ones now.
    let pl_keys = pl.settings().identity.clone();
    drop((ua, ee, gb, gb_laptop, lt_client, pl));

    writeln!(
        out,
        "\n== Every participant syncs; every archive verifies, version-1 records included"
    )?;
    let mut rows = Vec::new();
    let mut everyone: Vec<(String, String)> = MEMBERS
        .iter()
        .chain(OBSERVERS.iter())
        .map(|(id, _)| (id.to_string(), "default".to_string()))
        .filter(|(id, _)| id != "GB")
        .collect();
    everyone.push(("GB".into(), "front-office".into()));
    everyone.push(("GB".into(), "laptop-2".into()));
    everyone.push(("LT".into(), "default".into()));
    everyone.sort();
    for (id, device) in everyone {
        let mut s = w.settings(&id, &device)?;
        if id == "PL" {
            s.identity = pl_keys.clone();
        }
        let c = Client::connect(s)
            .await
            .with_context(|| format!("{id}/{device} connecting"))?;
        c.discard_events();
        c.sync(STEP, |_| {}).await?;
        let report = c.verify_archive(true, |_| {})?;
        let row = Row {
            participant: id.clone(),
            device: device.clone(),
            epoch: c.roster().epoch(),
            records: report.records,
            problem: report
                .first_error
                .map(|(i, why)| format!("record {i}: {why}")),
        };
        if let Some(p) = &row.problem {
            w.failures.push(format!("{id}/{device}: {p}"));
        }
        c.close().await;
        rows.push(row);
    }
    Ok(rows)
}

/// Adds `deployment = "..."` to every client config of the deployment.
fn pin_deployment(dep: &Deployment, deployment: &[u8; 32]) -> Result<()> {
    for e in std::fs::read_dir(&dep.dir)?.flatten() {
        if !e.path().is_dir() {
            continue;
        }
        for f in std::fs::read_dir(e.path())?.flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.starts_with("client") && name.ends_with(".toml") {
                let text = std::fs::read_to_string(f.path())?;
                if !text.contains("deployment = ") {
                    std::fs::write(
                        f.path(),
                        format!("{text}deployment = \"{}\"\n", hex::encode(deployment)),
                    )?;
                }
            }
        }
    }
    Ok(())
}

/// Writes a new device's key file and its `client-<device>.toml` (a copy of
/// the participant's config with that key and label).
fn write_device(dep: &Deployment, id: &str, device: &str, keys: &Identity) -> Result<()> {
    let dir = dep.participant_dir(id);
    keys.write_secret_file(
        &dir.join(format!("{device}.key")),
        None,
        KdfParams::default(),
    )?;
    let text = std::fs::read_to_string(dir.join("client.toml"))?;
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with("identity = ") {
            out.push_str(&format!("identity = \"{device}.key\"\n"));
        } else if line.starts_with("device = ") {
            out.push_str(&format!("device = \"{device}\"\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    std::fs::write(dir.join(format!("client-{device}.toml")), out)?;
    Ok(())
}

fn now_ms() -> u64 {
    tallinn_common::unix_ms(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default(),
    )
}

/// Prints the table: every archive with its epoch and verification.
///
/// # Errors
/// I/O errors of `out`.
pub fn print_summary(report: &Report, out: &mut dyn Write) -> Result<()> {
    writeln!(
        out,
        "\n{:<6} {:<13} {:>6} {:>8}  verify",
        "who", "device", "epoch", "archived"
    )?;
    for r in &report.rows {
        writeln!(
            out,
            "{:<6} {:<13} {:>6} {:>8}  {}",
            r.participant,
            r.device,
            r.epoch.map_or("-".into(), |e| e.to_string()),
            r.records,
            r.problem.as_deref().unwrap_or("OK")
        )?;
    }
    if report.failures.is_empty() {
        writeln!(
            out,
            "\nAll {} archives verify across every roster change.",
            report.rows.len()
        )?;
    } else {
        for f in &report.failures {
            writeln!(out, "FAILED: {f}")?;
        }
    }
    Ok(())
}
