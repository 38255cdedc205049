//! History for late joiners (`PROTOCOL.md` §18.4): a `Share` message
//! carries an earlier envelope exactly as delivered and its content key.
//! The same rules hold for the sharer before it sends and for every
//! recipient before it archives the original:
//!
//! 1. the original verifies against the roster of **its own** epoch
//!    (signature by the sending device, channel, recipients);
//! 2. the content key matches the original's key commitment and decrypts it;
//! 3. the sharer took part in the original (its sender, or one of its
//!    recipients): nobody can pass off a message they never had;
//! 4. its TLP label allows it: TLP:AMBER+STRICT and TLP:RED never travel
//!    beyond the people they were given to;
//! 5. everyone the share reaches reads the original's channel (or
//!    conversation) in the roster in force at the share's epoch: a share
//!    never widens who may read a channel.

use super::{EnvelopeError, Opened, UntrustedEnvelope, VerifiedEnvelope};
use crate::message::{Kind, Message, Tlp};
use crate::roster::{RosterLog, RosterState};

/// The highest TLP label a share may carry (AMBER: the recipients'
/// organisations on a need-to-know basis).
pub const MAX_SHARED_TLP: Tlp = Tlp::Amber;

fn refuse(reason: impl Into<String>) -> EnvelopeError {
    EnvelopeError::SharedOriginal(reason.into())
}

/// Rules 3 to 5 for sharing `original` (verified, with its plaintext's TLP
/// label `tlp`) from `sharer` into `conversation`, under `state` (the roster
/// of the share's epoch).
///
/// # Errors
/// [`EnvelopeError::SharedOriginal`] naming the rule.
pub fn check_share(
    state: &RosterState,
    sharer: &str,
    conversation: &str,
    original: &VerifiedEnvelope,
    tlp: Tlp,
) -> Result<(), EnvelopeError> {
    let h = original.header();
    if tlp > MAX_SHARED_TLP {
        return Err(refuse(format!(
            "{} is {tlp}: TLP:AMBER+STRICT and TLP:RED are never re-shared",
            h.msg_id
        )));
    }
    let took_part = h.sender == sharer || original.recipients().any(|r| r == sharer);
    if !took_part {
        return Err(refuse(format!(
            "{sharer} was neither the sender nor a recipient of {}",
            h.msg_id
        )));
    }
    let readers = state
        .readers(&h.channel)
        .ok_or_else(|| refuse(format!("channel {} no longer exists", h.channel)))?;
    let audience = state
        .readers(conversation)
        .ok_or_else(|| refuse(format!("unknown conversation {conversation}")))?;
    if let Some(outsider) = audience.iter().find(|p| !readers.contains(*p)) {
        return Err(refuse(format!(
            "{outsider} does not read {} (a share never widens who reads a channel)",
            h.channel
        )));
    }
    Ok(())
}

/// The plaintext of a share of `original`.
pub fn share_message(original: &Opened) -> Message {
    Message {
        kind: Kind::Share {
            envelope: original.envelope().to_vec(),
            content_key: *original.content_key(),
        },
        tlp: original.message().tlp,
        reply_to: None,
        subject: String::new(),
        body: String::new(),
        attachments: Vec::new(),
    }
}

/// If `share` (opened and verified itself) is a `Share`: the original it
/// carries, checked by every rule above against `log`. `Ok(None)` for any
/// other message.
///
/// # Errors
/// [`EnvelopeError::SharedOriginal`] naming the rule that fails.
pub fn open_shared(share: &Opened, log: &RosterLog) -> Result<Option<Opened>, EnvelopeError> {
    let Kind::Share {
        envelope,
        content_key,
    } = &share.message().kind
    else {
        return Ok(None);
    };
    let original = UntrustedEnvelope::decode(envelope)
        .map_err(|e| refuse(format!("the original does not decode: {e}")))?
        .verify(log)
        .map_err(|e| {
            refuse(format!(
                "the original does not verify under the roster of its epoch: {e}"
            ))
        })?;
    let opened = original.open_with_content_key(content_key).map_err(|e| {
        refuse(format!(
            "the original's content does not match its key commitment: {e}"
        ))
    })?;
    if opened.message().tlp != share.message().tlp {
        return Err(refuse("the share's TLP label is not the original's"));
    }
    let state = log.state_for(share.header())?;
    check_share(
        state,
        &share.header().sender,
        &share.header().channel,
        &original,
        opened.message().tlp,
    )?;
    Ok(Some(opened))
}
