//! The request tracker's index: every request in the archive is a case
//! whose facts (`tallinn_common::tracker::CaseFacts`) are kept and indexed
//! as records arrive, so listing cases never reads the records.
//!
//! | key | value |
//! |---|---|
//! | `b'C' case:u64be` | sealed `postcard(CaseFacts)`, aad `"tallinn/2 archive case" ‖ case`; `case` is the request's record index |
//! | `b'O' tok(msg_id)` | `case:u64be`: the case a request or an offer belongs to |
//! | `b'T' tok(flag, state, loe, priority) updated:u64be case:u64be` | empty: the listing buckets |
//! | `b't'` | `[1]`: the index is complete (built for every record) |
//!
//! `flag` is 0 for every case, 1 for cases this participant requested or
//! pledged to, 2 for cases waiting on this participant, 3 for cases nobody
//! has offered for; `updated` is the
//! latest receive time of anything in the case. A listing reads, for each
//! bucket its filters select, the newest `limit` keys backwards, and merges
//! them by priority and recency: with the default limit that is a few
//! hundred keys and as many small decryptions, whatever the archive's size.
//!
//! Offers and statuses that arrive before the message they refer to (a
//! late joiner's shared history) are
//! found through the thread index (`b'p'`) when it arrives. An archive
//! written before the tracker existed has no `b't'` marker: the first
//! listing builds the index from the records once.

use tallinn_common::message::{Loe, Priority};
use tallinn_common::tracker::{CaseEvent, CaseFacts, CaseState, CaseView, EventKind};

use super::*;

const CASE_AAD: &[u8] = b"tallinn/2 archive case";
pub(super) const BUILT_KEY: &[u8] = b"t";

/// Whose cases a listing shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CaseScope {
    /// Every case.
    #[default]
    All,
    /// Cases this participant requested or pledged to.
    Mine,
    /// Cases waiting on this participant.
    WaitingOnMe,
}

impl CaseScope {
    fn flag(self) -> u8 {
        match self {
            CaseScope::All => 0,
            CaseScope::Mine => 1,
            CaseScope::WaitingOnMe => 2,
        }
    }
}

/// The bucket flag of cases nobody has offered for (kept apart so that
/// `--unanswered` reads only those).
const UNANSWERED_FLAG: u8 = 3;

/// What `tallinn requests` asks for.
#[derive(Debug, Clone)]
pub struct CaseQuery {
    /// States to list (empty: the active ones, open, pledged, in progress).
    pub states: Vec<CaseState>,
    /// Only this line of effort.
    pub loe: Option<Loe>,
    /// Only this priority.
    pub priority: Option<Priority>,
    /// Whose cases.
    pub scope: CaseScope,
    /// Only needs nobody has offered for.
    pub unanswered: bool,
    /// At most this many, highest priority and most recent first.
    pub limit: usize,
}

/// A case with its derived view.
#[derive(Debug, Clone)]
pub struct Case {
    /// The request's record index.
    pub index: u64,
    /// What the archive knows.
    pub facts: CaseFacts,
    /// What follows from it.
    pub view: CaseView,
}

/// The code of a line of effort in bucket keys.
pub fn loe_code(l: Loe) -> u8 {
    match l {
        Loe::Immediate => 0,
        Loe::Capability => 1,
        Loe::Sustainability => 2,
    }
}

/// The code of a priority in bucket keys.
pub fn priority_code(p: Priority) -> u8 {
    match p {
        Priority::Low => 0,
        Priority::Normal => 1,
        Priority::High => 2,
        Priority::Critical => 3,
    }
}

const LOES: [Loe; 3] = [Loe::Immediate, Loe::Capability, Loe::Sustainability];
const PRIORITIES: [Priority; 4] = [
    Priority::Critical,
    Priority::High,
    Priority::Normal,
    Priority::Low,
];

fn event_of(r: &Record) -> Option<CaseEvent> {
    let kind = match &r.message.kind {
        Kind::Offer { .. } => EventKind::Offer,
        Kind::Status { about, state } => EventKind::Status {
            about: *about,
            state: *state,
        },
        _ => return None,
    };
    Some(CaseEvent {
        msg_id: r.msg_id,
        sender: r.sender.clone(),
        sent_at_ms: r.sent_at_ms,
        received_at_ms: r.received_at_ms,
        kind,
        subject: r.message.subject.clone(),
    })
}

fn facts_of(r: &Record) -> Option<CaseFacts> {
    let Kind::Request {
        loe,
        category,
        priority,
    } = &r.message.kind
    else {
        return None;
    };
    Some(CaseFacts {
        request: r.msg_id,
        requester: r.sender.clone(),
        channel: r.channel.clone(),
        loe: *loe,
        priority: *priority,
        category: category.clone(),
        subject: r.message.subject.clone(),
        tlp: r.message.tlp,
        sent_at_ms: r.sent_at_ms,
        received_at_ms: r.received_at_ms,
        events: Vec::new(),
    })
}

