//! `client.toml`: where the relay is, how to trust it, who we are.
//!
//! Relative paths are relative to the config file's directory. Every field is
//! documented with its default in `config/client.toml`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tallinn_common::identity::DeviceId;

use crate::defaults;

/// Errors reading the client configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML of the expected shape.
    #[error("config file {path} is invalid: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// Parser message (names the field).
        message: String,
    },
    /// A value is invalid.
    #[error("config value {field} is invalid: {reason}")]
    Invalid {
        /// Field.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

/// How the relay's certificate is trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// SHA-256 of the relay certificate's SubjectPublicKeyInfo.
    Pin([u8; 32]),
    /// A PEM file of CA certificates; the relay certificate must chain to one
    /// and be valid for `server_name`.
    CaFile(PathBuf),
}

/// The file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Relay UDP address, `host:port`.
    pub relay: String,
    /// TLS server name to expect (default: the host part of `relay`, or
    /// `localhost` for an IP address).
    pub server_name: Option<String>,
    /// Hex SHA-256 of the relay's SPKI (from `tallinn-relay gen-cert`).
    pub relay_pin: Option<String>,
    /// PEM CA file instead of a pin.
    pub ca_file: Option<PathBuf>,
    /// Secret key file. Default `identity.key`.
    #[serde(default = "default_identity")]
    pub identity: PathBuf,
    /// Device label. Default `default`.
    #[serde(default = "default_device")]
    pub device: String,
    /// Roster file. Default `roster.toml`.
    #[serde(default = "default_roster")]
    pub roster: PathBuf,
    /// Version 2: the deployment fingerprint (hex SHA-256 of the roster
    /// log's genesis, compared out of band once). When set, the client runs
    /// the roster log fetched from the relay, verified against this pin,
    /// and the roster file is used only until the log is fetched.
    pub deployment: Option<String>,
    /// Data directory (archive, outbox). Default `data`.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Seconds to wait for the QUIC handshake and authentication. Default 10.
    pub connect_timeout_secs: Option<f64>,
    /// Seconds to wait for `Accepted` after sending. Default 30.
    pub send_timeout_secs: Option<f64>,
    /// Longest pause between reconnect attempts, seconds. Default 30.
    pub max_backoff_secs: Option<f64>,
    /// Also offer classical (non-post-quantum) TLS key exchanges, for a
    /// relay that does not support X25519MLKEM768. Default `false`.
    #[serde(default)]
    pub allow_classical_key_exchange: bool,
    /// Version 2: rotate this device's encryption key every this many days
    /// (0: never automatically). Default 30.
    pub rotate_enc_key_days: Option<f64>,
    /// Version 2: erase a retired encryption key at the latest this many
    /// days after the rotation. Default 14.
    pub enc_key_grace_days: Option<f64>,
    /// The local agent's socket. Default
    /// `$XDG_RUNTIME_DIR/tallinn/agent-<device>-<h>.sock` (see
    /// `tallinn_client::agent`).
    pub agent_socket: Option<PathBuf>,
    /// Version 2: which wraps of every delivery are recomputed from its
    /// content key, a mismatch quarantined: `"beneficiary"` (default) or
    /// `"all"`.
    #[serde(default)]
    pub check_wraps: WrapCheck,
    /// Redact records older than this many days (`tallinn sync` and
    /// `tallinn archive retention` apply it; legal holds win). Default:
    /// keep forever.
    pub retention_days: Option<f64>,
    /// Per-channel retention in days, instead of `retention_days`.
    #[serde(default)]
    pub retention_days_by_channel: std::collections::BTreeMap<String, f64>,
}

/// Which wraps a client recomputes at receipt (`check_wraps`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WrapCheck {
    /// The beneficiary's: proves Ukraine was given the same content key.
    #[default]
    Beneficiary,
    /// Every recipient's.
    All,
}

