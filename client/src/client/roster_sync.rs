//! Version 2 in the session: fetching, verifying, applying and archiving
//! the roster log; what follows an advance (quarantined deliveries
//! re-verified, messages refused as `stale_roster` re-sealed); and the
//! refusals that stop the client (another deployment, an invalid entry, a
//! truncated log, a fork: the evidence is kept).

use std::sync::Arc;

use tallinn_common::envelope::UntrustedEnvelope;
use tallinn_common::message::MsgId;
use tallinn_common::roster::{Appended, LogError, RosterLog, SignedEntry};
use tallinn_common::text::escape_line as esc;
use tallinn_common::wire::{self, EntryBytes, Frame};
use tracing::{info, warn};

use super::sending::reseal;
use super::{ClientError, Event, Inner};
use crate::archive::{ArchiveError, Inserted};
use crate::connection::ConnectError;
use crate::roster::ClientRoster;

/// The `RosterFetch` that brings this client's log up to date, if it runs
/// the roster log.
pub(super) fn fetch_frame(inner: &Inner) -> Option<Vec<u8>> {
    let roster = inner.roster();
    if !roster.is_v2() {
        return None;
    }
    let from = roster.epoch().map_or(0, |e| e.saturating_add(1));
    Some(wire::encode_frame(&Frame::RosterFetch { from }))
}

/// What applying a `RosterEntries` frame did.
pub(super) struct Applied {
    /// The log advanced (new entries verified and archived).
    pub advanced: bool,
    /// The relay holds more: fetch from here.
    pub fetch_more: Option<u64>,
}

/// Verifies and applies the entries of a `RosterEntries` frame, archiving
/// each new one durably before it is put in force.
///
/// # Errors
/// [`ConnectError::UntrustedRoster`] for a genesis that is not the pinned
/// deployment, an invalid entry, a head below what this client knows, or a
/// fork (both entries are archived as evidence first);
/// [`ConnectError::Protocol`] for undecodable entries or archive failures.
pub(super) fn apply_entries(
    inner: &Inner,
    head: u64,
    first: u64,
    entries: &[EntryBytes],
) -> Result<Applied, ConnectError> {
    let current = inner.roster();
    let ClientRoster::V2 { deployment, log } = current.as_ref() else {
        // A version-1 client never fetches; ignore a stray push.
        return Ok(Applied {
            advanced: false,
            fetch_more: None,
        });
    };
    let deployment = *deployment;
    let mut log = log.clone();
    let mut advanced = false;
    let archive_err = |e: ArchiveError| ConnectError::Protocol(format!("archive: {e}"));
    for (k, bytes) in entries.iter().enumerate() {
        let index = first.saturating_add(k as u64);
        let entry = SignedEntry::decode(&bytes.0).map_err(|e| {
            ConnectError::UntrustedRoster(format!("roster entry {index} from the relay: {e}"))
        })?;
        match &mut log {
            None => {
                if index != 0 {
                    // Not the genesis: wait for the answer from index 0.
                    continue;
                }
                let l = RosterLog::from_genesis(entry.clone(), Some(&deployment))
                    .map_err(|e| ConnectError::UntrustedRoster(e.to_string()))?;
                inner
                    .archive
                    .store_roster_entry(0, &entry)
                    .map_err(archive_err)?;
                info!(deployment = %hex::encode(l.deployment()), "roster log: genesis verified against the pinned deployment");
                log = Some(l);
                advanced = true;
            }
            Some(l) => match l.append(entry.clone()) {
                Ok(Appended::New(i)) => {
                    inner
                        .archive
                        .store_roster_entry(i, &entry)
                        .map_err(archive_err)?;
                    info!(epoch = i, "roster log advanced");
                    advanced = true;
                }
                Ok(Appended::Known(_)) => {}
                Err(LogError::Fork(ev)) => {
                    inner.archive.store_fork(&ev).map_err(archive_err)?;
                    return Err(ConnectError::UntrustedRoster(format!(
                        "{} (both entries kept in the archive; `tallinn roster log` shows them)",
                        LogError::Fork(ev)
                    )));
                }
                Err(LogError::WrongIndex { .. }) => {
                    // A gap (a push overtook an answer): fetch what is missing.
                    break;
                }
                Err(e) => {
                    return Err(ConnectError::UntrustedRoster(format!(
                        "the relay served an invalid roster entry: {e}"
                    )))
                }
            },
        }
    }
    let fetch_more = match &log {
        Some(l) if head < l.epoch() => {
            return Err(ConnectError::UntrustedRoster(
                LogError::Truncated {
                    known: l.epoch(),
                    offered: head,
                }
                .to_string(),
            ))
        }
        Some(l) if head > l.epoch() => Some(l.epoch() + 1),
        Some(_) => None,
        None => Some(0),
    };
    if advanced {
        *inner.roster.write().unwrap_or_else(|p| p.into_inner()) =
            Arc::new(ClientRoster::V2 { deployment, log });
    }
    Ok(Applied {
        advanced,
        fetch_more,
    })
}

