//! Tests of the sled store: appends, dedupe, inboxes, GC, replay, fail-stop.

use super::keys::log_key;
use super::wal::{Wal, WalRecord};
use super::*;

fn entry(recipients: &[&str], at: u64) -> LogEntry {
    LogEntry {
        received_at_ms: at,
        sender: "UA".into(),
        recipients: recipients.iter().map(|s| s.to_string()).collect(),
        envelope: vec![1, 2, 3],
    }
}

#[test]
fn append_dedupe_inbox_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(
            s.append(MsgId([1; 16]), &entry(&["EE", "PL"], 10)).unwrap(),
            Appended::New(1)
        );
        assert_eq!(
            s.append(MsgId([2; 16]), &entry(&["EE"], 11)).unwrap(),
            Appended::New(2)
        );
        assert_eq!(
            s.append(MsgId([1; 16]), &entry(&["EE", "PL"], 12)).unwrap(),
            Appended::Duplicate(1)
        );
        assert_eq!(s.seen(&MsgId([2; 16])).unwrap(), Some(2));
        s.flush().unwrap();
    }
    let s = SledStore::open(dir.path()).unwrap();
    let ee: Vec<u64> = s
        .inbox_after("EE", "laptop", 0, 10)
        .unwrap()
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(ee, vec![1, 2]);
    assert_eq!(s.inbox_after("EE", "laptop", 1, 10).unwrap().len(), 1);
    assert_eq!(s.inbox_after("PL", "laptop", 0, 10).unwrap().len(), 1);
    assert_eq!(s.pending("EE", "laptop", 0).unwrap(), 2);
    // Prefix isolation: "E" must not see "EE"'s inbox.
    assert_eq!(s.inbox_after("E", "laptop", 0, 10).unwrap().len(), 0);
    // Seq numbers continue after reopen.
    assert_eq!(
        s.append(MsgId([3; 16]), &entry(&["EE"], 13)).unwrap(),
        Appended::New(3)
    );
}

#[test]
fn gc_removes_only_what_every_known_device_acked() {
    let dir = tempfile::tempdir().unwrap();
    let s = SledStore::open(dir.path()).unwrap();
    let now = 1_000_000;
    s.append(MsgId([1; 16]), &entry(&["EE", "GB"], now))
        .unwrap();
    s.append(MsgId([2; 16]), &entry(&["GB"], now)).unwrap();
    s.touch_device("GB", "front-office", now).unwrap();
    s.touch_device("GB", "back-office", now).unwrap();
    s.ack("GB", "front-office", 2, now).unwrap();
    let st = s.gc(now, 100).unwrap();
    assert_eq!(st.acked_removed, 0, "back-office has not acked");
    s.ack("GB", "back-office", 2, now).unwrap();
    let st = s.gc(now, 100).unwrap();
    assert_eq!(st.acked_removed, 1, "seq 2 done; seq 1 still waits for EE");
    // GB's devices are past both; a new GB device would still get seq 1,
    // which stays stored until EE acknowledges it.
    assert_eq!(s.inbox_after("GB", "laptop", 2, 10).unwrap().len(), 0);
    assert_eq!(s.inbox_after("GB", "laptop", 0, 10).unwrap().len(), 1);
    assert_eq!(s.inbox_after("EE", "laptop", 0, 10).unwrap().len(), 1);
    let depth = s.stats().unwrap().inbox_depth;
    assert_eq!(depth, vec![("EE".to_string(), 1)], "GB has nothing pending");
    // EE never connected: kept until retention, then expired.
    let st = s.gc(now + 1000, 100).unwrap();
    assert_eq!(st.expired, 1);
    assert_eq!(st.devices_forgotten, 2);
    assert_eq!(st.seen_pruned, 2);
    assert_eq!(s.stats().unwrap().messages, 0);
}

