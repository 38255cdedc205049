//! A complete Tallinn deployment in a directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tallinn_client::key_file::SecretKeyFile as _;
use tallinn_client::Settings;
use tallinn_common::identity::{DeviceId, Identity, KdfParams, ParticipantId};
use tallinn_common::roster::Roster;
use tallinn_relay::{FileConfig, RelayConfig, Server};

/// The twelve member nations.
pub const MEMBERS: [(&str, &str); 12] = [
    ("US", "United States"),
    ("CA", "Canada"),
    ("DK", "Denmark"),
    ("EE", "Estonia"),
    ("FR", "France"),
    ("DE", "Germany"),
    ("IT", "Italy"),
    ("NL", "Netherlands"),
    ("PL", "Poland"),
    ("SE", "Sweden"),
    ("GB", "United Kingdom"),
    ("UA", "Ukraine"),
];

/// The read-only observers.
pub const OBSERVERS: [(&str, &str); 2] = [("NATO", "NATO"), ("EU", "European Union")];

/// The chair nation in this deployment (front office with UA).
pub const CHAIR: &str = "EE";

/// Channel definitions of the Tallinn deployment (TOML).
pub const CHANNELS: &str = r#"
[[channel]]
id = "plenary"
description = "All members and both observers: coordination of the Mechanism as a whole"
members = ["*"]
observers = ["NATO", "EU"]
max_tlp = "AMBER+STRICT"

[[channel]]
id = "announcements"
description = "The chair's announcements: read by every member and observer, posted by the chair alone"
members = ["*"]
observers = ["NATO", "EU"]
post = "chair"
max_tlp = "AMBER+STRICT"

[[channel]]
id = "loe-immediate"
description = "Line of Effort 1: immediate support"
members = ["*"]
observers = ["NATO", "EU"]
max_tlp = "AMBER+STRICT"

[[channel]]
id = "loe-capability"
description = "Line of Effort 2: medium-term capability"
members = ["*"]
observers = ["NATO", "EU"]
max_tlp = "AMBER+STRICT"

[[channel]]
id = "loe-sustainability"
description = "Line of Effort 3: long-term sustainability"
members = ["*"]
observers = ["NATO", "EU"]
max_tlp = "AMBER+STRICT"

[[channel]]
id = "front-office"
description = "Ukraine and the chair's front office"
members = ["UA", "EE"]
max_tlp = "AMBER+STRICT"

[[channel]]
id = "back-office"
description = "Chair back office: EE, PL and UA"
members = ["EE", "PL", "UA"]
max_tlp = "AMBER+STRICT"

# Not a channel: the rule for direct conversations (`tallinn send --to PL,UA`).
# A direct conversation is addressed to the members its sender chooses;
# Ukraine is always in it, an observer only when named. TLP:RED goes here
# and nowhere else (TLP 2.0: RED reaches only the people present).
[[channel]]
id = "direct"
description = "Direct conversations: any members the sender names, always with UA; observers only when named"
members = ["*"]
observers = ["NATO", "EU"]
max_tlp = "RED"
"#;

/// Builds the roster text for the given identities (all 14 participants).
pub fn roster_text(ids: &BTreeMap<String, Arc<Identity>>) -> String {
    let mut text = String::from(
        "# Tallinn Mechanism roster: 12 members, 2 observers.\n\
         # \"Nothing about Ukraine without Ukraine\": every channel must include UA.\n\
         beneficiary = \"UA\"\n\n",
    );
    for (id, name) in MEMBERS {
        if let Some(i) = ids.get(id) {
            text.push_str(&i.roster_entry(name, "member"));
            text.push('\n');
        }
    }
    for (id, name) in OBSERVERS {
        if let Some(i) = ids.get(id) {
            text.push_str(&i.roster_entry(name, "observer"));
            text.push('\n');
        }
    }
    text.push_str(CHANNELS);
    text
}

/// A generated deployment.
pub struct Deployment {
    /// Root directory.
    pub dir: PathBuf,
    /// Every participant's identity.
    pub ids: BTreeMap<String, Arc<Identity>>,
    /// The roster.
    pub roster: Arc<Roster>,
    /// The relay's UDP port written into the configs (0 = pick at start).
    pub relay_port: u16,
}