/// After the log advanced: every quarantined delivery that verifies and
/// opens now is archived and leaves the quarantine (a message from a
/// participant or device the old roster did not know yet, or sealed at a
/// later epoch). Returns the events for the new records.
pub(super) fn reverify_quarantine(inner: &Inner) -> Result<Vec<Event>, ArchiveError> {
    let roster = inner.roster();
    let mut events = Vec::new();
    for (n, q) in inner.archive.quarantined_numbered()? {
        let opened = UntrustedEnvelope::decode(&q.envelope)
            .and_then(|u| u.verify(roster.as_ref()))
            .and_then(|v| super::admit(inner, &v));
        let admitted = match opened {
            Ok(o) => o,
            Err(e) => {
                // Still refused: the reason may now be a better one (the
                // roster explains the sender, but a wrap does not derive).
                inner.archive.set_quarantine_reason(n, &e.to_string())?;
                continue;
            }
        };
        let (inserted, record) =
            super::delivery::archive_admitted(inner, q.seq, q.received_at_ms, &admitted)?;
        inner.archive.release_quarantined(n)?;
        if let Inserted::New(i) = inserted {
            info!(seq = q.seq, index = i, msg_id = %admitted.opened.msg_id(), "quarantined delivery verifies under the new roster; archived");
            events.push(match record {
                Some(r) => Event::Message(Box::new(r)),
                None => Event::Archived,
            });
        }
    }
    inner.archive.flush()?;
    Ok(events)
}

