//! Tampering: edits, deletions, swaps, truncation, forged heads, and no
//! plaintext in the files.

use super::*;

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
