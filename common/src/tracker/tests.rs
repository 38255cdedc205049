//! Every transition of the tracker's rules.

use super::*;

fn id(n: u8) -> MsgId {
    MsgId([n; 16])
}

const REQ: u8 = 1;

fn case() -> CaseFacts {
    CaseFacts {
        request: id(REQ),
        requester: "UA".into(),
        channel: "loe-immediate".into(),
        loe: Loe::Immediate,
        priority: Priority::High,
        category: "hardware".into(),
        subject: "generators".into(),
        tlp: Tlp::Amber,
        sent_at_ms: 1_000,
        received_at_ms: 1_001,
        events: Vec::new(),
    }
}

fn offer(n: u8, from: &str, at: u64) -> CaseEvent {
    CaseEvent {
        msg_id: id(n),
        sender: from.into(),
        sent_at_ms: at,
        received_at_ms: at + 1,
        kind: EventKind::Offer,
        subject: format!("offer {n}"),
    }
}

fn status(n: u8, from: &str, about: u8, state: State, at: u64) -> CaseEvent {
    CaseEvent {
        msg_id: id(n),
        sender: from.into(),
        sent_at_ms: at,
        received_at_ms: at + 1,
        kind: EventKind::Status {
            about: id(about),
            state,
        },
        subject: String::new(),
    }
}

fn with(events: Vec<CaseEvent>) -> CaseView {
    let mut c = case();
    for e in events {
        assert!(c.add(e));
    }
    c.view()
}

#[test]
fn a_request_alone_is_open_and_unanswered() {
    let v = case().view();
    assert_eq!(v.state, CaseState::Open);
    assert!(v.unanswered());
    assert!(v.waiting_on.is_empty());
    assert_eq!(v.updated_at_ms, 1_001);
}

#[test]
fn offers_from_several_members_pledge_and_wait_on_the_requester() {
    let v = with(vec![offer(2, "PL", 2_000), offer(3, "EE", 3_000)]);
    assert_eq!(v.state, CaseState::Pledged);
    assert_eq!(
        v.offers.iter().map(|o| o.from.as_str()).collect::<Vec<_>>(),
        ["PL", "EE"]
    );
    assert!(!v.unanswered());
    assert_eq!(v.waiting_on, BTreeSet::from(["UA".to_string()]));
    assert_eq!(v.history[0].1, Effect::Moved(CaseState::Pledged));
    assert_eq!(v.history[1].1, Effect::Recorded);
}

#[test]
fn the_requester_cannot_pledge_to_its_own_request() {
    let v = with(vec![offer(2, "UA", 2_000)]);
    assert_eq!(v.state, CaseState::Open);
    assert!(v.unanswered());
    assert!(matches!(v.history[0].1, Effect::Ignored(_)));
}

#[test]
fn accepting_an_offer_moves_the_wait_to_the_offerer_who_delivers() {
    let v = with(vec![
        offer(2, "PL", 2_000),
        status(3, "UA", 2, State::Acknowledged, 3_000),
    ]);
    assert_eq!(v.state, CaseState::Pledged);
    assert!(v.offers[0].accepted);
    assert_eq!(v.waiting_on, BTreeSet::from(["PL".to_string()]));
    let v = with(vec![
        offer(2, "PL", 2_000),
        status(3, "UA", 2, State::Acknowledged, 3_000),
        status(4, "PL", 2, State::InProgress, 4_000),
    ]);
    assert_eq!(v.state, CaseState::InProgress);
    assert_eq!(v.history[2].1, Effect::Moved(CaseState::InProgress));
    let v = with(vec![
        offer(2, "PL", 2_000),
        status(3, "UA", 2, State::Acknowledged, 3_000),
        status(4, "PL", 2, State::InProgress, 4_000),
        status(5, "PL", 2, State::Fulfilled, 5_000),
    ]);
    assert_eq!(v.state, CaseState::Fulfilled);
    // Fulfilled: the requester closes it.
    assert_eq!(v.waiting_on, BTreeSet::from(["UA".to_string()]));
    let v = with(vec![
        offer(2, "PL", 2_000),
        status(5, "PL", 2, State::Fulfilled, 5_000),
        status(6, "UA", REQ, State::Closed, 6_000),
    ]);
    assert_eq!(v.state, CaseState::Closed);
    assert!(v.waiting_on.is_empty());
}

