//! The generated benchmark deployment: keys, roster (version 1) or roster
//! log (version 2), certificate, and the relay's and forwarder's
//! configuration files, written under one directory.

use std::sync::Arc;

use anyhow::{anyhow, Result};
use tallinn_client::key_file::SecretKeyFile as _;
use tallinn_common::identity::{Identity, KdfParams, ParticipantId};
use tallinn_common::roster::{Roster, RosterLog};

/// A generated benchmark deployment: N members in one channel `bench`;
/// with devices (version 2), each member has that many devices and every
/// device is one connection.
pub struct Setup {
    /// Directory with roster, certificate and configs.
    pub dir: std::path::PathBuf,
    /// The keys of each connection (P00, P01, ...; version 2: every device
    /// of P00, then of P01, ...).
    pub ids: Vec<Arc<Identity>>,
    /// Each connection's device label.
    pub labels: Vec<String>,
    /// Version 2: the roster log (its genesis is installed in the relay's
    /// data directory before it starts).
    pub log: Option<RosterLog>,
    /// The roster.
    pub roster: Arc<Roster>,
    /// TLS material for the server under test.
    pub tls: tallinn_relay::TlsIdentity,
}

impl Setup {
    /// Generates identities, roster, certificate and a relay config whose
    /// limits do not throttle the benchmark (rate limit off, larger window).
    ///
    /// # Errors
    /// I/O failures.
    pub fn create(dir: &std::path::Path, participants: usize) -> Result<Self> {
        Self::create_with_devices(dir, participants, 1)
    }

    /// [`Setup::create`] with `devices` devices per participant: more than
    /// one builds a version-2 deployment (a roster log whose genesis lists
    /// every device, envelopes sealed to devices). `connections` is the
    /// number of connections (participants x devices).
    ///
    /// # Errors
    /// I/O failures.
    pub fn create_with_devices(
        dir: &std::path::Path,
        connections: usize,
        devices: usize,
    ) -> Result<Self> {
        if devices > 1 {
            return Self::create_v2(dir, connections.div_ceil(devices), devices);
        }
        std::fs::create_dir_all(dir)?;
        let mut ids = Vec::new();
        let mut text = String::new();
        for i in 0..connections {
            let id = Identity::generate(ParticipantId::new(format!("P{i:02}"))?);
            text.push_str(&id.roster_entry(&format!("participant {i}"), "member"));
            text.push('\n');
            ids.push(Arc::new(id));
        }
        text.push_str("[[channel]]\nid = \"bench\"\nmembers = [\"*\"]\n");
        let roster = Roster::parse(&text)?;
        std::fs::write(dir.join("roster.toml"), &text)?;
        let tls = tallinn_relay::tls::generate_self_signed(&["localhost".into()])?;
        tls.write_pem(&dir.join("cert.pem"), &dir.join("key.pem"))?;
        // Keep a key file per identity (unused by the generator, handy for
        // poking at the deployment by hand).
        for id in &ids {
            let _ = id.write_secret_file(
                &dir.join(format!("{}.key", id.id())),
                None,
                KdfParams::default(),
            );
        }
        let labels = vec!["bench".to_string(); ids.len()];
        Ok(Self {
            dir: dir.to_path_buf(),
            ids,
            labels,
            log: None,
            roster: Arc::new(roster),
            tls,
        })
    }

