//! Tests of the archive: ingest, search, threads, tampering, quarantine.

use super::*;
use tallinn_common::envelope::{seal, UntrustedEnvelope};
use tallinn_common::identity::ParticipantId;
use tallinn_common::message::Message;
use tallinn_common::message::{Kind, Loe, Priority, State};

mod keeping;
mod reading;
mod tampering;

struct W {
    roster: Roster,
    ua: Identity,
    ee: Identity,
}

fn world() -> W {
    let ua = Identity::generate(ParticipantId::new("UA").unwrap());
    let ee = Identity::generate(ParticipantId::new("EE").unwrap());
    let text = format!(
        "{}{}[[channel]]\nid = \"front-office\"\nmembers = [\"UA\", \"EE\"]\n[[channel]]\nid = \"plenary\"\nmembers = [\"*\"]\n",
        ua.roster_entry("Ukraine", "member"),
        ee.roster_entry("Estonia", "member"),
    );
    W {
        roster: Roster::parse(&text).unwrap(),
        ua,
        ee,
    }
}

fn deliver(w: &W, a: &Archive, channel: &str, m: &Message, seq: u64) -> MsgId {
    let s = seal(&w.ua, &w.roster, channel, m, 1000 + seq).unwrap();
    let opened = UntrustedEnvelope::decode(s.as_bytes())
        .unwrap()
        .verify(&w.roster)
        .unwrap()
        .open(&w.ee)
        .unwrap();
    assert_eq!(
        a.insert_received(seq, 5000 + seq, &opened).unwrap(),
        Inserted::New(a.len() - 1)
    );
    s.msg_id()
}

fn filled() -> (W, tempfile::TempDir, Archive, Vec<MsgId>) {
    let w = world();
    let dir = tempfile::tempdir().unwrap();
    let a = Archive::open(dir.path(), &w.ee).unwrap();
    let req = Message {
        kind: Kind::Request {
            loe: Loe::Immediate,
            category: "dfir".into(),
            priority: Priority::High,
        },
        ..Message::note(Tlp::Amber, "Need DFIR team", "energy sector")
    };
    let r = deliver(&w, &a, "plenary", &req, 1);
    let n = deliver(
        &w,
        &a,
        "front-office",
        &Message::note(Tlp::Green, "Handover", "at nine"),
        2,
    );
    let status = Message {
        kind: Kind::Status {
            about: r,
            state: State::Fulfilled,
        },
        ..Message::note(Tlp::Amber, "Done", "team deployed")
    };
    let s = deliver(&w, &a, "plenary", &status, 3);
    let reply = Message {
        reply_to: Some(s),
        ..Message::note(Tlp::Clear, "Thanks", "much appreciated")
    };
    let t = deliver(&w, &a, "plenary", &reply, 4);
    a.flush().unwrap();
    (w, dir, a, vec![r, n, s, t])
}
