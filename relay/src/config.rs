//! Configuration: the operator's `relay.toml` ([`FileConfig`], every field
//! documented with its default in `config/relay.toml`) and the library's
//! [`RelayConfig`] it is translated into.
//!
//! Relative paths in the file are relative to the file's own directory, so a
//! deployment directory can be moved as a whole.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tallinn_common::roster::Roster;

use crate::defaults;
use crate::tls::TlsIdentity;

/// Every limit of the relay (see [`crate::defaults`] for the reasons).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest frame payload.
    pub max_frame_len: u32,
    /// Largest envelope in a `Send`.
    pub max_message_len: usize,
    /// Token bucket refill per participant, sends per second.
    pub send_rate_per_sec: f64,
    /// Token bucket size per participant.
    pub send_burst: u32,
    /// Byte bucket refill per participant, envelope bytes per second.
    pub send_bytes_per_sec: u64,
    /// Byte bucket size per participant (at least one maximum envelope).
    pub send_bytes_burst: u64,
    /// Bytes of its own messages the relay stores per participant.
    pub max_stored_bytes_per_participant: u64,
    /// Successful authentications per second per participant.
    pub auth_rate_per_sec: f64,
    /// Authentication bucket size per participant.
    pub auth_burst: u32,
    /// `Auth` frames per second per remote address.
    pub auth_rate_per_sec_per_ip: f64,
    /// Authentication bucket size per remote address.
    pub auth_burst_per_ip: u32,
    /// Connections in total (refused at QUIC accept time beyond).
    pub max_connections: usize,
    /// Connections per participant (refused at auth with `rate_limited`).
    pub max_connections_per_participant: usize,
    /// Connections not yet authenticated (the oldest is evicted beyond).
    pub max_unauthenticated_connections: usize,
    /// Connections per remote IP address.
    pub max_connections_per_ip: usize,
    /// From first packet to `Welcome`.
    pub handshake_timeout: Duration,
    /// QUIC idle timeout.
    pub idle_timeout: Duration,
    /// Unacknowledged deliveries per connection.
    pub max_inflight_deliveries: usize,
    /// Bytes of unacknowledged deliveries per connection.
    pub max_inflight_delivery_bytes: usize,
    /// Devices (delivery cursors) per participant.
    pub max_devices_per_participant: usize,
    /// Live delivery queue per connection.
    pub delivery_queue: usize,
    /// Sends per connection awaiting their flush.
    pub max_inflight_sends: usize,
    /// Allowed `sent_at_ms` distance from the relay clock.
    pub max_clock_skew: Duration,
    /// Version 2: how long after a roster change envelopes sealed against
    /// the previous epoch are still accepted.
    pub roster_grace: Duration,
    /// Time allowed to finish flushes and close sessions at shutdown.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_len: defaults::MAX_FRAME_LEN,
            max_message_len: defaults::MAX_MESSAGE_LEN,
            send_rate_per_sec: defaults::SEND_RATE_PER_SEC,
            send_burst: defaults::SEND_BURST,
            send_bytes_per_sec: defaults::SEND_BYTES_PER_SEC,
            send_bytes_burst: defaults::SEND_BYTES_BURST,
            max_stored_bytes_per_participant: defaults::MAX_STORED_BYTES_PER_PARTICIPANT,
            auth_rate_per_sec: defaults::AUTH_RATE_PER_SEC,
            auth_burst: defaults::AUTH_BURST,
            auth_rate_per_sec_per_ip: defaults::AUTH_RATE_PER_SEC_PER_IP,
            auth_burst_per_ip: defaults::AUTH_BURST_PER_IP,
            max_connections: defaults::MAX_CONNECTIONS,
            max_connections_per_participant: defaults::MAX_CONNECTIONS_PER_PARTICIPANT,
            max_unauthenticated_connections: defaults::MAX_UNAUTHENTICATED_CONNECTIONS,
            max_connections_per_ip: defaults::MAX_CONNECTIONS_PER_IP,
            handshake_timeout: defaults::HANDSHAKE_TIMEOUT,
            idle_timeout: defaults::IDLE_TIMEOUT,
            max_inflight_deliveries: defaults::MAX_INFLIGHT_DELIVERIES,
            max_inflight_delivery_bytes: defaults::MAX_INFLIGHT_DELIVERY_BYTES,
            max_devices_per_participant: defaults::MAX_DEVICES_PER_PARTICIPANT,
            delivery_queue: defaults::DELIVERY_QUEUE,
            max_inflight_sends: defaults::MAX_INFLIGHT_SENDS,
            max_clock_skew: defaults::MAX_CLOCK_SKEW,
            roster_grace: defaults::ROSTER_GRACE,
            drain_timeout: defaults::DRAIN_TIMEOUT,
        }
    }
}

