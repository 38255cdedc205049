//! Test harness: a real relay on 127.0.0.1:0 (in-process or as a child
//! process) and a raw protocol client that can also misbehave on purpose.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use quinn::{Connection, Endpoint, RecvStream, SendStream};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tallinn_common::defaults::{AUTH_EXPORTER_LABEL, SESSION_PREAMBLE};
use tallinn_common::envelope::{seal, SealedEnvelope};
use tallinn_common::identity::{Identity, ParticipantId};
use tallinn_common::message::{Message, MsgId, Tlp};
use tallinn_common::roster::Roster;
use tallinn_common::wire::{self, ErrorCode, Frame};
use tallinn_relay::{tls, Limits, RelayConfig, Server};

/// Upper bound for any single wait in a test (events, not sleeps).
pub const WAIT: Duration = Duration::from_secs(20);

pub const MEMBERS: [&str; 12] = [
    "US", "CA", "DK", "EE", "FR", "DE", "IT", "NL", "PL", "SE", "GB", "UA",
];
pub const OBSERVERS: [&str; 2] = ["NATO", "EU"];

/// The Tallinn roster with fresh identities.
pub struct World {
    pub roster: Roster,
    pub roster_text: String,
    pub ids: BTreeMap<String, Identity>,
}

impl World {
    pub fn tallinn() -> Self {
        Self::with(&MEMBERS, &OBSERVERS)
    }

    pub fn with(members: &[&str], observers: &[&str]) -> Self {
        let mut ids = BTreeMap::new();
        let mut text = String::from("beneficiary = \"UA\"\n\n");
        for (id, role) in members
            .iter()
            .map(|m| (*m, "member"))
            .chain(observers.iter().map(|o| (*o, "observer")))
        {
            let ident = Identity::generate(ParticipantId::new(id).unwrap());
            text.push_str(&ident.roster_entry(&format!("{id} point of contact"), role));
            text.push('\n');
            ids.insert(id.to_string(), ident);
        }
        let obs: Vec<String> = observers.iter().map(|o| format!("{o:?}")).collect();
        text.push_str(&format!(
            "[[channel]]\nid = \"plenary\"\nmembers = [\"*\"]\nobservers = [{}]\n\n\
             [[channel]]\nid = \"front-office\"\nmembers = [\"UA\", \"EE\"]\n\n\
             [[channel]]\nid = \"back-office\"\nmembers = [\"EE\", \"PL\", \"UA\"]\n",
            obs.join(", ")
        ));
        Self {
            roster: Roster::parse(&text).unwrap(),
            roster_text: text,
            ids,
        }
    }

    pub fn id(&self, id: &str) -> &Identity {
        &self.ids[id]
    }

    pub fn seal(&self, from: &str, channel: &str, subject: &str) -> SealedEnvelope {
        seal(
            self.id(from),
            &self.roster,
            channel,
            &Message::note(Tlp::Green, subject, "body"),
            now_ms(),
        )
        .unwrap()
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// An in-process relay.
pub struct TestRelay {
    pub server: Server,
    pub dir: tempfile::TempDir,
    pub pin: [u8; 32],
}

impl TestRelay {
    pub async fn start(world: &World, limits: Limits) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(world, limits, dir).await
    }

    pub async fn start_in(world: &World, limits: Limits, dir: tempfile::TempDir) -> Self {
        Self::start_with(world, limits, dir, |_| {}).await
    }

    /// A relay over a store the test opens (a fault-injecting wrapper):
    /// `open` gets the data directory, already created with mode 0700.
    pub async fn start_with_store(
        world: &World,
        limits: Limits,
        dir: tempfile::TempDir,
        open: impl FnOnce(&Path) -> Arc<dyn tallinn_relay::store::Store>,
    ) -> Self {
        let config = Self::config(world, limits, &dir);
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&config.data_dir)
                .unwrap();
        }
        let store = open(&config.data_dir);
        let server = Server::spawn_with_store(config, store).await.unwrap();
        let pin = server.spki_pin();
        Self { server, dir, pin }
    }

    pub async fn start_with(
        world: &World,
        limits: Limits,
        dir: tempfile::TempDir,
        edit: impl FnOnce(&mut RelayConfig),
    ) -> Self {
        let mut config = Self::config(world, limits, &dir);
        edit(&mut config);
        let server = Server::spawn(config).await.unwrap();
        let pin = server.spki_pin();
        Self { server, dir, pin }
    }

    fn config(world: &World, limits: Limits, dir: &tempfile::TempDir) -> RelayConfig {
        let tls = tls::generate_self_signed(&["localhost".into()]).unwrap();
        let roster_path = dir.path().join("roster.toml");
        std::fs::write(&roster_path, &world.roster_text).unwrap();
        RelayConfig {
            name: "test-relay".into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().join("data"),
            roster: Arc::new(world.roster.clone()),
            roster_path: Some(roster_path),
            tls,
            require_post_quantum: true,
            metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
            limits,
            retention: Duration::from_secs(30 * 86400),
            gc_interval: Duration::from_secs(3600),
            receipt_key: dir.path().join("data").join("receipt.key"),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }
}