fn default_identity() -> PathBuf {
    "identity.key".into()
}
fn default_device() -> String {
    "default".into()
}
fn default_roster() -> PathBuf {
    "roster.toml".into()
}
fn default_data_dir() -> PathBuf {
    "data".into()
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Relay address as written (resolved at connect time).
    pub relay: String,
    /// TLS server name.
    pub server_name: String,
    /// Trust anchor.
    pub trust: Option<Trust>,
    /// Secret key file.
    pub identity: PathBuf,
    /// Device label.
    pub device: DeviceId,
    /// Roster file.
    pub roster: PathBuf,
    /// Version 2: the pinned deployment fingerprint.
    pub deployment: Option<[u8; 32]>,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Connect + auth timeout.
    pub connect_timeout: Duration,
    /// Wait for `Accepted`.
    pub send_timeout: Duration,
    /// Reconnect backoff cap.
    pub max_backoff: Duration,
    /// Also offer classical TLS key exchanges.
    pub allow_classical_key_exchange: bool,
    /// Automatic encryption-key rotation period (`None`: never).
    pub rotate_enc_key: Option<Duration>,
    /// Longest a retired encryption key is kept.
    pub enc_key_grace: Duration,
    /// The local agent's socket.
    pub agent_socket: PathBuf,
    /// Which wraps are recomputed at receipt.
    pub check_wraps: WrapCheck,
    /// How long records are kept before they are redacted.
    pub retention: crate::archive::Retention,
}

fn days(field: &'static str, v: Option<f64>, d: f64) -> Result<f64, ConfigError> {
    let v = v.unwrap_or(d);
    if v.is_finite() && (0.0..=3650.0).contains(&v) {
        Ok(v)
    } else {
        Err(ConfigError::Invalid {
            field,
            reason: format!("{v} is not a number of days between 0 and 3650"),
        })
    }
}

/// A retention: more than 0 days (leave it out to keep forever), at most a
/// century.
fn retention_days(field: &'static str, v: f64) -> Result<f64, ConfigError> {
    if v.is_finite() && v > 0.0 && v <= 36_500.0 {
        Ok(v)
    } else {
        Err(ConfigError::Invalid {
            field,
            reason: format!(
                "{v} is not a number of days above 0 and at most 36500 (leave it out to keep records forever)"
            ),
        })
    }
}

fn secs(field: &'static str, v: Option<f64>, d: Duration) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(d),
        Some(s) if s.is_finite() && s > 0.0 && s < 1e7 => Ok(Duration::from_secs_f64(s)),
        Some(s) => Err(ConfigError::Invalid {
            field,
            reason: format!("{s} is not a positive number of seconds"),
        }),
    }
}

/// Parses a 64-hex-digit pin (colons and spaces allowed).
///
/// # Errors
/// [`ConfigError::Invalid`].
pub fn parse_pin(s: &str) -> Result<[u8; 32], ConfigError> {
    let clean: String = s.chars().filter(|c| !matches!(c, ':' | ' ')).collect();
    let mut out = [0u8; 32];
    hex::decode_to_slice(&clean, &mut out).map_err(|_| ConfigError::Invalid {
        field: "relay_pin",
        reason: "must be 64 hex digits (the SHA-256 printed by `tallinn-relay gen-cert`)".into(),
    })?;
    Ok(out)
}

