//! The checks of the session that need no I/O: authentication, the send
//! path before storage (size, rate, sender, signature, channel, recipients),
//! clock skew, the storage quota, and the token buckets behind the rates.

use std::time::{Duration, Instant};

use tallinn_common::envelope::{UntrustedEnvelope, VerifiedEnvelope};
use tallinn_common::identity::DeviceId;
use tallinn_common::message::MsgId;
use tallinn_common::wire::{self, ErrorCode, Frame};

use crate::rules::RosterRules;

/// A token bucket: `burst` tokens, refilled at `rate` per second.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens.
    pub fn new(burst: f64) -> Self {
        Self {
            tokens: burst,
            last: None,
        }
    }

    /// Refills for the time since the last call; the tokens there are now.
    pub fn available(&mut self, now: Instant, rate: f64, burst: f64) -> f64 {
        if let Some(last) = self.last {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + dt * rate).min(burst);
        }
        self.last = Some(now);
        self.tokens
    }

    /// Takes `n` tokens at time `now`; false (and nothing taken) if fewer
    /// are left.
    pub fn take(&mut self, now: Instant, n: f64, rate: f64, burst: f64) -> bool {
        if self.available(now, rate, burst) >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

/// A refusal: the code and a reason for the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The msg_id concerned (zero when unknown).
    pub msg_id: MsgId,
    /// Error code.
    pub code: ErrorCode,
    /// Human-readable reason.
    pub reason: String,
}

impl Refusal {
    pub(crate) fn new(msg_id: MsgId, code: ErrorCode, reason: impl Into<String>) -> Self {
        Self {
            msg_id,
            code,
            reason: reason.into(),
        }
    }
}

/// Checks an `Auth` frame against the roster and the connection's nonce and
/// exporter value. Returns the authenticated participant and device and the
/// key that verified it.
///
/// # Errors
/// `(code, reason)`: `unauthenticated` (not an Auth), `unknown_participant`,
/// `revoked` (version 2: the device is not in the roster), `malformed` (bad
/// device label), `bad_signature`.
pub fn check_auth(
    roster: &RosterRules,
    frame: &Frame,
    nonce: &[u8; 32],
    exporter: &[u8; 32],
) -> Result<(String, String, ed25519_dalek::VerifyingKey), (ErrorCode, String)> {
    let Frame::Auth {
        participant,
        device,
        signature,
    } = frame
    else {
        return Err((
            ErrorCode::Unauthenticated,
            format!("expected Auth, got {}", frame.name()),
        ));
    };
    let device =
        DeviceId::new(device.as_str()).map_err(|e| (ErrorCode::Malformed, e.to_string()))?;
    let key = roster.auth_key(participant, device.as_str())?;
    wire::verify_auth(&key, device.as_str(), nonce, exporter, signature).map_err(|_| {
        (
            ErrorCode::BadSignature,
            "auth signature does not verify".into(),
        )
    })?;
    Ok((participant.clone(), device.to_string(), key))
}

/// Every check of the send path that needs no storage, in order: decode
/// (so every later refusal names the msg_id), size, rate (`take_token`, only
/// called for well-formed envelopes), sender == authenticated participant,
/// then signature, channel, posting rights and recipients. The duplicate
/// check needs the store, and the clock-skew check comes after it: see
/// [`check_skew`].
///
/// # Errors
/// A [`Refusal`] with the matching code.
pub fn check_send(
    roster: &RosterRules,
    authenticated: &str,
    envelope: &[u8],
    max_message_len: usize,
    now_ms: u64,
    take_token: impl FnOnce(usize) -> bool,
) -> Result<VerifiedEnvelope, Refusal> {
    let untrusted = precheck_send(authenticated, envelope, max_message_len, take_token)?;
    roster
        .verify_many(vec![untrusted], now_ms)
        .pop()
        .unwrap_or_else(|| {
            Err(Refusal::new(
                MsgId([0; 16]),
                ErrorCode::Internal,
                "send check lost its result",
            ))
        })
}

/// [`check_send`] for several envelopes that arrived together: the same
/// checks and results, with one batch signature verification
/// ([`UntrustedEnvelope::verify_many`]) for those that pass the cheap checks.
pub fn check_sends(
    roster: &RosterRules,
    authenticated: &str,
    envelopes: &[Vec<u8>],
    max_message_len: usize,
    now_ms: u64,
    mut take_token: impl FnMut(usize) -> bool,
) -> Vec<Result<VerifiedEnvelope, Refusal>> {
    let mut out: Vec<Option<Result<VerifiedEnvelope, Refusal>>> = Vec::new();
    let mut pending = Vec::new();
    let mut at = Vec::new();
    for (i, e) in envelopes.iter().enumerate() {
        match precheck_send(authenticated, e, max_message_len, &mut take_token) {
            Ok(u) => {
                pending.push(u);
                at.push(i);
                out.push(None);
            }
            Err(r) => out.push(Some(Err(r))),
        }
    }
    let verified = roster.verify_many(pending, now_ms);
    for (i, v) in at.into_iter().zip(verified) {
        if let Some(slot) = out.get_mut(i) {
            *slot = Some(v);
        }
    }
    out.into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(Refusal::new(
                    MsgId([0; 16]),
                    ErrorCode::Internal,
                    "send check lost its result",
                ))
            })
        })
        .collect()
}