/// Accepts exactly the certificate whose SPKI hashes to the pin.
#[derive(Debug)]
pub struct PinVerifier {
    pin: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
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
        match tls::spki_pin(end_entity) {
            Ok(p) if p == self.pin => Ok(ServerCertVerified::assertion()),
            _ => Err(rustls::Error::General(
                "relay certificate does not match the pin".into(),
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

pub fn client_endpoint(pin: [u8; 32], alpn: &[u8]) -> Endpoint {
    client_endpoint_with(pin, alpn, tls::provider())
}

/// A client offering only the classical X25519 key exchange.
pub fn classical_client_endpoint(pin: [u8; 32]) -> Endpoint {
    let provider = Arc::new(rustls::crypto::CryptoProvider {
        kx_groups: vec![rustls::crypto::aws_lc_rs::kx_group::X25519],
        ..rustls::crypto::aws_lc_rs::default_provider()
    });
    client_endpoint_with(pin, tallinn_common::defaults::ALPN, provider)
}

pub fn client_endpoint_with(
    pin: [u8; 32],
    alpn: &[u8],
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Endpoint {
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinVerifier { pin, provider }))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(cfg).unwrap();
    let mut client = quinn::ClientConfig::new(Arc::new(quic));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(Duration::from_secs(5)));
    client.transport_config(Arc::new(transport));
    let mut ep = Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(client);
    ep
}

/// A raw session.
pub struct Raw {
    pub endpoint: Endpoint,
    pub conn: Connection,
    pub send: SendStream,
    pub recv: RecvStream,
    pub nonce: [u8; 32],
    pub exporter: [u8; 32],
}

/// Connects, opens the session stream, sends the preamble and reads Hello.
pub async fn open(addr: SocketAddr, pin: [u8; 32]) -> Raw {
    let endpoint = client_endpoint(pin, tallinn_common::defaults::ALPN);
    let conn = tokio::time::timeout(WAIT, endpoint.connect(addr, "localhost").unwrap())
        .await
        .expect("connect in time")
        .expect("connected");
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&SESSION_PREAMBLE).await.unwrap();
    let hello = read_frame(&mut recv).await.expect("hello");
    let Frame::Hello { nonce, .. } = hello else {
        panic!("expected Hello, got {hello:?}");
    };
    let mut exporter = [0u8; 32];
    conn.export_keying_material(&mut exporter, AUTH_EXPORTER_LABEL, &nonce)
        .unwrap();
    Raw {
        endpoint,
        conn,
        send,
        recv,
        nonce,
        exporter,
    }
}

impl Raw {
    pub async fn write(&mut self, frame: &Frame) {
        self.send
            .write_all(&wire::encode_frame(frame))
            .await
            .unwrap();
    }

    pub async fn read(&mut self) -> Option<Frame> {
        read_frame(&mut self.recv).await
    }

    /// Reads frames until one matches, returning it (others are discarded).
    pub async fn expect(&mut self, what: &str, mut f: impl FnMut(&Frame) -> bool) -> Frame {
        loop {
            match self.read().await {
                Some(fr) if f(&fr) => return fr,
                Some(_) => continue,
                None => panic!("stream ended while waiting for {what}"),
            }
        }
    }

    pub async fn auth_as(&mut self, who: &Identity, device: &str) -> Frame {
        let f = wire::sign_auth(who, device, &self.nonce, &self.exporter);
        self.write(&f).await;
        self.read().await.expect("answer to Auth")
    }

    pub async fn send_env(&mut self, env: &[u8]) -> Frame {
        self.write(&Frame::Send {
            envelope: env.to_vec(),
        })
        .await;
        self.expect("Accepted/Receipt/Rejected", |f| {
            matches!(
                f,
                Frame::Accepted { .. } | Frame::Receipt { .. } | Frame::Rejected { .. }
            )
        })
        .await
    }

