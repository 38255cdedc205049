//! Checking the archive: the hash chain, every signature against the
//! roster, the head, duplicates; statistics; raw access for tamper tests.

use super::*;
use tallinn_common::defaults;
use tallinn_common::envelope::Policy;

impl Archive {
    /// Re-checks the whole archive: contiguity, decryption under each
    /// record's own index, the hash chain, the head, every envelope signature
    /// and routing policy against `roster`, that the stored header matches the
    /// envelope, and (if `deep`) that the envelope still decrypts to the
    /// stored message. Stops at the first problem.
    ///
    /// # Errors
    /// [`ArchiveError::Db`] only; integrity problems are in the report.
    pub fn verify(
        &self,
        roster: &Roster,
        identity: &Identity,
        deep: bool,
        progress: impl FnMut(u64),
    ) -> Result<VerifyReport, ArchiveError> {
        self.verify_with(roster, identity, defaults::V1_DEVICE, deep, progress)
    }

    /// [`Archive::verify`] against any roster [`Policy`]: a version-2
    /// client passes its roster log, so every record verifies against the
    /// state of its own epoch (old records keep verifying across every
    /// change), and `device` names the wrap to open for the deep check.
    ///
    /// # Errors
    /// [`ArchiveError::Db`] only; integrity problems are in the report.
    pub fn verify_with<P: Policy + ?Sized>(
        &self,
        roster: &P,
        identity: &Identity,
        device: &str,
        deep: bool,
        mut progress: impl FnMut(u64),
    ) -> Result<VerifyReport, ArchiveError> {
        let (count, head_hash) = {
            let h = self.head.lock().map_err(|_| ArchiveError::Poisoned)?;
            (h.next_index, h.hash)
        };
        let mut running = [0u8; 32];
        let mut expected = 0u64;
        let fail = |index: u64, why: String| {
            Ok(VerifyReport {
                records: index,
                first_error: Some((index, why)),
                head_hash,
            })
        };
        if let Some(why) = &self.head_problem {
            return fail(0, format!("the archive head {why}"));
        }
        // msg_id -> first index, so a message archived twice (a deleted
        // dedupe key let a redelivery in) is named.
        let mut seen: std::collections::HashMap<[u8; 16], u64> = std::collections::HashMap::new();
        for kv in self.tree.scan_prefix(b"R") {
            let (k, v) = kv?;
            let Some(index) = key_u64(&k) else {
                return fail(expected, "malformed record key".into());
            };
            // Redacted records between: their stubs keep the chain.
            while expected < index {
                match self.redacted(expected) {
                    Ok(Some(x)) if x.prev_hash == running => {
                        running = x.record_hash;
                        expected += 1;
                    }
                    Ok(Some(_)) => {
                        return fail(
                            expected,
                            format!(
                                "redacted record {expected} does not chain to record {}",
                                expected.wrapping_sub(1)
                            ),
                        )
                    }
                    _ => {
                        return fail(
                            expected,
                            format!(
                                "record {expected} is missing (deleted); next present is {index}"
                            ),
                        )
                    }
                }
            }
            let r = match self.decode_record(index, &v) {
                Ok(r) => r,
                Err(_) => {
                    return fail(
                        index,
                        format!("record {index} does not decrypt under its position: edited, swapped or moved"),
                    )
                }
            };
            if r.prev_hash != running {
                return fail(
                    index,
                    format!(
                        "record {index} does not chain to record {}: reordered or replaced",
                        index.wrapping_sub(1)
                    ),
                );
            }
            let verified =
                match UntrustedEnvelope::decode(&r.envelope).and_then(|u| u.verify(roster)) {
                    Ok(v) => v,
                    Err(e) => {
                        return fail(
                            index,
                            format!(
                                "record {index} ({}): envelope does not verify: {e}",
                                r.msg_id
                            ),
                        )
                    }
                };
            if let Some(first) = seen.insert(r.msg_id.0, index) {
                return fail(
                    index,
                    format!(
                        "record {index}: duplicate msg_id {} (first archived as record {first}): a dedupe key was deleted and a redelivery archived again",
                        r.msg_id
                    ),
                );
            }
            let h = verified.header();
            if h.msg_id != r.msg_id
                || h.sender != r.sender
                || h.channel != r.channel
                || h.sent_at_ms != r.sent_at_ms
            {
                return fail(
                    index,
                    format!("record {index}: stored header differs from the envelope"),
                );
            }
            if deep {
                let opened = match &r.content_key {
                    Some(k) => verified.open_with_content_key(k),
                    None => verified.open_as(identity, Some(device)),
                };
                match opened {
                    Ok(o) if o.message() == &r.message => {}
                    Ok(_) => {
                        return fail(
                            index,
                            format!("record {index}: stored message differs from the envelope"),
                        )
                    }
                    Err(e) => {
                        return fail(
                            index,
                            format!("record {index}: envelope does not open: {e}"),
                        )
                    }
                }
            }
            running = r.hash();
            expected += 1;
            progress(expected);
        }
        while expected < count {
            match self.redacted(expected) {
                Ok(Some(x)) if x.prev_hash == running => {
                    running = x.record_hash;
                    expected += 1;
                }
                _ => break,
            }
        }
        if expected != count || running != head_hash {
            return fail(
                expected,
                format!("archive head says {count} records ending in {}, found {expected}: records were deleted at the end", &hex::encode(head_hash)[..16]),
            );
        }
        Ok(VerifyReport {
            records: expected,
            first_error: None,
            head_hash,
        })
    }