/// Re-seals our messages the relay refused as `stale_roster`, against the
/// epoch now in force.
pub(super) fn reseal_stale(inner: &Inner) {
    let ids: Vec<MsgId> =
        std::mem::take(&mut *inner.stale.lock().unwrap_or_else(|p| p.into_inner()));
    for old in ids {
        match reseal(inner, &old) {
            Ok(Some(new_id)) => {
                info!(old = %old, new = %new_id, epoch = ?inner.roster().epoch(), "stale_roster: message sealed again against the current roster");
                inner.finish_waiter(
                    &old,
                    Err(ClientError::Queued {
                        msg_id: new_id,
                        why: format!("re-sealed as {new_id} after stale_roster"),
                    }),
                );
            }
            Ok(None) => {}
            Err(e) => {
                warn!(msg_id = %old, error = %esc(&e.to_string()), "could not re-seal after stale_roster")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! What a doctored relay can push: the client re-checks every entry.

    use std::time::Duration;

    use tallinn_common::identity::{DeviceId, Identity, ParticipantId};
    use tallinn_common::roster::{
        approval_message, Approval, EntryBody, EntryKind, Roster, SignedEntry,
    };
    use tallinn_common::wire::EntryBytes;

    use super::*;
    use crate::client::{Client, Settings};

    fn ident(id: &str, n: u8) -> Identity {
        Identity::from_secrets(ParticipantId::new(id).unwrap(), &[n; 32], &[n + 1; 32])
    }

    fn approve(e: &mut SignedEntry, who: &Identity) {
        e.add_approval(Approval {
            participant: who.id().to_string(),
            signature: who.sign(&approval_message(&e.body)),
        });
    }

    struct Fixture {
        client: Client,
        ua: Identity,
        ee: Identity,
        pl: Identity,
        genesis: SignedEntry,
        _dir: tempfile::TempDir,
    }

    fn fixture() -> Fixture {
        let (ua, ee, pl) = (ident("UA", 1), ident("EE", 3), ident("PL", 5));
        let roster = Roster::parse(&format!(
            "beneficiary = \"UA\"\n{}{}{}[[channel]]\nid = \"plenary\"\nmembers = [\"*\"]\n",
            ua.roster_entry("Ukraine", "member"),
            ee.roster_entry("Estonia", "member"),
            pl.roster_entry("Poland", "member"),
        ))
        .unwrap();
        let relay = ident("relay", 9).public().sign_key.to_bytes();
        let mut genesis = SignedEntry::new(&EntryBody {
            index: 0,
            prev_hash: [0; 32],
            kind: EntryKind::Genesis(roster.to_state_record("EE", 2, relay)),
        });
        approve(&mut genesis, &ee);
        approve(&mut genesis, &ua);
        let dir = tempfile::tempdir().unwrap();
        let archive_dir = dir.path().join("archive");
        tallinn_host::durable::private_dir(&archive_dir).unwrap();
        let settings = Settings {
            relay: "127.0.0.1:9".parse().unwrap(),
            server_name: "localhost".into(),
            trust: None,
            identity: std::sync::Arc::new(ident("PL", 5)),
            retired: Vec::new(),
            device: DeviceId::new("default").unwrap(),
            roster: std::sync::Arc::new(roster),
            deployment: Some(genesis.hash()),
            archive_dir,
            connect_timeout: Duration::from_secs(1),
            send_timeout: Duration::from_secs(1),
            max_backoff: Duration::from_secs(1),
            allow_classical_key_exchange: false,
            check_wraps: Default::default(),
        };
        let client = Client::open(settings).unwrap();
        Fixture {
            client,
            ua,
            ee,
            pl,
            genesis,
            _dir: dir,
        }
    }

    fn amend(f: &Fixture, prev: &SignedEntry, quorum: u32, signers: &[&Identity]) -> SignedEntry {
        let body = f.genesis.decode_body().unwrap();
        let EntryKind::Genesis(mut record) = body.kind else {
            unreachable!()
        };
        record.quorum = quorum;
        let mut e = SignedEntry::new(&EntryBody {
            index: prev.decode_body().unwrap().index + 1,
            prev_hash: prev.hash(),
            kind: EntryKind::Amend(record),
        });
        for s in signers {
            approve(&mut e, s);
        }
        e
    }

    fn push(
        f: &Fixture,
        head: u64,
        first: u64,
        entries: &[&SignedEntry],
    ) -> Result<Applied, ConnectError> {
        let bytes: Vec<EntryBytes> = entries.iter().map(|e| EntryBytes(e.encode())).collect();
        apply_entries(&f.client.inner, head, first, &bytes)
    }

    #[test]
    fn an_amendment_without_the_beneficiary_is_refused_even_when_the_relay_pushes_it() {
        let f = fixture();
        assert!(push(&f, 0, 0, &[&f.genesis]).unwrap().advanced);
        assert_eq!(f.client.roster().epoch(), Some(0));
        // Quorum 2 reached by EE and PL, but without Ukraine.
        let bad = amend(&f, &f.genesis, 3, &[&f.ee, &f.pl]);
        let err = push(&f, 1, 1, &[&bad]).err().expect("refused");
        assert!(
            matches!(&err, ConnectError::UntrustedRoster(m) if m.contains("beneficiary")),
            "{err}"
        );
        assert_eq!(f.client.roster().epoch(), Some(0), "not applied");
        assert_eq!(f.client.archive().roster_entries().unwrap().len(), 1);
        // Without the chair, or below quorum: refused too.
        for signers in [&[&f.ua, &f.pl][..], &[&f.ua][..]] {
            let bad = amend(&f, &f.genesis, 3, signers);
            assert!(push(&f, 1, 1, &[&bad]).is_err());
        }
        let good = amend(&f, &f.genesis, 3, &[&f.ee, &f.ua]);
        assert!(push(&f, 1, 1, &[&good]).unwrap().advanced);
        assert_eq!(f.client.roster().epoch(), Some(1));
    }

    #[test]
    fn another_deployment_a_truncation_and_a_fork_stop_the_client() {
        let f = fixture();
        // A genesis that is not the pinned one.
        let other = amend(&f, &f.genesis, 3, &[&f.ee, &f.ua]);
        let mut forged = f.genesis.clone();
        forged.approvals.pop();
        assert!(matches!(
            push(&f, 0, 0, &[&forged]),
            Err(ConnectError::UntrustedRoster(_))
        ));
        assert!(push(&f, 0, 0, &[&f.genesis]).unwrap().advanced);
        assert!(push(&f, 1, 1, &[&other]).unwrap().advanced);
        // The relay now claims head 0: a rollback.
        let err = push(&f, 0, 0, &[]).err().expect("refused");
        assert!(err.to_string().contains("truncated"), "{err}");
        // A different valid entry at index 1: a fork, kept as evidence.
        let fork = amend(&f, &f.genesis, 1, &[&f.ee, &f.ua]);
        let err = push(&f, 1, 1, &[&fork]).err().expect("refused");
        assert!(err.to_string().contains("fork"), "{err}");
        let evidence = f.client.archive().forks().unwrap();
        assert_eq!(evidence.len(), 1);
        assert_eq!(evidence[0].ours, other);
        assert_eq!(evidence[0].theirs, fork);
        // A reopened client re-verifies its stored log.
        let settings = f.client.settings().clone();
        drop(f.client);
        let again = Client::open(settings).unwrap();
        assert_eq!(again.roster().epoch(), Some(1));
    }
}