/// The checks before the signature: encoding, size, rate (messages and
/// bytes: `take_token` gets the envelope's length), sender.
fn precheck_send(
    authenticated: &str,
    envelope: &[u8],
    max_message_len: usize,
    take_token: impl FnOnce(usize) -> bool,
) -> Result<UntrustedEnvelope, Refusal> {
    let zero = MsgId([0; 16]);
    let untrusted = UntrustedEnvelope::decode(envelope)
        .map_err(|e| Refusal::new(zero, e.code(), e.to_string()))?;
    let msg_id = untrusted.claimed_header().msg_id;
    if envelope.len() > max_message_len {
        return Err(Refusal::new(
            msg_id,
            ErrorCode::TooLarge,
            format!(
                "envelope of {} bytes exceeds {max_message_len}",
                envelope.len()
            ),
        ));
    }
    if !take_token(envelope.len()) {
        return Err(Refusal::new(
            msg_id,
            ErrorCode::RateLimited,
            "send rate limit (messages or bytes per second) exceeded; retry later",
        ));
    }
    if untrusted.claimed_header().sender != authenticated {
        return Err(Refusal::new(
            msg_id,
            ErrorCode::Unauthenticated,
            format!(
                "envelope sender {:?} is not the authenticated participant {authenticated:?}",
                untrusted.claimed_header().sender
            ),
        ));
    }
    Ok(untrusted)
}

/// The clock-skew check: `sent_at_ms` within `max_skew` of `now_ms`.
///
/// # Errors
/// A `clock_skew` [`Refusal`].
pub fn check_skew(v: &VerifiedEnvelope, now_ms: u64, max_skew: Duration) -> Result<(), Refusal> {
    let sent = v.header().sent_at_ms;
    let skew = now_ms.abs_diff(sent);
    let max = u64::try_from(max_skew.as_millis()).unwrap_or(u64::MAX);
    if skew > max {
        return Err(Refusal::new(
            v.msg_id(),
            ErrorCode::ClockSkew,
            format!("sent_at is {skew} ms from the relay clock (max {max} ms); check the sender's clock"),
        ));
    }
    Ok(())
}

