//! Sending: sealing a message into the outbox (checked against our own
//! roster and the channel's TLP ceiling, refused locally when oversized),
//! waiting for the relay's answer, resealing a refused or skewed entry,
//! and resending the outbox when the session's queue was full.

use std::sync::Arc;
use std::time::Duration;

use rand::RngExt as _;
use tallinn_common::envelope::UntrustedEnvelope;
use tallinn_common::message::{Message, MsgId};
use tallinn_common::wire::Frame;
use tokio::sync::oneshot;

use super::{check_tlp, now_ms, Client, ClientError, Inner, WaitAccepted};
use crate::outbox::OutboxEntry;

impl Client {
    /// Seals an outbox entry again against the current roster and clock,
    /// under a new msg_id that replaces it (and its refusal) in one durable
    /// step; it is sent on the next session (`tallinn outbox resend`).
    /// Returns the new msg_id, or `None` if there is no such entry.
    ///
    /// # Errors
    /// [`ClientError::Seal`] if the message can no longer be sealed (the
    /// channel is gone, the sender may not post), [`ClientError::Archive`].
    pub fn resend(&self, msg_id: &MsgId) -> Result<Option<MsgId>, ClientError> {
        reseal(&self.inner, msg_id)
    }

    /// Seals `message` into `channel` and stores it durably in the outbox;
    /// it is sent now if connected, else on the next connection. Checks our
    /// own roster first: an observer or non-member gets an error and nothing
    /// is stored.
    ///
    /// # Errors
    /// [`ClientError::NotAllowed`], [`ClientError::Seal`], [`ClientError::Archive`].
    pub fn queue(&self, channel: &str, message: &Message) -> Result<MsgId, ClientError> {
        let (msg_id, _) = self.queue_inner(channel, message, false)?;
        Ok(msg_id)
    }

    fn queue_inner(
        &self,
        channel: &str,
        message: &Message,
        wait: bool,
    ) -> Result<(MsgId, Option<WaitAccepted>), ClientError> {
        let s = &self.inner.settings;
        let roster = self.inner.roster();
        roster.check_post(s.identity.id().as_str(), s.device.as_str(), channel)?;
        check_tlp(&roster, channel, message.tlp)?;
        let sealed = roster
            .seal(&s.identity, s.device.as_str(), channel, message, now_ms())
            .map_err(ClientError::Seal)?;
        // Refuse locally what the relay would refuse: an oversized message
        // would otherwise sit in the outbox and be resent forever.
        let max = tallinn_common::defaults::MAX_ENVELOPE_LEN;
        if sealed.as_bytes().len() > max {
            return Err(ClientError::TooLarge {
                size: sealed.as_bytes().len(),
                max,
            });
        }
        let msg_id = sealed.msg_id();
        let entry = OutboxEntry {
            msg_id,
            channel: channel.to_string(),
            subject: message.subject.clone(),
            created_at_ms: now_ms(),
            envelope: sealed.as_bytes().to_vec(),
            content_key: *sealed.content_key(),
            attempts: 0,
        };
        let rx = if wait {
            let (tx, rx) = oneshot::channel();
            self.inner
                .waiters
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(msg_id, tx);
            Some(rx)
        } else {
            None
        };
        self.inner.outbox.put(&entry)?;
        let written = self.inner.try_write(&Frame::Send {
            envelope: entry.envelope.clone(),
        });
        if !written && self.inner.state.borrow().connected {
            // Connected but the session's queue is full: try again shortly
            // rather than waiting for the next session.
            schedule_retry(self.inner.clone(), vec![msg_id]);
        }
        Ok((msg_id, rx))
    }

