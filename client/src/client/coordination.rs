//! The coordination side of sending: direct conversations addressed by
//! their participants, the TLP ceiling of a channel, and sharing archived
//! messages with a participant who joined later.

use super::*;

/// What became of one message given to [`Client::share`]: its id, and the
/// share's id or why it was not shared.
pub type ShareResult = (MsgId, Result<MsgId, String>);

impl Client {
    /// The direct conversation of this participant with `to` under the
    /// roster's rule: the set named `@A+B...` (`tallinn_common::roster::DirectSet`),
    /// with the beneficiary added if `to` left it out. Returns the name
    /// and who was added.
    ///
    /// # Errors
    /// [`ClientError::NotAllowed`] for an invalid id or a roster without
    /// direct conversations; the rest of the rule is checked when sealing.
    pub fn direct_conversation(&self, to: &[String]) -> Result<(String, Vec<String>), ClientError> {
        use tallinn_common::identity::ParticipantId;
        use tallinn_common::roster::DirectSet;
        let roster = self.inner.roster();
        let me = self.inner.settings.identity.id().clone();
        let bad = |reason: String| {
            ClientError::NotAllowed(PostError::Conversation {
                conversation: to.join(","),
                reason,
            })
        };
        let mut ids = vec![me];
        for t in to {
            ids.push(
                ParticipantId::new(t.trim())
                    .map_err(|_| bad(format!("{:?} is not a participant id", esc(t))))?,
            );
        }
        let mut added = Vec::new();
        match roster.log() {
            Some(log) => {
                if let Some(b) = log.current().beneficiary() {
                    if !ids.contains(b) {
                        added.push(b.to_string());
                        ids.push(b.clone());
                    }
                }
            }
            None => return Err(bad(
                "direct conversations need the roster log (version 2); run `tallinn sync` first"
                    .into(),
            )),
        }
        let set = DirectSet::new(ids).map_err(|e| bad(e.reason.into()))?;
        Ok((set.name(), added))
    }

    /// Shares archived messages with the participants of `conversation`
    /// (history for a late joiner, `tallinn share`): one `Share` each,
    /// oldest first, every rule of `tallinn_common::envelope::share`
    /// checked here first. Returns, per message, the share's id or why it
    /// was not shared.
    ///
    /// # Errors
    /// [`ClientError`] for a failure that stops everything (the archive).
    pub fn share(
        &self,
        conversation: &str,
        originals: &[Record],
    ) -> Result<Vec<ShareResult>, ClientError> {
        use tallinn_common::envelope::share::{check_share, share_message};
        let roster = self.inner.roster();
        let Some(log) = roster.log() else {
            return Err(ClientError::NotAllowed(PostError::Conversation {
                conversation: conversation.into(),
                reason: "sharing needs the roster log (version 2)".into(),
            }));
        };
        let me = self.inner.settings.identity.id().as_str();
        let mut out = Vec::new();
        for r in originals {
            let result = (|| -> Result<MsgId, String> {
                if matches!(r.message.kind, tallinn_common::message::Kind::Share { .. }) {
                    return Err("a share is not shared again (share the original)".into());
                }
                let key = r
                    .content_key
                    .as_ref()
                    .ok_or("the archive holds no content key for it")?;
                let verified = UntrustedEnvelope::decode(&r.envelope)
                    .and_then(|u| u.verify(log))
                    .map_err(|e| format!("it does not verify: {e}"))?;
                let opened = verified
                    .open_with_content_key(key)
                    .map_err(|e| format!("it does not open: {e}"))?;
                check_share(
                    log.current(),
                    me,
                    conversation,
                    &verified,
                    opened.message().tlp,
                )
                .map_err(|e| e.to_string())?;
                self.queue(conversation, &share_message(&opened))
                    .map_err(|e| e.to_string())
            })();
            out.push((r.msg_id, result));
        }
        Ok(out)
    }
}

/// Refuses a label above the channel's ceiling, saying where it may go.
pub(super) fn check_tlp(
    roster: &ClientRoster,
    channel: &str,
    tlp: tallinn_common::message::Tlp,
) -> Result<(), ClientError> {
    let Some(max) = roster.max_tlp(channel) else {
        return Ok(());
    };
    if tlp <= max {
        return Ok(());
    }
    let direct = roster
        .max_tlp(tallinn_common::roster::DIRECT_RULE)
        .filter(|d| *d >= tlp);
    let hint = match direct {
        Some(_) if !tallinn_common::roster::is_direct(channel) => {
            format!("; {tlp} goes only to the people named: a direct conversation (`--to PL,UA`)")
        }
        _ => String::new(),
    };
    Err(ClientError::AboveTlp {
        channel: channel.into(),
        tlp,
        max,
        hint,
    })
}