/// The storage quota: the sender's stored bytes plus this envelope stay
/// within `quota`. Concurrent sends of one participant are checked against
/// the same stored figure, so the quota can be passed by at most the sends
/// in flight (`max_inflight_sends` per connection) at once.
///
/// # Errors
/// A `quota_exceeded` [`Refusal`].
pub fn check_quota(msg_id: MsgId, stored: u64, len: usize, quota: u64) -> Result<(), Refusal> {
    if stored.saturating_add(len as u64) > quota {
        return Err(Refusal::new(
            msg_id,
            ErrorCode::QuotaExceeded,
            format!(
                "storage quota: {stored} bytes of your messages await delivery (quota {quota}); \
                 retry once recipients have collected them"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tallinn_common::envelope::seal;
    use tallinn_common::identity::{Identity, ParticipantId};
    use tallinn_common::message::{Message, Tlp};
    use tallinn_common::roster::Roster;

    fn v1(roster: &Roster) -> RosterRules {
        RosterRules::V1(std::sync::Arc::new(roster.clone()))
    }

    fn world() -> (Roster, Vec<Identity>) {
        let ids: Vec<Identity> = ["UA", "EE", "NATO"]
            .iter()
            .map(|i| Identity::generate(ParticipantId::new(*i).unwrap()))
            .collect();
        let text = format!(
            "{}{}{}[[channel]]\nid = \"plenary\"\nmembers = [\"*\"]\nobservers = [\"NATO\"]\n",
            ids[0].roster_entry("Ukraine", "member"),
            ids[1].roster_entry("Estonia", "member"),
            ids[2].roster_entry("NATO", "observer"),
        );
        (Roster::parse(&text).unwrap(), ids)
    }

    #[test]
    fn token_bucket_refills_at_rate() {
        let mut b = TokenBucket::new(2.0);
        let t0 = Instant::now();
        assert!(b.take(t0, 1.0, 1.0, 2.0));
        assert!(b.take(t0, 1.0, 1.0, 2.0));
        assert!(!b.take(t0, 1.0, 1.0, 2.0));
        assert!(b.take(t0 + Duration::from_millis(1001), 1.0, 1.0, 2.0));
        assert!(!b.take(t0 + Duration::from_millis(1001), 1.0, 1.0, 2.0));
        // Never more than the burst, however long idle.
        let later = t0 + Duration::from_secs(3600);
        assert!(b.take(later, 1.0, 1.0, 2.0));
        assert!(b.take(later, 1.0, 1.0, 2.0));
        assert!(!b.take(later, 1.0, 1.0, 2.0));
        // Byte buckets take many tokens at once, or none.
        let mut bytes = TokenBucket::new(1000.0);
        assert!(bytes.take(t0, 600.0, 100.0, 1000.0));
        assert!(!bytes.take(t0, 600.0, 100.0, 1000.0));
        assert!(bytes.take(t0, 400.0, 100.0, 1000.0));
        assert!(bytes.take(t0 + Duration::from_secs(2), 200.0, 100.0, 1000.0));
    }

    #[test]
    fn auth_checks() {
        let (roster, ids) = world();
        let (nonce, exp) = ([1; 32], [2; 32]);
        let ok = wire::sign_auth(&ids[0], "front-office", &nonce, &exp);
        assert_eq!(
            check_auth(&v1(&roster), &ok, &nonce, &exp),
            Ok(("UA".into(), "front-office".into(), ids[0].public().sign_key))
        );
        // Replayed on another connection (different exporter).
        assert_eq!(
            check_auth(&v1(&roster), &ok, &nonce, &[3; 32])
                .unwrap_err()
                .0,
            ErrorCode::BadSignature
        );
        // Signed by another participant's key.
        let Frame::Auth { signature, .. } = wire::sign_auth(&ids[1], "front-office", &nonce, &exp)
        else {
            unreachable!()
        };
        let forged = Frame::Auth {
            participant: "UA".into(),
            device: "front-office".into(),
            signature,
        };
        assert_eq!(
            check_auth(&v1(&roster), &forged, &nonce, &exp)
                .unwrap_err()
                .0,
            ErrorCode::BadSignature
        );
        let stranger = Frame::Auth {
            participant: "XX".into(),
            device: "d".into(),
            signature,
        };
        assert_eq!(
            check_auth(&v1(&roster), &stranger, &nonce, &exp)
                .unwrap_err()
                .0,
            ErrorCode::UnknownParticipant
        );
        let bad_device = Frame::Auth {
            participant: "UA".into(),
            device: "a b".into(),
            signature,
        };
        assert_eq!(
            check_auth(&v1(&roster), &bad_device, &nonce, &exp)
                .unwrap_err()
                .0,
            ErrorCode::Malformed
        );
        assert_eq!(
            check_auth(&v1(&roster), &Frame::Ack { up_to_seq: 1 }, &nonce, &exp)
                .unwrap_err()
                .0,
            ErrorCode::Unauthenticated
        );
    }

    #[test]
    fn send_checks() {
        let (roster, ids) = world();
        let m = Message::note(Tlp::Green, "s", "b");
        let env = seal(&ids[0], &roster, "plenary", &m, 1000).unwrap();
        let v = check_send(&v1(&roster), "UA", env.as_bytes(), 1 << 20, 0, |_| true).unwrap();
        assert_eq!(v.msg_id(), env.msg_id());
        assert!(check_skew(&v, 1000 + 299_000, Duration::from_secs(300)).is_ok());
        assert_eq!(
            check_skew(&v, 1000 + 301_000, Duration::from_secs(300))
                .unwrap_err()
                .code,
            ErrorCode::ClockSkew
        );
        // Sender mismatch.
        let r = check_send(&v1(&roster), "EE", env.as_bytes(), 1 << 20, 0, |_| true).unwrap_err();
        assert_eq!(r.code, ErrorCode::Unauthenticated);
        assert_eq!(r.msg_id, env.msg_id());
        // Too large.
        let big = check_send(&v1(&roster), "UA", env.as_bytes(), 10, 0, |_| true).unwrap_err();
        assert_eq!(big.code, ErrorCode::TooLarge);
        assert_eq!(big.msg_id, env.msg_id(), "refusals name the msg_id");
        let limited =
            check_send(&v1(&roster), "UA", env.as_bytes(), 1 << 20, 0, |_| false).unwrap_err();
        assert_eq!(limited.code, ErrorCode::RateLimited);
        assert_eq!(limited.msg_id, env.msg_id());
        // Garbage.
        assert_eq!(
            check_send(&v1(&roster), "UA", b"garbage", 1 << 20, 0, |_| true)
                .unwrap_err()
                .code,
            ErrorCode::Malformed
        );
    }
}