    /// Queues the message and waits for `Accepted` (up to the send timeout).
    ///
    /// # Errors
    /// [`ClientError::Queued`] if not accepted in time (it stays in the
    /// outbox), [`ClientError::Rejected`] for a permanent refusal, and the
    /// errors of [`Client::queue`].
    pub async fn send(
        &self,
        channel: &str,
        message: &Message,
    ) -> Result<(MsgId, u64), ClientError> {
        let (msg_id, rx) = self.queue_inner(channel, message, true)?;
        let rx = rx.ok_or(ClientError::Closed)?;
        let mut state = self.inner.state.subscribe();
        let fatal = async move {
            loop {
                if let Some(f) = state.borrow_and_update().fatal.clone() {
                    return f;
                }
                if state.changed().await.is_err() {
                    return "client stopped".to_string();
                }
            }
        };
        tokio::select! {
            r = rx => match r {
                Ok(Ok(seq)) => Ok((msg_id, seq)),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(ClientError::Queued { msg_id, why: "client closed".into() }),
            },
            f = fatal => Err(ClientError::Queued { msg_id, why: f }),
            _ = tokio::time::sleep(self.inner.settings.send_timeout) => {
                Err(ClientError::Queued { msg_id, why: "no answer from the relay in time".into() })
            }
        }
    }

    /// Sends every pending outbox entry again on the current session now
    /// (the relay answers an already-accepted one `duplicate`, which
    /// counts as accepted); without a session they wait for the next one.
    /// Returns how many were pending.
    pub fn retry_outbox(&self) -> usize {
        let ids: Vec<MsgId> = self
            .inner
            .outbox
            .pending()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.msg_id)
            .collect();
        let n = ids.len();
        if n > 0 && self.inner.state.borrow().connected {
            let mut again = Vec::new();
            for id in ids {
                if let Ok(Some(e)) = self.inner.outbox.get(&id) {
                    if !self.inner.try_write(&Frame::Send {
                        envelope: e.envelope.clone(),
                    }) {
                        again.push(id);
                    }
                }
            }
            if !again.is_empty() {
                schedule_retry(self.inner.clone(), again);
            }
        }
        n
    }
}

/// Seals an outbox message again with the current time and roster (after
/// `clock_skew`, or `tallinn outbox resend` after a refusal): the same
/// channel and plaintext under a new msg_id. The new entry replaces the old
/// one (and its refusal) in one durable step ([`crate::outbox::Outbox::replace`]), then it
/// is sent if a session is up.
pub(super) fn reseal(inner: &Inner, old: &MsgId) -> Result<Option<MsgId>, ClientError> {
    let Some(entry) = inner.outbox.get(old)? else {
        return Ok(None);
    };
    let s = &inner.settings;
    let roster = inner.roster();
    let opened = UntrustedEnvelope::decode(&entry.envelope)
        .and_then(|u| u.verify(roster.as_ref()))
        .and_then(|v| v.open_with_content_key(&entry.content_key))
        .map_err(ClientError::Seal)?;
    let sealed = roster
        .seal(
            &s.identity,
            s.device.as_str(),
            &entry.channel,
            opened.message(),
            now_ms(),
        )
        .map_err(ClientError::Seal)?;
    let fresh = OutboxEntry {
        msg_id: sealed.msg_id(),
        channel: entry.channel.clone(),
        subject: entry.subject.clone(),
        created_at_ms: entry.created_at_ms,
        envelope: sealed.as_bytes().to_vec(),
        content_key: *sealed.content_key(),
        attempts: entry.attempts.saturating_add(1),
    };
    inner.outbox.replace(old, &fresh)?;
    let _ = inner.try_write(&Frame::Send {
        envelope: fresh.envelope.clone(),
    });
    Ok(Some(fresh.msg_id))
}

/// Resends deferred messages (rate limited, relay busy) after a pause with
/// jitter, on whatever session is up by then (a new session resends the
/// whole outbox anyway).
pub(super) fn schedule_retry(inner: Arc<Inner>, ids: Vec<MsgId>) {
    tokio::spawn(async move {
        let pause = Duration::from_millis(rand::rng().random_range(500..1500));
        tokio::time::sleep(pause).await;
        let mut again = Vec::new();
        for id in ids {
            if let Ok(Some(e)) = inner.outbox.get(&id) {
                if !inner.try_write(&Frame::Send {
                    envelope: e.envelope.clone(),
                }) && inner.state.borrow().connected
                {
                    again.push(id);
                }
            }
        }
        if !again.is_empty() {
            schedule_retry(inner, again);
        }
    });
}
