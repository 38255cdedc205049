//! Reading the archive: by index, msg_id or prefix, filtered search over
//! the indexes and text, threads, and a walk over every record.

use super::*;

/// Records read per forward range in a newest-first full scan.
pub(super) const SCAN_CHUNK: u64 = 512;

impl Archive {
    /// Reads the record at `index`.
    ///
    /// # Errors
    /// [`ArchiveError::Unreadable`] if it does not decrypt or decode.
    pub fn record(&self, index: u64) -> Result<Option<Record>, ArchiveError> {
        match self.tree.get(Self::key(b'R', &[&index.to_be_bytes()]))? {
            Some(v) => self.decode_record(index, &v).map(Some),
            None => Ok(None),
        }
    }

    pub(super) fn decode_record(&self, index: u64, sealed: &[u8]) -> Result<Record, ArchiveError> {
        decode_sealed_record(&self.sealer, index, sealed)
    }

    /// A record by message id.
    ///
    /// # Errors
    /// [`ArchiveError`].
    pub fn get(&self, msg_id: &MsgId) -> Result<Option<Record>, ArchiveError> {
        match self.lookup(msg_id)? {
            Some(i) => self.record(i),
            None => Ok(None),
        }
    }

    /// A record by full id or a unique hex prefix (at least 4 digits).
    ///
    /// # Errors
    /// [`ArchiveError`].
    pub fn find(&self, id: &str) -> Result<Option<Record>, ArchiveError> {
        if let Ok(m) = MsgId::from_hex(id) {
            return self.get(&m);
        }
        let id = id.trim().to_ascii_lowercase();
        if id.len() < 4 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let mut found = None;
        for kv in self.tree.scan_prefix(b"R").rev() {
            let (k, v) = kv?;
            let index = key_u64(&k).unwrap_or(u64::MAX);
            let r = self.decode_record(index, &v)?;
            if r.msg_id.to_hex().starts_with(&id) {
                if found.is_some() {
                    return Ok(None);
                }
                found = Some(r);
            }
        }
        Ok(found)
    }

