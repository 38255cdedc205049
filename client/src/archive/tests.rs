//! Tests of the archive: ingest, search, threads, tampering, quarantine.

use super::*;
use tallinn_common::envelope::{seal, UntrustedEnvelope};
use tallinn_common::identity::ParticipantId;
use tallinn_common::message::Message;
use tallinn_common::message::{Kind, Loe, Priority, State};

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

#[test]
fn half_written_records_are_completed_at_open() {
    let (w, dir, a, ids) = filled();
    let head = a.head_hash();
    // What a crash can leave (sled recovers a prefix of the inserts):
    // the last two records exist, but the head still points before them
    // and the msg_id and thread index entries of the last are missing.
    a.write_head(2, &a.record(1).unwrap().unwrap().hash())
        .unwrap();
    a.tree
        .remove(Archive::key(b'm', &[&a.tok("msg", &ids[3].0)]))
        .unwrap();
    a.tree
        .remove(Archive::key(
            b'p',
            &[&a.tok("msg", &ids[2].0), &3u64.to_be_bytes()],
        ))
        .unwrap();
    a.flush().unwrap();
    drop(a);
    let a = Archive::open(dir.path(), &w.ee).unwrap();
    assert_eq!(a.len(), 4, "head advanced over both records");
    assert_eq!(a.head_hash(), head);
    assert_eq!(a.lookup(&ids[3]).unwrap(), Some(3), "msg_id index rebuilt");
    assert_eq!(a.thread(&ids[2]).unwrap().len(), 3, "thread index rebuilt");
    // A redelivery is recognised, so nothing is archived twice.
    let rec = a.record(3).unwrap().unwrap();
    let opened = UntrustedEnvelope::decode(&rec.envelope)
        .unwrap()
        .verify(&w.roster)
        .unwrap()
        .open(&w.ee)
        .unwrap();
    assert_eq!(
        a.insert_received(4, 9, &opened).unwrap(),
        Inserted::Duplicate(3)
    );
}

#[test]
fn insert_dedupe_lookup_and_reopen() {
    let (w, dir, a, ids) = filled();
    assert_eq!(a.len(), 4);
    let rec = a.get(&ids[1]).unwrap().unwrap();
    assert_eq!(rec.message.subject, "Handover");
    assert_eq!(rec.seq, 2);
    // A second delivery of the same envelope is a duplicate.
    let raw = rec.envelope.clone();
    let opened = UntrustedEnvelope::decode(&raw)
        .unwrap()
        .verify(&w.roster)
        .unwrap()
        .open(&w.ee)
        .unwrap();
    assert_eq!(
        a.insert_received(9, 9, &opened).unwrap(),
        Inserted::Duplicate(1)
    );
    let head = a.head_hash();
    drop(a);
    let a = Archive::open(dir.path(), &w.ee).unwrap();
    assert_eq!(a.len(), 4);
    assert_eq!(a.head_hash(), head);
    assert!(a.find(&ids[1].to_hex()[..8]).unwrap().is_some());
    // Another identity cannot open it: the archive secret does not unwrap.
    drop(a);
    assert!(matches!(
        Archive::open(dir.path(), &w.ua),
        Err(ArchiveError::Unreadable(_))
    ));
}

