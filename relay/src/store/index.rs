//! The in-memory index of the log: which seqs each participant's inbox
//! holds, how many bytes each sender has stored, and the totals. Built by
//! one scan when the store opens and kept up to date by every append and
//! GC pass, so that starting a session (`pending`), reading a backlog
//! (`inbox_after`) and a metrics scrape (`stats`) never scan the log, and
//! the storage quota is a map lookup.
//!
//! Memory: 8 bytes per (message, recipient) still stored, e.g. 11 MiB for
//! 100 000 messages to 14 recipients.

use std::collections::{HashMap, HashSet, VecDeque};

/// One stored message as the index sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Indexed {
    pub seq: u64,
    pub sender: String,
    pub recipients: Vec<String>,
    /// Bytes of the stored log entry.
    pub bytes: u64,
}

#[derive(Debug, Default)]
pub(super) struct InboxIndex {
    /// Each participant's inbox seqs, ascending.
    inbox: HashMap<String, VecDeque<u64>>,
    /// Bytes of stored entries by sender (the storage quota's measure).
    sent_bytes: HashMap<String, u64>,
    messages: u64,
    bytes: u64,
}

impl InboxIndex {
    /// Adds a stored message (appends come in seq order; replay may not).
    /// Adding one already indexed changes nothing.
    pub(super) fn add(&mut self, m: &Indexed) {
        let known = m.recipients.first().is_some_and(|r| {
            self.inbox
                .get(r)
                .is_some_and(|q| q.binary_search(&m.seq).is_ok())
        });
        if known {
            return;
        }
        for r in &m.recipients {
            let q = self.inbox.entry(r.clone()).or_default();
            match q.back() {
                Some(&last) if last >= m.seq => {
                    let at = q.partition_point(|&s| s < m.seq);
                    if q.get(at) != Some(&m.seq) {
                        q.insert(at, m.seq);
                    }
                }
                _ => q.push_back(m.seq),
            }
        }
        *self.sent_bytes.entry(m.sender.clone()).or_default() += m.bytes;
        self.messages += 1;
        self.bytes += m.bytes;
    }

    /// Removes messages a GC pass deleted.
    pub(super) fn remove(&mut self, removed: &[Indexed]) {
        let mut by_recipient: HashMap<&str, HashSet<u64>> = HashMap::new();
        for m in removed {
            for r in &m.recipients {
                by_recipient.entry(r.as_str()).or_default().insert(m.seq);
            }
            if let Some(b) = self.sent_bytes.get_mut(&m.sender) {
                *b = b.saturating_sub(m.bytes);
                if *b == 0 {
                    self.sent_bytes.remove(&m.sender);
                }
            }
            self.messages = self.messages.saturating_sub(1);
            self.bytes = self.bytes.saturating_sub(m.bytes);
        }
        for (r, seqs) in by_recipient {
            if let Some(q) = self.inbox.get_mut(r) {
                q.retain(|s| !seqs.contains(s));
                if q.is_empty() {
                    self.inbox.remove(r);
                }
            }
        }
    }

    /// Inbox entries above `after` under any of `keys` (a device reads its
    /// participant's key and its own device key; a message is under one of
    /// them, never both).
    pub(super) fn pending(&self, keys: &[&str], after: u64) -> u64 {
        keys.iter()
            .map(|k| {
                self.inbox.get(*k).map_or(0, |q| {
                    let at = q.partition_point(|&s| s <= after);
                    (q.len() - at) as u64
                })
            })
            .sum()
    }

    /// Up to `limit` inbox seqs above `after` under any of `keys`,
    /// ascending (the sorted lists merged).
    pub(super) fn after(&self, keys: &[&str], after: u64, limit: usize) -> Vec<u64> {
        let mut out: Vec<u64> = Vec::new();
        for k in keys {
            if let Some(q) = self.inbox.get(*k) {
                let at = q.partition_point(|&s| s <= after);
                out.extend(q.range(at..).take(limit));
            }
        }
        out.sort_unstable();
        out.dedup();
        out.truncate(limit);
        out
    }

    /// Bytes stored that `sender` sent.
    pub(super) fn stored_by(&self, sender: &str) -> u64 {
        self.sent_bytes.get(sender).copied().unwrap_or(0)
    }

    /// Messages and bytes stored.
    pub(super) fn totals(&self) -> (u64, u64) {
        (self.messages, self.bytes)
    }

    /// Participants with an inbox.
    pub(super) fn participants(&self) -> impl Iterator<Item = &str> {
        self.inbox.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(seq: u64, sender: &str, to: &[&str], bytes: u64) -> Indexed {
        Indexed {
            seq,
            sender: sender.into(),
            recipients: to.iter().map(|s| s.to_string()).collect(),
            bytes,
        }
    }

    #[test]
    fn counts_reads_and_removals_agree() {
        let mut i = InboxIndex::default();
        i.add(&m(1, "UA", &["EE", "PL"], 100));
        i.add(&m(3, "UA", &["EE"], 50));
        i.add(&m(2, "PL", &["EE", "UA"], 10)); // out of order (replay)
        i.add(&m(2, "PL", &["EE", "UA"], 10)); // indexed twice: counted once
        assert_eq!(i.totals(), (3, 160));
        assert_eq!(i.after(&["EE"], 0, 10), vec![1, 2, 3]);
        assert_eq!(i.after(&["EE"], 1, 1), vec![2]);
        assert_eq!(i.pending(&["EE"], 1), 2);
        assert_eq!(i.pending(&["PL"], 1), 0);
        assert_eq!(i.pending(&["US"], 0), 0);
        assert_eq!(i.stored_by("UA"), 150);
        i.remove(&[m(1, "UA", &["EE", "PL"], 100)]);
        assert_eq!(i.after(&["EE"], 0, 10), vec![2, 3]);
        assert_eq!(i.pending(&["PL"], 0), 0);
        assert_eq!(i.stored_by("UA"), 50);
        assert_eq!(i.totals(), (2, 60));
    }

    #[test]
    fn a_device_reads_its_participants_and_its_own_entries_merged() {
        let mut i = InboxIndex::default();
        i.add(&m(1, "UA", &["EE"], 1)); // version 1: every device of EE
        i.add(&m(2, "UA", &["EE/front", "EE/back"], 1));
        i.add(&m(3, "UA", &["EE/back"], 1)); // only the back office
        i.add(&m(4, "UA", &["EE"], 1));
        let front = ["EE", "EE/front"];
        let back = ["EE", "EE/back"];
        assert_eq!(i.after(&front, 0, 10), vec![1, 2, 4]);
        assert_eq!(i.after(&back, 0, 10), vec![1, 2, 3, 4]);
        assert_eq!(i.after(&back, 1, 2), vec![2, 3]);
        assert_eq!(i.pending(&front, 1), 2);
        assert_eq!(i.pending(&back, 0), 4);
        assert_eq!(i.totals(), (4, 4));
    }
}