/// The library configuration of a relay.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Name sent in `Hello`.
    pub name: String,
    /// UDP address to listen on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Directory of the sled store.
    pub data_dir: PathBuf,
    /// The pinned roster.
    pub roster: Arc<Roster>,
    /// Where the roster was read from (for SIGHUP reloads).
    pub roster_path: Option<PathBuf>,
    /// Certificate chain and key.
    pub tls: TlsIdentity,
    /// Only the X25519MLKEM768 hybrid key exchange is accepted (default).
    pub require_post_quantum: bool,
    /// HTTP address for `/metrics` and `/healthz` (None: disabled).
    pub metrics_listen: Option<SocketAddr>,
    /// Limits.
    pub limits: Limits,
    /// How long undelivered messages, seen ids and unseen devices are kept.
    pub retention: Duration,
    /// How often the store is garbage-collected.
    pub gc_interval: Duration,
    /// The receipt key file (read at start in a version-2 deployment).
    pub receipt_key: PathBuf,
}

/// Errors loading or validating configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML of the expected shape.
    #[error("config file {path} is invalid: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// Parser message (names the field).
        message: String,
    },
    /// The roster is invalid.
    #[error("roster {path} is invalid: {source}")]
    Roster {
        /// The roster file.
        path: PathBuf,
        /// What is wrong.
        source: tallinn_common::roster::RosterError,
    },
    /// A value is out of range.
    #[error("config value {field} is invalid: {reason}")]
    Invalid {
        /// Field name.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// TLS material could not be loaded or created.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// `relay.toml` as written by the operator.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Name sent to clients in `Hello`. Default `tallinn-relay`.
    #[serde(default = "default_name")]
    pub name: String,
    /// UDP listen address. Default `0.0.0.0:4433`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Store directory. Default `data`.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Roster file. Default `roster.toml`.
    #[serde(default = "default_roster")]
    pub roster: PathBuf,
    /// Metrics/health HTTP address; empty string disables. Default `127.0.0.1:9464`.
    #[serde(default = "default_metrics")]
    pub metrics_listen: String,
    /// TLS settings.
    #[serde(default)]
    pub tls: FileTls,
    /// Limits.
    #[serde(default)]
    pub limits: FileLimits,
    /// Storage settings.
    #[serde(default)]
    pub store: FileStore,
    /// The relay's receipt key file (version 2: its public half is
    /// `relay_key` in the roster). Default `<data_dir>/receipt.key`.
    #[serde(default)]
    pub receipt_key: Option<PathBuf>,
}

/// `[tls]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTls {
    /// PEM certificate chain. Default `relay-cert.pem`.
    #[serde(default = "default_cert")]
    pub cert: PathBuf,
    /// PEM private key. Default `relay-key.pem`.
    #[serde(default = "default_key")]
    pub key: PathBuf,
    /// Create a self-signed pair at first start if the files are missing
    /// (development default). Default `true`.
    #[serde(default = "yes")]
    pub generate_self_signed: bool,
    /// Subject alternative names for a generated certificate. Default `["localhost"]`.
    #[serde(default = "default_sans")]
    pub subject_alt_names: Vec<String>,
    /// Accept only the X25519MLKEM768 hybrid (post-quantum) key exchange.
    /// `false` also accepts classical groups, counted in
    /// `tallinn_tls_key_exchanges_total{group="classical"}`. Default `true`.
    #[serde(default = "yes")]
    pub require_post_quantum: bool,
}