#[test]
fn search_by_every_index_and_text() {
    let (_w, _dir, a, ids) = filled();
    let ch = a
        .search(
            &Filter {
                channel: Some("plenary".into()),
                ..Default::default()
            },
            10,
        )
        .unwrap();
    assert_eq!(
        ch.iter().map(|r| r.msg_id).collect::<Vec<_>>(),
        vec![ids[3], ids[2], ids[0]]
    );
    let from = a
        .search(
            &Filter {
                from: Some("UA".into()),
                ..Default::default()
            },
            2,
        )
        .unwrap();
    assert_eq!(from.len(), 2, "limit respected");
    let kind = a
        .search(
            &Filter {
                kind: Some("request".into()),
                ..Default::default()
            },
            10,
        )
        .unwrap();
    assert_eq!(
        kind.iter().map(|r| r.msg_id).collect::<Vec<_>>(),
        vec![ids[0]]
    );
    let tlp = a
        .search(
            &Filter {
                tlp: Some(Tlp::Amber),
                ..Default::default()
            },
            10,
        )
        .unwrap();
    assert_eq!(tlp.len(), 2);
    let text = a
        .search(
            &Filter {
                text: Some("TEAM deployed".into()),
                ..Default::default()
            },
            10,
        )
        .unwrap();
    assert_eq!(
        text.iter().map(|r| r.msg_id).collect::<Vec<_>>(),
        vec![ids[2]]
    );
    let time = a
        .search(
            &Filter {
                channel: Some("plenary".into()),
                since_ms: Some(5003),
                until_ms: Some(5004),
                ..Default::default()
            },
            10,
        )
        .unwrap();
    assert_eq!(
        time.iter().map(|r| r.msg_id).collect::<Vec<_>>(),
        vec![ids[2]]
    );
    assert!(a
        .search(
            &Filter {
                channel: Some("nowhere".into()),
                ..Default::default()
            },
            10
        )
        .unwrap()
        .is_empty());
}

#[test]
fn a_text_search_over_several_chunks_is_newest_first_and_misses_nothing() {
    // More than two scan chunks, each split between two threads: every
    // hit is found once, newest first, across chunk and half boundaries.
    let w = world();
    let dir = tempfile::tempdir().unwrap();
    let a = Archive::open(dir.path(), &w.ee).unwrap();
    let chunk = super::search::SCAN_CHUNK;
    let n = 2 * chunk + 300;
    // The scan reads [n - chunk, n) first, split at its middle, then down.
    let edges = [
        0,
        n - 1,
        n - chunk,
        n - chunk - 1,
        n - chunk / 2,
        n - chunk / 2 - 1,
    ];
    let hit = |i: u64| i % 97 == 5 || edges.contains(&i);
    let mut expected = Vec::new();
    for i in 0..n {
        let subject = if hit(i) {
            format!("Generator FAILURE {i}")
        } else {
            format!("note {i}")
        };
        let id = deliver(
            &w,
            &a,
            "plenary",
            &Message::note(Tlp::Green, subject, "x"),
            i + 1,
        );
        if hit(i) {
            expected.push(id);
        }
    }
    expected.reverse();
    let text = |limit| {
        a.search(
            &Filter {
                text: Some("generator failure".into()),
                ..Default::default()
            },
            limit,
        )
        .unwrap()
        .iter()
        .map(|r| r.msg_id)
        .collect::<Vec<_>>()
    };
    assert_eq!(text(1000), expected);
    assert_eq!(text(7), expected[..7].to_vec());
}

#[test]
fn thread_view_follows_references() {
    let (_w, _dir, a, ids) = filled();
    let t: Vec<MsgId> = a
        .thread(&ids[3])
        .unwrap()
        .iter()
        .map(|r| r.msg_id)
        .collect();
    assert_eq!(t, vec![ids[0], ids[2], ids[3]]);
    let t: Vec<MsgId> = a
        .thread(&ids[1])
        .unwrap()
        .iter()
        .map(|r| r.msg_id)
        .collect();
    assert_eq!(t, vec![ids[1]]);
}