impl Deployment {
    /// Generates identities for all 14 participants, the roster, the relay
    /// config and certificate, and one client config per participant.
    ///
    /// # Errors
    /// I/O or validation failures.
    pub fn create(dir: &Path, relay_port: u16) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut ids = BTreeMap::new();
        for (id, _) in MEMBERS.iter().chain(OBSERVERS.iter()) {
            let ident = Identity::generate(ParticipantId::new(*id)?);
            let pdir = dir.join(id);
            std::fs::create_dir_all(&pdir)?;
            ident.write_secret_file(&pdir.join("identity.key"), None, KdfParams::default())?;
            ids.insert(id.to_string(), Arc::new(ident));
        }
        let text = roster_text(&ids);
        let roster = Roster::parse(&text).context("generated roster is invalid")?;
        std::fs::write(dir.join("roster.toml"), &text)?;
        std::fs::write(
            dir.join("relay.toml"),
            format!(
                "# Relay of the demo deployment (see config/relay.toml for every field).\n\
                 name = \"tallinn-demo-relay\"\n\
                 listen = \"127.0.0.1:{relay_port}\"\n\
                 data_dir = \"relay-data\"\n\
                 roster = \"roster.toml\"\n\
                 metrics_listen = \"\"\n\n\
                 [tls]\ncert = \"relay-cert.pem\"\nkey = \"relay-key.pem\"\ngenerate_self_signed = false\n\n\
                 # Demo and test traffic is scripted: allow more than a person types.\n\
                 [limits]\nsend_rate_per_sec = 500.0\nsend_burst = 5000\n"
            ),
        )?;
        let tls = tallinn_relay::tls::generate_self_signed(&["localhost".into()])?;
        tls.write_pem(&dir.join("relay-cert.pem"), &dir.join("relay-key.pem"))?;
        let pin = tls.spki_pin_hex();
        for id in ids.keys() {
            // GB runs a front and a back office: two devices, two configs.
            let devices: &[(&str, &str)] = if id == "GB" {
                &[
                    ("client.toml", "front-office"),
                    ("client-back-office.toml", "back-office"),
                ]
            } else {
                &[("client.toml", "default")]
            };
            for (file, device) in devices {
                std::fs::write(
                    dir.join(id).join(file),
                    format!(
                        "# Client of {id} ({device}) in the demo deployment (see config/client.toml).\n\
                         relay = \"127.0.0.1:{relay_port}\"\n\
                         relay_pin = \"{pin}\"\n\
                         identity = \"identity.key\"\n\
                         device = \"{device}\"\n\
                         roster = \"../roster.toml\"\n\
                         data_dir = \"data\"\n"
                    ),
                )?;
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            ids,
            roster: Arc::new(roster),
            relay_port,
        })
    }

    /// The relay configuration from `relay.toml` (port overridden if given).
    ///
    /// # Errors
    /// Config errors.
    pub fn relay_config(&self, port: Option<u16>) -> Result<RelayConfig> {
        let file = FileConfig::read(&self.dir.join("relay.toml"))?;
        let mut cfg = file.load(&self.dir)?;
        if let Some(p) = port {
            cfg.listen.set_port(p);
        }
        Ok(cfg)
    }

    /// Starts the relay in-process.
    ///
    /// # Errors
    /// Spawn errors.
    pub async fn start_relay(&self, port: Option<u16>) -> Result<Server> {
        Ok(Server::spawn(self.relay_config(port)?).await?)
    }

    /// Starts the relay in-process with other limits.
    ///
    /// # Errors
    /// Spawn errors.
    pub async fn start_relay_with(
        &self,
        port: Option<u16>,
        limits: tallinn_relay::Limits,
    ) -> Result<Server> {
        let mut cfg = self.relay_config(port)?;
        cfg.limits = limits;
        Ok(Server::spawn(cfg).await?)
    }

    /// Points every client config at `addr` (after the relay picked a port).
    ///
    /// # Errors
    /// I/O errors.
    pub fn set_relay_addr(&self, addr: std::net::SocketAddr) -> Result<()> {
        for entry in walk_client_configs(&self.dir)? {
            let path = entry;
            let text = std::fs::read_to_string(&path)?;
            let new: Vec<String> = text
                .lines()
                .map(|l| {
                    if l.starts_with("relay = ") {
                        format!("relay = \"{addr}\"")
                    } else {
                        l.to_string()
                    }
                })
                .collect();
            std::fs::write(&path, new.join("\n") + "\n")?;
        }
        Ok(())
    }

    /// A participant's identity.
    ///
    /// # Panics
    /// If `id` is not one of the 14 (a bug in the caller).
    pub fn id(&self, id: &str) -> Arc<Identity> {
        self.ids
            .get(id)
            .cloned()
            .unwrap_or_else(|| panic!("no participant {id}"))
    }

    /// The directory of a participant's client.
    pub fn participant_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Client settings for `id` on `device`, talking to `relay`.
    ///
    /// # Errors
    /// I/O errors creating the archive directory.
    pub fn settings(
        &self,
        id: &str,
        device: &str,
        relay: std::net::SocketAddr,
        pin: [u8; 32],
    ) -> Result<Settings> {
        let archive_dir = self
            .participant_dir(id)
            .join("data")
            .join(format!("{id}-{device}"));
        tallinn_host::durable::private_dir(&archive_dir)?;
        Ok(Settings {
            relay,
            server_name: "localhost".into(),
            trust: Some(tallinn_client::config::Trust::Pin(pin)),
            identity: self.id(id),
            retired: Vec::new(),
            device: DeviceId::new(device)?,
            roster: self.roster.clone(),
            deployment: None,
            archive_dir,
            connect_timeout: Duration::from_secs(10),
            send_timeout: Duration::from_secs(20),
            max_backoff: Duration::from_secs(2),
            allow_classical_key_exchange: false,
            check_wraps: Default::default(),
        })
    }
}

/// Every `client*.toml` one level below `dir`.
fn walk_client_configs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in std::fs::read_dir(dir)? {
        let p = p?.path();
        if p.is_dir() {
            for f in std::fs::read_dir(&p)? {
                let f = f?.path();
                let name = f
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if name.starts_with("client") && name.ends_with(".toml") {
                    out.push(f);
                }
            }
        }
    }
    Ok(out)
}
