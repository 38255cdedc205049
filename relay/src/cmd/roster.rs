//! `tallinn-relay roster init|install|show` and `enrol`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tallinn_common::roster::{ParticipantEntry, Role, Roster, RosterFile};
use tallinn_relay::FileConfig;

use crate::{base_dir, RosterCommand};

pub(crate) fn roster_command(cmd: RosterCommand) -> Result<()> {
    use tallinn_common::roster::{fingerprint_groups, SignedEntry};
    use tallinn_relay::genesis;
    let data_dir = |config: &Path| -> Result<(FileConfig, PathBuf)> {
        let file = FileConfig::read(config)?;
        let dir = FileConfig::resolve(&base_dir(config), &file.data_dir);
        Ok((file, dir))
    };
    match cmd {
        RosterCommand::Init {
            config,
            chair,
            quorum,
            out,
        } => {
            let (file, dir) = data_dir(&config)?;
            let checked = file.check(&base_dir(&config))?;
            if out.exists() {
                bail!("{} already exists; refusing to overwrite", out.display());
            }
            tallinn_host::durable::private_dir(&dir)
                .with_context(|| format!("creating {}", dir.display()))?;
            let relay_key =
                tallinn_relay::receipt_key::ReceiptKey::load_or_create(&checked.receipt_key)?
                    .public();
            let quorum = quorum.unwrap_or_else(|| genesis::default_quorum(&checked.roster));
            let entry = genesis::genesis_from_v1(&checked.roster, &chair, quorum, &relay_key);
            // Check the state rules now (approvals come later).
            tallinn_common::roster::RosterState::validate(
                match entry.decode_body()?.kind {
                    tallinn_common::roster::EntryKind::Genesis(r) => r,
                    _ => bail!("internal: not a genesis"),
                },
                0,
                entry.hash(),
            )
            .context("the roster cannot become a genesis")?;
            std::fs::write(&out, entry.to_text())
                .with_context(|| format!("writing {}", out.display()))?;
            println!("genesis (unsigned): {}", out.display());
            println!("chair: {chair}, quorum: {quorum}");
            println!("relay receipt key: {}", hex::encode(relay_key.as_bytes()));
            println!("deployment fingerprint (once approved, unchanged by approvals):");
            println!("  {}", fingerprint_groups(&entry.hash()));
            println!(
                "next: the chair and the beneficiary run `tallinn roster approve {}`",
                out.display()
            );
            Ok(())
        }
        RosterCommand::Install {
            config,
            entry,
            deployment,
        } => {
            let (_, dir) = data_dir(&config)?;
            let text = std::fs::read_to_string(&entry)
                .with_context(|| format!("reading {}", entry.display()))?;
            let signed = SignedEntry::from_text(&text)?;
            let pinned = match deployment {
                None => None,
                Some(h) => Some(
                    <[u8; 32]>::try_from(
                        hex::decode(h.replace(' ', ""))
                            .context("--deployment is not hex")?
                            .as_slice(),
                    )
                    .map_err(|_| anyhow::anyhow!("--deployment is not 32 bytes"))?,
                ),
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(tallinn_common::unix_ms)
                .unwrap_or(0);
            let log = genesis::install(&dir, signed, pinned.as_ref(), now)?;
            println!("roster log installed in {}", dir.display());
            println!(
                "deployment fingerprint: {}",
                fingerprint_groups(&log.deployment())
            );
            println!("participants compare it out of band and pin it in client.toml");
            Ok(())
        }
        RosterCommand::Show { config } => {
            let (_, dir) = data_dir(&config)?;
            let store = tallinn_relay::store::SledStore::open(&dir)?;
            let entries = tallinn_relay::store::Store::roster_log(&store)?;
            if entries.is_empty() {
                println!("no roster log: the relay runs the version-1 roster file");
                return Ok(());
            }
            let log = tallinn_common::roster::RosterLog::from_entries(
                entries.into_iter().map(|(e, _)| e),
                None,
            )?;
            print_state(&log);
            Ok(())
        }
    }
}

fn print_state(log: &tallinn_common::roster::RosterLog) {
    use tallinn_common::text::escape_line as esc;
    let s = log.current();
    println!(
        "deployment: {}",
        tallinn_common::roster::fingerprint_groups(&log.deployment())
    );
    println!("epoch: {}", s.epoch());
    println!("chair: {}", s.chair());
    println!("quorum: {}", s.quorum());
    if let Some(b) = s.beneficiary() {
        println!("beneficiary: {b}");
    }
    println!("participants:");
    for p in s.participants() {
        let devices: Vec<String> = p
            .devices
            .values()
            .map(|d| format!("{} ({})", d.device, d.fingerprint()))
            .collect();
        println!(
            "  {:<8} {:<9} {}  devices: {}",
            p.id.as_str(),
            p.role.to_string(),
            esc(&p.name),
            devices.join(", ")
        );
    }
}

pub(crate) fn enrol(roster_path: &Path, entry_path: &Path, channels: &[String]) -> Result<()> {
    #[derive(serde::Deserialize)]
    struct EntryFile {
        participant: Vec<ParticipantEntry>,
    }
    let text = std::fs::read_to_string(roster_path)
        .with_context(|| format!("reading {}", roster_path.display()))?;
    let mut file: RosterFile =
        toml::from_str(&text).with_context(|| format!("parsing {}", roster_path.display()))?;
    let entry_text = std::fs::read_to_string(entry_path)
        .with_context(|| format!("reading {}", entry_path.display()))?;
    let entry: EntryFile = toml::from_str(&entry_text)
        .with_context(|| format!("parsing the entry in {}", entry_path.display()))?;
    let [new] = <[ParticipantEntry; 1]>::try_from(entry.participant).map_err(|v| {
        anyhow::anyhow!(
            "the entry file must hold exactly one [[participant]], found {}",
            v.len()
        )
    })?;
    let replaced = match file.participants.iter_mut().find(|p| p.id == new.id) {
        Some(p) => {
            *p = new.clone();
            true
        }
        None => {
            file.participants.push(new.clone());
            false
        }
    };
    for ch in channels {
        let c = file
            .channels
            .iter_mut()
            .find(|c| &c.id == ch)
            .with_context(|| format!("no channel {ch:?} in the roster"))?;
        let list = match new.role {
            Role::Member => &mut c.members,
            Role::Observer => &mut c.observers,
        };
        if !list.iter().any(|m| m == "*" || m == &new.id) {
            list.push(new.id.clone());
        }
    }
    // Validate the result before touching the file.
    let roster = Roster::from_file(file.clone())
        .context("the roster would be invalid after this change; nothing was written")?;
    let tmp = roster_path.with_extension("toml.tmp");
    {
        use std::io::Write;
        let mut f =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(file.to_toml().as_bytes())
            .and_then(|()| f.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
    }
    std::fs::rename(&tmp, roster_path)
        .with_context(|| format!("replacing {}", roster_path.display()))?;
    let p = roster
        .participant(&new.id)
        .context("participant missing after enrolment")?;
    println!(
        "{} {} ({}) fingerprint {}",
        if replaced {
            "replaced keys of"
        } else {
            "added"
        },
        p.id(),
        p.role,
        p.fingerprint()
    );
    println!("roster fingerprint {}", roster.fingerprint_hex());
    println!(
        "Compare the fingerprint with the participant out of band, then send SIGHUP to the relay."
    );
    Ok(())
}