#[test]
fn verify_detects_edit_delete_swap_and_truncation() {
    let (w, _dir, a, _) = filled();
    let ok = a.verify(&w.roster, &w.ee, true, |_| {}).unwrap();
    assert_eq!(ok.first_error, None);
    assert_eq!(ok.records, 4);

    // Edit one byte of record 1.
    let orig1 = a.raw_record(1).unwrap().unwrap();
    let mut edited = orig1.clone();
    edited[40] ^= 1;
    a.tamper_raw_record(1, Some(&edited)).unwrap();
    let r = a.verify(&w.roster, &w.ee, false, |_| {}).unwrap();
    assert_eq!(r.first_error.as_ref().map(|e| e.0), Some(1), "{r:?}");
    a.tamper_raw_record(1, Some(&orig1)).unwrap();

    // Swap records 1 and 2.
    let orig2 = a.raw_record(2).unwrap().unwrap();
    a.tamper_raw_record(1, Some(&orig2)).unwrap();
    a.tamper_raw_record(2, Some(&orig1)).unwrap();
    let r = a.verify(&w.roster, &w.ee, false, |_| {}).unwrap();
    assert_eq!(r.first_error.as_ref().map(|e| e.0), Some(1), "{r:?}");
    a.tamper_raw_record(1, Some(&orig1)).unwrap();
    a.tamper_raw_record(2, Some(&orig2)).unwrap();
    assert_eq!(
        a.verify(&w.roster, &w.ee, false, |_| {})
            .unwrap()
            .first_error,
        None
    );

    // Delete record 2.
    a.tamper_raw_record(2, None).unwrap();
    let r = a.verify(&w.roster, &w.ee, false, |_| {}).unwrap();
    let (i, why) = r.first_error.unwrap();
    assert_eq!(i, 2);
    assert!(why.contains("missing"), "{why}");
    a.tamper_raw_record(2, Some(&orig2)).unwrap();

    // Delete the last record (truncation).
    let orig3 = a.raw_record(3).unwrap().unwrap();
    a.tamper_raw_record(3, None).unwrap();
    let r = a.verify(&w.roster, &w.ee, false, |_| {}).unwrap();
    assert_eq!(r.first_error.as_ref().map(|e| e.0), Some(3), "{r:?}");
    a.tamper_raw_record(3, Some(&orig3)).unwrap();
    assert_eq!(
        a.verify(&w.roster, &w.ee, true, |_| {})
            .unwrap()
            .first_error,
        None
    );
}

/// A note from UA to plenary, sealed and opened as EE.
fn sealed_note(
    w: &W,
    subject: &str,
    at: u64,
) -> (tallinn_common::envelope::SealedEnvelope, Opened) {
    let s = seal(
        &w.ua,
        &w.roster,
        "plenary",
        &Message::note(Tlp::Clear, subject, "y"),
        at,
    )
    .unwrap();
    let o = UntrustedEnvelope::decode(s.as_bytes())
        .unwrap()
        .verify(&w.roster)
        .unwrap()
        .open(&w.ee)
        .unwrap();
    (s, o)
}

/// Reopens the archive in `dir` after editing its sled tree directly,
/// as someone holding only the files would.
fn tamper_closed(w: &W, dir: &std::path::Path, a: Archive, f: impl FnOnce(&sled::Tree)) -> Archive {
    drop(a);
    {
        let db = tallinn_host::durable::retry_while_locked(|| sled::open(dir)).unwrap();
        f(&db.open_tree("archive").unwrap());
        db.flush().unwrap();
    }
    Archive::open(dir, &w.ee).unwrap()
}

#[test]
fn deleting_tail_records_and_head_is_detected() {
    let (w, dir, a, _) = filled();
    let a = tamper_closed(&w, dir.path(), a, |t| {
        for i in [2u64, 3] {
            let mut k = vec![b'R'];
            k.extend_from_slice(&i.to_be_bytes());
            t.remove(k).unwrap().unwrap();
        }
        t.remove(HEAD_KEY).unwrap().unwrap();
    });
    let r = a.verify(&w.roster, &w.ee, false, |_| {}).unwrap();
    let (_, why) = r.first_error.expect("a deleted head must fail verify");
    assert!(why.contains("head is missing"), "{why}");
    assert!(a.head_problem().is_some());
    // Nothing can extend a chain whose head is gone.
    let (_, o) = sealed_note(&w, "x", 9);
    assert!(matches!(
        a.insert_received(9, 9, &o),
        Err(ArchiveError::HeadInvalid(_))
    ));
}

