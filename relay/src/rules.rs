//! The roster the relay enforces: a version-1 roster file pinned by the
//! operator, or the version-2 roster log (once a genesis is installed).
//!
//! Everything the session asks of the roster goes through [`RosterRules`]:
//! which key a device authenticates with, whether an envelope verifies (for
//! version 2: against the state of its own epoch, which must be the current
//! one or, within the grace period, the one before: otherwise
//! `stale_roster`), where a message is routed, and whether a session still
//! stands after a roster change. Pure: no I/O, the caller passes `now`.

use std::sync::Arc;

use ed25519_dalek::VerifyingKey;
use tallinn_common::envelope::{UntrustedEnvelope, VerifiedEnvelope};
use tallinn_common::message::MsgId;
use tallinn_common::roster::{Roster, RosterLog, RosterState};
use tallinn_common::wire::ErrorCode;

use crate::session::checks::Refusal;
use crate::store::device_recipient;

/// The version-2 rules: the verified log and when its current entry came
/// into force (for the grace period of the previous epoch).
#[derive(Debug, Clone)]
pub struct LogRules {
    /// The verified roster log.
    pub log: RosterLog,
    /// When the current epoch's entry was appended (ms since the epoch).
    pub current_since_ms: u64,
    /// How long envelopes sealed against the previous epoch are still
    /// accepted after a change (ms).
    pub grace_ms: u64,
}

/// The roster in force.
#[derive(Debug, Clone)]
pub enum RosterRules {
    /// A version-1 roster file (reloaded on SIGHUP).
    V1(Arc<Roster>),
    /// The roster log (version 2).
    V2(Arc<LogRules>),
}

impl RosterRules {
    /// The version-2 log, if the relay runs one.
    pub fn log(&self) -> Option<&LogRules> {
        match self {
            RosterRules::V1(_) => None,
            RosterRules::V2(l) => Some(l),
        }
    }

    /// The current epoch (version 2).
    pub fn epoch(&self) -> Option<u64> {
        self.log().map(|l| l.log.epoch())
    }

    /// Number of participants in force (for logs).
    pub fn participant_count(&self) -> usize {
        match self {
            RosterRules::V1(r) => r.participants().count(),
            RosterRules::V2(l) => l.log.current().participants().count(),
        }
    }

    /// The key `participant`'s `device` authenticates with.
    ///
    /// # Errors
    /// `unknown_participant` for a participant not in the roster; `revoked`
    /// (version 2) for a device not in the current state.
    pub fn auth_key(
        &self,
        participant: &str,
        device: &str,
    ) -> Result<VerifyingKey, (ErrorCode, String)> {
        let unknown = || {
            (
                ErrorCode::UnknownParticipant,
                format!("unknown participant {participant:?}"),
            )
        };
        match self {
            RosterRules::V1(r) => r
                .participant(participant)
                .map(|p| p.public.sign_key)
                .ok_or_else(unknown),
            RosterRules::V2(l) => {
                let state = l.log.current();
                let p = state.participant(participant).ok_or_else(unknown)?;
                p.device(device).map(|d| d.sign_key).ok_or_else(|| {
                    (
                        ErrorCode::Revoked,
                        format!(
                            "device {device:?} of {participant} is not in the roster at epoch {} \
                             (revoked, or never enrolled)",
                            state.epoch()
                        ),
                    )
                })
            }
        }
    }

    /// Whether a session of `participant`'s `device` that authenticated
    /// with `key` still stands under these rules.
    ///
    /// # Errors
    /// The code and reason to close it with.
    pub fn admits(
        &self,
        participant: &str,
        device: &str,
        key: &VerifyingKey,
    ) -> Result<(), (ErrorCode, String)> {
        let current = self.auth_key(participant, device)?;
        if &current != key {
            let code = match self {
                RosterRules::V1(_) => ErrorCode::UnknownParticipant,
                RosterRules::V2(_) => ErrorCode::Revoked,
            };
            return Err((code, "the roster changed this device's key".into()));
        }
        Ok(())
    }