impl Default for FileTls {
    fn default() -> Self {
        Self {
            cert: default_cert(),
            key: default_key(),
            generate_self_signed: true,
            subject_alt_names: default_sans(),
            require_post_quantum: true,
        }
    }
}

/// `[limits]`; every field optional, defaults in [`crate::defaults`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLimits {
    /// Largest frame payload in bytes.
    pub max_frame_bytes: Option<u32>,
    /// Largest envelope in bytes.
    pub max_message_bytes: Option<usize>,
    /// Sends per second per participant.
    pub send_rate_per_sec: Option<f64>,
    /// Token bucket size.
    pub send_burst: Option<u32>,
    /// Envelope bytes per second per participant.
    pub send_bytes_per_sec: Option<u64>,
    /// Byte bucket size per participant.
    pub send_bytes_burst: Option<u64>,
    /// Bytes of its own messages stored per participant.
    pub max_stored_bytes_per_participant: Option<u64>,
    /// Successful authentications per second per participant.
    pub auth_rate_per_sec: Option<f64>,
    /// Authentication bucket size per participant.
    pub auth_burst: Option<u32>,
    /// `Auth` frames per second per remote address.
    pub auth_rate_per_sec_per_ip: Option<f64>,
    /// Authentication bucket size per remote address.
    pub auth_burst_per_ip: Option<u32>,
    /// Connections in total.
    pub max_connections: Option<usize>,
    /// Connections per participant.
    pub max_connections_per_participant: Option<usize>,
    /// Connections not yet authenticated.
    pub max_unauthenticated_connections: Option<usize>,
    /// Connections per remote IP address.
    pub max_connections_per_ip: Option<usize>,
    /// Seconds from first packet to `Welcome`.
    pub handshake_timeout_secs: Option<f64>,
    /// QUIC idle timeout in seconds.
    pub idle_timeout_secs: Option<f64>,
    /// Unacknowledged deliveries per connection.
    pub max_inflight_deliveries: Option<usize>,
    /// Bytes of unacknowledged deliveries per connection.
    pub max_inflight_delivery_bytes: Option<usize>,
    /// Devices per participant.
    pub max_devices_per_participant: Option<usize>,
    /// Live delivery queue per connection.
    pub delivery_queue: Option<usize>,
    /// Sends per connection awaiting their flush.
    pub max_inflight_sends: Option<usize>,
    /// Allowed clock skew in seconds.
    pub max_clock_skew_secs: Option<f64>,
    /// Grace period of the previous roster epoch, in seconds.
    pub roster_grace_secs: Option<f64>,
    /// Shutdown drain time in seconds.
    pub drain_timeout_secs: Option<f64>,
}

/// `[store]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileStore {
    /// Retention in days. Default 30.
    pub retention_days: Option<f64>,
    /// Garbage collection interval in seconds. Default 30.
    pub gc_interval_secs: Option<f64>,
}

fn default_name() -> String {
    defaults::RELAY_NAME.into()
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 4433))
}
fn default_data_dir() -> PathBuf {
    "data".into()
}
fn default_roster() -> PathBuf {
    "roster.toml".into()
}
fn default_metrics() -> String {
    "127.0.0.1:9464".into()
}
fn default_cert() -> PathBuf {
    "relay-cert.pem".into()
}
fn default_key() -> PathBuf {
    "relay-key.pem".into()
}
fn default_sans() -> Vec<String> {
    vec!["localhost".into()]
}
fn yes() -> bool {
    true
}

fn secs(field: &'static str, v: Option<f64>, default: Duration) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) if s.is_finite() && s > 0.0 && s < 1e9 => Ok(Duration::from_secs_f64(s)),
        Some(s) => Err(ConfigError::Invalid {
            field,
            reason: format!("{s} is not a positive number of seconds"),
        }),
    }
}

fn positive<T: PartialOrd + Default + Copy + std::fmt::Display>(
    field: &'static str,
    v: Option<T>,
    default: T,
) -> Result<T, ConfigError> {
    match v {
        None => Ok(default),
        Some(x) if x > T::default() => Ok(x),
        Some(x) => Err(ConfigError::Invalid {
            field,
            reason: format!("{x} must be positive"),
        }),
    }
}

