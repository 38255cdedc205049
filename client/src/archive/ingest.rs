//! Writing the archive: records (chain, indexes, head), the head's repair
//! after a crash, and the bounded quarantine.

use super::*;
use tallinn_common::envelope::Header;

impl Archive {
    /// Archives a verified, opened delivery. Not durable until [`Archive::flush`].
    /// No TLP ceiling is checked (nothing is flagged): the client archives
    /// deliveries with [`Archive::insert_received_record`].
    ///
    /// # Errors
    /// [`ArchiveError`].
    pub fn insert_received(
        &self,
        seq: u64,
        received_at_ms: u64,
        opened: &Opened,
    ) -> Result<Inserted, ArchiveError> {
        self.insert(
            Entry::new(Direction::Received, seq, received_at_ms, opened, None),
            false,
        )
        .map(|(i, _)| i)
    }

    /// [`Archive::insert_received`], also returning the new record (without
    /// reading it back), for callers that report it. `max_tlp` is the
    /// channel's TLP ceiling for this message: a label above it is flagged
    /// (archive key `Y`) together with the record, never after it, so
    /// neither a reader nor a crash sees the record without its flag.
    ///
    /// # Errors
    /// [`ArchiveError`].
    pub fn insert_received_record(
        &self,
        seq: u64,
        received_at_ms: u64,
        opened: &Opened,
        max_tlp: Option<Tlp>,
    ) -> Result<(Inserted, Option<Record>), ArchiveError> {
        self.insert(
            Entry::new(Direction::Received, seq, received_at_ms, opened, max_tlp),
            true,
        )
    }

    /// Archives our own accepted message with its content key.
    ///
    /// # Errors
    /// [`ArchiveError`].
    pub fn insert_sent(
        &self,
        seq: u64,
        accepted_at_ms: u64,
        opened: &Opened,
    ) -> Result<Inserted, ArchiveError> {
        self.insert(
            Entry::new(Direction::Sent, seq, accepted_at_ms, opened, None),
            false,
        )
        .map(|(i, _)| i)
    }

    /// Archives a received `Share` and, right after it under the same
    /// lock (nothing can come between), the original it carries (direction
    /// `shared`; `seq` and the time are the share's), unless the archive
    /// holds that message already. A `Share` already archived as the last
    /// record whose original is missing (a crash came between the two) gets
    /// its original now. Returns the share's and the original's outcome.
    /// `max_tlp` gives a message's TLP ceiling, as for
    /// [`Archive::insert_received_record`].
    ///
    /// # Errors
    /// [`ArchiveError`].
    pub fn insert_share_pair(
        &self,
        seq: u64,
        received_at_ms: u64,
        share: &Opened,
        original: &Opened,
        max_tlp: &dyn Fn(&Header) -> Option<Tlp>,
    ) -> Result<(Inserted, Option<Record>, Option<Inserted>), ArchiveError> {
        self.writable()?;
        let mut head = self.head.lock().map_err(|_| ArchiveError::Poisoned)?;
        let (first, record) = self.insert_locked(
            &mut head,
            Entry::new(
                Direction::Received,
                seq,
                received_at_ms,
                share,
                max_tlp(share.header()),
            ),
            true,
        )?;
        let last = head.next_index.checked_sub(1);
        let follows = match first {
            Inserted::New(_) => true,
            Inserted::Duplicate(i) => Some(i) == last,
        };
        if !follows || self.lookup(&original.header().msg_id)?.is_some() {
            return Ok((first, record, None));
        }
        let (second, _) = self.insert_locked(
            &mut head,
            Entry::new(
                Direction::Shared,
                seq,
                received_at_ms,
                original,
                max_tlp(original.header()),
            ),
            false,
        )?;
        Ok((first, record, Some(second)))
    }

    /// Writes record `index`'s TLP flag: set when `tlp` is above
    /// `max_tlp`, removed otherwise (a crash may have left one for a
    /// record that never got this index).
    pub(super) fn write_tlp_flag(
        &self,
        index: u64,
        tlp: Tlp,
        max_tlp: Option<Tlp>,
    ) -> Result<(), ArchiveError> {
        use tallinn_common::roster::state::tlp_code;
        let key = Self::key(b'Y', &[&index.to_be_bytes()]);
        match max_tlp {
            Some(max) if tlp > max => {
                self.tree.insert(key, &[tlp_code(tlp), tlp_code(max)][..])?;
            }
            _ => {
                self.tree.remove(key)?;
            }
        }
        Ok(())
    }

