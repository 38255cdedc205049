//! What happens to each delivery and each answer to our sends: strict
//! verification and opening (a batch's crypto on both cores), the
//! beneficiary's wraps, archiving or the quarantine, and archiving our own
//! accepted messages with the relay's receipt.

use super::*;

/// A delivery decoded and verified against the client's roster: the
/// verified envelope, or the claimed header (if it decoded) and the error.
pub(super) type Checked = Result<VerifiedEnvelope, (Option<Header>, EnvelopeError)>;

/// Decodes every `Deliver` of a batch and verifies each strictly
/// ([`UntrustedEnvelope::verify_each_strict`]). Aligned with `batch`; `None` for other frames.
pub(super) fn precheck_deliveries(
    roster: &ClientRoster,
    batch: &[Result<Frame, ConnectError>],
) -> Vec<Option<Checked>> {
    let mut out: Vec<Option<Checked>> = Vec::with_capacity(batch.len());
    let mut decoded = Vec::new();
    let mut slots = Vec::new();
    for (i, f) in batch.iter().enumerate() {
        match f {
            Ok(Frame::Deliver { envelope, .. }) => match UntrustedEnvelope::decode(envelope) {
                Ok(u) => {
                    slots.push((i, u.claimed_header().clone()));
                    decoded.push(u);
                    out.push(None);
                }
                Err(e) => out.push(Some(Err((None, e)))),
            },
            _ => out.push(None),
        }
    }
    // Strictly, one by one (a batch check may accept a small-order R,
    // PROTOCOL.md §10 item 32, which a recipient must quarantine), on both
    // cores.
    let verified = on_two_cores(decoded, |u| u.verify(roster));
    for ((i, claimed), v) in slots.into_iter().zip(verified) {
        if let Some(slot) = out.get_mut(i) {
            *slot = Some(v.map_err(|e| (Some(claimed), e)));
        }
    }
    out
}

/// Fewest items worth a second thread (spawning one costs tens of µs; a
/// delivery's crypto about 100-400 µs).
const PARALLEL_MIN: usize = 8;

/// `f` over `items`, in order, on this thread and a second one for the
/// second half when there are at least [`PARALLEL_MIN`] items. The
/// deliveries' crypto (strict verification, opening, the beneficiary's
/// wraps) runs on both cores; archiving them stays in order, on one.
fn on_two_cores<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    if items.len() < PARALLEL_MIN {
        return items.into_iter().map(f).collect();
    }
    let mut first = items;
    let second = first.split_off(first.len().div_ceil(2));
    std::thread::scope(|s| {
        let f = &f;
        let h = s.spawn(move || second.into_iter().map(f).collect::<Vec<R>>());
        let mut out: Vec<R> = first.into_iter().map(f).collect();
        match h.join() {
            Ok(rest) => out.extend(rest),
            Err(p) => std::panic::resume_unwind(p),
        }
        out
    })
}

/// Opens each verified delivery of a batch and checks its wraps
/// ([`admit`]) on both cores; aligned with `checked`, `None` where there is
/// nothing to open.
pub(super) fn admit_batch(
    inner: &Inner,
    checked: &[Option<Checked>],
) -> Vec<Option<Result<Admitted, EnvelopeError>>> {
    let jobs: Vec<(usize, &VerifiedEnvelope)> = checked
        .iter()
        .enumerate()
        .filter_map(|(i, c)| match c {
            Some(Ok(v)) => Some((i, v)),
            _ => None,
        })
        .collect();
    let mut out: Vec<Option<_>> = (0..checked.len()).map(|_| None).collect();
    for (i, r) in on_two_cores(jobs, |(i, v)| (i, admit(inner, v))) {
        if let Some(slot) = out.get_mut(i) {
            *slot = Some(r);
        }
    }
    out
}

/// Opens a verified delivery for this device: with the current key file,
/// else with a retired one (a message sealed before a rotation).
pub(crate) fn open_with_any_key(
    s: &Settings,
    verified: &VerifiedEnvelope,
) -> Result<tallinn_common::envelope::Opened, EnvelopeError> {
    let device = Some(s.device.as_str());
    match verified.open_as(&s.identity, device) {
        Err(EnvelopeError::DecryptFailed) => {
            for old in &s.retired {
                if let Ok(o) = verified.open_as(old, device) {
                    return Ok(o);
                }
            }
            Err(EnvelopeError::DecryptFailed)
        }
        other => other,
    }
}