    fn create_v2(dir: &std::path::Path, participants: usize, devices: usize) -> Result<Self> {
        use tallinn_common::roster::{
            approval_message, Approval, ChannelRecord, DeviceRecord, EntryBody, EntryKind,
            ParticipantRecord, SignedEntry, StateRecord,
        };
        std::fs::create_dir_all(dir)?;
        let mut ids = Vec::new();
        let mut labels = Vec::new();
        let mut records = Vec::new();
        let mut identities = Vec::new();
        for i in 0..participants {
            let pid = ParticipantId::new(format!("P{i:02}"))?;
            let identity = Identity::generate(pid.clone());
            let mut devs = Vec::new();
            for d in 0..devices {
                let keys = Identity::generate(pid.clone());
                devs.push(DeviceRecord {
                    device: format!("d{d}"),
                    suite: 1,
                    sign_key: keys.public().sign_key.to_bytes(),
                    enc_key: keys.public().enc_key,
                });
                ids.push(Arc::new(keys));
                labels.push(format!("d{d}"));
            }
            records.push(ParticipantRecord {
                id: pid.to_string(),
                name: format!("participant {i}"),
                role: 0,
                identity_key: identity.public().sign_key.to_bytes(),
                devices: devs,
            });
            identities.push(identity);
        }
        let members: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
        // The relay signs a receipt for every accepted message with this key.
        let relay_key =
            tallinn_relay::receipt_key::ReceiptKey::load_or_create(&dir.join("receipt.key"))?;
        // Like the Tallinn deployment, a beneficiary in every channel (the
        // last participant): every client recomputes its wraps at receipt.
        let state = StateRecord {
            beneficiary: members.last().cloned(),
            chair: members[0].clone(),
            quorum: 1,
            relay_key: relay_key.public().to_bytes(),
            participants: records,
            channels: vec![ChannelRecord {
                id: "bench".into(),
                description: String::new(),
                members,
                observers: vec![],
                post: 0,
                max_tlp: 4,
            }],
        };
        let mut genesis = SignedEntry::new(&EntryBody {
            index: 0,
            prev_hash: [0; 32],
            kind: EntryKind::Genesis(state),
        });
        // The chair and the beneficiary approve the genesis.
        let mut approvers = vec![&identities[0]];
        approvers.extend(identities.last().filter(|_| identities.len() > 1));
        for who in approvers {
            genesis.add_approval(Approval {
                participant: who.id().to_string(),
                signature: who.sign(&approval_message(&genesis.body)),
            });
        }
        let log = RosterLog::from_genesis(genesis, None).map_err(|e| anyhow!("{e}"))?;
        // An empty version-1 roster file: the relay runs the log.
        std::fs::write(dir.join("roster.toml"), "")?;
        let tls = tallinn_relay::tls::generate_self_signed(&["localhost".into()])?;
        tls.write_pem(&dir.join("cert.pem"), &dir.join("key.pem"))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            ids,
            labels,
            log: Some(log),
            roster: Arc::new(Roster::parse("")?),
            tls,
        })
    }

    /// Version 2: installs the genesis in the relay data directory `data`
    /// (relative to the setup directory) before the relay starts.
    ///
    /// # Errors
    /// Installation failures.
    pub fn install_log(&self, data: &str) -> Result<()> {
        if let Some(log) = &self.log {
            tallinn_relay::genesis::install(
                &self.dir.join(data),
                log.entries()[0].clone(),
                None,
                tallinn_common::unix_ms(
                    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?,
                ),
            )?;
        }
        Ok(())
    }

    /// Writes `relay.toml` for a relay on `port` with data in `data` and
    /// metrics on `metrics_port`.
    ///
    /// # Errors
    /// I/O failures.
    pub fn write_relay_config(
        &self,
        port: u16,
        data: &str,
        metrics_port: u16,
    ) -> Result<std::path::PathBuf> {
        let path = self.dir.join("relay.toml");
        std::fs::write(
            &path,
            format!(
                "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{data}\"\nroster = \"roster.toml\"\nreceipt_key = \"receipt.key\"\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n\
                 [tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\ngenerate_self_signed = false\n\
                 [limits]\nsend_rate_per_sec = 1000000000.0\nsend_burst = 1000000000\n\
                 send_bytes_per_sec = 1000000000000\nsend_bytes_burst = 1000000000000\n\
                 max_stored_bytes_per_participant = 1000000000000\n\
                 auth_rate_per_sec = 1000000.0\nauth_burst = 1000000\n\
                 auth_rate_per_sec_per_ip = 1000000.0\nauth_burst_per_ip = 1000000\n\
                 max_connections_per_participant = 64\nmax_inflight_sends = 1024\n"
            ),
        )?;
        Ok(path)
    }
}
