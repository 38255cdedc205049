//! Protocol constants and default limits, each with the reason for its value.
//!
//! The byte-string labels below are part of the normative protocol (see
//! `PROTOCOL.md`): changing one breaks interoperability with every deployed
//! client and relay.

/// Version of version-1 envelopes ([`HeaderV1`](crate::envelope::HeaderV1)).
/// Version 2 ([`ENVELOPE_VERSION_V2`]) names devices and a roster epoch; a
/// post-quantum KEM comes as a new `suite` byte, not a new version.
pub const ENVELOPE_VERSION: u8 = 1;

/// ALPN protocol identifier negotiated in the QUIC/TLS handshake. A peer
/// offering anything else is refused, so a Tallinn relay can never be confused
/// with another service on the same port.
pub const ALPN: &[u8] = b"tallinn/1";

/// Domain-separation prefix of the envelope signature: Ed25519 signs
/// `ENVELOPE_SIGNATURE_CONTEXT || body`. Distinct from [`AUTH_SIGNATURE_CONTEXT`]
/// so an auth signature can never be replayed as an envelope signature.
pub const ENVELOPE_SIGNATURE_CONTEXT: &[u8] = b"tallinn/1 envelope";

/// Version-2 envelope signature prefix: Ed25519 by the sending device signs
/// `ENVELOPE_SIGNATURE_CONTEXT_V2 || body`.
pub const ENVELOPE_SIGNATURE_CONTEXT_V2: &[u8] = b"tallinn/2 envelope";

/// Version-2 key-commitment prefix.
pub const KEY_COMMITMENT_CONTEXT_V2: &[u8] = b"tallinn/2 key-commitment";

/// Version-2 HPKE `info` for wrapping a content key to one device.
pub const HPKE_WRAP_INFO_V2: &[u8] = b"tallinn/2 wrap";

/// HKDF `info` prefix deriving a version-2 wrap's HPKE ephemeral from the
/// content key (followed by msg_id, participant, 0x00, device).
pub const WRAP_EPHEMERAL_INFO: &[u8] = b"tallinn/2 wrap-ephemeral";

/// Version of envelopes sealed by this implementation's `seal_v2`.
pub const ENVELOPE_VERSION_V2: u8 = 2;

/// Domain-separation prefix of the session authentication signature.
pub const AUTH_SIGNATURE_CONTEXT: &[u8] = b"tallinn/1 auth";

/// Prefix hashed before the content key to form the key commitment.
pub const KEY_COMMITMENT_CONTEXT: &[u8] = b"tallinn/1 key-commitment";

/// HPKE `info` for wrapping a content key to one recipient.
pub const HPKE_WRAP_INFO: &[u8] = b"tallinn/1 wrap";

/// TLS exporter label (RFC 8446 section 7.5) that binds authentication to
/// the TLS session, so an `Auth` cannot be relayed into another connection.
pub const AUTH_EXPORTER_LABEL: &[u8] = b"EXPORTER-tallinn-auth";

/// Length of the TLS exporter output used in the auth transcript.
pub const AUTH_EXPORTER_LEN: usize = 32;

/// Domain-separation prefix of the roster fingerprint hash.
pub const ROSTER_FINGERPRINT_CONTEXT: &[u8] = b"tallinn/1 roster";

/// Domain-separation prefix of a roster-log entry: both its hash
/// (`SHA-256(prefix || body)`) and every identity-key approval
/// (`Ed25519(prefix || body)`) use it.
pub const ROSTER_ENTRY_CONTEXT: &[u8] = b"tallinn/2 roster-entry";

/// The only device key suite of this version: Ed25519 signing, X25519 (HPKE
/// DHKEM(X25519, HKDF-SHA256)) encryption.
pub const SUITE_X25519: u8 = 1;

/// The device label a version-1 participant's key pair gets when its roster
/// is migrated to a version-2 genesis.
pub const V1_DEVICE: &str = "default";

/// Upper bound on a participant's devices. A nation's front office, back
/// office and a few spares; the bound keeps a single participant from making
/// every envelope of a channel large.
pub const MAX_DEVICES_PER_PARTICIPANT: usize = 16;

/// Upper bound on one encoded roster-log entry (body plus approvals). A state
/// of 100 participants with 16 devices each is about 150 KiB; an entry must fit
/// in one frame.
pub const MAX_ROSTER_ENTRY_LEN: usize = 512 * 1024;

/// Additional data of the passphrase-protected secret key file's AEAD, followed
/// by the participant id, so a ciphertext cannot be moved to another id's file.
pub const SECRET_FILE_AAD_CONTEXT: &[u8] = b"tallinn/1 secret-file";

/// Default maximum size of one frame on the session stream (length prefix not
/// included). 1 MiB of envelope plus headroom for the frame's own fields: large
/// enough for a message with a few documents attached, small enough that 1 000
/// connections each holding one frame fit easily in memory.
pub const MAX_FRAME_LEN: u32 = 1024 * 1024 + 4096;

/// Default maximum size of one encoded envelope. See [`MAX_FRAME_LEN`].
pub const MAX_ENVELOPE_LEN: usize = 1024 * 1024;

/// Upper bound on wrapped keys in one envelope. A roster larger than this is
/// refused: it bounds the HPKE work a single hostile envelope can cost a
/// recipient (each entry is an X25519 operation only for the matching recipient,
/// but the relay compares the whole list).
pub const MAX_RECIPIENTS: usize = 1024;

/// Argon2id memory cost (KiB) for new passphrase-protected key files: 64 MiB,
/// the RFC 9106 "second recommended option" memory size, which takes well under
/// a second on a laptop and makes each guess expensive on a GPU.
pub const ARGON2_M_COST_KIB: u32 = 64 * 1024;

/// Argon2id passes for new passphrase-protected key files (RFC 9106, second
/// recommended option).
pub const ARGON2_T_COST: u32 = 3;

/// Argon2id lanes for new passphrase-protected key files (RFC 9106 second
/// option uses 4; 1 keeps derivation single-threaded and predictable on the
/// small machines POCs use, and is compensated by `t = 3`).
pub const ARGON2_P_COST: u32 = 1;

/// Largest Argon2id memory cost (KiB) accepted when *reading* a key file: a
/// hostile file must not make the client allocate unbounded memory.
pub const ARGON2_MAX_M_COST_KIB: u32 = 1024 * 1024;

/// Largest Argon2id pass count accepted when reading a key file (bounds CPU).
pub const ARGON2_MAX_T_COST: u32 = 16;

/// Largest Argon2id lane count accepted when reading a key file.
pub const ARGON2_MAX_P_COST: u32 = 16;

/// Largest roster file accepted (bytes): the Tallinn roster is a few KiB.
pub const MAX_ROSTER_FILE_LEN: u64 = 4 * 1024 * 1024;

/// Largest secret key file accepted (bytes).
pub const MAX_SECRET_FILE_LEN: u64 = 64 * 1024;

/// The 4 bytes a client writes first on the session stream, before reading
/// `Hello`. QUIC announces a peer-opened stream only once data arrives on it,
/// so the client must send something before the relay can send `Hello`; a
/// fixed magic also lets the relay drop non-Tallinn traffic early.
pub const SESSION_PREAMBLE: [u8; 4] = *b"TLN1";