/// Verifies (unless `check` says how that went), opens and archives one
/// delivery (not flushed), or quarantines it.
pub(super) fn receive(
    inner: &Inner,
    seq: u64,
    received_at_ms: u64,
    envelope: Vec<u8>,
    check: Option<Checked>,
    opened: Option<Result<Admitted, EnvelopeError>>,
) -> Result<Option<Event>, ArchiveError> {
    let check = match check {
        Some(c) => c,
        None => match UntrustedEnvelope::decode(&envelope) {
            Ok(u) => {
                let claimed = u.claimed_header().clone();
                u.verify(inner.roster().as_ref())
                    .map_err(|e| (Some(claimed), e))
            }
            Err(e) => Err((None, e)),
        },
    };
    let verified = match check {
        Ok(v) => v,
        Err((claimed, e)) => {
            return quarantine(inner, seq, received_at_ms, envelope, claimed.as_ref(), e)
        }
    };
    let admitted = match opened.unwrap_or_else(|| admit(inner, &verified)) {
        Ok(o) => o,
        Err(e) => {
            return quarantine(
                inner,
                seq,
                received_at_ms,
                envelope,
                Some(verified.header()),
                e,
            )
        }
    };
    let want = inner.subscribed.load(std::sync::atomic::Ordering::Relaxed);
    match archive_admitted(inner, seq, received_at_ms, &admitted)? {
        (Inserted::New(i), record) => {
            debug!(seq, index = i, msg_id = %admitted.opened.msg_id(), "archived");
            Ok(Some(match record.filter(|_| want) {
                Some(r) => Event::Message(Box::new(r)),
                // Nobody listens: count it without keeping a copy.
                None => Event::Archived,
            }))
        }
        (Inserted::Duplicate(_), _) => Ok(None),
    }
}

/// A delivery that passed every check: the message, and for a `Share` the
/// original it carries, verified (`tallinn_common::envelope::share`).
pub(crate) struct Admitted {
    /// The delivered message.
    pub opened: tallinn_common::envelope::Opened,
    /// The shared original, for a `Share`.
    pub shared: Option<tallinn_common::envelope::Opened>,
}

/// Opens a verified delivery for this device, checks its wraps and, for a
/// `Share`, the original it carries: what every delivery passes before it
/// is archived (first time, or released from the quarantine).
pub(super) fn admit(
    inner: &Inner,
    verified: &tallinn_common::envelope::VerifiedEnvelope,
) -> Result<Admitted, EnvelopeError> {
    let opened = open_with_any_key(&inner.settings, verified)?;
    check_wraps(inner, verified, opened.content_key())?;
    let shared = if matches!(
        opened.message().kind,
        tallinn_common::message::Kind::Share { .. }
    ) {
        let roster = inner.roster();
        let log = roster.log().ok_or_else(|| {
            EnvelopeError::SharedOriginal("shared history needs the roster log (version 2)".into())
        })?;
        match tallinn_common::envelope::share::open_shared(&opened, log)? {
            Some(original) => {
                // The original's wraps, as if it had been delivered here.
                check_wraps(inner, &original.verified, original.opened.content_key())
                    .map_err(|e| EnvelopeError::SharedOriginal(format!("the original: {e}")))?;
                Some(original.opened)
            }
            None => None,
        }
    } else {
        None
    };
    Ok(Admitted { opened, shared })
}