#[test]
fn a_forged_or_old_format_head_is_refused() {
    let (w, dir, a, _) = filled();
    // A head recomputed by someone without the key: count 2 and the hash
    // of record 1, the tail cut (the v1 head had exactly this form).
    let h1 = a.record(1).unwrap().unwrap().hash();
    let a = tamper_closed(&w, dir.path(), a, |t| {
        for i in [2u64, 3] {
            let mut k = vec![b'R'];
            k.extend_from_slice(&i.to_be_bytes());
            t.remove(k).unwrap();
        }
        let mut v = 2u64.to_be_bytes().to_vec();
        v.extend_from_slice(&h1);
        t.insert(HEAD_KEY, v.clone()).unwrap();
    });
    let (_, why) = a
        .verify(&w.roster, &w.ee, false, |_| {})
        .unwrap()
        .first_error
        .unwrap();
    assert!(why.contains("head has 40 bytes"), "{why}");
    let a = tamper_closed(&w, dir.path(), a, |t| {
        let mut v = 2u64.to_be_bytes().to_vec();
        v.extend_from_slice(&h1);
        v.extend_from_slice(&[0u8; 32]);
        t.insert(HEAD_KEY, v).unwrap();
    });
    let (_, why) = a
        .verify(&w.roster, &w.ee, false, |_| {})
        .unwrap()
        .first_error
        .unwrap();
    assert!(why.contains("not authenticated"), "{why}");
}

#[test]
fn deleting_only_the_last_record_is_detected() {
    let (w, dir, a, _) = filled();
    let a = tamper_closed(&w, dir.path(), a, |t| {
        let mut k = vec![b'R'];
        k.extend_from_slice(&3u64.to_be_bytes());
        t.remove(k).unwrap().unwrap();
    });
    let (i, why) = a
        .verify(&w.roster, &w.ee, false, |_| {})
        .unwrap()
        .first_error
        .unwrap();
    assert_eq!(i, 3);
    assert!(why.contains("deleted at the end"), "{why}");
}

#[test]
fn a_deleted_dedupe_key_shows_as_duplicate_msg_id() {
    let (w, dir, a, _) = filled();
    let (s, o) = sealed_note(&w, "again", 7);
    assert_eq!(a.insert_received(5, 5005, &o).unwrap(), Inserted::New(4));
    a.flush().unwrap();
    let tok = a.tok("msg", &s.msg_id().0);
    let a = tamper_closed(&w, dir.path(), a, |t| {
        t.remove(Archive::key(b'm', &[&tok])).unwrap().unwrap();
    });
    // The relay redelivers it (at-least-once): archived a second time.
    assert_eq!(a.insert_received(6, 5006, &o).unwrap(), Inserted::New(5));
    let (i, why) = a
        .verify(&w.roster, &w.ee, false, |_| {})
        .unwrap()
        .first_error
        .unwrap();
    assert_eq!(i, 5);
    assert!(why.contains("duplicate msg_id"), "{why}");
}

#[test]
fn a_fresh_archive_has_an_authenticated_head_on_disk() {
    let w = world();
    let dir = tempfile::tempdir().unwrap();
    drop(Archive::open(dir.path(), &w.ee).unwrap());
    let db = tallinn_host::durable::retry_while_locked(|| sled::open(dir.path())).unwrap();
    let v = db
        .open_tree("archive")
        .unwrap()
        .get(HEAD_KEY)
        .unwrap()
        .unwrap();
    assert_eq!(v.len(), HEAD_LEN);
    drop(db);
    let a = Archive::open(dir.path(), &w.ee).unwrap();
    assert!(a.head_problem().is_none());
    // Another identity's key file does not even open it.
    drop(a);
    assert!(Archive::open(dir.path(), &w.ua).is_err());
}