    /// The TLP violation flagged on record `index`: (label, ceiling).
    ///
    /// # Errors
    /// [`ArchiveError::Db`].
    pub fn tlp_violation(&self, index: u64) -> Result<Option<(Tlp, Tlp)>, ArchiveError> {
        if index >= self.len() {
            return Ok(None); // a flag left by a crash before its record
        }
        Ok(self
            .tree
            .get(Self::key(b'Y', &[&index.to_be_bytes()]))?
            .and_then(|v| match v.as_ref() {
                [a, b] => Some((
                    *Tlp::ALL.get(usize::from(*a))?,
                    *Tlp::ALL.get(usize::from(*b))?,
                )),
                _ => None,
            }))
    }

    /// Appends a record of `e.opened`: its exact envelope bytes, header and
    /// message, and its content key.
    fn insert(
        &self,
        e: Entry<'_>,
        want_record: bool,
    ) -> Result<(Inserted, Option<Record>), ArchiveError> {
        self.writable()?;
        let mut head = self.head.lock().map_err(|_| ArchiveError::Poisoned)?;
        self.insert_locked(&mut head, e, want_record)
    }

    /// [`Archive::insert`] with the head lock held.
    fn insert_locked(
        &self,
        head: &mut Head,
        e: Entry<'_>,
        want_record: bool,
    ) -> Result<(Inserted, Option<Record>), ArchiveError> {
        let Entry {
            direction,
            seq,
            at,
            opened,
            max_tlp,
        } = e;
        let h = opened.header();
        // Every record keeps its content key (a received one too): after a
        // rotation erased the device's old secret, deep verification and an
        // auditor handed the key still open the envelope.
        let content_key = Some(*opened.content_key());
        if let Some(i) = self.lookup(&h.msg_id)? {
            return Ok((Inserted::Duplicate(i), None));
        }
        let index = head.next_index;
        let record = Record {
            index,
            prev_hash: head.hash,
            direction,
            seq,
            received_at_ms: at,
            msg_id: h.msg_id,
            sender: h.sender.clone(),
            channel: h.channel.clone(),
            sent_at_ms: h.sent_at_ms,
            message: opened.message().clone(),
            envelope: opened.envelope().to_vec(),
            content_key,
        };
        let hash = record.hash();
        // invariant: plain data; postcard encoding cannot fail.
        let plain =
            Zeroizing::new(postcard::to_allocvec(&record).expect("invariant: record encodes"));
        // Plain inserts, the TLP flag and the record first, head last (see
        // `repair_head`; sled recovers a prefix of them). The flag comes
        // before the record: `repair_head` cannot redo it.
        self.write_tlp_flag(index, record.message.tlp, max_tlp)?;
        self.tree.insert(
            Self::key(b'R', &[&index.to_be_bytes()]),
            self.sealer.seal(&plain, &aad(REC_AAD, index)),
        )?;
        // The tracker before the index and the head: a reader that finds
        // the record by its id (`lookup`) finds its case up to date, and
        // sled recovers a prefix of these writes, so after a crash
        // `repair_head` redoes whatever is missing.
        self.track(&record)?;
        self.write_index(&record)?;
        self.write_head(index + 1, &hash)?;
        head.next_index = index + 1;
        head.hash = hash;
        Ok((Inserted::New(index), want_record.then_some(record)))
    }

    /// Writes the index entries of a record (idempotent).
    pub(super) fn write_index(&self, r: &Record) -> Result<(), ArchiveError> {
        let ib = r.index.to_be_bytes();
        self.tree
            .insert(Self::key(b'm', &[&self.tok("msg", &r.msg_id.0)]), &ib[..])?;
        for k in self.index_keys(r) {
            self.tree.insert(k, &[][..])?;
        }
        Ok(())
    }

    pub(super) fn write_head(&self, next_index: u64, hash: &[u8; 32]) -> Result<(), ArchiveError> {
        let mut hv = Vec::with_capacity(HEAD_LEN);
        hv.extend_from_slice(&next_index.to_be_bytes());
        hv.extend_from_slice(hash);
        hv.extend_from_slice(&head_tag(&self.head_key, next_index, hash));
        self.tree.insert(HEAD_KEY, hv)?;
        Ok(())
    }

    /// Refuses writes to an archive whose head cannot be trusted.
    pub(super) fn writable(&self) -> Result<(), ArchiveError> {
        match &self.head_problem {
            Some(why) => Err(ArchiveError::HeadInvalid(why.clone())),
            None => Ok(()),
        }
    }

    /// Why the head cannot be trusted, if it cannot.
    pub fn head_problem(&self) -> Option<&str> {
        self.head_problem.as_deref()
    }

