//! The request tracker's rules: how requests, offers and status updates form
//! a case and which state the case is in. Pure: the client's archive keeps
//! each case's [`CaseFacts`] (what was said, by whom, when) and indexes the
//! [`CaseView`] derived from them; any party holding the same messages
//! derives the same view. `PROTOCOL.md` §18.1 states the rules.
//!
//! # The rules
//! A case is a `Request` and every `Offer` answering it, with every `Status`
//! about the request or one of those offers. Its events are taken in the
//! senders' signed order (`sent_at_ms`, then `msg_id`), so the view does not
//! depend on the order in which an archive received them (a late joiner's
//! shared history included).
//!
//! - An **offer** by anyone but the requester pledges help; an offer by the
//!   requester itself is ignored.
//! - The **requester** (any device of the requesting participant) steers the
//!   case: a status about the request sets it (`InProgress`, `Fulfilled`,
//!   `Declined`, `Closed`; `Acknowledged` is recorded only); about an offer,
//!   `Acknowledged` accepts the offer and `Declined` declines it, the other
//!   states apply to the case.
//! - An **offerer** reports on its own offer: `InProgress`, `Fulfilled`, or
//!   `Declined`/`Closed` to withdraw it; a status it sends about the request
//!   itself is a report on each of its offers.
//! - A status by **anyone else** (a member commenting on another's request,
//!   the chair included) is kept in the history but changes nothing: only
//!   the parties to a pledge speak for it.
//! - `Closed` by the requester is final: later events are recorded, ignored.
//!
//! The state is then, first match wins: **closed** (the requester's latest
//! word is `Closed`), **declined** (its latest word is `Declined`),
//! **fulfilled** (its latest word is `Fulfilled`, or a live offer is
//! fulfilled), **in progress** (its latest word is `InProgress`, or a live
//! offer is), **pledged** (a live offer exists), else **open**. An offer is
//! live unless the requester declined it or the offerer withdrew it.
//!
//! A case **waits on** the requester while a live offer is neither accepted
//! nor declined, or once it is fulfilled (to close it); it waits on an
//! offerer whose accepted offer is live and not yet fulfilled, while the case
//! is open, pledged or in progress.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::message::{Loe, MsgId, Priority, State, Tlp};

/// The most offers and statuses one case keeps. Each event rewrites the
/// case (and is checked against every event before it), so a participant
/// flooding statuses about one request would otherwise make every archive
/// spend quadratic time on it; the messages themselves are archived all
/// the same (`tallinn thread` shows them).
pub const MAX_CASE_EVENTS: usize = 500;

/// The state of a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum CaseState {
    /// Nobody has pledged (or every pledge was declined or withdrawn).
    Open,
    /// At least one live offer.
    Pledged,
    /// Work under way.
    InProgress,
    /// Delivered.
    Fulfilled,
    /// The requester declined (withdrew) the request.
    Declined,
    /// The requester closed the case. Final.
    Closed,
}

impl CaseState {
    /// Every state, in order.
    pub const ALL: [CaseState; 6] = [
        CaseState::Open,
        CaseState::Pledged,
        CaseState::InProgress,
        CaseState::Fulfilled,
        CaseState::Declined,
        CaseState::Closed,
    ];

    /// The states a point of contact still acts on.
    pub const ACTIVE: [CaseState; 3] = [CaseState::Open, CaseState::Pledged, CaseState::InProgress];

    /// `open`, `pledged`, `in-progress`, `fulfilled`, `declined`, `closed`.
    pub fn name(&self) -> &'static str {
        match self {
            CaseState::Open => "open",
            CaseState::Pledged => "pledged",
            CaseState::InProgress => "in-progress",
            CaseState::Fulfilled => "fulfilled",
            CaseState::Declined => "declined",
            CaseState::Closed => "closed",
        }
    }

    /// A stable one-byte code (the index in [`CaseState::ALL`]).
    pub fn code(&self) -> u8 {
        match self {
            CaseState::Open => 0,
            CaseState::Pledged => 1,
            CaseState::InProgress => 2,
            CaseState::Fulfilled => 3,
            CaseState::Declined => 4,
            CaseState::Closed => 5,
        }
    }

    /// Whether the case is over (fulfilled, declined or closed).
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            CaseState::Fulfilled | CaseState::Declined | CaseState::Closed
        )
    }
}

impl std::fmt::Display for CaseState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A state name that is not one of [`CaseState::ALL`].
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown case state {0:?}: expected open, pledged, in-progress, fulfilled, declined or closed"
)]
pub struct CaseStateParseError(String);

