//! The tracker index in the archive: incremental updates in any arrival
//! order, the listing buckets and filters, redaction, and the one-time
//! build for an archive written before the tracker existed.

use super::*;
use tallinn_common::envelope::{seal, UntrustedEnvelope};
use tallinn_common::identity::ParticipantId;
use tallinn_common::message::{Kind, Loe, Message, Priority, State};
use tallinn_common::tracker::CaseState;

struct W {
    roster: Roster,
    ids: std::collections::BTreeMap<&'static str, Identity>,
}

fn world() -> W {
    let mut ids = std::collections::BTreeMap::new();
    let mut text = String::new();
    for p in ["EE", "PL", "UA"] {
        let i = Identity::generate(ParticipantId::new(p).unwrap());
        text.push_str(&i.roster_entry(p, "member"));
        ids.insert(p, i);
    }
    text.push_str("[[channel]]\nid = \"loe-immediate\"\nmembers = [\"*\"]\n");
    W {
        roster: Roster::parse(&text).unwrap(),
        ids,
    }
}

fn msg(kind: Kind, subject: &str) -> Message {
    Message {
        kind,
        ..Message::note(Tlp::Amber, subject, "")
    }
}

/// `from` seals `m` at time `at`; EE archives it (received, or sent if EE
/// sent it). Returns the message id.
fn put(w: &W, a: &Archive, from: &str, m: &Message, at: u64) -> MsgId {
    let s = seal(&w.ids[from], &w.roster, "loe-immediate", m, at).unwrap();
    archive_sealed(w, a, from, &s, at)
}

/// EE archives `s`, sealed by `from` at `at`.
fn archive_sealed(
    w: &W,
    a: &Archive,
    from: &str,
    s: &tallinn_common::envelope::SealedEnvelope,
    at: u64,
) -> MsgId {
    let v = UntrustedEnvelope::decode(s.as_bytes())
        .unwrap()
        .verify(&w.roster)
        .unwrap();
    if from == "EE" {
        let o = v.open_with_content_key(s.content_key()).unwrap();
        a.insert_sent(at, at, &o).unwrap();
    } else {
        let o = v.open(&w.ids["EE"]).unwrap();
        a.insert_received(at, at, &o).unwrap();
    }
    s.msg_id()
}

fn request(priority: Priority) -> Message {
    msg(
        Kind::Request {
            loe: Loe::Immediate,
            category: "hardware".into(),
            priority,
        },
        "generators",
    )
}

fn query(states: &[CaseState], scope: CaseScope) -> CaseQuery {
    CaseQuery {
        states: states.to_vec(),
        loe: None,
        priority: None,
        scope,
        unanswered: false,
        limit: 50,
    }
}

fn ids(cases: &[Case]) -> Vec<MsgId> {
    cases.iter().map(|c| c.facts.request).collect()
}

