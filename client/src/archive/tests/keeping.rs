//! Keeping: crash repair at open, the quarantine, re-keyed devices, older
//! formats, redaction and holds, TLP flags.

use super::*;

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