impl std::str::FromStr for CaseState {
    type Err = CaseStateParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().to_ascii_lowercase().replace('_', "-");
        CaseState::ALL
            .into_iter()
            .find(|c| c.name() == norm || (norm == "inprogress" && *c == CaseState::InProgress))
            .ok_or_else(|| CaseStateParseError(s.into()))
    }
}

/// What one message contributed to a case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// An offer answering the request.
    Offer,
    /// A status about the request or one of its offers.
    Status {
        /// The request's or the offer's id.
        about: MsgId,
        /// The state reported.
        state: State,
    },
}

/// One offer or status of a case, as the archive keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseEvent {
    /// The message.
    pub msg_id: MsgId,
    /// Its sender (participant).
    pub sender: String,
    /// The sender's signed time, ms.
    pub sent_at_ms: u64,
    /// When this archive received it, ms.
    pub received_at_ms: u64,
    /// Offer or status.
    pub kind: EventKind,
    /// The message's subject (an offer says what is pledged).
    pub subject: String,
}

/// A case as the archive keeps it: the request and every event, unordered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseFacts {
    /// The request's id (the case id).
    pub request: MsgId,
    /// The requesting participant.
    pub requester: String,
    /// The channel (or direct conversation) of the request.
    pub channel: String,
    /// Line of effort.
    pub loe: Loe,
    /// Priority.
    pub priority: Priority,
    /// Category.
    pub category: String,
    /// Subject.
    pub subject: String,
    /// The request's TLP marking.
    pub tlp: Tlp,
    /// The requester's signed time, ms.
    pub sent_at_ms: u64,
    /// When this archive received the request, ms.
    pub received_at_ms: u64,
    /// Offers and statuses, in the order the archive learnt them.
    pub events: Vec<CaseEvent>,
}

/// What an event did, for the case history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "effect", content = "detail")]
pub enum Effect {
    /// It moved the case to this state.
    Moved(CaseState),
    /// It was taken into account without changing the state.
    Recorded,
    /// It changes nothing, for this reason.
    Ignored(&'static str),
}

/// An offer and where it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OfferView {
    /// The offer's id.
    pub msg_id: MsgId,
    /// Who pledged.
    pub from: String,
    /// What (the offer's subject).
    pub subject: String,
    /// The offerer's signed time, ms.
    pub sent_at_ms: u64,
    /// The requester accepted it.
    pub accepted: bool,
    /// The requester declined it.
    pub declined: bool,
    /// The offerer withdrew it.
    pub withdrawn: bool,
    /// The offerer's latest report (in progress, fulfilled).
    pub progress: Option<State>,
}

impl OfferView {
    /// Neither declined nor withdrawn.
    pub fn live(&self) -> bool {
        !self.declined && !self.withdrawn
    }
}

/// A case derived from its facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaseView {
    /// The state.
    pub state: CaseState,
    /// The offers, in signed order.
    pub offers: Vec<OfferView>,
    /// Every event in signed order with what it did.
    pub history: Vec<(CaseEvent, Effect)>,
    /// The latest event that counted (not ignored), if any.
    pub latest: Option<CaseEvent>,
    /// Who must act next.
    pub waiting_on: BTreeSet<String>,
    /// The latest time this archive learnt something about the case, ms.
    pub updated_at_ms: u64,
}

impl CaseView {
    /// Whether nobody has offered (needs without any pledge).
    pub fn unanswered(&self) -> bool {
        self.offers.is_empty()
    }

    /// Whether `who` requested or pledged.
    pub fn involves(&self, facts: &CaseFacts, who: &str) -> bool {
        facts.requester == who || self.offers.iter().any(|o| o.from == who)
    }
}

impl CaseFacts {
    /// Adds an event unless the same message is already in (idempotent) or
    /// the case holds [`MAX_CASE_EVENTS`] already. Returns whether it was
    /// added.
    pub fn add(&mut self, event: CaseEvent) -> bool {
        if self.events.len() >= MAX_CASE_EVENTS
            || self.events.iter().any(|e| e.msg_id == event.msg_id)
        {
            return false;
        }
        self.events.push(event);
        true
    }