    /// Completes records a crash left half-written.
    ///
    /// A record is written as plain sled inserts (TLP flag, record, tracker
    /// entries, index entries, head), not as one `sled::Batch`: sled 0.34
    /// writes and syncs its I/O buffer for every batch, which cost more than
    /// the crypto per record. sled recovers a prefix of its writes, so after
    /// a crash the head may lag records that exist (with some of their
    /// tracker and index entries). This walks forward from the head while
    /// the next record exists and chains onto it, redoes its tracker and
    /// index entries and advances the head. A TLP flag past the last record
    /// (written before a record that never was) is removed.
    pub(super) fn repair_head(&self) -> Result<u64, ArchiveError> {
        let mut head = self.head.lock().map_err(|_| ArchiveError::Poisoned)?;
        let mut repaired = 0;
        // An unreadable record stops the walk too: `verify` names it.
        while let Ok(Some(r)) = self.record(head.next_index) {
            if r.prev_hash != head.hash {
                // Not a continuation of this chain: leave it to `verify`.
                break;
            }
            self.track(&r)?;
            self.write_index(&r)?;
            let hash = r.hash();
            self.write_head(r.index + 1, &hash)?;
            head.next_index = r.index + 1;
            head.hash = hash;
            repaired += 1;
        }
        let stale = Self::key(b'Y', &[&head.next_index.to_be_bytes()]);
        if self.record(head.next_index).ok().flatten().is_none()
            && self.tree.remove(stale)?.is_some()
        {
            repaired += 1;
        }
        if repaired > 0 {
            drop(head);
            self.flush()?;
        }
        Ok(repaired)
    }

    /// Stores a delivery that failed verification.
    ///
    /// # Errors
    /// [`ArchiveError`].
    pub fn quarantine(&self, q: &Quarantined) -> Result<u64, ArchiveError> {
        self.writable()?;
        let _guard = self.head.lock().map_err(|_| ArchiveError::Poisoned)?;
        let n = match self.tree.get(QNEXT_KEY)? {
            Some(v) => v.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(0),
            None => 0,
        };
        // invariant: plain data; postcard encoding cannot fail.
        let plain =
            Zeroizing::new(postcard::to_allocvec(q).expect("invariant: quarantine encodes"));
        let sealed = self.sealer.seal(&plain, &aad(QUAR_AAD, n));
        let mut totals = self.quarantine_totals()?;
        totals.entries += 1;
        totals.bytes += sealed.len() as u64;
        let mut batch = sled::Batch::default();
        // Oldest first, until within bounds again (the new entry stays even
        // if it alone exceeds the byte bound: it is the one to inspect).
        let (max_entries, max_bytes) = self.quarantine_limits;
        if totals.entries > max_entries || totals.bytes > max_bytes {
            for kv in self.tree.scan_prefix(b"Q") {
                if totals.entries <= max_entries && totals.bytes <= max_bytes {
                    break;
                }
                let (k, v) = kv?;
                batch.remove(k);
                totals.entries -= 1;
                totals.bytes = totals.bytes.saturating_sub(v.len() as u64);
                totals.evicted += 1;
            }
        }
        batch.insert(Self::key(b'Q', &[&n.to_be_bytes()]), sealed);
        batch.insert(QNEXT_KEY, &(n + 1).to_be_bytes());
        batch.insert(QTOTALS_KEY, &totals.encode());
        self.tree.apply_batch(batch)?;
        Ok(n)
    }

    /// Entries, bytes and evictions of the quarantine.
    ///
    /// # Errors
    /// [`ArchiveError::Db`].
    pub fn quarantine_totals(&self) -> Result<QuarantineTotals, ArchiveError> {
        Ok(self
            .tree
            .get(QTOTALS_KEY)?
            .map(|v| QuarantineTotals::decode(&v))
            .unwrap_or_default())
    }

    /// Changes the quarantine bounds (entries, bytes) from the defaults.
    pub fn set_quarantine_limits(&mut self, max_entries: u64, max_bytes: u64) {
        self.quarantine_limits = (max_entries.max(1), max_bytes);
    }

    /// Quarantined deliveries, oldest first.
    ///
    /// # Errors
    /// [`ArchiveError`].
    pub fn quarantined(&self) -> Result<Vec<Quarantined>, ArchiveError> {
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix(b"Q") {
            let (k, v) = kv?;
            let n = key_u64(&k).ok_or_else(|| ArchiveError::Unreadable("quarantine key".into()))?;
            let plain = self
                .sealer
                .open(&v, &aad(QUAR_AAD, n))
                .ok_or_else(|| ArchiveError::Unreadable(format!("quarantine {n}")))?;
            out.push(
                postcard::from_bytes(&plain)
                    .map_err(|_| ArchiveError::Unreadable(format!("quarantine {n}")))?,
            );
        }
        Ok(out)
    }