    /// Counts for `archive stats`.
    ///
    /// # Errors
    /// [`ArchiveError`].
    pub fn stats(&self) -> Result<Stats, ArchiveError> {
        let mut s = Stats::default();
        self.for_each(|r| {
            s.records += 1;
            match r.direction {
                Direction::Received => s.received += 1,
                Direction::Sent => s.sent += 1,
                Direction::Shared => s.shared += 1,
            }
            *s.by_channel.entry(r.channel.clone()).or_default() += 1;
            *s.by_kind
                .entry(r.message.kind.name().to_string())
                .or_default() += 1;
            Ok(())
        })?;
        s.quarantined = self.tree.scan_prefix(b"Q").count() as u64;
        // Flags of records in the chain (a crash can leave one past it).
        let len = self.len();
        s.tlp_violations = self
            .tree
            .scan_prefix(b"Y")
            .keys()
            .filter(|k| {
                k.as_ref().is_ok_and(|k| {
                    <[u8; 8]>::try_from(&k[1..]).is_ok_and(|b| u64::from_be_bytes(b) < len)
                })
            })
            .count() as u64;
        s.quarantine_evicted = self.quarantine_totals()?.evicted;
        s.disk_bytes = self.db.size_on_disk()?;
        s.head_hash = hex::encode(self.head_hash());
        Ok(s)
    }

    /// Raw access for tamper tests and forensic tools: the sealed bytes at `index`.
    ///
    /// # Errors
    /// [`ArchiveError::Db`].
    pub fn raw_record(&self, index: u64) -> Result<Option<Vec<u8>>, ArchiveError> {
        Ok(self
            .tree
            .get(Self::key(b'R', &[&index.to_be_bytes()]))?
            .map(|v| v.to_vec()))
    }

    /// Raw write, for tamper tests only: replaces (or with `None`, deletes)
    /// the sealed bytes at `index` without touching the chain.
    ///
    /// # Errors
    /// [`ArchiveError::Db`].
    #[doc(hidden)]
    pub fn tamper_raw_record(&self, index: u64, value: Option<&[u8]>) -> Result<(), ArchiveError> {
        let k = Self::key(b'R', &[&index.to_be_bytes()]);
        match value {
            Some(v) => self.tree.insert(k, v)?,
            None => self.tree.remove(k)?,
        };
        self.db.flush()?;
        Ok(())
    }
}