    /// The ids of this case's offers (the messages a status may be about).
    pub fn offer_ids(&self) -> impl Iterator<Item = MsgId> + '_ {
        self.events
            .iter()
            .filter(|e| e.kind == EventKind::Offer && e.sender != self.requester)
            .map(|e| e.msg_id)
    }

    /// Derives the view (the rules in the module documentation).
    pub fn view(&self) -> CaseView {
        let mut events: Vec<&CaseEvent> = self.events.iter().collect();
        events.sort_by_key(|e| (e.sent_at_ms, e.msg_id.0));
        let mut offers: Vec<OfferView> = Vec::new();
        let mut said: Option<State> = None;
        let mut state = CaseState::Open;
        let mut history = Vec::with_capacity(events.len());
        let mut latest = None;
        let mut updated_at_ms = self.received_at_ms;
        for e in events {
            updated_at_ms = updated_at_ms.max(e.received_at_ms);
            let effect = if state == CaseState::Closed {
                Effect::Ignored("the case is closed")
            } else {
                match &e.kind {
                    EventKind::Offer if e.sender == self.requester => {
                        Effect::Ignored("the requester cannot pledge to its own request")
                    }
                    EventKind::Offer => {
                        offers.push(OfferView {
                            msg_id: e.msg_id,
                            from: e.sender.clone(),
                            subject: e.subject.clone(),
                            sent_at_ms: e.sent_at_ms,
                            accepted: false,
                            declined: false,
                            withdrawn: false,
                            progress: None,
                        });
                        Effect::Recorded
                    }
                    EventKind::Status { about, state: s } => {
                        self.apply_status(e, *about, *s, &mut offers, &mut said)
                    }
                }
            };
            let effect = match effect {
                Effect::Recorded => {
                    let next = derive(said, &offers);
                    if next != state {
                        state = next;
                        Effect::Moved(next)
                    } else {
                        Effect::Recorded
                    }
                }
                other => other,
            };
            if !matches!(effect, Effect::Ignored(_)) {
                latest = Some(e.clone());
            }
            history.push((e.clone(), effect));
        }
        let waiting_on = self.waiting_on(state, &offers);
        CaseView {
            state,
            offers,
            history,
            latest,
            waiting_on,
            updated_at_ms,
        }
    }

    fn apply_status(
        &self,
        e: &CaseEvent,
        about: MsgId,
        s: State,
        offers: &mut [OfferView],
        said: &mut Option<State>,
    ) -> Effect {
        let by_requester = e.sender == self.requester;
        if about == self.request {
            if by_requester {
                if s != State::Acknowledged {
                    *said = Some(s);
                }
                return Effect::Recorded;
            }
            // An offerer reporting on the request speaks for its own offers.
            let mut theirs = offers.iter_mut().filter(|o| o.from == e.sender).peekable();
            if theirs.peek().is_none() {
                return Effect::Ignored(
                    "only the requester sets the state of its request; an offerer reports on its offer",
                );
            }
            for offer in theirs {
                report(offer, s);
            }
            return Effect::Recorded;
        }
        let Some(offer) = offers.iter_mut().find(|o| o.msg_id == about) else {
            return Effect::Ignored("about an offer that is not part of this case");
        };
        if by_requester {
            match s {
                State::Acknowledged => offer.accepted = true,
                State::Declined => offer.declined = true,
                other => *said = Some(other),
            }
            Effect::Recorded
        } else if e.sender == offer.from {
            report(offer, s);
            Effect::Recorded
        } else {
            Effect::Ignored("only the requester and the offerer speak for an offer")
        }
    }

    fn waiting_on(&self, state: CaseState, offers: &[OfferView]) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let requester_owes = state == CaseState::Fulfilled
            || (matches!(state, CaseState::Pledged | CaseState::InProgress)
                && offers.iter().any(|o| o.live() && !o.accepted));
        if requester_owes {
            out.insert(self.requester.clone());
        }
        if CaseState::ACTIVE.contains(&state) {
            for o in offers {
                if o.live() && o.accepted && o.progress != Some(State::Fulfilled) {
                    out.insert(o.from.clone());
                }
            }
        }
        out
    }
}

/// An offerer's report on its offer.
fn report(offer: &mut OfferView, s: State) {
    match s {
        State::Acknowledged => {}
        State::InProgress | State::Fulfilled => offer.progress = Some(s),
        State::Declined | State::Closed => offer.withdrawn = true,
    }
}

/// The state from the requester's latest word and the offers.
fn derive(said: Option<State>, offers: &[OfferView]) -> CaseState {
    let live = || offers.iter().filter(|o| o.live());
    match said {
        Some(State::Closed) => CaseState::Closed,
        Some(State::Declined) => CaseState::Declined,
        Some(State::Fulfilled) => CaseState::Fulfilled,
        _ if live().any(|o| o.progress == Some(State::Fulfilled)) => CaseState::Fulfilled,
        Some(State::InProgress) => CaseState::InProgress,
        _ if live().any(|o| o.progress == Some(State::InProgress)) => CaseState::InProgress,
        _ if live().next().is_some() => CaseState::Pledged,
        _ => CaseState::Open,
    }
}

#[cfg(test)]
mod tests;