impl FileConfig {
    /// Reads and parses a config file.
    ///
    /// # Errors
    /// [`ConfigError::Read`] or [`ConfigError::Syntax`].
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Syntax {
            path: path.into(),
            message: e.to_string(),
        })
    }

    /// Resolves a path relative to the config file's directory.
    pub fn resolve(base: &Path, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    }

    /// The limits of this file.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for a zero or negative value.
    pub fn limits(&self) -> Result<Limits, ConfigError> {
        let d = Limits::default();
        let l = &self.limits;
        Ok(Limits {
            max_frame_len: positive("limits.max_frame_bytes", l.max_frame_bytes, d.max_frame_len)?,
            max_message_len: positive(
                "limits.max_message_bytes",
                l.max_message_bytes,
                d.max_message_len,
            )?,
            send_rate_per_sec: positive(
                "limits.send_rate_per_sec",
                l.send_rate_per_sec,
                d.send_rate_per_sec,
            )?,
            send_burst: positive("limits.send_burst", l.send_burst, d.send_burst)?,
            send_bytes_per_sec: positive(
                "limits.send_bytes_per_sec",
                l.send_bytes_per_sec,
                d.send_bytes_per_sec,
            )?,
            send_bytes_burst: positive(
                "limits.send_bytes_burst",
                l.send_bytes_burst,
                d.send_bytes_burst,
            )?,
            max_stored_bytes_per_participant: positive(
                "limits.max_stored_bytes_per_participant",
                l.max_stored_bytes_per_participant,
                d.max_stored_bytes_per_participant,
            )?,
            auth_rate_per_sec: positive(
                "limits.auth_rate_per_sec",
                l.auth_rate_per_sec,
                d.auth_rate_per_sec,
            )?,
            auth_burst: positive("limits.auth_burst", l.auth_burst, d.auth_burst)?,
            auth_rate_per_sec_per_ip: positive(
                "limits.auth_rate_per_sec_per_ip",
                l.auth_rate_per_sec_per_ip,
                d.auth_rate_per_sec_per_ip,
            )?,
            auth_burst_per_ip: positive(
                "limits.auth_burst_per_ip",
                l.auth_burst_per_ip,
                d.auth_burst_per_ip,
            )?,
            max_connections: positive(
                "limits.max_connections",
                l.max_connections,
                d.max_connections,
            )?,
            max_connections_per_participant: positive(
                "limits.max_connections_per_participant",
                l.max_connections_per_participant,
                d.max_connections_per_participant,
            )?,
            max_unauthenticated_connections: positive(
                "limits.max_unauthenticated_connections",
                l.max_unauthenticated_connections,
                d.max_unauthenticated_connections,
            )?,
            max_connections_per_ip: positive(
                "limits.max_connections_per_ip",
                l.max_connections_per_ip,
                d.max_connections_per_ip,
            )?,
            handshake_timeout: secs(
                "limits.handshake_timeout_secs",
                l.handshake_timeout_secs,
                d.handshake_timeout,
            )?,
            idle_timeout: secs(
                "limits.idle_timeout_secs",
                l.idle_timeout_secs,
                d.idle_timeout,
            )?,
            max_inflight_deliveries: positive(
                "limits.max_inflight_deliveries",
                l.max_inflight_deliveries,
                d.max_inflight_deliveries,
            )?,
            max_inflight_delivery_bytes: positive(
                "limits.max_inflight_delivery_bytes",
                l.max_inflight_delivery_bytes,
                d.max_inflight_delivery_bytes,
            )?,
            max_devices_per_participant: positive(
                "limits.max_devices_per_participant",
                l.max_devices_per_participant,
                d.max_devices_per_participant,
            )?,
            delivery_queue: positive("limits.delivery_queue", l.delivery_queue, d.delivery_queue)?,
            max_inflight_sends: positive(
                "limits.max_inflight_sends",
                l.max_inflight_sends,
                d.max_inflight_sends,
            )?,
            max_clock_skew: secs(
                "limits.max_clock_skew_secs",
                l.max_clock_skew_secs,
                d.max_clock_skew,
            )?,
            roster_grace: secs(
                "limits.roster_grace_secs",
                l.roster_grace_secs,
                d.roster_grace,
            )?,
            drain_timeout: secs(
                "limits.drain_timeout_secs",
                l.drain_timeout_secs,
                d.drain_timeout,
            )?,
        })
    }

    /// Validates everything except the TLS material (which [`FileConfig::load`]
    /// may create): limits, roster, addresses, retention. `check-config` and
    /// `run` share it, so a config that passes the check also starts.
    ///
    /// # Errors
    /// Any [`ConfigError`].
    pub fn check(&self, base: &Path) -> Result<RelayConfig, ConfigError> {
        let limits = self.limits()?;
        if limits.max_message_len as u64 + 64 > u64::from(limits.max_frame_len) {
            return Err(ConfigError::Invalid {
                field: "limits.max_frame_bytes",
                reason: "must exceed max_message_bytes by at least 64 bytes of frame overhead"
                    .into(),
            });
        }
        if limits.send_bytes_burst < limits.max_message_len as u64 {
            return Err(ConfigError::Invalid {
                field: "limits.send_bytes_burst",
                reason:
                    "must be at least max_message_bytes, or the largest message could never be sent"
                        .into(),
            });
        }
        let roster_path = Self::resolve(base, &self.roster);
        let roster = load_roster(&roster_path)?;
        let metrics_listen = if self.metrics_listen.trim().is_empty() {
            None
        } else {
            Some(
                self.metrics_listen
                    .parse()
                    .map_err(|e| ConfigError::Invalid {
                        field: "metrics_listen",
                        reason: format!("{:?}: {e}", self.metrics_listen),
                    })?,
            )
        };
        let retention = match self.store.retention_days {
            None => defaults::RETENTION,
            Some(d) if d.is_finite() && d > 0.0 && d < 36_500.0 => {
                Duration::from_secs_f64(d * 86_400.0)
            }
            Some(d) => {
                return Err(ConfigError::Invalid {
                    field: "store.retention_days",
                    reason: format!("{d} is not a positive number of days"),
                })
            }
        };
        // Replay protection: a msg_id is remembered for the retention period
        // and an envelope is only accepted within the skew of the relay
        // clock, so the skew must be shorter than retention.
        if limits.max_clock_skew >= retention {
            return Err(ConfigError::Invalid {
                field: "limits.max_clock_skew_secs",
                reason: "must be shorter than store.retention_days (replay protection)".into(),
            });
        }
        let cert = Self::resolve(base, &self.tls.cert);
        let key = Self::resolve(base, &self.tls.key);
        match (cert.exists(), key.exists()) {
            (true, true) => {}
            (false, false) if self.tls.generate_self_signed => {}
            (false, false) => {
                return Err(ConfigError::Invalid {
                    field: "tls.cert",
                    reason: format!(
                        "{} does not exist and generate_self_signed is false",
                        cert.display()
                    ),
                })
            }
            (c, _) => {
                return Err(ConfigError::Invalid {
                    field: if c { "tls.key" } else { "tls.cert" },
                    reason: format!(
                        "only one of {} and {} exists; provide both or neither",
                        cert.display(),
                        key.display()
                    ),
                })
            }
        }
        Ok(RelayConfig {
            name: self.name.clone(),
            listen: self.listen,
            data_dir: Self::resolve(base, &self.data_dir),
            receipt_key: match &self.receipt_key {
                Some(p) => Self::resolve(base, p),
                None => Self::resolve(base, &self.data_dir).join(crate::genesis::RECEIPT_KEY_FILE),
            },
            roster: Arc::new(roster),
            roster_path: Some(roster_path),
            tls: TlsIdentity::placeholder(),
            require_post_quantum: self.tls.require_post_quantum,
            metrics_listen,
            limits,
            retention,
            gc_interval: secs(
                "store.gc_interval_secs",
                self.store.gc_interval_secs,
                defaults::GC_INTERVAL,
            )?,
        })
    }

    /// Loads everything the file names (roster, TLS material — created if
    /// allowed and missing) into a [`RelayConfig`]. `base` is the directory
    /// relative paths are resolved against.
    ///
    /// # Errors
    /// Any [`ConfigError`].
    pub fn load(&self, base: &Path) -> Result<RelayConfig, ConfigError> {
        let mut cfg = self.check(base)?;
        let cert = Self::resolve(base, &self.tls.cert);
        let key = Self::resolve(base, &self.tls.key);
        cfg.tls = if !cert.exists() && !key.exists() && self.tls.generate_self_signed {
            let id = crate::tls::generate_self_signed(&self.tls.subject_alt_names)?;
            id.write_pem(&cert, &key)?;
            tracing::info!(cert = %cert.display(), pin = %id.spki_pin_hex(), "created a self-signed certificate");
            id
        } else {
            TlsIdentity::from_pem_files(&cert, &key)?
        };
        Ok(cfg)
    }
}