impl ClientConfig {
    /// Reads and resolves a config file.
    ///
    /// # Errors
    /// [`ConfigError`].
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let file: FileConfig = toml::from_str(&text).map_err(|e| ConfigError::Syntax {
            path: path.into(),
            message: e.to_string(),
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Self::from_file(file, base)
    }

    /// Resolves a parsed file against `base`.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`].
    pub fn from_file(file: FileConfig, base: &Path) -> Result<Self, ConfigError> {
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let trust = match (&file.relay_pin, &file.ca_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid {
                    field: "relay_pin",
                    reason: "set relay_pin or ca_file, not both".into(),
                })
            }
            (Some(p), None) => Some(Trust::Pin(parse_pin(p)?)),
            (None, Some(ca)) => Some(Trust::CaFile(resolve(ca))),
            (None, None) => None,
        };
        let host = file
            .relay
            .rsplit_once(':')
            .map(|(h, _)| h.trim_matches(|c| c == '[' || c == ']'))
            .unwrap_or(&file.relay);
        let server_name = file.server_name.clone().unwrap_or_else(|| {
            if host.parse::<std::net::IpAddr>().is_ok() {
                "localhost".to_string()
            } else {
                host.to_string()
            }
        });
        let device = DeviceId::new(file.device.as_str()).map_err(|e| ConfigError::Invalid {
            field: "device",
            reason: e.to_string(),
        })?;
        let data_dir = resolve(&file.data_dir);
        let agent_socket = match &file.agent_socket {
            Some(p) => resolve(p),
            None => crate::agent::default_socket(&data_dir, device.as_str()),
        };
        Ok(Self {
            agent_socket,
            relay: file.relay.clone(),
            server_name,
            trust,
            identity: resolve(&file.identity),
            device,
            roster: resolve(&file.roster),
            deployment: file
                .deployment
                .as_deref()
                .map(|d| {
                    parse_pin(d).map_err(|_| ConfigError::Invalid {
                        field: "deployment",
                        reason:
                            "expected 64 hex digits (spaces allowed): the deployment fingerprint"
                                .into(),
                    })
                })
                .transpose()?,
            data_dir,
            connect_timeout: secs(
                "connect_timeout_secs",
                file.connect_timeout_secs,
                defaults::CONNECT_TIMEOUT,
            )?,
            send_timeout: secs(
                "send_timeout_secs",
                file.send_timeout_secs,
                defaults::SEND_TIMEOUT,
            )?,
            max_backoff: secs(
                "max_backoff_secs",
                file.max_backoff_secs,
                defaults::MAX_BACKOFF,
            )?,
            allow_classical_key_exchange: file.allow_classical_key_exchange,
            check_wraps: file.check_wraps,
            retention: {
                let days = file
                    .retention_days
                    .map(|d| retention_days("retention_days", d))
                    .transpose()?;
                let mut by_channel = std::collections::BTreeMap::new();
                for (c, d) in &file.retention_days_by_channel {
                    by_channel.insert(c.clone(), retention_days("retention_days_by_channel", *d)?);
                }
                crate::archive::Retention { days, by_channel }
            },
            rotate_enc_key: {
                let d = days(
                    "rotate_enc_key_days",
                    file.rotate_enc_key_days,
                    defaults::ROTATE_ENC_KEY_DAYS,
                )?;
                (d > 0.0).then(|| Duration::from_secs_f64(d * 86_400.0))
            },
            enc_key_grace: Duration::from_secs_f64(
                days(
                    "enc_key_grace_days",
                    file.enc_key_grace_days,
                    defaults::ENC_KEY_GRACE_DAYS,
                )? * 86_400.0,
            ),
        })
    }

    /// Resolves the relay address (DNS if needed).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] if it does not resolve.
    pub fn relay_addr(&self) -> Result<SocketAddr, ConfigError> {
        use std::net::ToSocketAddrs;
        let port = self
            .relay
            .rsplit_once(':')
            .filter(|(h, _)| !h.is_empty() && (!h.contains(':') || h.ends_with(']')))
            .map(|(_, p)| p);
        match port {
            None => {
                return Err(ConfigError::Invalid {
                    field: "relay",
                    reason: format!(
                        "{:?} has no port: write host:port (e.g. relay.example.org:4433)",
                        self.relay
                    ),
                })
            }
            Some(p) if p.parse::<u16>().is_err() => {
                return Err(ConfigError::Invalid {
                    field: "relay",
                    reason: format!("{:?}: the port {p:?} is not a number 1-65535", self.relay),
                })
            }
            Some(_) => {}
        }
        self.relay
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| ConfigError::Invalid {
                field: "relay",
                reason: format!("{:?} does not resolve to an address", self.relay),
            })
    }
}