    /// Records whose msg_id starts with the lower-case hex `prefix`, newest
    /// first, at most `limit` (a scan of the archive: the index keys are
    /// keyed hashes that reveal no ids).
    ///
    /// # Errors
    /// [`ArchiveError`].
    pub fn find_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<Record>, ArchiveError> {
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix(b"R").rev() {
            let (k, v) = kv?;
            let index = key_u64(&k).unwrap_or(u64::MAX);
            let r = self.decode_record(index, &v)?;
            if r.msg_id.to_hex().starts_with(prefix) {
                out.push(r);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Number of records.
    pub fn len(&self) -> u64 {
        self.head.lock().map(|h| h.next_index).unwrap_or(0)
    }

    /// Whether the archive is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The head hash.
    pub fn head_hash(&self) -> [u8; 32] {
        self.head.lock().map(|h| h.hash).unwrap_or([0; 32])
    }

    /// Records matching `filter`, newest first, at most `limit`.
    ///
    /// # Errors
    /// [`ArchiveError`].
    pub fn search(&self, filter: &Filter, limit: usize) -> Result<Vec<Record>, ArchiveError> {
        let words: Vec<String> = filter
            .text
            .as_deref()
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_lowercase)
            .collect();
        let kind = match &filter.kind {
            Some(k) => Some(
                kind_from_name(k)
                    .ok_or_else(|| ArchiveError::Unreadable(format!("unknown kind {k:?}")))?,
            ),
            None => None,
        };
        let matches = |r: &Record| -> bool {
            filter.channel.as_ref().is_none_or(|c| &r.channel == c)
                && filter.from.as_ref().is_none_or(|f| &r.sender == f)
                && kind.is_none_or(|k| kind_code(&r.message.kind) == k)
                && filter.tlp.is_none_or(|t| r.message.tlp == t)
                && filter.since_ms.is_none_or(|s| r.received_at_ms >= s)
                && filter.until_ms.is_none_or(|u| r.received_at_ms < u)
                // Shared history counts as received (it was not sent here).
                && filter.direction.is_none_or(|d| {
                    r.direction == d
                        || (d == Direction::Received && r.direction == Direction::Shared)
                })
                && (!filter.unread_only || !self.is_read(r).unwrap_or(true))
                && (words.is_empty() || {
                    let mut hay =
                        format!("{}\n{}", r.message.subject, r.message.body).to_lowercase();
                    for a in &r.message.attachments {
                        hay.push('\n');
                        hay.push_str(&a.name.to_lowercase());
                    }
                    words.iter().all(|w| hay.contains(w.as_str()))
                })
        };
        let mut out = Vec::new();
        // Pick the narrowest index; every candidate is re-checked in full.
        let index_prefix = if let Some(c) = &filter.channel {
            Some(Self::key(b'c', &[&self.tok("channel", c.as_bytes())]))
        } else if let Some(f) = &filter.from {
            Some(Self::key(b's', &[&self.tok("sender", f.as_bytes())]))
        } else {
            kind.map(|k| Self::key(b'k', &[&[k]]))
        };
        match index_prefix {
            Some(prefix) => {
                for kv in self.tree.scan_prefix(&prefix).rev() {
                    if out.len() >= limit {
                        break;
                    }
                    let (k, _) = kv?;
                    // Index keys end in time:u64be index:u64be; a shorter
                    // (tampered) key is skipped, never a panic.
                    let Some(tail) = k.len().checked_sub(16).and_then(|s| k.get(s..)) else {
                        continue;
                    };
                    let (t, i) = tail.split_at(8);
                    let time = u64::from_be_bytes(t.try_into().unwrap_or([0; 8]));
                    if filter.until_ms.is_some_and(|u| time >= u) {
                        continue;
                    }
                    if filter.since_ms.is_some_and(|s| time < s) {
                        break;
                    }
                    let index = u64::from_be_bytes(i.try_into().unwrap_or([0; 8]));
                    if let Some(r) = self.record(index)? {
                        if matches(&r) {
                            out.push(r);
                        }
                    }
                }
            }
            None => {
                // Newest first, in chunks that are each read forwards: sled's
                // reverse iteration costs several times its forward one.
                let mut hi = self.len();
                // Each thread reads and decrypts its own half of a chunk
                // (sled serves concurrent readers); decrypting dominates.
                let scan = |from: u64, to: u64| -> Result<Vec<Record>, ArchiveError> {
                    let mut hits = Vec::new();
                    for kv in self.tree.range(
                        Self::key(b'R', &[&from.to_be_bytes()])
                            ..Self::key(b'R', &[&to.to_be_bytes()]),
                    ) {
                        let (k, v) = kv?;
                        let r = self.decode_record(key_u64(&k).unwrap_or(u64::MAX), &v)?;
                        if matches(&r) {
                            hits.push(r);
                        }
                    }
                    Ok(hits)
                };
                while hi > 0 && out.len() < limit {
                    let lo = hi.saturating_sub(SCAN_CHUNK);
                    let mid = lo + (hi - lo) / 2;
                    let (a, b) = std::thread::scope(|sc| {
                        let t = sc.spawn(|| scan(mid, hi));
                        let a = scan(lo, mid);
                        let b = t.join().unwrap_or_else(|_| {
                            Err(ArchiveError::Unreadable("search thread panicked".into()))
                        });
                        (a, b)
                    });
                    let (a, b) = (a?, b?);
                    out.extend(
                        b.into_iter()
                            .rev()
                            .chain(a.into_iter().rev())
                            .take(limit - out.len()),
                    );
                    hi = lo;
                }
            }
        }
        Ok(out)
    }

    /// Marks a message read (`show`); idempotent. Read marks are a
    /// person's state, outside the hash chain.
    ///
    /// # Errors
    /// [`ArchiveError::Db`].
    pub fn mark_read(&self, msg_id: &MsgId) -> Result<(), ArchiveError> {
        let k = Self::key(b'r', &[&self.tok("read", &msg_id.0)]);
        self.tree.insert(k, &[][..])?;
        Ok(())
    }

    /// Whether a record counts as read: sent by us, or marked read.
    ///
    /// # Errors
    /// [`ArchiveError::Db`].
    pub fn is_read(&self, r: &Record) -> Result<bool, ArchiveError> {
        if r.direction == Direction::Sent {
            return Ok(true);
        }
        let k = Self::key(b'r', &[&self.tok("read", &r.msg_id.0)]);
        Ok(self.tree.contains_key(k)?)
    }

    /// The thread containing `msg_id`: its root (following `reply_to` and
    /// kind references upwards as far as they are archived) and every
    /// archived descendant, in archive order.
    ///
    /// # Errors
    /// [`ArchiveError`].
    pub fn thread(&self, msg_id: &MsgId) -> Result<Vec<Record>, ArchiveError> {
        let mut root = *msg_id;
        let mut seen = std::collections::HashSet::new();
        while seen.insert(root) {
            match self.get(&root)? {
                Some(r) => match r.message.parent() {
                    Some(p) if self.lookup(&p)?.is_some() => root = p,
                    _ => break,
                },
                None => break,
            }
        }
        let mut out = std::collections::BTreeMap::new();
        let mut queue = vec![root];
        let mut visited = std::collections::HashSet::new();
        while let Some(id) = queue.pop() {
            if !visited.insert(id) {
                continue;
            }
            if let Some(r) = self.get(&id)? {
                out.insert(r.index, r);
            }
            let prefix = Self::key(b'p', &[&self.tok("msg", &id.0)]);
            for kv in self.tree.scan_prefix(&prefix) {
                let (k, _) = kv?;
                let Some(i) = k.get(k.len().saturating_sub(8)..) else {
                    continue;
                };
                let index = u64::from_be_bytes(i.try_into().unwrap_or([0; 8]));
                if let Some(r) = self.record(index)? {
                    queue.push(r.msg_id);
                } else if let Some(x) = self.redacted(index)? {
                    // Redacted: not returned, but its answers are.
                    queue.push(x.msg_id);
                }
            }
        }
        Ok(out.into_values().collect())
    }

    /// Every record in archive order, via a callback (export, stats).
    ///
    /// # Errors
    /// [`ArchiveError`] or the callback's error.
    pub fn for_each(
        &self,
        mut f: impl FnMut(Record) -> Result<(), ArchiveError>,
    ) -> Result<(), ArchiveError> {
        for kv in self.tree.scan_prefix(b"R") {
            let (k, v) = kv?;
            let index = key_u64(&k).ok_or_else(|| ArchiveError::Unreadable("record key".into()))?;
            f(self.decode_record(index, &v)?)?;
        }
        Ok(())
    }
}