/// Archives an admitted delivery (not flushed): the message, flagged if its
/// TLP label is above its channel's ceiling at the envelope's epoch, and
/// right after a new `Share` the original it carries (direction `shared`,
/// unless this archive already holds it).
pub(super) fn archive_admitted(
    inner: &Inner,
    seq: u64,
    received_at_ms: u64,
    admitted: &Admitted,
) -> Result<(Inserted, Option<Record>), ArchiveError> {
    let roster = inner.roster();
    let max_tlp = |h: &tallinn_common::envelope::Header| roster.max_tlp_for(h);
    let Some(original) = &admitted.shared else {
        let (inserted, record) = inner.archive.insert_received_record(
            seq,
            received_at_ms,
            &admitted.opened,
            max_tlp(admitted.opened.header()),
        )?;
        if let Inserted::New(index) = inserted {
            warn_tlp(&roster, index, &admitted.opened);
        }
        return Ok((inserted, record));
    };
    let (inserted, record, second) = inner.archive.insert_share_pair(
        seq,
        received_at_ms,
        &admitted.opened,
        original,
        &max_tlp,
    )?;
    if let Inserted::New(index) = inserted {
        warn_tlp(&roster, index, &admitted.opened);
    }
    if let Some(Inserted::New(i)) = second {
        info!(index = i, msg_id = %original.msg_id(), shared_by = %esc(&admitted.opened.header().sender), "shared message archived");
        warn_tlp(&roster, i, original);
    }
    Ok((inserted, record))
}

/// Logs a message archived above its channel's TLP ceiling (the archive
/// flagged it with the record: kept, shown, counted).
fn warn_tlp(roster: &ClientRoster, index: u64, opened: &tallinn_common::envelope::Opened) {
    let tlp = opened.message().tlp;
    if let Some(max) = roster.max_tlp_for(opened.header()) {
        if tlp > max {
            warn!(index, msg_id = %opened.msg_id(), channel = %esc(&opened.header().channel), %tlp, %max, "TLP label above the channel's ceiling; flagged");
        }
    }
}

/// Version 2: recomputes the beneficiary's wraps (or every wrap, with
/// `check_wraps = "all"`) from the content key, so a message archived as
/// sent to Ukraine provably gave Ukraine the key to read it.
fn check_wraps(
    inner: &Inner,
    verified: &tallinn_common::envelope::VerifiedEnvelope,
    content_key: &[u8; 32],
) -> Result<(), EnvelopeError> {
    if verified.header().version < 2 {
        return Ok(());
    }
    let roster = inner.roster();
    let Some(log) = roster.log() else {
        return Ok(());
    };
    let state = log.state_for(verified.header())?;
    let beneficiary = state.beneficiary().map(|b| b.as_str().to_string());
    match inner.settings.check_wraps {
        crate::config::WrapCheck::All => verified.verify_wraps(content_key, state),
        crate::config::WrapCheck::Beneficiary => verified
            .verify_wraps_of(content_key, state, |p, _| Some(p) == beneficiary.as_deref())
            .map(|_| ()),
    }
}

pub(super) fn quarantine(
    inner: &Inner,
    seq: u64,
    received_at_ms: u64,
    envelope: Vec<u8>,
    claimed: Option<&tallinn_common::envelope::Header>,
    error: EnvelopeError,
) -> Result<Option<Event>, ArchiveError> {
    let reason = match &error {
        EnvelopeError::ReadOnly(who) => {
            format!("relay fault: forwarded a post from observer {who}")
        }
        other => other.to_string(),
    };
    warn!(seq, reason = %esc(&reason), "delivery failed verification; quarantined");
    let q = Quarantined {
        seq,
        received_at_ms,
        reason,
        claimed_sender: claimed.map(|h| h.sender.clone()),
        claimed_channel: claimed.map(|h| h.channel.clone()),
        envelope,
    };
    inner.archive.quarantine(&q)?;
    Ok(Some(Event::Quarantined(Box::new(q))))
}

