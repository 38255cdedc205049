//! The coordination endpoints of the local API: the request tracker
//! (`POST /v1/requests`, `GET /v1/requests/{id}`) and sharing history with a
//! late joiner (`POST /v1/share`): their request and answer types and what
//! they do on a [`Client`].

use serde::{Deserialize, Serialize};
use tallinn_common::message::{Loe, MsgId, Priority, State};
use tallinn_common::tracker::{CaseEvent, CaseState, Effect, EventKind, OfferView};

use super::api::{ApiError, LoeView, PriorityView, StateView};
use crate::archive::{Case, CaseQuery, CaseScope};
use crate::client::Client;

/// `POST /v1/requests`: which cases to list (every field optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CaseListRequest {
    /// States (`open`, `pledged`, `in-progress`, `fulfilled`, `declined`,
    /// `closed`, or `all`); empty: the active ones (open, pledged, in progress).
    pub states: Vec<String>,
    /// Line of effort.
    pub loe: Option<LoeView>,
    /// Priority.
    pub priority: Option<PriorityView>,
    /// Only cases this participant requested or pledged to.
    pub mine: bool,
    /// Only cases waiting on this participant.
    pub waiting_on_me: bool,
    /// Only needs nobody has offered for (open cases without any offer).
    pub unanswered: bool,
    /// At most this many [default 50].
    pub limit: Option<usize>,
}

/// An offer in a case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferSummary {
    /// The offer's id.
    pub msg_id: String,
    /// Who pledged.
    pub from: String,
    /// What.
    pub subject: String,
    /// `live`, `accepted`, `in-progress`, `fulfilled`, `declined` (by the
    /// requester) or `withdrawn` (by the offerer).
    pub standing: String,
}

/// One event of a case's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseEventView {
    /// The message.
    pub msg_id: String,
    /// Its sender.
    pub sender: String,
    /// `offer` or `status`.
    pub kind: String,
    /// A status's state.
    pub state: Option<StateView>,
    /// What a status is about (the request or an offer), full id.
    pub about: Option<String>,
    /// The message's subject.
    pub subject: String,
    /// The sender's signed time, ms.
    pub sent_at_ms: u64,
    /// `moved`, `recorded` or `ignored`.
    pub effect: String,
    /// The state it moved the case to, or why it was ignored.
    pub detail: Option<String>,
}

/// A case in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseSummary {
    /// The request's id (the case id).
    pub id: String,
    /// State.
    pub state: String,
    /// Who asked.
    pub requester: String,
    /// Where (channel or direct conversation).
    pub channel: String,
    /// Line of effort.
    pub loe: LoeView,
    /// Priority.
    pub priority: PriorityView,
    /// Category.
    pub category: String,
    /// Subject.
    pub subject: String,
    /// TLP label of the request.
    pub tlp: String,
    /// The request's signed time, ms.
    pub opened_at_ms: u64,
    /// The latest time this archive learnt something about it, ms.
    pub updated_at_ms: u64,
    /// Offers.
    pub offers: Vec<OfferSummary>,
    /// The latest event that counted.
    pub latest: Option<CaseEventView>,
    /// Who must act next.
    pub waiting_on: Vec<String>,
    /// Whether this participant must act next.
    pub waiting_on_you: bool,
}

/// `POST /v1/requests`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseList {
    /// The cases, highest priority and most recently updated first.
    pub cases: Vec<CaseSummary>,
    /// More cases match than the limit.
    pub more: bool,
}

/// `GET /v1/requests/{id}`: a case and its whole history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseDetail {
    /// The case.
    #[serde(flatten)]
    pub case: CaseSummary,
    /// Every offer and status in signed order, with what it did.
    pub history: Vec<CaseEventView>,
}