    /// Verifies envelopes that passed the cheap checks: version 1 against
    /// the roster file; version 2 against the state of the envelope's
    /// epoch, which must be current or (within the grace period) the one
    /// before. One batch signature verification per epoch.
    pub fn verify_many(
        &self,
        envelopes: Vec<UntrustedEnvelope>,
        now_ms: u64,
    ) -> Vec<Result<VerifiedEnvelope, Refusal>> {
        let refuse = |id: MsgId, e: tallinn_common::envelope::EnvelopeError| {
            Refusal::new(id, e.code(), e.to_string())
        };
        match self {
            RosterRules::V1(r) => {
                let ids: Vec<MsgId> = envelopes
                    .iter()
                    .map(|u| u.claimed_header().msg_id)
                    .collect();
                UntrustedEnvelope::verify_many(envelopes, r.as_ref())
                    .into_iter()
                    .zip(ids)
                    .map(|(v, id)| v.map_err(|e| refuse(id, e)))
                    .collect()
            }
            RosterRules::V2(l) => {
                let n = envelopes.len();
                let mut out: Vec<Option<Result<VerifiedEnvelope, Refusal>>> = vec![None; n];
                // Group by the state each must be verified against.
                let mut groups: Vec<(u64, Vec<usize>, Vec<UntrustedEnvelope>)> = Vec::new();
                for (i, u) in envelopes.into_iter().enumerate() {
                    match l.state_for(u.claimed_header().roster_epoch, now_ms) {
                        Ok(state) => {
                            let e = state.epoch();
                            match groups.iter_mut().find(|g| g.0 == e) {
                                Some(g) => {
                                    g.1.push(i);
                                    g.2.push(u);
                                }
                                None => groups.push((e, vec![i], vec![u])),
                            }
                        }
                        Err((code, reason)) => {
                            out[i] =
                                Some(Err(Refusal::new(u.claimed_header().msg_id, code, reason)));
                        }
                    }
                }
                for (epoch, at, group) in groups {
                    let Some(state) = l.log.state_at(epoch) else {
                        continue;
                    };
                    let ids: Vec<MsgId> = group.iter().map(|u| u.claimed_header().msg_id).collect();
                    let results = UntrustedEnvelope::verify_many(group, state.as_ref());
                    for ((i, id), v) in at.into_iter().zip(ids).zip(results) {
                        out[i] = Some(v.map_err(|e| refuse(id, e)));
                    }
                }
                out.into_iter()
                    .map(|r| {
                        r.unwrap_or_else(|| {
                            Err(Refusal::new(
                                MsgId([0; 16]),
                                ErrorCode::Internal,
                                "roster check lost its result",
                            ))
                        })
                    })
                    .collect()
            }
        }
    }

    /// Where a verified envelope goes: participant ids (version 1: every
    /// device of each) or device keys `participant/device` (version 2).
    pub fn recipients(v: &VerifiedEnvelope) -> Vec<String> {
        v.recipient_devices()
            .map(|(p, d)| match d {
                Some(d) => device_recipient(p, d),
                None => p.to_string(),
            })
            .collect()
    }
}

impl LogRules {
    /// The state an envelope claiming `epoch` is verified against.
    ///
    /// # Errors
    /// `stale_roster` with the current epoch for a version-1 envelope, an
    /// epoch older than the previous one, the previous one after the grace
    /// period, or a future epoch.
    pub fn state_for(
        &self,
        epoch: Option<u64>,
        now_ms: u64,
    ) -> Result<&Arc<RosterState>, (ErrorCode, String)> {
        let current = self.log.epoch();
        let stale = |why: String| {
            (
                ErrorCode::StaleRoster,
                format!("{why}; the current roster epoch is {current}: fetch the roster log and re-seal"),
            )
        };
        match epoch {
            None => Err(stale(
                "a version-1 envelope; this relay runs the roster log".into(),
            )),
            Some(e) if e == current => Ok(self.log.current()),
            Some(e)
                if e.checked_add(1) == Some(current)
                    && now_ms.saturating_sub(self.current_since_ms) <= self.grace_ms =>
            {
                self.log
                    .state_at(e)
                    .ok_or_else(|| stale(format!("sealed against epoch {e}")))
            }
            Some(e) => Err(stale(format!("sealed against epoch {e}"))),
        }
    }
}