    /// Quarantined deliveries with their numbers, oldest first (for
    /// re-verification after the roster log advanced).
    ///
    /// # Errors
    /// [`ArchiveError`].
    pub fn quarantined_numbered(&self) -> Result<Vec<(u64, Quarantined)>, ArchiveError> {
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix(b"Q") {
            let (k, v) = kv?;
            let n = key_u64(&k).ok_or_else(|| ArchiveError::Unreadable("quarantine key".into()))?;
            let plain = self
                .sealer
                .open(&v, &aad(QUAR_AAD, n))
                .ok_or_else(|| ArchiveError::Unreadable(format!("quarantine {n}")))?;
            let q = postcard::from_bytes(&plain)
                .map_err(|_| ArchiveError::Unreadable(format!("quarantine {n}")))?;
            out.push((n, q));
        }
        Ok(out)
    }

    /// Replaces the reason of quarantine entry `n` (re-verification got
    /// further and failed for another reason).
    ///
    /// # Errors
    /// [`ArchiveError`].
    pub fn set_quarantine_reason(&self, n: u64, reason: &str) -> Result<(), ArchiveError> {
        self.writable()?;
        let _guard = self.head.lock().map_err(|_| ArchiveError::Poisoned)?;
        let key = Self::key(b'Q', &[&n.to_be_bytes()]);
        let Some(old) = self.tree.get(&key)? else {
            return Ok(());
        };
        let plain = self
            .sealer
            .open(&old, &aad(QUAR_AAD, n))
            .ok_or_else(|| ArchiveError::Unreadable(format!("quarantine {n}")))?;
        let mut q: Quarantined = postcard::from_bytes(&plain)
            .map_err(|_| ArchiveError::Unreadable(format!("quarantine {n}")))?;
        if q.reason == reason {
            return Ok(());
        }
        q.reason = reason.to_string();
        // invariant: plain data; postcard encoding cannot fail.
        let plain =
            Zeroizing::new(postcard::to_allocvec(&q).expect("invariant: quarantine encodes"));
        let sealed = self.sealer.seal(&plain, &aad(QUAR_AAD, n));
        let mut totals = self.quarantine_totals()?;
        totals.bytes = totals.bytes.saturating_sub(old.len() as u64) + sealed.len() as u64;
        let mut batch = sled::Batch::default();
        batch.insert(key, sealed);
        batch.insert(QTOTALS_KEY, &totals.encode());
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// Removes quarantine entry `n` (it was re-verified and archived).
    ///
    /// # Errors
    /// [`ArchiveError`].
    pub fn release_quarantined(&self, n: u64) -> Result<(), ArchiveError> {
        self.writable()?;
        let _guard = self.head.lock().map_err(|_| ArchiveError::Poisoned)?;
        let key = Self::key(b'Q', &[&n.to_be_bytes()]);
        let Some(old) = self.tree.get(&key)? else {
            return Ok(());
        };
        let mut totals = self.quarantine_totals()?;
        totals.entries = totals.entries.saturating_sub(1);
        totals.bytes = totals.bytes.saturating_sub(old.len() as u64);
        let mut batch = sled::Batch::default();
        batch.remove(key);
        batch.insert(QTOTALS_KEY, &totals.encode());
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// A key derived from the archive secret (the outbox's, for instance).
    pub fn storage_key(&self, label: &[u8]) -> zeroize::Zeroizing<[u8; 32]> {
        self.secret.derive(label)
    }

    /// Re-keying, step 1: wraps the archive secret under the `next` key
    /// file too (durably), before that key file replaces the current one.
    ///
    /// # Errors
    /// [`ArchiveError::Db`].
    pub fn prepare_rewrap(&self, next: &Identity) -> Result<(), ArchiveError> {
        self.secret.prepare_rewrap(&self.db, next)
    }

    /// Re-keying, last step (the new key file is in place): only it opens
    /// the archive from now on.
    ///
    /// # Errors
    /// [`ArchiveError::Db`].
    pub fn commit_rewrap(&self) -> Result<(), ArchiveError> {
        ArchiveSecret::commit_rewrap(&self.db)
    }

    /// Makes every write so far durable (fsync).
    ///
    /// # Errors
    /// [`ArchiveError::Db`].
    pub fn flush(&self) -> Result<(), ArchiveError> {
        self.db.flush()
    }
}

/// What one record is made of, before it has an index.
struct Entry<'a> {
    direction: Direction,
    /// The relay's sequence number.
    seq: u64,
    /// The time it was received (or accepted), ms.
    at: u64,
    opened: &'a Opened,
    /// The channel's TLP ceiling for it (a received message); `None`: no
    /// flag.
    max_tlp: Option<Tlp>,
}

impl<'a> Entry<'a> {
    fn new(
        direction: Direction,
        seq: u64,
        at: u64,
        opened: &'a Opened,
        max_tlp: Option<Tlp>,
    ) -> Self {
        Self {
            direction,
            seq,
            at,
            opened,
            max_tlp,
        }
    }
}
