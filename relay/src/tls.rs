//! TLS material: loading or generating the relay certificate, its SPKI pin,
//! and the QUIC server configuration (TLS 1.3 only, ALPN `tallinn/1`,
//! rustls with the aws-lc-rs provider, X25519MLKEM768 preferred).
//!
//! The pin clients put in their config is the lower-case hex SHA-256 of the
//! end-entity certificate's DER SubjectPublicKeyInfo: it survives
//! certificate renewal with the same key.

use std::sync::atomic::{AtomicU64, Ordering};

use rustls::crypto::{ActiveKeyExchange, CompletedKeyExchange, SupportedKxGroup};
use rustls::NamedGroup;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tallinn_common::defaults::ALPN;

/// TLS failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("reading {what} {path}: {reason}")]
    Pem {
        /// `certificate` or `private key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Writing generated material failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Certificate generation failed.
    #[error("generating a certificate: {0}")]
    Generate(String),
    /// The certificate cannot be parsed as X.509.
    #[error("certificate is not valid X.509: {0}")]
    BadCertificate(String),
    /// rustls refused the certificate/key pair or configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// A certificate chain and its private key.
pub struct TlsIdentity {
    /// End-entity certificate first.
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// The private key.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for TlsIdentity {
    fn clone(&self) -> Self {
        Self {
            cert_chain: self.cert_chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("certs", &self.cert_chain.len())
            .field("pin", &self.spki_pin_hex())
            .finish_non_exhaustive()
    }
}

/// SHA-256 of a certificate's SubjectPublicKeyInfo.
///
/// # Errors
/// [`TlsError::BadCertificate`] if the DER is not a certificate.
pub fn spki_pin(cert: &CertificateDer<'_>) -> Result<[u8; 32], TlsError> {
    let ee = webpki::EndEntityCert::try_from(cert)
        .map_err(|e| TlsError::BadCertificate(format!("{e:?}")))?;
    Ok(Sha256::digest(ee.subject_public_key_info().as_ref()).into())
}

impl TlsIdentity {
    /// An empty identity standing in until the real one is loaded (used by
    /// [`crate::config::FileConfig::check`]); a server refuses to start with it.
    pub fn placeholder() -> Self {
        Self {
            cert_chain: Vec::new(),
            key: PrivateKeyDer::Pkcs8(Vec::new().into()),
        }
    }

    /// Loads a PEM chain and key.
    ///
    /// # Errors
    /// [`TlsError::Pem`].
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let pem_err = |what, path: &Path, reason: String| TlsError::Pem {
            what,
            path: path.into(),
            reason,
        };
        let cert_chain = CertificateDer::pem_file_iter(cert)
            .map_err(|e| pem_err("certificate", cert, e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_err("certificate", cert, e.to_string()))?;
        if cert_chain.is_empty() {
            return Err(pem_err("certificate", cert, "no certificate found".into()));
        }
        let key_file =
            std::fs::File::open(key).map_err(|e| pem_err("private key", key, e.to_string()))?;
        tallinn_host::durable::check_private_file(&key_file, key)
            .map_err(|e| pem_err("private key", key, e.to_string()))?;
        let key_der = PrivateKeyDer::from_pem_reader(std::io::BufReader::new(key_file))
            .map_err(|e| pem_err("private key", key, e.to_string()))?;
        let id = Self {
            cert_chain,
            key: key_der,
        };
        id.pin()?;
        Ok(id)
    }

    /// The end-entity certificate's SPKI SHA-256.
    ///
    /// # Errors
    /// [`TlsError::BadCertificate`].
    pub fn pin(&self) -> Result<[u8; 32], TlsError> {
        let ee = self
            .cert_chain
            .first()
            .ok_or_else(|| TlsError::BadCertificate("empty chain".into()))?;
        spki_pin(ee)
    }

    /// The pin as lower-case hex (empty if the certificate is unparsable).
    pub fn spki_pin_hex(&self) -> String {
        self.pin().map(hex::encode).unwrap_or_default()
    }

    /// Writes the chain and key as PEM; the key file gets mode 0600.
    ///
    /// # Errors
    /// [`TlsError::Write`].
    pub fn write_pem(&self, cert: &Path, key: &Path) -> Result<(), TlsError> {
        use std::io::Write;
        let werr = |path: &Path| {
            let path = path.to_path_buf();
            move |source| TlsError::Write { path, source }
        };
        let mut cert_pem = String::new();
        for c in &self.cert_chain {
            cert_pem.push_str(&pem_block("CERTIFICATE", c.as_ref()));
        }
        let key_pem = match &self.key {
            PrivateKeyDer::Pkcs8(k) => pem_block("PRIVATE KEY", k.secret_pkcs8_der()),
            PrivateKeyDer::Sec1(k) => pem_block("EC PRIVATE KEY", k.secret_sec1_der()),
            PrivateKeyDer::Pkcs1(k) => pem_block("RSA PRIVATE KEY", k.secret_pkcs1_der()),
            _ => return Err(TlsError::Config("unsupported key type".into())),
        };
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(key).map_err(werr(key))?;
        f.write_all(key_pem.as_bytes()).map_err(werr(key))?;
        f.sync_all().map_err(werr(key))?;
        std::fs::write(cert, cert_pem).map_err(werr(cert))?;
        Ok(())
    }
}

fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Generates a self-signed ECDSA P-256 certificate for `names`.
///
/// # Errors
/// [`TlsError::Generate`].
pub fn generate_self_signed(names: &[String]) -> Result<TlsIdentity, TlsError> {
    let ck = rcgen::generate_simple_self_signed(names.to_vec())
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    let cert = CertificateDer::from(ck.cert.der().to_vec());
    let key = PrivateKeyDer::try_from(ck.signing_key.serialize_der())
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    Ok(TlsIdentity {
        cert_chain: vec![cert],
        key,
    })
}

/// The rustls crypto provider used everywhere: aws-lc-rs.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Key exchanges the relay completed, by kind: the metric
/// `tallinn_tls_key_exchanges_total{group}`.
#[derive(Debug, Default)]
pub struct KxCounters {
    /// X25519MLKEM768 (hybrid post-quantum).
    pub hybrid: AtomicU64,
    /// Any classical group (only with `require_post_quantum = false`).
    pub classical: AtomicU64,
    /// Handshakes refused because the client offered no post-quantum group.
    pub refused_classical: AtomicU64,
}

/// A key-exchange group that counts the handshakes it completes. rustls
/// keeps no per-connection record of the group that quinn exposes, so the
/// relay counts at the one place the server runs the exchange
/// (`start_and_complete`).
#[derive(Debug)]
struct Counted {
    inner: &'static dyn SupportedKxGroup,
    counters: Arc<KxCounters>,
    hybrid: bool,
}

impl SupportedKxGroup for Counted {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, rustls::Error> {
        self.inner.start()
    }

    fn start_and_complete(
        &self,
        peer_pub_key: &[u8],
    ) -> Result<CompletedKeyExchange, rustls::Error> {
        let done = self.inner.start_and_complete(peer_pub_key)?;
        let c = if self.hybrid {
            &self.counters.hybrid
        } else {
            &self.counters.classical
        };
        c.fetch_add(1, Ordering::Relaxed);
        Ok(done)
    }

    fn ffdhe_group(&self) -> Option<rustls::ffdhe_groups::FfdheGroup<'static>> {
        self.inner.ffdhe_group()
    }

    fn name(&self) -> NamedGroup {
        self.inner.name()
    }

    fn fips(&self) -> bool {
        self.inner.fips()
    }

    fn usable_for_version(&self, version: rustls::ProtocolVersion) -> bool {
        self.inner.usable_for_version(version)
    }
}

/// The key-exchange groups a relay offers: X25519MLKEM768 alone when post
/// quantum is required, else it first and the classical groups after it.
pub fn kx_groups(require_post_quantum: bool) -> Vec<&'static dyn SupportedKxGroup> {
    let hybrid = rustls::crypto::aws_lc_rs::kx_group::X25519MLKEM768;
    if require_post_quantum {
        return vec![hybrid];
    }
    let mut all = vec![hybrid];
    all.extend(
        rustls::crypto::aws_lc_rs::default_provider()
            .kx_groups
            .into_iter()
            .filter(|g| g.name() != hybrid.name()),
    );
    all
}