#[test]
fn the_requester_sets_every_state_of_its_request() {
    for (s, want) in [
        (State::Acknowledged, CaseState::Open),
        (State::InProgress, CaseState::InProgress),
        (State::Fulfilled, CaseState::Fulfilled),
        (State::Declined, CaseState::Declined),
        (State::Closed, CaseState::Closed),
    ] {
        let v = with(vec![status(2, "UA", REQ, s, 2_000)]);
        assert_eq!(v.state, want, "{s:?}");
    }
    // Its latest word counts: declined, then reopened as in progress.
    let v = with(vec![
        status(2, "UA", REQ, State::Declined, 2_000),
        status(3, "UA", REQ, State::InProgress, 3_000),
    ]);
    assert_eq!(v.state, CaseState::InProgress);
}

#[test]
fn declining_or_withdrawing_every_offer_reopens_the_case() {
    let v = with(vec![
        offer(2, "PL", 2_000),
        status(3, "UA", 2, State::Declined, 3_000),
    ]);
    assert_eq!(v.state, CaseState::Open);
    assert_eq!(v.history[1].1, Effect::Moved(CaseState::Open));
    assert!(!v.unanswered(), "an offer was made, even if declined");
    let v = with(vec![
        offer(2, "PL", 2_000),
        offer(3, "EE", 2_500),
        status(4, "PL", 2, State::Closed, 3_000),
    ]);
    assert_eq!(v.state, CaseState::Pledged, "EE's offer is still live");
    assert!(v.offers[0].withdrawn);
    let v = with(vec![
        offer(2, "PL", 2_000),
        status(4, "PL", 2, State::InProgress, 3_000),
        status(5, "PL", 2, State::Declined, 4_000),
    ]);
    assert_eq!(v.state, CaseState::Open);
}

#[test]
fn a_status_from_a_non_requester_is_kept_but_changes_nothing() {
    // EE (the chair, not the requester) declares UA's request fulfilled and
    // GB reports on PL's offer: both recorded in the history, both ignored.
    let v = with(vec![
        offer(2, "PL", 2_000),
        status(3, "EE", REQ, State::Fulfilled, 3_000),
        status(4, "GB", 2, State::Fulfilled, 4_000),
    ]);
    assert_eq!(v.state, CaseState::Pledged);
    assert!(matches!(v.history[1].1, Effect::Ignored(w) if w.contains("only the requester")));
    assert!(
        matches!(v.history[2].1, Effect::Ignored(w) if w.contains("requester and the offerer"))
    );
    assert_eq!(v.latest.as_ref().map(|e| e.msg_id), Some(id(2)));
}

#[test]
fn an_offerer_reporting_on_the_request_speaks_for_its_offer() {
    // As in the demo's round: PL reports the request fulfilled.
    let v = with(vec![
        offer(2, "PL", 2_000),
        offer(3, "DE", 2_500),
        status(4, "UA", 2, State::InProgress, 3_000),
        status(5, "PL", REQ, State::Fulfilled, 4_000),
    ]);
    assert_eq!(v.state, CaseState::Fulfilled);
    assert_eq!(v.offers[0].progress, Some(State::Fulfilled));
    assert_eq!(v.offers[1].progress, None);
}

#[test]
fn closed_is_final_and_the_order_is_the_senders_not_the_archives() {
    // Received in reverse order; derived in signed order.
    let mut c = case();
    c.add(status(4, "PL", 2, State::InProgress, 5_000));
    c.add(status(3, "UA", REQ, State::Closed, 4_000));
    c.add(offer(2, "PL", 2_000));
    let v = c.view();
    assert_eq!(v.state, CaseState::Closed);
    assert!(matches!(
        v.history[2].1,
        Effect::Ignored("the case is closed")
    ));
    // Adding the same message twice changes nothing.
    assert!(!c.add(offer(2, "PL", 2_000)));
    assert_eq!(c.view(), v);
}

#[test]
fn state_names_parse() {
    for s in CaseState::ALL {
        assert_eq!(s.name().parse::<CaseState>().unwrap(), s);
        assert_eq!(
            usize::from(s.code()),
            CaseState::ALL.iter().position(|x| *x == s).unwrap()
        );
    }
    assert_eq!(
        "in_progress".parse::<CaseState>().unwrap(),
        CaseState::InProgress
    );
    assert!("done".parse::<CaseState>().is_err());
}

#[test]
fn a_case_keeps_a_bounded_number_of_events() {
    let mut c = case();
    for i in 0..MAX_CASE_EVENTS + 10 {
        let mut e = status(0, "GB", REQ, State::Fulfilled, 2_000 + i as u64);
        e.msg_id = MsgId((i as u128 + 1000).to_be_bytes());
        let added = c.add(e);
        assert_eq!(added, i < MAX_CASE_EVENTS, "{i}");
    }
    assert_eq!(c.events.len(), MAX_CASE_EVENTS);
}
