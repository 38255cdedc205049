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

/// The original a `Share` carries, verified and opened.
#[derive(Debug)]
pub struct SharedOriginal {
    /// The original, verified against the roster of its own epoch (for the
    /// caller's wrap checks).
    pub verified: VerifiedEnvelope,
    /// The original, opened with the shared content key.
    pub opened: Opened,
}

/// If `share` (opened and verified itself) is a `Share`: the original it
/// carries, checked by every rule above against `log`, and the share's own
/// form (no subject, body, attachments or reply; sealed no earlier than the
/// original's epoch). `Ok(None)` for any other message.
///
/// # Errors
/// [`EnvelopeError::SharedOriginal`] naming the rule that fails.
pub fn open_shared(
    share: &Opened,
    log: &RosterLog,
) -> Result<Option<SharedOriginal>, EnvelopeError> {
    let m = share.message();
    let Kind::Share {
        envelope,
        content_key,
    } = &m.kind
    else {
        return Ok(None);
    };
    let bare = m.subject.is_empty()
        && m.body.is_empty()
        && m.attachments.is_empty()
        && m.reply_to.is_none();
    if !bare {
        return Err(refuse(
            "a share carries the original alone (no subject, body, attachments or reply)",
        ));
    }
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
    if opened.message().tlp != m.tlp {
        return Err(refuse("the share's TLP label is not the original's"));
    }
    if matches!(opened.message().kind, Kind::Share { .. }) {
        return Err(refuse("a share of a share (share the original)"));
    }
    check_order(share.header(), original.header())?;
    let state = log.state_for(share.header())?;
    check_share(
        state,
        &share.header().sender,
        &share.header().channel,
        &original,
        opened.message().tlp,
    )?;
    Ok(Some(SharedOriginal {
        verified: original,
        opened,
    }))
}

/// A share is sealed at the original's epoch or later, so who may read the
/// original's channel is never judged before the original existed (a share
/// sealed in the previous epoch's grace period cannot reach someone removed
/// from the channel since).
///
/// # Errors
/// [`EnvelopeError::SharedOriginal`].
pub fn check_order(share: &super::Header, original: &super::Header) -> Result<(), EnvelopeError> {
    let (s, o) = (
        share.roster_epoch.unwrap_or(0),
        original.roster_epoch.unwrap_or(0),
    );
    if s < o {
        return Err(refuse(format!(
            "the share (roster epoch {s}) is older than the original (epoch {o})"
        )));
    }
    Ok(())
}

/// The header a `Share` message's original claims (`None` for any other
/// message, or an original that does not decode). Retention, legal holds
/// and selective exports treat a share as its original (its channel,
/// sender, id and time), because the share carries the original's content
/// key: redacting or leaving out one but not the other would leak or lose
/// the original.
pub fn original_header(m: &Message) -> Option<super::Header> {
    match &m.kind {
        Kind::Share { envelope, .. } => UntrustedEnvelope::decode(envelope)
            .ok()
            .map(|u| u.claimed_header().clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::seal_v2;
    use crate::roster::tests::World;

    const T: u64 = 1_700_000_000_000;

    /// UA (beneficiary), EE (chair), PL, GB; one `plenary` with everyone.
    fn world() -> World {
        World::new(&["UA", "EE", "PL", "GB"], &["NATO"], 1, 3)
    }

    fn sealed(w: &World, who: &str, state: &RosterState, m: &Message) -> Opened {
        let id = &w.devices[&(who.to_string(), "dev0".to_string())];
        let s = seal_v2(id, "dev0", state, "plenary", m, T).unwrap();
        UntrustedEnvelope::decode(s.as_bytes())
            .unwrap()
            .verify(&w.log)
            .unwrap()
            .open_with_content_key(s.content_key())
            .unwrap()
    }

    fn refused(w: &World, share: &Opened) -> String {
        match open_shared(share, &w.log) {
            Err(EnvelopeError::SharedOriginal(why)) => why,
            other => panic!("accepted: {other:?}"),
        }
    }

    #[test]
    fn a_share_is_the_original_alone_never_a_share_and_never_older() {
        let mut w = world();
        let state0 = w.log.current().clone();
        let original = sealed(&w, "UA", &state0, &Message::note(Tlp::Amber, "needs", "x"));
        let share = sealed(&w, "EE", &state0, &share_message(&original));
        let got = open_shared(&share, &w.log).unwrap().unwrap();
        assert_eq!(got.opened.msg_id(), original.msg_id());

        // A share of a share (the sender refuses to make one; a recipient too).
        let nested = sealed(&w, "PL", &state0, &share_message(&share));
        assert!(refused(&w, &nested).contains("share of a share"));

        // Extra content riding on a share.
        let mut m = share_message(&original);
        m.subject = "look at this".into();
        assert!(refused(&w, &sealed(&w, "EE", &state0, &m)).contains("alone"));

        // An original of epoch 1 in a share sealed at epoch 0 (the grace
        // period): refused, whoever could read the channel at epoch 0.
        let mut r = w.record();
        r.quorum = 2;
        let e = w.amend(r, &["UA", "EE", "PL"]);
        w.log.append(e).unwrap();
        let state1 = w.log.current().clone();
        let newer = sealed(&w, "UA", &state1, &Message::note(Tlp::Amber, "later", "y"));
        let early = sealed(&w, "EE", &state0, &share_message(&newer));
        assert!(refused(&w, &early).contains("older than the original"));
        let fine = sealed(&w, "EE", &state1, &share_message(&newer));
        assert!(open_shared(&fine, &w.log).unwrap().is_some());

        // RED and AMBER+STRICT never; a sharer who had no part, never.
        for tlp in [Tlp::Red, Tlp::AmberStrict] {
            let o = sealed(&w, "UA", &state1, &Message::note(tlp, "s", "z"));
            let s = sealed(&w, "EE", &state1, &share_message(&o));
            assert!(refused(&w, &s).contains("never re-shared"), "{tlp}");
        }
    }
}