/// `POST /v1/share`: share archived messages with participants.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ShareRequest {
    /// The participants to share with (a direct conversation with them; the
    /// beneficiary is added if missing).
    pub to: Vec<String>,
    /// Every message of this channel ...
    pub channel: Option<String>,
    /// ... received at or after this time (ms).
    pub since_ms: Option<u64>,
    /// Or these messages (ids or unique prefixes).
    pub ids: Vec<String>,
}

/// What became of one shared message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareItem {
    /// The original's id.
    pub msg_id: String,
    /// The share's id, if queued.
    pub share: Option<String>,
    /// Why not, if refused.
    pub refused: Option<String>,
}

/// `POST /v1/share`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareOutcome {
    /// The direct conversation the shares went to.
    pub conversation: String,
    /// Participants the rule added (the beneficiary).
    pub added: Vec<String>,
    /// Per message, oldest first.
    pub items: Vec<ShareItem>,
}

fn loe_view(l: Loe) -> LoeView {
    match l {
        Loe::Immediate => LoeView::Immediate,
        Loe::Capability => LoeView::Capability,
        Loe::Sustainability => LoeView::Sustainability,
    }
}

fn priority_view(p: Priority) -> PriorityView {
    match p {
        Priority::Low => PriorityView::Low,
        Priority::Normal => PriorityView::Normal,
        Priority::High => PriorityView::High,
        Priority::Critical => PriorityView::Critical,
    }
}

fn state_view(s: State) -> StateView {
    match s {
        State::Acknowledged => StateView::Acknowledged,
        State::InProgress => StateView::InProgress,
        State::Fulfilled => StateView::Fulfilled,
        State::Declined => StateView::Declined,
        State::Closed => StateView::Closed,
    }
}

fn offer_summary(o: &OfferView) -> OfferSummary {
    let standing = if o.withdrawn {
        "withdrawn"
    } else if o.declined {
        "declined"
    } else if o.progress == Some(State::Fulfilled) {
        "fulfilled"
    } else if o.progress == Some(State::InProgress) {
        "in-progress"
    } else if o.accepted {
        "accepted"
    } else {
        "live"
    };
    OfferSummary {
        msg_id: o.msg_id.to_hex(),
        from: o.from.clone(),
        subject: o.subject.clone(),
        standing: standing.into(),
    }
}

fn event_view(e: &CaseEvent, effect: Option<&Effect>) -> CaseEventView {
    let (kind, state, about) = match &e.kind {
        EventKind::Offer => ("offer", None, None),
        EventKind::Status { about, state } => {
            ("status", Some(state_view(*state)), Some(about.to_hex()))
        }
    };
    let (effect, detail) = match effect {
        Some(Effect::Moved(s)) => ("moved", Some(s.name().to_string())),
        Some(Effect::Recorded) | None => ("recorded", None),
        Some(Effect::Ignored(why)) => ("ignored", Some((*why).to_string())),
    };
    CaseEventView {
        msg_id: e.msg_id.to_hex(),
        sender: e.sender.clone(),
        kind: kind.into(),
        state,
        about,
        subject: e.subject.clone(),
        sent_at_ms: e.sent_at_ms,
        effect: effect.into(),
        detail,
    }
}

/// The listing form of a case, as seen by participant `me`.
pub fn summary(c: &Case, me: &str) -> CaseSummary {
    let f = &c.facts;
    CaseSummary {
        id: f.request.to_hex(),
        state: c.view.state.name().into(),
        requester: f.requester.clone(),
        channel: f.channel.clone(),
        loe: loe_view(f.loe),
        priority: priority_view(f.priority),
        category: f.category.clone(),
        subject: f.subject.clone(),
        tlp: f.tlp.label().into(),
        opened_at_ms: f.sent_at_ms,
        updated_at_ms: c.view.updated_at_ms,
        offers: c.view.offers.iter().map(offer_summary).collect(),
        latest: c.view.latest.as_ref().map(|e| event_view(e, None)),
        waiting_on: c.view.waiting_on.iter().cloned().collect(),
        waiting_on_you: c.view.waiting_on.contains(me),
    }
}