    /// The code the connection was closed with, waiting for the close.
    pub async fn closed_code(&self) -> Option<ErrorCode> {
        let err = tokio::time::timeout(WAIT, self.conn.closed())
            .await
            .expect("connection closed in time");
        match err {
            quinn::ConnectionError::ApplicationClosed(c) => {
                ErrorCode::from_close_code(c.error_code.into_inner())
            }
            _ => None,
        }
    }
}

/// Connects and authenticates; panics unless Welcome.
pub async fn login(
    relay_addr: SocketAddr,
    pin: [u8; 32],
    who: &Identity,
    device: &str,
) -> (Raw, u64) {
    let mut raw = open(relay_addr, pin).await;
    match raw.auth_as(who, device).await {
        Frame::Welcome { pending, .. } => (raw, pending),
        other => panic!("expected Welcome, got {other:?}"),
    }
}

/// Reads one frame (None at end of stream or on error), within [`WAIT`].
pub async fn read_frame(recv: &mut RecvStream) -> Option<Frame> {
    tokio::time::timeout(WAIT, async {
        let mut prefix = [0u8; 4];
        recv.read_exact(&mut prefix).await.ok()?;
        let len = wire::frame_len(prefix, u32::MAX).ok()?;
        let mut buf = vec![0u8; len];
        recv.read_exact(&mut buf).await.ok()?;
        wire::decode_frame(&buf).ok()
    })
    .await
    .expect("frame in time")
}

/// Receives `n` deliveries, acking each batch; returns (seq, msg_id) pairs.
pub async fn receive(raw: &mut Raw, n: usize, ack: bool) -> Vec<(u64, MsgId)> {
    let mut out = Vec::new();
    while out.len() < n {
        let f = raw
            .expect("Deliver", |f| matches!(f, Frame::Deliver { .. }))
            .await;
        let Frame::Deliver { seq, envelope, .. } = f else {
            unreachable!()
        };
        let env = tallinn_common::envelope::UntrustedEnvelope::decode(&envelope).unwrap();
        out.push((seq, env.claimed_header().msg_id));
        if ack {
            raw.write(&Frame::Ack { up_to_seq: seq }).await;
        }
    }
    out
}

/// A relay running as a child process (for SIGKILL and SIGHUP tests).
pub struct ChildRelay {
    pub child: Child,
    pub addr: SocketAddr,
    pub pin: [u8; 32],
    pub dir: PathBuf,
    /// Every line the relay writes to stderr (its log), as it comes.
    pub log: std::sync::Mutex<std::sync::mpsc::Receiver<String>>,
}

pub fn write_child_config(dir: &Path, world: &World) -> PathBuf {
    std::fs::write(dir.join("roster.toml"), &world.roster_text).unwrap();
    let cfg = dir.join("relay.toml");
    std::fs::write(
        &cfg,
        "name = \"child\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\nroster = \"roster.toml\"\n\
         metrics_listen = \"\"\n[tls]\ngenerate_self_signed = true\n",
    )
    .unwrap();
    cfg
}

impl ChildRelay {
    /// Starts `tallinn-relay run` and waits for its "listening" line.
    pub fn start(dir: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tallinn-relay"))
            .arg("run")
            .arg("--config")
            .arg(dir.join("relay.toml"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("relay binary starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let (log_tx, log) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stderr).lines();
            let mut sent = false;
            while let Some(Ok(line)) = lines.next() {
                if !sent && line.starts_with("tallinn-relay listening on ") {
                    let _ = tx.send(line.clone());
                    sent = true;
                }
                let _ = log_tx.send(line);
            }
        });
        let line = rx.recv_timeout(WAIT).expect("relay prints its address");
        // "tallinn-relay listening on ADDR (pin HEX)"
        let rest = line.trim_start_matches("tallinn-relay listening on ");
        let (addr, pin) = rest.split_once(" (pin ").unwrap();
        let pin: [u8; 32] = hex::decode(pin.trim_end_matches(')'))
            .unwrap()
            .try_into()
            .unwrap();
        Self {
            child,
            addr: addr.parse().unwrap(),
            pin,
            dir: dir.to_path_buf(),
            log: std::sync::Mutex::new(log),
        }
    }

    /// Waits (bounded by [`WAIT`]) for a log line containing `needle`.
    pub fn wait_for_log(&self, needle: &str) -> Option<String> {
        let log = self.log.lock().unwrap();
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.checked_duration_since(std::time::Instant::now())?;
            match log.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Some(line),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }

    pub fn kill9(mut self) {
        self.signal("KILL");
        let _ = self.child.wait();
    }

    /// Waits for exit (event, bounded by [`WAIT`]) and returns whether it
    /// was successful.
    pub fn wait_exit(mut self) -> bool {
        let mut child = std::mem::replace(
            &mut self.child,
            Command::new("true").spawn().expect("spawn true"),
        );
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait().map(|s| s.success()).unwrap_or(false));
        });
        rx.recv_timeout(WAIT).expect("relay exits in time")
    }
}

impl Drop for ChildRelay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