impl ClientConfig {
    /// Checks what a connection needs before anything is queued: a trust
    /// anchor for the relay and an address with a port that resolves.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key to fix.
    pub fn check_relay(&self) -> Result<SocketAddr, ConfigError> {
        if self.trust.is_none() {
            return Err(ConfigError::Invalid {
                field: "relay_pin",
                reason: "no trust anchor for the relay: set relay_pin (the fingerprint the operator gives you) or ca_file".into(),
            });
        }
        self.relay_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_or_ca_and_paths() {
        let f: FileConfig = toml::from_str(&format!(
            "relay = \"127.0.0.1:4433\"\nrelay_pin = \"{}\"\nidentity = \"ua.key\"",
            "ab".repeat(32)
        ))
        .unwrap();
        let c = ClientConfig::from_file(f, Path::new("/etc/tallinn")).unwrap();
        assert_eq!(c.trust, Some(Trust::Pin([0xab; 32])));
        assert_eq!(c.identity, PathBuf::from("/etc/tallinn/ua.key"));
        assert_eq!(c.server_name, "localhost");
        assert_eq!(c.relay_addr().unwrap().port(), 4433);

        let f: FileConfig = toml::from_str("relay = \"relay.example.org:4433\"").unwrap();
        let c = ClientConfig::from_file(f, Path::new(".")).unwrap();
        assert_eq!(c.trust, None);
        assert_eq!(c.server_name, "relay.example.org");
    }

    #[test]
    fn shipped_example_config_parses() {
        let text = include_str!("../../config/client.toml");
        let f: FileConfig = toml::from_str(text).unwrap();
        let c = ClientConfig::from_file(f, Path::new("/etc/tallinn")).unwrap();
        assert_eq!(c.device.as_str(), "front-office");
        assert!(matches!(c.trust, Some(Trust::Pin(_))));
        assert_eq!(c.server_name, "relay.example.org");
    }

    #[test]
    fn bad_values_are_named() {
        let f: FileConfig = toml::from_str("relay = \"x:1\"\nrelay_pin = \"zz\"").unwrap();
        let e = ClientConfig::from_file(f, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(e.contains("relay_pin"), "{e}");
        let e = toml::from_str::<FileConfig>("relay = \"x:1\"\nrelai_pin = \"zz\"").unwrap_err();
        assert!(e.to_string().contains("relai_pin"));
        let f: FileConfig = toml::from_str("relay = \"x:1\"\ndevice = \"front office\"").unwrap();
        let e = ClientConfig::from_file(f, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(e.contains("device"), "{e}");
    }

    #[test]
    fn a_relay_without_a_port_or_pin_is_named_before_any_connection() {
        let f: FileConfig = toml::from_str("relay = \"127.0.0.1\"").unwrap();
        let c = ClientConfig::from_file(f, Path::new(".")).unwrap();
        let e = c.relay_addr().unwrap_err().to_string();
        assert!(e.contains("has no port"), "{e}");
        let e = c.check_relay().unwrap_err().to_string();
        assert!(e.contains("relay_pin"), "{e}");
        let f: FileConfig = toml::from_str("relay = \"[::1]:99999\"").unwrap();
        let c = ClientConfig::from_file(f, Path::new(".")).unwrap();
        assert!(c
            .relay_addr()
            .unwrap_err()
            .to_string()
            .contains("not a number"));
        let f: FileConfig = toml::from_str("relay = \"[::1]:4433\"").unwrap();
        let c = ClientConfig::from_file(f, Path::new(".")).unwrap();
        assert_eq!(c.relay_addr().unwrap().port(), 4433);
    }
}