/// Handles our message's acceptance: archive the sent copy, drop it from the
/// outbox (both made durable by the batch flush). `None` if it was not ours
/// or already handled.
pub(super) fn accepted(
    inner: &Inner,
    msg_id: MsgId,
    seq: u64,
    receipt: Option<&tallinn_common::evidence::Receipt>,
) -> Result<Option<Event>, ArchiveError> {
    let Some(entry) = inner.outbox.get(&msg_id)? else {
        return Ok(None);
    };
    let opened = UntrustedEnvelope::decode(&entry.envelope)
        .and_then(|u| u.verify(inner.roster().as_ref()))
        .and_then(|v| v.open_with_content_key(&entry.content_key));
    match opened {
        Ok(o) => {
            let inserted = inner.archive.insert_sent(seq, now_ms(), &o)?;
            if let (crate::archive::Inserted::New(index), Some(r)) = (inserted, receipt) {
                evidence::keep_receipt(inner, index, &entry.envelope, r)?;
            }
        }
        Err(e) => warn!(%msg_id, error = %e, "own sent message does not verify; not archived"),
    }
    inner.outbox.remove(&msg_id)?;
    Ok(Some(Event::Accepted { msg_id, seq }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tallinn_common::envelope::seal;
    use tallinn_common::identity::ParticipantId;
    use tallinn_common::message::{Message, Tlp};

    /// Re-signs `bytes` with a signature whose R carries the order-2
    /// torsion point: strict verification refuses it, a batch check
    /// accepts about half of them (PROTOCOL.md §10 item 32).
    fn torsion_signed(seed: &[u8; 32], bytes: &[u8], nonce: u8) -> Vec<u8> {
        use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
        use curve25519_dalek::Scalar;
        use sha2::{Digest, Sha512};
        let key = ed25519_dalek::SigningKey::from_bytes(seed);
        let mut env: tallinn_common::envelope::Envelope = postcard::from_bytes(bytes).unwrap();
        let r = Scalar::from_bytes_mod_order([nonce; 32]);
        let big_r = (ED25519_BASEPOINT_POINT * r + EIGHT_TORSION[4]).compress();
        let mut m = tallinn_common::defaults::ENVELOPE_SIGNATURE_CONTEXT.to_vec();
        m.extend_from_slice(&env.body);
        let h: [u8; 64] = Sha512::new()
            .chain_update(big_r.as_bytes())
            .chain_update(key.verifying_key().to_bytes())
            .chain_update(&m)
            .finalize()
            .into();
        let s = r + Scalar::from_bytes_mod_order_wide(&h) * key.to_scalar();
        env.signature[..32].copy_from_slice(big_r.as_bytes());
        env.signature[32..].copy_from_slice(s.as_bytes());
        postcard::to_allocvec(&env).unwrap()
    }

    /// Issue 10 item 7 in the client's own delivery path: a delivery batch
    /// holding a genuine message and one whose signature only a batch
    /// check accepts (chosen so that it does, with exactly this batch)
    /// keeps the first and refuses the second.
    #[test]
    fn a_delivery_batch_is_verified_strictly() {
        let seed = [7u8; 32];
        let ua = Identity::from_secrets(ParticipantId::new("UA").unwrap(), &seed, &[8; 32]);
        let ee = Identity::from_secrets(ParticipantId::new("EE").unwrap(), &[9; 32], &[10; 32]);
        let roster = Roster::parse(&format!(
            "{}{}[[channel]]\nid = \"pair\"\nmembers = [\"*\"]\n",
            ua.roster_entry("Ukraine", "member"),
            ee.roster_entry("Estonia", "member")
        ))
        .unwrap();
        let good = seal(&ua, &roster, "pair", &Message::note(Tlp::Clear, "a", ""), 1).unwrap();
        let other = seal(&ua, &roster, "pair", &Message::note(Tlp::Clear, "b", ""), 2).unwrap();
        let decode = |b: &[u8]| UntrustedEnvelope::decode(b).unwrap();
        let evil = (1..=64u8)
            .map(|n| torsion_signed(&seed, other.as_bytes(), n))
            .find(|evil| {
                UntrustedEnvelope::verify_many(vec![decode(good.as_bytes()), decode(evil)], &roster)
                    .iter()
                    .all(Result::is_ok)
            })
            .expect("a nonce that this very batch accepts");
        let deliver = |seq, envelope: Vec<u8>| {
            Ok(Frame::Deliver {
                seq,
                received_at_ms: 0,
                envelope,
            })
        };
        let batch = vec![
            deliver(1, good.as_bytes().to_vec()),
            deliver(2, evil),
            Ok(Frame::Ack { up_to_seq: 0 }),
        ];
        let checked = precheck_deliveries(&ClientRoster::V1(roster), &batch);
        assert!(matches!(checked[0], Some(Ok(_))));
        assert!(matches!(
            checked[1],
            Some(Err((Some(_), EnvelopeError::BadSignature)))
        ));
        assert!(checked[2].is_none());
    }
}