#[test]
fn cases_follow_their_messages_and_are_listed_by_state_and_scope() {
    let w = world();
    let dir = tempfile::tempdir().unwrap();
    let a = Archive::open(dir.path(), &w.ids["EE"]).unwrap();
    let r1 = put(&w, &a, "UA", &request(Priority::High), 1_000);
    let r2 = put(&w, &a, "UA", &request(Priority::Critical), 2_000);
    let all = |s: &[CaseState]| ids(&a.cases(&query(s, CaseScope::All)).unwrap());
    // Critical first, then high.
    assert_eq!(all(&[]), [r2, r1]);
    assert_eq!(all(&[CaseState::Open]), [r2, r1]);
    let unanswered = CaseQuery {
        unanswered: true,
        ..query(&[CaseState::Open], CaseScope::All)
    };
    assert_eq!(a.cases(&unanswered).unwrap().len(), 2);

    // PL and EE offer for r1; UA accepts EE's offer: r1 waits on EE.
    let o_pl = put(
        &w,
        &a,
        "PL",
        &msg(Kind::Offer { request: r1 }, "two units"),
        3_000,
    );
    let o_ee = put(
        &w,
        &a,
        "EE",
        &msg(Kind::Offer { request: r1 }, "one unit"),
        4_000,
    );
    assert_eq!(all(&[CaseState::Pledged]), [r1]);
    assert_eq!(ids(&a.cases(&unanswered).unwrap()), [r2]);
    let mine = ids(&a.cases(&query(&[], CaseScope::Mine)).unwrap());
    assert_eq!(mine, [r1]);
    assert!(a
        .cases(&query(&[], CaseScope::WaitingOnMe))
        .unwrap()
        .is_empty());
    put(
        &w,
        &a,
        "UA",
        &msg(
            Kind::Status {
                about: o_ee,
                state: State::Acknowledged,
            },
            "yes please",
        ),
        5_000,
    );
    assert_eq!(
        ids(&a.cases(&query(&[], CaseScope::WaitingOnMe)).unwrap()),
        [r1]
    );
    // EE delivers: fulfilled, no longer waiting on EE.
    put(
        &w,
        &a,
        "EE",
        &msg(
            Kind::Status {
                about: o_ee,
                state: State::Fulfilled,
            },
            "delivered",
        ),
        6_000,
    );
    assert_eq!(all(&[CaseState::Fulfilled]), [r1]);
    assert!(a
        .cases(&query(&[], CaseScope::WaitingOnMe))
        .unwrap()
        .is_empty());
    assert_eq!(all(&[]), [r2], "the default lists the active cases only");
    let c = a
        .case_for(&a.get(&o_pl).unwrap().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(c.facts.request, r1);
    assert_eq!(c.view.offers.len(), 2);

    // Retention redacts EE's offer: the case is rebuilt without it.
    let r = a.get(&o_ee).unwrap().unwrap();
    a.redact(&r, "test", 7_000).unwrap();
    let c = a.case_for(&a.get(&r1).unwrap().unwrap()).unwrap().unwrap();
    assert_eq!(c.view.state, CaseState::Pledged, "{:?}", c.view);
    assert_eq!(all(&[CaseState::Fulfilled]), Vec::<MsgId>::new());
    // Redacting the request removes the case.
    let r = a.get(&r1).unwrap().unwrap();
    a.redact(&r, "test", 7_000).unwrap();
    assert_eq!(all(&CaseState::ALL), [r2]);
}

#[test]
fn offers_and_statuses_before_their_request_join_the_case_when_it_arrives() {
    let w = world();
    let dir = tempfile::tempdir().unwrap();
    let a = Archive::open(dir.path(), &w.ids["EE"]).unwrap();
    // Seal in the senders' order, archive in reverse (shared history).
    let req = seal(
        &w.ids["UA"],
        &w.roster,
        "loe-immediate",
        &request(Priority::Low),
        1_000,
    )
    .unwrap();
    let r = req.msg_id();
    let offer = seal(
        &w.ids["PL"],
        &w.roster,
        "loe-immediate",
        &msg(Kind::Offer { request: r }, "trainers"),
        2_000,
    )
    .unwrap();
    let status = seal(
        &w.ids["PL"],
        &w.roster,
        "loe-immediate",
        &msg(
            Kind::Status {
                about: offer.msg_id(),
                state: State::InProgress,
            },
            "on it",
        ),
        3_000,
    )
    .unwrap();
    for (seq, s) in [(1, &status), (2, &offer), (3, &req)] {
        let o = UntrustedEnvelope::decode(s.as_bytes())
            .unwrap()
            .verify(&w.roster)
            .unwrap()
            .open(&w.ids["EE"])
            .unwrap();
        a.insert_received(seq, 10_000 + seq, &o).unwrap();
    }
    let cases = a.cases(&query(&[], CaseScope::All)).unwrap();
    assert_eq!(ids(&cases), [r]);
    assert_eq!(cases[0].view.state, CaseState::InProgress);
    assert_eq!(cases[0].view.history.len(), 2);
}

#[test]
fn an_archive_without_the_tracker_index_builds_it_once() {
    let w = world();
    let dir = tempfile::tempdir().unwrap();
    let a = Archive::open(dir.path(), &w.ids["EE"]).unwrap();
    let r = put(&w, &a, "UA", &request(Priority::Normal), 1_000);
    put(&w, &a, "PL", &msg(Kind::Offer { request: r }, "x"), 2_000);
    a.flush().unwrap();
    drop(a);
    // As an archive written before the tracker: no marker, no index.
    {
        let db = tallinn_host::durable::retry_while_locked(|| sled::open(dir.path())).unwrap();
        let t = db.open_tree("archive").unwrap();
        for prefix in [b"C", b"O", b"T", b"t"] {
            for k in t.scan_prefix(prefix).keys() {
                t.remove(k.unwrap()).unwrap();
            }
        }
        db.flush().unwrap();
    }
    let a = Archive::open(dir.path(), &w.ids["EE"]).unwrap();
    // Not maintained while missing...
    let r2 = put(&w, &a, "UA", &request(Priority::Low), 3_000);
    // ... and complete after the first listing.
    let cases = a.cases(&query(&[], CaseScope::All)).unwrap();
    assert_eq!(ids(&cases), [r, r2]);
    assert_eq!(cases[0].view.state, CaseState::Pledged);
}

#[test]
fn an_offer_naming_an_offer_is_no_part_of_the_case() {
    let w = world();
    let dir = tempfile::tempdir().unwrap();
    let a = Archive::open(dir.path(), &w.ids["EE"]).unwrap();
    let r = put(&w, &a, "UA", &request(Priority::High), 1_000);
    let o = put(
        &w,
        &a,
        "PL",
        &msg(Kind::Offer { request: r }, "an offer"),
        2_000,
    );
    // An "offer" answering PL's offer rather than the request.
    put(
        &w,
        &a,
        "EE",
        &msg(Kind::Offer { request: o }, "misaddressed"),
        3_000,
    );
    let incremental = a.case_for(&a.get(&r).unwrap().unwrap()).unwrap().unwrap();
    assert_eq!(incremental.view.offers.len(), 1, "{:?}", incremental.view);
    // And the index built from scratch agrees.
    a.rebuild_tracker().unwrap();
    let rebuilt = a.case_for(&a.get(&r).unwrap().unwrap()).unwrap().unwrap();
    assert_eq!(rebuilt.facts, incremental.facts);
}

/// A reader that finds a record by its id finds its case up to date: the
/// tracker is written before the id index (the demo and the agent read the
/// tracker as soon as `lookup` sees a message). The reader spins on each
/// offer's id while another thread archives them.
#[test]
fn a_record_found_by_its_id_is_already_in_its_case() {
    let w = world();
    let dir = tempfile::tempdir().unwrap();
    let a = Archive::open(dir.path(), &w.ids["EE"]).unwrap();
    a.ensure_tracker().unwrap();
    let n = 150u64;
    let requests: Vec<MsgId> = (0..n)
        .map(|i| put(&w, &a, "UA", &request(Priority::High), 1_000 + i))
        .collect();
    let sealed: Vec<_> = requests
        .iter()
        .zip(10_000..)
        .map(|(r, at)| {
            let m = msg(Kind::Offer { request: *r }, "an offer");
            (
                seal(&w.ids["PL"], &w.roster, "loe-immediate", &m, at).unwrap(),
                at,
            )
        })
        .collect();
    let offers: Vec<MsgId> = sealed.iter().map(|(s, _)| s.msg_id()).collect();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for (s, at) in &sealed {
                archive_sealed(&w, &a, "PL", s, *at);
            }
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        for (r, o) in requests.iter().zip(&offers) {
            while a.lookup(o).unwrap().is_none() {
                assert!(std::time::Instant::now() < deadline, "the writer stalled");
                std::hint::spin_loop();
            }
            let case = a.case_for(&a.get(r).unwrap().unwrap()).unwrap().unwrap();
            assert_eq!(case.view.state, CaseState::Pledged, "{:?}", case.view);
        }
    });
}