/// Default number of cases listed.
pub const CASE_PAGE: usize = 50;

/// `POST /v1/requests`.
///
/// # Errors
/// [`ApiError`]: `bad_request` for an unknown state.
pub fn requests(client: &Client, req: &CaseListRequest) -> Result<CaseList, ApiError> {
    let mut states = Vec::new();
    for s in &req.states {
        if s.eq_ignore_ascii_case("all") {
            states = CaseState::ALL.to_vec();
            break;
        }
        states.push(
            s.parse::<CaseState>()
                .map_err(|e| ApiError::bad_request(e.to_string()))?,
        );
    }
    let limit = req.limit.unwrap_or(CASE_PAGE).clamp(1, 10_000);
    let q = CaseQuery {
        states,
        loe: req.loe.map(|l| l.to_loe()),
        priority: req.priority.map(|p| p.to_priority()),
        scope: if req.waiting_on_me {
            CaseScope::WaitingOnMe
        } else if req.mine {
            CaseScope::Mine
        } else {
            CaseScope::All
        },
        unanswered: req.unanswered,
        limit: limit + 1,
    };
    let mut cases = client.archive().cases(&q)?;
    let more = cases.len() > limit;
    cases.truncate(limit);
    Ok(CaseList {
        cases: cases
            .iter()
            .map(|c| summary(c, client.settings().identity.id().as_str()))
            .collect(),
        more,
    })
}

/// `GET /v1/requests/{id}`: the case of a request (or of an offer or status
/// in it), by id or unique prefix.
///
/// # Errors
/// [`ApiError`]: `not_found` if the message is in no case.
pub fn request_show(client: &Client, given: &str) -> Result<CaseDetail, ApiError> {
    let r = super::ops::resolve(client, given)?;
    let case = client.archive().case_for(&r)?.ok_or_else(|| {
        ApiError::not_found(format!(
            "{} is a {} in no case (a case is a request with its offers and status updates; the request may not be in this archive)",
            r.msg_id,
            r.message.kind.name()
        ))
    })?;
    Ok(CaseDetail {
        history: case
            .view
            .history
            .iter()
            .map(|(e, effect)| event_view(e, Some(effect)))
            .collect(),
        case: summary(&case, client.settings().identity.id().as_str()),
    })
}

/// `POST /v1/share`: one `Share` per message, oldest first.
///
/// # Errors
/// [`ApiError`]: `bad_request` for a request naming neither a channel nor
/// messages, `not_allowed` for a conversation the roster refuses.
pub fn share(client: &Client, req: &ShareRequest) -> Result<ShareOutcome, ApiError> {
    if req.to.is_empty() {
        return Err(ApiError::bad_request("name who to share with (`to`)"));
    }
    let mut originals = Vec::new();
    match (&req.channel, req.ids.is_empty()) {
        (Some(channel), true) => {
            let filter = crate::archive::Filter {
                channel: Some(channel.clone()),
                since_ms: req.since_ms,
                ..Default::default()
            };
            originals = client.archive().search(&filter, usize::MAX)?;
            originals.reverse(); // oldest first
        }
        (None, false) => {
            for id in &req.ids {
                originals.push(super::ops::resolve(client, id)?);
            }
        }
        _ => {
            return Err(ApiError::bad_request(
                "give either a channel (with a start time) or message ids",
            ))
        }
    }
    let (conversation, added) = client.direct_conversation(&req.to)?;
    let items = client
        .share(&conversation, &originals)?
        .into_iter()
        .map(|(msg_id, r): (MsgId, Result<MsgId, String>)| match r {
            Ok(s) => ShareItem {
                msg_id: msg_id.to_hex(),
                share: Some(s.to_hex()),
                refused: None,
            },
            Err(why) => ShareItem {
                msg_id: msg_id.to_hex(),
                share: None,
                refused: Some(why),
            },
        })
        .collect();
    Ok(ShareOutcome {
        conversation,
        added,
        items,
    })
}