/// Builds the QUIC server crypto config: TLS 1.3 only, ALPN `tallinn/1`, no
/// client certificates (clients authenticate inside the session), no 0-RTT,
/// and the key exchanges of [`kx_groups`], each counted into `counters`.
///
/// The counting wrappers must be `'static` (rustls holds groups as
/// `&'static dyn`): each call leaks one small wrapper per group, a few
/// hundred bytes per relay start.
///
/// # Errors
/// [`TlsError::Config`].
pub fn server_crypto(
    id: &TlsIdentity,
    require_post_quantum: bool,
    counters: Arc<KxCounters>,
) -> Result<quinn::crypto::rustls::QuicServerConfig, TlsError> {
    let hybrid_name = rustls::NamedGroup::X25519MLKEM768;
    let groups = kx_groups(require_post_quantum)
        .into_iter()
        .map(|inner| {
            let counted: &'static dyn SupportedKxGroup = Box::leak(Box::new(Counted {
                inner,
                counters: counters.clone(),
                hybrid: inner.name() == hybrid_name,
            }));
            counted
        })
        .collect();
    let provider = Arc::new(rustls::crypto::CryptoProvider {
        kx_groups: groups,
        ..rustls::crypto::aws_lc_rs::default_provider()
    });
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(id.cert_chain.clone(), id.key.clone_key())
        .map_err(|e| TlsError::Config(e.to_string()))?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    cfg.max_early_data_size = 0;
    quinn::crypto::rustls::QuicServerConfig::try_from(cfg)
        .map_err(|e| TlsError::Config(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_write_load_round_trip_keeps_pin() {
        let dir = tempfile::tempdir().unwrap();
        let id = generate_self_signed(&["localhost".into()]).unwrap();
        let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        id.write_pem(&c, &k).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&k).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let back = TlsIdentity::from_pem_files(&c, &k).unwrap();
        assert_eq!(back.pin().unwrap(), id.pin().unwrap());
        assert_eq!(id.spki_pin_hex().len(), 64);
        assert!(server_crypto(&back, true, Arc::default()).is_ok());
        // Never overwrites a key.
        assert!(id.write_pem(&c, &k).is_err());
        // A key readable by others is refused, with the fix.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = TlsIdentity::from_pem_files(&c, &k).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
    }

    #[test]
    fn garbage_pem_is_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("c.pem");
        std::fs::write(&c, "not a pem").unwrap();
        let e = TlsIdentity::from_pem_files(&c, &c).unwrap_err();
        assert!(
            matches!(
                e,
                TlsError::Pem {
                    what: "certificate",
                    ..
                }
            ),
            "{e}"
        );
    }
}