#[test]
fn files_hold_no_plaintext() {
    let (_w, dir, a, _) = filled();
    a.flush().unwrap();
    drop(a);
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            let bytes = std::fs::read(&p).unwrap();
            for needle in ["Need DFIR team", "Handover", "front-office", "plenary"] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                    "{needle} in {}",
                    p.display()
                );
            }
        }
    }
}

#[test]
fn quarantine_round_trip() {
    let (_w, _dir, a, _) = filled();
    let q = Quarantined {
        seq: 7,
        received_at_ms: 8,
        reason: "bad signature".into(),
        claimed_sender: Some("UA".into()),
        claimed_channel: None,
        envelope: vec![1, 2, 3],
    };
    assert_eq!(a.quarantine(&q).unwrap(), 0);
    assert_eq!(a.quarantine(&q).unwrap(), 1);
    assert_eq!(a.quarantined().unwrap(), vec![q.clone(), q]);
    assert_eq!(a.len(), 4, "quarantine is not in the archive");
}

#[test]
fn quarantine_is_bounded_evicting_oldest_first() {
    let (_w, _dir, mut a, _) = filled();
    let q = |seq: u64, len: usize| Quarantined {
        seq,
        received_at_ms: 0,
        reason: "bad signature".into(),
        claimed_sender: None,
        claimed_channel: None,
        envelope: vec![0; len],
    };
    // By count: 3 entries kept.
    a.set_quarantine_limits(3, u64::MAX);
    for seq in 0..10 {
        a.quarantine(&q(seq, 10)).unwrap();
    }
    let kept: Vec<u64> = a.quarantined().unwrap().iter().map(|q| q.seq).collect();
    assert_eq!(kept, vec![7, 8, 9]);
    let t = a.quarantine_totals().unwrap();
    assert_eq!((t.entries, t.evicted), (3, 7));
    // By bytes: two 1000-byte entries fit in 2500 bytes (sealing adds 40).
    a.set_quarantine_limits(1000, 2500);
    for seq in 10..14 {
        a.quarantine(&q(seq, 1000)).unwrap();
    }
    let kept: Vec<u64> = a.quarantined().unwrap().iter().map(|q| q.seq).collect();
    assert_eq!(kept, vec![12, 13]);
    let t = a.quarantine_totals().unwrap();
    assert!(t.bytes <= 2500, "{t:?}");
    assert_eq!((t.entries, t.evicted), (2, 12));
    assert_eq!(a.stats().unwrap().quarantine_evicted, 12);
}

/// Issue 11: the archive secret is wrapped under the key file, so a
/// re-keyed device re-wraps it and still opens and verifies everything;
/// the old key file no longer opens it; a crash between the steps leaves an
/// archive the key file in place opens.
#[test]
fn a_re_keyed_device_still_opens_and_verifies_its_whole_archive() {
    let (w, dir, a, ids) = filled();
    let next = Identity::generate(ParticipantId::new("EE").unwrap());
    a.prepare_rewrap(&next).unwrap();
    // Crash here: both key files open it (the new one finishes the step).
    drop(a);
    let old = Archive::open(dir.path(), &w.ee).unwrap();
    assert_eq!(old.len(), 4);
    drop(old);
    let a = Archive::open(dir.path(), &next).unwrap();
    assert_eq!(a.len(), 4);
    for id in &ids {
        assert!(a.get(id).unwrap().is_some());
    }
    let report = a.verify(&w.roster, &next, false, |_| {}).unwrap();
    assert_eq!(report.first_error, None);
    drop(a);
    // Promoted: the old key file no longer opens the archive.
    let err = Archive::open(dir.path(), &w.ee).err().expect("refused");
    assert!(err.to_string().contains("another key file"), "{err}");
    let a = Archive::open(dir.path(), &next).unwrap();
    a.commit_rewrap().unwrap();
    assert_eq!(a.len(), 4);
}

