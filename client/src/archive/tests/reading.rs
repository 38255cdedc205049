//! Reading: insert and dedupe, every index and the text search, threads.

use super::*;

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