impl Archive {
    /// Whether the tracker index covers every record.
    pub(super) fn tracker_built(&self) -> Result<bool, ArchiveError> {
        Ok(self.tree.get(BUILT_KEY)?.is_some())
    }

    /// Marks a new (empty) archive's tracker index complete.
    pub(super) fn mark_tracker_built(&self) -> Result<(), ArchiveError> {
        self.tree.insert(BUILT_KEY, &[1u8][..])?;
        Ok(())
    }

    fn case_key(&self, msg_id: &MsgId) -> Vec<u8> {
        Self::key(b'O', &[&self.tok("case", &msg_id.0)])
    }

    /// The case a request or offer belongs to.
    fn case_of(&self, msg_id: &MsgId) -> Result<Option<u64>, ArchiveError> {
        Ok(self
            .tree
            .get(self.case_key(msg_id))?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes))
    }

    fn load_case(&self, case: u64) -> Result<Option<CaseFacts>, ArchiveError> {
        let Some(v) = self.tree.get(Self::key(b'C', &[&case.to_be_bytes()]))? else {
            return Ok(None);
        };
        let unreadable = || ArchiveError::Unreadable(format!("tracker case {case}"));
        let plain = self
            .sealer
            .open(&v, &aad(CASE_AAD, case))
            .ok_or_else(unreadable)?;
        postcard::from_bytes(&plain)
            .map(Some)
            .map_err(|_| unreadable())
    }

    fn bucket_keys(&self, case: u64, facts: &CaseFacts, view: &CaseView) -> Vec<Vec<u8>> {
        let mut flags = vec![CaseScope::All.flag()];
        if view.involves(facts, &self.me) {
            flags.push(CaseScope::Mine.flag());
        }
        if view.waiting_on.contains(&self.me) {
            flags.push(CaseScope::WaitingOnMe.flag());
        }
        if view.unanswered() {
            flags.push(UNANSWERED_FLAG);
        }
        flags
            .into_iter()
            .map(|f| {
                Self::key(
                    b'T',
                    &[
                        &self.bucket(f, view.state, facts.loe, facts.priority),
                        &view.updated_at_ms.to_be_bytes(),
                        &case.to_be_bytes(),
                    ],
                )
            })
            .collect()
    }

    fn bucket(&self, flag: u8, state: CaseState, loe: Loe, priority: Priority) -> [u8; 16] {
        self.tok(
            "case",
            &[flag, state.code(), loe_code(loe), priority_code(priority)],
        )
    }

    /// Writes a case's facts and moves its bucket keys. Plain inserts, not
    /// a `sled::Batch` (sled 0.34 writes out its buffer for every batch,
    /// see `ingest`), in an order that a crash cannot leave inconsistent:
    /// stale bucket keys go, new ones come, the facts last; the record's
    /// head is written after all of it, and `repair_head` tracks a record
    /// again (idempotently) if the crash came first.
    fn store_case(
        &self,
        case: u64,
        old: Option<&CaseFacts>,
        new: &CaseFacts,
    ) -> Result<(), ArchiveError> {
        let new_view = new.view();
        let new_keys = self.bucket_keys(case, new, &new_view);
        if let Some(o) = old {
            for k in self.bucket_keys(case, o, &o.view()) {
                if !new_keys.contains(&k) {
                    self.tree.remove(k)?;
                }
            }
        }
        for k in new_keys {
            self.tree.insert(k, &[][..])?;
        }
        // invariant: plain data; postcard encoding cannot fail.
        let plain = Zeroizing::new(postcard::to_allocvec(new).expect("invariant: case encodes"));
        self.tree.insert(
            Self::key(b'C', &[&case.to_be_bytes()]),
            self.sealer.seal(&plain, &aad(CASE_AAD, case)),
        )?;
        Ok(())
    }

    fn drop_case(&self, case: u64) -> Result<(), ArchiveError> {
        let Some(old) = self.load_case(case)? else {
            return Ok(());
        };
        let mut batch = sled::Batch::default();
        for k in self.bucket_keys(case, &old, &old.view()) {
            batch.remove(k);
        }
        batch.remove(self.case_key(&old.request));
        for o in old.offer_ids() {
            batch.remove(self.case_key(&o));
        }
        batch.remove(Self::key(b'C', &[&case.to_be_bytes()]));
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// The readable records that refer to `msg_id` (reply or kind reference).
    fn referring(&self, msg_id: &MsgId) -> Result<Vec<Record>, ArchiveError> {
        let mut out = Vec::new();
        for kv in self
            .tree
            .scan_prefix(Self::key(b'p', &[&self.tok("msg", &msg_id.0)]))
        {
            let (k, _) = kv?;
            let Some(index) = key_tail_u64(&k) else {
                continue;
            };
            // A redacted record (no `R`) contributes nothing.
            if let Some(r) = self.record(index)? {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Statuses about `offer` already archived, into `facts`.
    fn gather_offer_statuses(
        &self,
        facts: &mut CaseFacts,
        offer: &MsgId,
    ) -> Result<(), ArchiveError> {
        for child in self.referring(offer)? {
            if matches!(&child.message.kind, Kind::Status { about, .. } if about == offer) {
                if let Some(e) = event_of(&child) {
                    facts.add(e);
                }
            }
        }
        Ok(())
    }

    /// (Re)builds the case of a request from every record referring to it.
    fn rebuild_case(&self, request: &Record) -> Result<(), ArchiveError> {
        let Some(mut facts) = facts_of(request) else {
            return Ok(());
        };
        let case = request.index;
        let ib = case.to_be_bytes();
        self.tree.insert(self.case_key(&request.msg_id), &ib[..])?;
        for child in self.referring(&request.msg_id)? {
            match &child.message.kind {
                Kind::Offer { request: r } if *r == request.msg_id => {
                    if let Some(e) = event_of(&child) {
                        facts.add(e);
                    }
                }
                Kind::Status { about, .. } if *about == request.msg_id => {
                    if let Some(e) = event_of(&child) {
                        facts.add(e);
                    }
                }
                _ => {}
            }
        }
        let offers: Vec<MsgId> = facts.offer_ids().collect();
        for o in &offers {
            self.tree.insert(self.case_key(o), &ib[..])?;
            self.gather_offer_statuses(&mut facts, o)?;
        }
        let old = self.load_case(case)?;
        self.store_case(case, old.as_ref(), &facts)
    }

    /// Updates the tracker for a record just archived (idempotent).
    pub(super) fn track(&self, r: &Record) -> Result<(), ArchiveError> {
        if !self.tracker_built()? {
            return Ok(());
        }
        match &r.message.kind {
            Kind::Request { .. } => self.rebuild_case(r),
            Kind::Offer { request } => {
                let Some(case) = self.case_of(request)? else {
                    return Ok(()); // the request comes later (or never)
                };
                let Some(old) = self.load_case(case)? else {
                    return Ok(());
                };
                if old.request != *request {
                    // It names an offer, not the request: no part of the case.
                    return Ok(());
                }
                let mut facts = old.clone();
                if let Some(e) = event_of(r) {
                    facts.add(e);
                }
                if r.sender != facts.requester {
                    self.tree
                        .insert(self.case_key(&r.msg_id), &case.to_be_bytes()[..])?;
                    self.gather_offer_statuses(&mut facts, &r.msg_id)?;
                }
                self.store_case(case, Some(&old), &facts)
            }
            Kind::Status { about, .. } => {
                let Some(case) = self.case_of(about)? else {
                    return Ok(());
                };
                let Some(old) = self.load_case(case)? else {
                    return Ok(());
                };
                let mut facts = old.clone();
                if let Some(e) = event_of(r) {
                    if facts.add(e) {
                        self.store_case(case, Some(&old), &facts)?;
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Takes a redacted record out of the tracker: its case goes (a
    /// request) or is rebuilt without it (an offer or status).
    ///
    /// The caller removed the "built" marker in the same batch that
    /// redacted the record and sets it again after this: a crash in between
    /// leaves it off, and the next listing rebuilds from the records.
    pub(super) fn untrack_case(&self, r: &Record) -> Result<(), ArchiveError> {
        let case = match &r.message.kind {
            Kind::Request { .. } => return self.drop_case(r.index),
            Kind::Offer { request } => self.case_of(request)?,
            Kind::Status { about, .. } => self.case_of(about)?,
            _ => None,
        };
        let Some(case) = case else {
            return Ok(());
        };
        self.tree.remove(self.case_key(&r.msg_id))?;
        match self.record(case)? {
            Some(request) => {
                // Rebuild from scratch: bucket keys of the old facts go first.
                self.drop_case(case)?;
                self.rebuild_case(&request)
            }
            None => self.drop_case(case),
        }
    }

    /// Builds the tracker index from every request in the archive (an
    /// archive written before the tracker existed); returns the cases.
    ///
    /// # Errors
    /// [`ArchiveError`].
    pub fn rebuild_tracker(&self) -> Result<u64, ArchiveError> {
        self.writable()?;
        let _guard = self.head.lock().map_err(|_| ArchiveError::Poisoned)?;
        let mut batch = sled::Batch::default();
        for prefix in [b"C", b"O", b"T"] {
            for kv in self.tree.scan_prefix(prefix) {
                batch.remove(kv?.0);
            }
        }
        batch.remove(BUILT_KEY);
        self.tree.apply_batch(batch)?;
        let mut requests = Vec::new();
        for kv in self.tree.scan_prefix([b'k', 1u8]) {
            if let Some(i) = key_tail_u64(&kv?.0) {
                requests.push(i);
            }
        }
        let mut n = 0;
        for i in requests {
            if let Some(r) = self.record(i)? {
                self.rebuild_case(&r)?;
                n += 1;
            }
        }
        self.mark_tracker_built()?;
        self.flush()?;
        Ok(n)
    }

    /// Makes sure the tracker index is complete (builds it once for an
    /// archive written before it existed).
    ///
    /// # Errors
    /// [`ArchiveError`]; [`ArchiveError::HeadInvalid`] if it must be built
    /// and the archive is read-only.
    pub fn ensure_tracker(&self) -> Result<(), ArchiveError> {
        if !self.tracker_built()? {
            let n = self.rebuild_tracker()?;
            tracing::info!(cases = n, "built the request tracker index");
        }
        Ok(())
    }

    /// Cases matching `q`, highest priority first, then the most recently
    /// updated.
    ///
    /// # Errors
    /// [`ArchiveError`].
    pub fn cases(&self, q: &CaseQuery) -> Result<Vec<Case>, ArchiveError> {
        self.ensure_tracker()?;
        let states: Vec<CaseState> = if q.states.is_empty() {
            CaseState::ACTIVE.to_vec()
        } else {
            q.states.clone()
        };
        let loes: Vec<Loe> = q.loe.map_or_else(|| LOES.to_vec(), |l| vec![l]);
        let prios: Vec<Priority> = q.priority.map_or_else(|| PRIORITIES.to_vec(), |p| vec![p]);
        // Unanswered cases have buckets of their own (a narrower scope is
        // then checked on each).
        let flag = if q.unanswered {
            UNANSWERED_FLAG
        } else {
            q.scope.flag()
        };
        // Without a filter that needs the facts, the keys alone decide:
        // the newest `limit` of each bucket, merged by priority then
        // recency, and only those cases are read.
        let filtered = q.unanswered && q.scope != CaseScope::All;
        let mut keys: Vec<(u8, u64, u64)> = Vec::new();
        let mut found: Vec<Case> = Vec::new();
        for state in &states {
            for loe in &loes {
                for prio in &prios {
                    let prefix = Self::key(b'T', &[&self.bucket(flag, *state, *loe, *prio)]);
                    let mut taken = 0;
                    for kv in self.tree.scan_prefix(&prefix).rev() {
                        if taken >= q.limit {
                            break;
                        }
                        let (k, _) = kv?;
                        let (Some(case), Some(updated)) = (key_tail_u64(&k), key_updated(&k))
                        else {
                            continue;
                        };
                        if !filtered {
                            keys.push((priority_code(*prio), updated, case));
                            taken += 1;
                            continue;
                        }
                        let Some(facts) = self.load_case(case)? else {
                            continue;
                        };
                        let view = facts.view();
                        let in_scope = match q.scope {
                            CaseScope::All => true,
                            CaseScope::Mine => view.involves(&facts, &self.me),
                            CaseScope::WaitingOnMe => view.waiting_on.contains(&self.me),
                        };
                        if in_scope && view.unanswered() {
                            keys.push((priority_code(*prio), updated, case));
                            taken += 1;
                        }
                    }
                }
            }
        }
        keys.sort_by(|a, b| b.cmp(a));
        keys.truncate(q.limit);
        for (_, _, case) in keys {
            if let Some(facts) = self.load_case(case)? {
                found.push(Case {
                    index: case,
                    view: facts.view(),
                    facts,
                });
            }
        }
        Ok(found)
    }

    /// The case a request, offer or status belongs to.
    ///
    /// # Errors
    /// [`ArchiveError`].
    pub fn case_for(&self, r: &Record) -> Result<Option<Case>, ArchiveError> {
        self.ensure_tracker()?;
        let case = match &r.message.kind {
            Kind::Request { .. } => Some(r.index),
            Kind::Offer { request } => self.case_of(request)?,
            Kind::Status { about, .. } => self.case_of(about)?,
            _ => None,
        };
        let Some(case) = case else {
            return Ok(None);
        };
        Ok(self.load_case(case)?.map(|facts| Case {
            index: case,
            view: facts.view(),
            facts,
        }))
    }
}

/// The `updated` time of a bucket key (`T tok updated case`).
fn key_updated(k: &[u8]) -> Option<u64> {
    k.get(17..25)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
}

/// The u64 at the end of a key (`... case:u64be`).
fn key_tail_u64(k: &[u8]) -> Option<u64> {
    k.len()
        .checked_sub(8)
        .and_then(|at| <[u8; 8]>::try_from(&k[at..]).ok())
        .map(u64::from_be_bytes)
}