/// An archive written before archive secrets existed keeps its keys: its
/// secret is the key file's material, wrapped at first open.
#[test]
fn an_archive_from_before_the_wrapped_secret_keeps_its_keys() {
    let w = world();
    let dir = tempfile::tempdir().unwrap();
    {
        // The version-1 layout: a head keyed directly from the key file.
        let db = ArchiveDb::open(dir.path()).unwrap();
        let tree = db.open_tree("archive").unwrap();
        let head_key = w.ee.derive_storage_key(b"tallinn/1 archive head");
        let mut hv = Vec::new();
        hv.extend_from_slice(&0u64.to_be_bytes());
        hv.extend_from_slice(&[0u8; 32]);
        hv.extend_from_slice(&crypto::head_tag(&head_key, 0, &[0; 32]));
        tree.insert(keys::HEAD_KEY, hv).unwrap();
        db.flush().unwrap();
    }
    let a = Archive::open(dir.path(), &w.ee).unwrap();
    assert!(a.head_problem().is_none(), "{:?}", a.head_problem());
    deliver(
        &w,
        &a,
        "plenary",
        &Message::note(Tlp::Green, "after", ""),
        1,
    );
    assert_eq!(
        a.storage_key(b"tallinn/1 archive").as_slice(),
        w.ee.derive_storage_key(b"tallinn/1 archive").as_slice(),
        "the same keys as version 1"
    );
}

#[test]
fn a_thread_is_followed_through_a_redacted_record_and_a_hold_on_it_keeps_the_rest() {
    let (_w, _dir, a, ids) = filled();
    let (r, n, s, t) = (ids[0], ids[1], ids[2], ids[3]);
    // The middle of r -> s -> t is redacted first (an earlier retention).
    let middle = a.get(&s).unwrap().unwrap();
    a.redact(&middle, "test", 10_000).unwrap();
    a.flush().unwrap();
    let thread: Vec<MsgId> = a.thread(&r).unwrap().iter().map(|x| x.msg_id).collect();
    assert_eq!(thread, vec![r, t], "the answer below the redacted record");
    // A hold on the thread, then a retention of a day: everything here is
    // from 1970, so all but the held thread goes.
    a.add_hold(HoldScope::Thread(r), "case 9", 10_000).unwrap();
    let policy = Retention {
        days: Some(1.0),
        by_channel: Default::default(),
    };
    let now = 100 * 86_400_000;
    let report = a.apply_retention(&policy, now).unwrap();
    assert_eq!(
        report,
        RetentionReport {
            redacted: 1,
            held: 2
        }
    );
    assert!(
        a.get(&n).unwrap().is_none(),
        "the unrelated note is redacted"
    );
    assert!(a.get(&t).unwrap().is_some(), "the answer below is held");
    assert!(a.redacted(1).unwrap().is_some());
    let roster = _w.roster.clone();
    let v = a.verify(&roster, &_w.ee, true, |_| {}).unwrap();
    assert!(v.first_error.is_none(), "{v:?}");
}

#[test]
fn a_relay_cannot_get_a_record_redacted_early_by_backdating_its_delivery() {
    let w = world();
    let dir = tempfile::tempdir().unwrap();
    let a = Archive::open(dir.path(), &w.ee).unwrap();
    let now = 400 * 86_400_000;
    let s = seal(
        &w.ua,
        &w.roster,
        "plenary",
        &Message::note(Tlp::Green, "fresh", "x"),
        now,
    )
    .unwrap();
    let opened = UntrustedEnvelope::decode(s.as_bytes())
        .unwrap()
        .verify(&w.roster)
        .unwrap()
        .open(&w.ee)
        .unwrap();
    // The relay claims it received it at the epoch.
    a.insert_received(1, 0, &opened).unwrap();
    a.flush().unwrap();
    let policy = Retention {
        days: Some(30.0),
        by_channel: Default::default(),
    };
    let report = a.apply_retention(&policy, now + 1000).unwrap();
    assert_eq!(
        report.redacted, 0,
        "the sender's signed time says it is fresh"
    );
    assert!(a.get(&s.msg_id()).unwrap().is_some());
}