#[test]
fn commit_log_is_replayed_into_sled_once() {
    let dir = tempfile::tempdir().unwrap();
    // A crash after the commit log's fdatasync but before any sled
    // checkpoint: the records exist only in the log.
    // One record in each of the two files (a checkpoint was switching).
    for seq in [1u64, 2] {
        let file = WAL_FILES[seq as usize - 1];
        let (mut wal, _) = Wal::open(&dir.path().join(file)).unwrap();
        wal.push(&WalRecord {
            seq,
            msg_id: MsgId([seq as u8; 16]),
            entry: entry(&["EE"], 10 + seq),
        });
        wal.commit().unwrap();
    }
    let s = SledStore::open(dir.path()).unwrap();
    let got: Vec<u64> = s
        .inbox_after("EE", "laptop", 0, 10)
        .unwrap()
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(got, vec![1, 2]);
    assert_eq!(s.seen(&MsgId([2; 16])).unwrap(), Some(2));
    assert_eq!(s.last_seq(), 2);
    // Replay checkpointed sled and emptied the log.
    assert_eq!(
        std::fs::metadata(dir.path().join(WAL_FILES[0]))
            .unwrap()
            .len()
            + std::fs::metadata(dir.path().join(WAL_FILES[1]))
                .unwrap()
                .len(),
        0
    );
    assert_eq!(
        s.append(MsgId([3; 16]), &entry(&["EE"], 13)).unwrap(),
        Appended::New(3)
    );
    s.commit().unwrap();
    drop(s);
    // Records sled already has are skipped, not stored twice.
    let s = SledStore::open(dir.path()).unwrap();
    assert_eq!(s.inbox_after("EE", "laptop", 0, 10).unwrap().len(), 3);
    assert_eq!(
        s.append(MsgId([1; 16]), &entry(&["EE"], 14)).unwrap(),
        Appended::Duplicate(1)
    );
}

#[test]
fn checkpoint_switches_files_and_keeps_queued_records() {
    let dir = tempfile::tempdir().unwrap();
    let len = |i: usize| {
        std::fs::metadata(dir.path().join(WAL_FILES[i]))
            .unwrap()
            .len()
    };
    let s = SledStore::open(dir.path()).unwrap();
    s.append(MsgId([1; 16]), &entry(&["EE"], 1)).unwrap();
    s.commit().unwrap();
    assert!(len(0) > 0 && len(1) == 0);
    // Queued, not yet committed, when the checkpoint switches files.
    s.append(MsgId([2; 16]), &entry(&["EE"], 2)).unwrap();
    s.inner.checkpoint().unwrap();
    assert_eq!(len(0), 0, "retired file emptied after sled was flushed");
    s.commit().unwrap();
    assert!(len(1) > 0, "the queued record went to the new file");
    s.flush().unwrap();
    assert_eq!((len(0), len(1)), (0, 0));
    drop(s);
    let s = SledStore::open(dir.path()).unwrap();
    assert_eq!(s.inbox_after("EE", "laptop", 0, 10).unwrap().len(), 2);
    assert_eq!(s.last_seq(), 2);
}

#[test]
fn torn_commit_log_keeps_the_intact_records() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut wal, _) = Wal::open(&dir.path().join(WAL_FILES[0])).unwrap();
        wal.push(&WalRecord {
            seq: 1,
            msg_id: MsgId([1; 16]),
            entry: entry(&["EE"], 10),
        });
        wal.commit().unwrap();
    }
    let path = dir.path().join(WAL_FILES[0]);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(&[9, 0, 0]); // half a header
    std::fs::write(&path, &bytes).unwrap();
    let s = SledStore::open(dir.path()).unwrap();
    assert_eq!(s.inbox_after("EE", "laptop", 0, 10).unwrap().len(), 1);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
}

#[test]
fn devices_are_listed_per_participant() {
    let dir = tempfile::tempdir().unwrap();
    let s = SledStore::open(dir.path()).unwrap();
    s.touch_device("GB", "front-office", 1).unwrap();
    s.touch_device("GB", "back-office", 1).unwrap();
    s.touch_device("GBX", "other", 1).unwrap();
    let mut d = s.devices("GB").unwrap();
    d.sort();
    assert_eq!(d, vec!["back-office", "front-office"]);
    assert!(s.devices("NL").unwrap().is_empty());
}

#[test]
fn cursors_never_go_backwards() {
    let dir = tempfile::tempdir().unwrap();
    let s = SledStore::open(dir.path()).unwrap();
    s.ack("EE", "d", 5, 1).unwrap();
    s.ack("EE", "d", 3, 2).unwrap();
    assert_eq!(s.touch_device("EE", "d", 3).unwrap(), 5);
    assert_eq!(s.touch_device("EE", "new", 3).unwrap(), 0);
}