/// Reads and validates a roster file.
///
/// # Errors
/// [`ConfigError::Read`] or [`ConfigError::Roster`].
pub fn load_roster(path: &Path) -> Result<Roster, ConfigError> {
    use std::io::Read;
    let read_err = |source| ConfigError::Read {
        path: path.into(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let max = tallinn_common::defaults::MAX_ROSTER_FILE_LEN;
    let mut text = String::new();
    file.take(max + 1)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    if text.len() as u64 > max {
        return Err(ConfigError::Invalid {
            field: "roster",
            reason: format!("{} is larger than {max} bytes", path.display()),
        });
    }
    Roster::parse(&text).map_err(|source| ConfigError::Roster {
        path: path.into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_configs_parse() {
        for text in [
            include_str!("../../config/relay.toml"),
            include_str!("../../config/tallinn-relay.toml"),
        ] {
            let f: FileConfig = toml::from_str(text).unwrap();
            assert!(f.tls.generate_self_signed);
        }
        // The packaged one: every path absolute (ProtectSystem=strict).
        let f: FileConfig =
            toml::from_str(include_str!("../../config/tallinn-relay.toml")).unwrap();
        assert!(f.data_dir.is_absolute());
        assert!(f.tls.cert.is_absolute() && f.tls.key.is_absolute());
        assert!(f.tls.cert.starts_with(&f.data_dir));
    }

    #[test]
    fn defaults_and_unknown_fields() {
        let c: FileConfig = toml::from_str("").unwrap();
        assert_eq!(c.listen.port(), 4433);
        assert!(c.tls.generate_self_signed);
        assert_eq!(
            c.limits().unwrap().max_inflight_deliveries,
            defaults::MAX_INFLIGHT_DELIVERIES
        );
        let e = toml::from_str::<FileConfig>("listne = \"1.2.3.4:5\"").unwrap_err();
        assert!(e.to_string().contains("listne"), "{e}");
        let e = toml::from_str::<FileConfig>("[limits]\nmax_frame_byts = 1").unwrap_err();
        assert!(e.to_string().contains("max_frame_byts"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let c: FileConfig = toml::from_str("[limits]\nsend_burst = 0").unwrap();
        let e = c.limits().unwrap_err().to_string();
        assert!(e.contains("limits.send_burst"), "{e}");
        let c: FileConfig = toml::from_str("[limits]\nidle_timeout_secs = -1").unwrap();
        assert!(c
            .limits()
            .unwrap_err()
            .to_string()
            .contains("idle_timeout_secs"));
        let c: FileConfig = toml::from_str("[limits]\nauth_burst_per_ip = 0").unwrap();
        assert!(c
            .limits()
            .unwrap_err()
            .to_string()
            .contains("auth_burst_per_ip"));
        // The byte bucket must hold the largest message.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("roster.toml"), "").unwrap();
        let c: FileConfig =
            toml::from_str("[limits]\nmax_message_bytes = 100000\nsend_bytes_burst = 99999")
                .unwrap();
        let e = c.check(dir.path()).unwrap_err().to_string();
        assert!(e.contains("send_bytes_burst"), "{e}");
    }
}