/// A TLP violation is flagged with its record, not after it (a reader or a
/// crash never sees the record without its flag), and a flag a crash left
/// for a record that never got its index does not stick to the next one.
#[test]
fn a_tlp_flag_is_written_with_its_record_and_a_stale_one_is_cleared() {
    let w = world();
    let dir = tempfile::tempdir().unwrap();
    let a = Archive::open(dir.path(), &w.ee).unwrap();
    let open = |m: &Message, at: u64| {
        let s = seal(&w.ua, &w.roster, "plenary", m, at).unwrap();
        UntrustedEnvelope::decode(s.as_bytes())
            .unwrap()
            .verify(&w.roster)
            .unwrap()
            .open(&w.ee)
            .unwrap()
    };
    // A crash after the flag of a RED record at index 0, before the record:
    // nothing shows it, and the next record's insert clears it.
    a.write_tlp_flag(0, Tlp::Red, Some(Tlp::Amber)).unwrap();
    assert!(a
        .tree
        .get(Archive::key(b'Y', &[&0u64.to_be_bytes()]))
        .unwrap()
        .is_some());
    assert_eq!(a.tlp_violation(0).unwrap(), None);
    assert_eq!(a.stats().unwrap().tlp_violations, 0);
    let green = open(&Message::note(Tlp::Green, "agenda", "at ten"), 1_000);
    let (i, r) = a
        .insert_received_record(1, 1_001, &green, Some(Tlp::Amber))
        .unwrap();
    assert_eq!(i, Inserted::New(0));
    assert!(r.is_some());
    assert_eq!(a.tlp_violation(0).unwrap(), None, "the stale flag is gone");
    let red = open(&Message::note(Tlp::Red, "names", "of the team"), 2_000);
    let (i, _) = a
        .insert_received_record(2, 2_001, &red, Some(Tlp::Amber))
        .unwrap();
    assert_eq!(i, Inserted::New(1));
    assert_eq!(a.tlp_violation(1).unwrap(), Some((Tlp::Red, Tlp::Amber)));
    // A redelivery changes nothing.
    let (i, _) = a
        .insert_received_record(3, 3_001, &red, Some(Tlp::Amber))
        .unwrap();
    assert_eq!(i, Inserted::Duplicate(1));
    assert_eq!(a.stats().unwrap().tlp_violations, 1);
    // What a crash after the record can leave (head behind it) keeps the flag.
    a.write_head(1, &a.record(0).unwrap().unwrap().hash())
        .unwrap();
    a.flush().unwrap();
    drop(a);
    let a = Archive::open(dir.path(), &w.ee).unwrap();
    assert_eq!(a.len(), 2);
    assert_eq!(a.tlp_violation(1).unwrap(), Some((Tlp::Red, Tlp::Amber)));
    // A crash that left a flag past the last record: not counted, and gone
    // once the archive is opened again.
    let stale = Archive::key(b'Y', &[&2u64.to_be_bytes()]);
    a.write_tlp_flag(2, Tlp::Red, Some(Tlp::Amber)).unwrap();
    assert_eq!(a.stats().unwrap().tlp_violations, 1);
    a.flush().unwrap();
    drop(a);
    let a = Archive::open(dir.path(), &w.ee).unwrap();
    assert_eq!(a.tree.get(&stale).unwrap(), None);
    assert_eq!(a.stats().unwrap().tlp_violations, 1);
    let report = a.verify(&w.roster, &w.ee, true, |_| {}).unwrap();
    assert_eq!(report.first_error, None);
    assert_eq!(report.records, 2);
}