/// Item 3: the stored next seq is written only at checkpoints. If the
/// log entries above it were collected (everyone acked them) and sled
/// persisted that before the crash, the log no longer shows those seqs;
/// the commit log and the cursors still do, and replay must honour them.
#[test]
fn replay_never_reuses_a_seq_whose_entry_was_collected() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SledStore::open_with(dir.path(), None).unwrap();
        s.touch_device("EE", "d", 10).unwrap();
        for i in 1..=3u8 {
            s.append(MsgId([i; 16]), &entry(&["EE"], 10)).unwrap();
        }
        s.flush().unwrap(); // checkpoint: stored next seq = 4
        for i in 4..=5u8 {
            s.append(MsgId([i; 16]), &entry(&["EE"], 10)).unwrap();
        }
        s.commit().unwrap(); // 4 and 5 are in the commit log only
        s.ack("EE", "d", 5, 11).unwrap();
        // What a GC pass does before its own checkpoint, and what sled's
        // background flusher may persist before a crash.
        for seq in 1..=5 {
            s.inner.tree.remove(log_key(seq)).unwrap();
        }
        s.inner.db.flush().unwrap();
        // Crash: no checkpoint.
    }
    let s = SledStore::open_with(dir.path(), None).unwrap();
    assert_eq!(s.last_seq(), 5);
    assert_eq!(
        s.append(MsgId([6; 16]), &entry(&["EE"], 12)).unwrap(),
        Appended::New(6),
        "seqs 4 and 5 were handed out and acknowledged"
    );
    let after_cursor: Vec<u64> = s
        .inbox_after("EE", "laptop", 5, 10)
        .unwrap()
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(after_cursor, vec![6], "the device still receives it");
    s.commit().unwrap();
    drop(s);
    // The replay persisted the corrected next seq: a second restart
    // without any commit-log records keeps it.
    let s = SledStore::open_with(dir.path(), None).unwrap();
    assert!(s.last_seq() >= 6);
}

/// Item 2: after a failed commit the store refuses every write, never
/// retries the sync (even once the disk works again), never truncates
/// the commit log, and reports itself unhealthy; a restart replays.
#[test]
fn a_failed_commit_stops_every_later_write() {
    let dir = tempfile::tempdir().unwrap();
    let wal_path = dir.path().join(WAL_FILES[0]);
    {
        let s = SledStore::open_with(dir.path(), None).unwrap();
        s.append(MsgId([1; 16]), &entry(&["EE"], 10)).unwrap();
        s.commit().unwrap();
        s.append(MsgId([2; 16]), &entry(&["EE"], 10)).unwrap();
        s.inner.state.lock().unwrap().wals[0].break_file_for_test(&wal_path);
        assert!(s.commit().is_err());
        assert!(s.failure().is_some());
        assert!(!s.healthy());
        s.inner.state.lock().unwrap().wals[0].repair_file_for_test(&wal_path);
        assert!(matches!(s.commit(), Err(StoreError::Failed(_))));
        assert!(matches!(
            s.append(MsgId([3; 16]), &entry(&["EE"], 10)),
            Err(StoreError::Failed(_))
        ));
        assert!(matches!(s.flush(), Err(StoreError::Failed(_))));
        assert!(matches!(s.gc(20, 1), Err(StoreError::Failed(_))));
        assert!(
            std::fs::metadata(&wal_path).unwrap().len() > 0,
            "the commit log is kept for replay"
        );
    }
    let s = SledStore::open_with(dir.path(), None).unwrap();
    assert!(s.healthy());
    assert_eq!(s.seen(&MsgId([1; 16])).unwrap(), Some(1));
    let next = s.append(MsgId([3; 16]), &entry(&["EE"], 10)).unwrap();
    assert!(matches!(next, Appended::New(n) if n >= 2), "{next:?}");
}

/// Item 14: starting a session (`pending`), backlog reads and metrics use
/// the in-memory index; only opening and GC passes scan the log.
#[test]
fn sessions_backlogs_and_metrics_never_scan_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let s = SledStore::open_with(dir.path(), None).unwrap();
    assert_eq!(s.log_scans(), 1, "the scan at open builds the index");
    for i in 0..500u16 {
        let to: &[&str] = if i % 50 == 0 { &["EE", "PL"] } else { &["PL"] };
        let mut id = [0u8; 16];
        id[..2].copy_from_slice(&i.to_be_bytes());
        s.append(MsgId(id), &entry(to, 10)).unwrap();
    }
    s.commit().unwrap();
    assert_eq!(s.pending("EE", "laptop", 0).unwrap(), 10);
    assert_eq!(s.pending("EE", "laptop", 51).unwrap(), 8);
    let backlog: Vec<u64> = s
        .inbox_after("EE", "laptop", 0, 3)
        .unwrap()
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(backlog, vec![1, 51, 101]);
    let stats = s.stats().unwrap();
    assert_eq!(stats.messages, 500);
    assert_eq!(
        stats.inbox_depth,
        vec![("EE".to_string(), 10), ("PL".to_string(), 500)]
    );
    let stored = s.stored_bytes("UA");
    assert_eq!(stored, stats.envelope_bytes);
    assert_eq!(s.log_scans(), 1, "no scan for sessions, backlogs, metrics");
    // GC scans; what it removes leaves the index and the quota measure.
    s.touch_device("EE", "d", 10).unwrap();
    s.touch_device("PL", "d", 10).unwrap();
    s.ack("EE", "d", 500, 10).unwrap();
    s.ack("PL", "d", 250, 10).unwrap();
    let gc = s.gc(20, 1_000_000).unwrap();
    assert_eq!(gc.acked_removed, 250);
    assert_eq!(s.log_scans(), 2);
    assert_eq!(s.pending("EE", "laptop", 0).unwrap(), 5);
    assert_eq!(s.stored_bytes("UA"), stored / 2);
    drop(s);
    // Rebuilt at open from what is stored.
    let s = SledStore::open_with(dir.path(), None).unwrap();
    assert_eq!(s.pending("PL", "laptop", 0).unwrap(), 250);
    assert_eq!(s.stored_bytes("UA"), stored / 2);
}

