//! One authenticated session with the relay: QUIC + TLS 1.3 with a pinned
//! relay key (or a CA file), the session preamble, Hello/Auth/Welcome, and
//! framed reads and writes.
//!
//! ```text
//! connect(addr) ── TLS 1.3, ALPN tallinn/1, verify pin/CA ──▶ open_bi
//!   ── "TLN1" ──▶   ◀── Hello{nonce} ──   exporter = TLS-Exporter("EXPORTER-tallinn-auth", nonce, 32)
//!   ── Auth{id, device, sig("tallinn/1 auth"||nonce||exporter||device)} ──▶   ◀── Welcome{pending}
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use quinn::{Connection, Endpoint, RecvStream, SendStream};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use sha2::{Digest, Sha256};
use tallinn_common::defaults::{ALPN, AUTH_EXPORTER_LABEL, AUTH_EXPORTER_LEN, SESSION_PREAMBLE};
use tallinn_common::identity::{DeviceId, Identity};
use tallinn_common::wire::{self, ErrorCode, Frame};

use crate::config::Trust;
use crate::defaults;

/// Why a session could not be established or ended.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// Neither a pin nor a CA file is configured.
    #[error(
        "no relay_pin or ca_file in the client config: refusing to connect to an unauthenticated relay. \
         Ask the relay operator for the pin (printed by `tallinn-relay gen-cert`, or \
         `tallinn-relay pin --cert relay-cert.pem`) and add `relay_pin = \"<64 hex digits>\"` to client.toml"
    )]
    NoTrust,
    /// The CA file could not be read.
    #[error("reading CA file {path}: {reason}")]
    CaFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// Local QUIC/TLS setup failed.
    #[error("client setup: {0}")]
    Setup(String),
    /// The relay could not be reached or the handshake failed (includes a
    /// certificate that does not match the pin).
    #[error("connecting to the relay at {addr}: {reason}")]
    Connect {
        /// Relay address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The relay refused us (auth failure, limits, shutdown).
    #[error("the relay refused the session: {code}: {reason}")]
    Refused {
        /// Error code.
        code: ErrorCode,
        /// The relay's reason.
        reason: String,
    },
    /// The relay broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Version 2: the relay served a roster log this client cannot trust
    /// (another deployment, an invalid entry, a truncated log or a fork).
    /// Not retried: the relay (or whoever signed the entries) misbehaves.
    #[error("untrusted roster log: {0}")]
    UntrustedRoster(String),
    /// Version 2: this archive does not reach or does not agree with the
    /// last checkpoint its device signed (a truncated archive, or an older
    /// copy put back). Not retried; `tallinn archive recover` accepts the
    /// archive as it is, and records that.
    #[error("{0}; nothing more is archived: restore the newest copy of the archive, or accept this one as it is with `tallinn archive recover` (recorded in the archive)")]
    ArchiveBehind(String),
    /// The connection was lost.
    #[error("connection lost: {0}")]
    Lost(String),
    /// Timed out.
    #[error("timed out {0}")]
    Timeout(&'static str),
}

impl ConnectError {
    /// Whether retrying later can help (network trouble, relay restart,
    /// limits), as opposed to a configuration or identity problem.
    pub fn is_transient(&self) -> bool {
        match self {
            // A certificate the client refuses (pin mismatch, unknown CA,
            // wrong name) will not fix itself: fatal. Anything else
            // (unreachable, timed out) is worth retrying.
            ConnectError::Connect { reason, .. } => {
                !(reason.contains("pin") || reason.contains("certificate"))
            }
            ConnectError::Lost(_) | ConnectError::Timeout(_) => true,
            ConnectError::Refused { code, .. } => matches!(
                code,
                ErrorCode::ShuttingDown | ErrorCode::RateLimited | ErrorCode::Internal
            ),
            _ => false,
        }
    }
}

/// Accepts exactly the certificate whose SubjectPublicKeyInfo hashes to the pin.
#[derive(Debug)]
struct PinVerifier {
    pin: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
}

/// SHA-256 of a certificate's SubjectPublicKeyInfo.
fn spki_sha256(cert: &CertificateDer<'_>) -> Option<[u8; 32]> {
    let ee = webpki::EndEntityCert::try_from(cert).ok()?;
    Some(Sha256::digest(ee.subject_public_key_info().as_ref()).into())
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match spki_sha256(end_entity) {
            Some(p) if p == self.pin => Ok(ServerCertVerified::assertion()),
            Some(p) => Err(rustls::Error::General(format!(
                "relay key does not match the pinned key (relay pin is {}; check relay_pin)",
                hex::encode(p)
            ))),
            None => Err(rustls::Error::General(
                "relay certificate is not valid X.509".into(),
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not allowed".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The rustls provider of the client: aws-lc-rs offering only the
/// X25519MLKEM768 hybrid key exchange, or (with `allow_classical`) the hybrid
/// first and the classical groups after it.
pub fn provider(allow_classical: bool) -> rustls::crypto::CryptoProvider {
    let all = rustls::crypto::aws_lc_rs::default_provider();
    let hybrid = rustls::crypto::aws_lc_rs::kx_group::X25519MLKEM768;
    let mut kx_groups = vec![hybrid];
    if allow_classical {
        kx_groups.extend(all.kx_groups.iter().filter(|g| g.name() != hybrid.name()));
    }
    rustls::crypto::CryptoProvider { kx_groups, ..all }
}

/// Builds a QUIC client endpoint trusting the relay per `trust`, offering
/// only post-quantum key exchange unless `allow_classical`.
///
/// # Errors
/// [`ConnectError::NoTrust`], [`ConnectError::CaFile`], [`ConnectError::Setup`].
pub fn endpoint(
    trust: Option<&Trust>,
    relay: SocketAddr,
    allow_classical: bool,
) -> Result<Endpoint, ConnectError> {
    let provider = Arc::new(provider(allow_classical));
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ConnectError::Setup(e.to_string()))?;
    let mut cfg = match trust.ok_or(ConnectError::NoTrust)? {
        Trust::Pin(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinVerifier {
                pin: *pin,
                provider,
            }))
            .with_no_client_auth(),
        Trust::CaFile(path) => {
            let ca_err = |reason: String| ConnectError::CaFile {
                path: path.clone(),
                reason,
            };
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| ca_err(e.to_string()))? {
                roots
                    .add(cert.map_err(|e| ca_err(e.to_string()))?)
                    .map_err(|e| ca_err(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(ca_err("no certificates in the file".into()));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(cfg)
        .map_err(|e| ConnectError::Setup(e.to_string()))?;
    let mut client = quinn::ClientConfig::new(Arc::new(quic));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(defaults::KEEP_ALIVE));
    transport.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(defaults::IDLE_TIMEOUT)
            .map_err(|e| ConnectError::Setup(e.to_string()))?,
    ));
    client.transport_config(Arc::new(transport));
    // Bind the address family of the relay (an IPv4 socket cannot reach IPv6).
    let bind: SocketAddr = if relay.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let mut ep = Endpoint::client(bind).map_err(|e| ConnectError::Setup(e.to_string()))?;
    ep.set_default_client_config(client);
    Ok(ep)
}

/// An authenticated session.
pub struct Session {
    /// The QUIC connection.
    pub conn: Connection,
    /// Write half of the session stream.
    pub send: SendStream,
    /// Read half of the session stream.
    pub recv: RecvStream,
    /// Messages waiting for this device, per `Welcome`.
    pub pending: u64,
    /// The relay's name from `Hello`.
    pub relay_name: String,
}

/// Connects and authenticates.
///
/// # Errors
/// [`ConnectError`].
pub async fn establish(
    endpoint: &Endpoint,
    addr: SocketAddr,
    server_name: &str,
    identity: &Identity,
    device: &DeviceId,
) -> Result<Session, ConnectError> {
    let connect_err = |reason: String| ConnectError::Connect { addr, reason };
    let conn = endpoint
        .connect(addr, server_name)
        .map_err(|e| connect_err(e.to_string()))?
        .await
        .map_err(|e| connect_err(e.to_string()))?;
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| ConnectError::Lost(e.to_string()))?;
    send.write_all(&SESSION_PREAMBLE)
        .await
        .map_err(|e| ConnectError::Lost(e.to_string()))?;
    let (relay_name, nonce) = match read_frame(&mut recv, &conn).await? {
        Frame::Hello { relay_name, nonce } => (relay_name, nonce),
        Frame::Error { code, reason } => return Err(ConnectError::Refused { code, reason }),
        other => {
            return Err(ConnectError::Protocol(format!(
                "expected Hello, got {}",
                other.name()
            )))
        }
    };
    let mut exporter = [0u8; AUTH_EXPORTER_LEN];
    conn.export_keying_material(&mut exporter, AUTH_EXPORTER_LABEL, &nonce)
        .map_err(|_| ConnectError::Protocol("TLS exporter unavailable".into()))?;
    let auth = wire::sign_auth(identity, device.as_str(), &nonce, &exporter);
    send.write_all(&wire::encode_frame(&auth))
        .await
        .map_err(|e| ConnectError::Lost(e.to_string()))?;
    match read_frame(&mut recv, &conn).await? {
        Frame::Welcome { pending, .. } => Ok(Session {
            conn,
            send,
            recv,
            pending,
            relay_name,
        }),
        Frame::Error { code, reason } => Err(ConnectError::Refused { code, reason }),
        other => Err(ConnectError::Protocol(format!(
            "expected Welcome, got {}",
            other.name()
        ))),
    }
}

/// Reads one frame; a connection closed with an error code becomes
/// [`ConnectError::Refused`].
///
/// # Errors
/// [`ConnectError`].
pub async fn read_frame(recv: &mut RecvStream, conn: &Connection) -> Result<Frame, ConnectError> {
    let mut prefix = [0u8; 4];
    if let Err(e) = recv.read_exact(&mut prefix).await {
        return Err(close_reason(conn).unwrap_or_else(|| ConnectError::Lost(e.to_string())));
    }
    let len = wire::frame_len(prefix, defaults::MAX_FRAME_LEN)
        .map_err(|e| ConnectError::Protocol(e.to_string()))?;
    let mut buf = vec![0u8; len];
    if let Err(e) = recv.read_exact(&mut buf).await {
        return Err(close_reason(conn).unwrap_or_else(|| ConnectError::Lost(e.to_string())));
    }
    wire::decode_frame(&buf).map_err(|e| ConnectError::Protocol(e.to_string()))
}

/// The relay's close code, if it closed the connection with one.
fn close_reason(conn: &Connection) -> Option<ConnectError> {
    match conn.close_reason()? {
        quinn::ConnectionError::ApplicationClosed(c) => {
            let code = ErrorCode::from_close_code(c.error_code.into_inner())?;
            Some(ConnectError::Refused {
                code,
                reason: String::from_utf8_lossy(&c.reason).into_owned(),
            })
        }
        other => Some(ConnectError::Lost(other.to_string())),
    }
}

#[cfg(test)]
mod pq_tests {
    use super::*;

    #[test]
    fn the_client_offers_only_the_hybrid_group_by_default() {
        let names: Vec<_> = provider(false).kx_groups.iter().map(|g| g.name()).collect();
        assert_eq!(names, vec![rustls::NamedGroup::X25519MLKEM768]);
        let names: Vec<_> = provider(true).kx_groups.iter().map(|g| g.name()).collect();
        assert_eq!(names[0], rustls::NamedGroup::X25519MLKEM768);
        assert!(names.contains(&rustls::NamedGroup::X25519));
    }
}