#[test]
fn device_recipients_reach_only_their_device_and_are_collected_per_device() {
    let dir = tempfile::tempdir().unwrap();
    let s = SledStore::open(dir.path()).unwrap();
    let now = 1_000_000;
    // A version-2 message to GB's two devices, one to its back office only,
    // and a version-1 message to every GB device.
    s.append(MsgId([1; 16]), &entry(&["GB/front", "GB/back"], now))
        .unwrap();
    s.append(MsgId([2; 16]), &entry(&["GB/back"], now)).unwrap();
    s.append(MsgId([3; 16]), &entry(&["GB"], now)).unwrap();
    let seqs = |d: &str| -> Vec<u64> {
        s.inbox_after("GB", d, 0, 10)
            .unwrap()
            .iter()
            .map(|m| m.seq)
            .collect()
    };
    assert_eq!(seqs("front"), vec![1, 3]);
    assert_eq!(seqs("back"), vec![1, 2, 3]);
    assert_eq!(seqs("new-laptop"), vec![3]);
    assert_eq!(s.pending("GB", "front", 0).unwrap(), 2);
    s.touch_device("GB", "front", now).unwrap();
    s.touch_device("GB", "back", now).unwrap();
    s.ack("GB", "back", 2, now).unwrap();
    s.ack("GB", "front", 1, now).unwrap();
    // Seq 1: both devices acked; seq 2: its one device acked; seq 3 waits
    // for the front office.
    assert_eq!(s.gc(now, 100).unwrap().acked_removed, 2);
    assert_eq!(seqs("back"), vec![3]);
    s.ack("GB", "front", 3, now).unwrap();
    s.ack("GB", "back", 3, now).unwrap();
    assert_eq!(s.gc(now, 100).unwrap().acked_removed, 1);
    // A device recipient that never connected keeps its message until
    // retention.
    s.append(MsgId([4; 16]), &entry(&["PL/laptop"], now))
        .unwrap();
    assert_eq!(s.gc(now, 100).unwrap().acked_removed, 0);
    assert_eq!(s.gc(now + 1000, 100).unwrap().expired, 1);
}

#[test]
fn the_roster_log_is_durable_and_read_back_in_order() {
    use tallinn_common::roster::{Approval, EntryBody, EntryKind};
    let dir = tempfile::tempdir().unwrap();
    let e = |i: u64| {
        let mut e = SignedEntry::new(&EntryBody {
            index: i,
            prev_hash: [i as u8; 32],
            kind: EntryKind::Devices {
                participant: "UA".into(),
                devices: vec![],
            },
        });
        e.add_approval(Approval {
            participant: "UA".into(),
            signature: [i as u8; 64],
        });
        e
    };
    {
        let s = SledStore::open(dir.path()).unwrap();
        assert!(s.roster_log().unwrap().is_empty());
        s.append_roster_entry(0, &e(0), 10).unwrap();
        s.append_roster_entry(1, &e(1), 20).unwrap();
        // No flush: append_roster_entry syncs on its own. A copy of the
        // files taken now is what a power cut leaves.
        let copy = tempfile::tempdir().unwrap();
        for f in std::fs::read_dir(dir.path()).unwrap() {
            let f = f.unwrap();
            if f.file_type().unwrap().is_file() {
                std::fs::copy(f.path(), copy.path().join(f.file_name())).unwrap();
            } else {
                let sub = copy.path().join(f.file_name());
                std::fs::create_dir_all(&sub).unwrap();
                for g in std::fs::read_dir(f.path()).unwrap() {
                    let g = g.unwrap();
                    if g.file_type().unwrap().is_file() {
                        std::fs::copy(g.path(), sub.join(g.file_name())).unwrap();
                    }
                }
            }
        }
        drop(s);
        let crashed = SledStore::open(copy.path()).unwrap();
        assert_eq!(crashed.roster_log().unwrap(), vec![(e(0), 10), (e(1), 20)]);
    }
    let s = SledStore::open(dir.path()).unwrap();
    assert_eq!(s.roster_log().unwrap(), vec![(e(0), 10), (e(1), 20)]);
}
