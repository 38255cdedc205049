//! The coordination traffic of the `archive` scenario and the request
//! tracker's measurements on it.
//!
//! Per block of ten messages (`b` the block number): a request by P00
//! (line of effort `b % 3`, priority `b % 4`); unless `b % 7 == 6` (a need
//! nobody answers), an offer by P02, and by `b % 5`: nothing more (pledged),
//! P00 accepts (pledged, waiting on P02), P02 reports progress (in
//! progress), P02 delivers and, every other time, P00 closes (fulfilled or
//! closed), or P00 declines the offer (open again). The rest are notes by
//! P00, one in a thousand with a rare word for the text search. The
//! archive is P01's. Every message is signed 1 ms after the previous one,
//! so the senders' order is the generation order.

use std::time::Instant;

use anyhow::Result;
use tallinn_client::archive::{Archive, CaseQuery, CaseScope};
use tallinn_common::envelope::seal;
use tallinn_common::message::{Kind, Loe, Message, MsgId, Priority, State, Tlp};
use tallinn_common::tracker::CaseState;

use crate::load::Setup;

/// Who sends message `i` and what, given the ids sealed in earlier passes
/// (`None` when this pass does not seal `i`).
fn plan(i: usize, pass: u8, ids: &[Option<MsgId>]) -> Option<(usize, Message)> {
    let (b, k) = (i / 10, i % 10);
    let base = b * 10;
    let answered = b % 7 != 6;
    let with = |kind: Kind, tlp: Tlp, subject: String| Message {
        kind,
        ..Message::note(tlp, subject, "x".repeat(1024))
    };
    let id = |j: usize| ids.get(j).copied().flatten();
    let m = match (pass, k) {
        (0, 0) => (
            0,
            with(
                Kind::Request {
                    loe: [Loe::Immediate, Loe::Capability, Loe::Sustainability][b % 3],
                    category: "hardware".into(),
                    priority: [
                        Priority::Low,
                        Priority::Normal,
                        Priority::High,
                        Priority::Critical,
                    ][b % 4],
                },
                Tlp::Amber,
                format!("request {b}"),
            ),
        ),
        (1, 1) if answered => (
            2,
            with(
                Kind::Offer { request: id(base)? },
                Tlp::Amber,
                format!("offer {b}"),
            ),
        ),
        (2, 3) if answered && matches!(b % 5, 1..=3) => {
            (0, status(id(base + 1)?, State::Acknowledged))
        }
        (2, 3) if answered && b % 5 == 4 => (0, status(id(base + 1)?, State::Declined)),
        (2, 4) if answered && matches!(b % 5, 2 | 3) => {
            (2, status(id(base + 1)?, State::InProgress))
        }
        (2, 5) if answered && b % 5 == 3 => (2, status(id(base + 1)?, State::Fulfilled)),
        (2, 6) if answered && b % 5 == 3 && b % 2 == 0 => (0, status(id(base)?, State::Closed)),
        (3, _) if ids.get(i).copied().flatten().is_none() => {
            let subject = if i % 1000 == 7 {
                format!("generator failure report {i}")
            } else {
                format!("status update {i}")
            };
            (0, Message::note(Tlp::Green, subject, "x".repeat(1024)))
        }
        _ => return None,
    };
    Some(m)
}

fn status(about: MsgId, state: State) -> Message {
    Message {
        kind: Kind::Status { about, state },
        ..Message::note(Tlp::Amber, format!("{state:?}"), "x".repeat(1024))
    }
}

/// Seals `n` messages of coordination traffic into `bench` (version 1
/// setup with three participants), in generation order.
///
/// # Errors
/// Sealing failures.
pub fn seal_mix(setup: &Setup, n: usize) -> Result<Vec<Vec<u8>>> {
    let base = tallinn_common::unix_ms(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?,
    )
    .saturating_sub(n as u64 + 60_000);
    let mut ids: Vec<Option<MsgId>> = vec![None; n];
    let mut out: Vec<Option<Vec<u8>>> = vec![None; n];
    // Requests first, then offers (they name a request), then statuses
    // (they name offers), then the notes in between.
    for pass in 0..4u8 {
        let todo: Vec<(usize, usize, Message)> = (0..n)
            .filter_map(|i| plan(i, pass, &ids).map(|(from, m)| (i, from, m)))
            .collect();
        let sealed = std::thread::scope(|s| -> Result<Vec<(usize, MsgId, Vec<u8>)>> {
            let half = todo.len() / 2;
            let (a, b) = todo.split_at(half);
            let work = |part: &[(usize, usize, Message)]| -> Result<Vec<(usize, MsgId, Vec<u8>)>> {
                part.iter()
                    .map(|(i, from, m)| {
                        let e = seal(
                            &setup.ids[*from],
                            &setup.roster,
                            "bench",
                            m,
                            base + *i as u64,
                        )?;
                        Ok((*i, e.msg_id(), e.into_bytes()))
                    })
                    .collect()
            };
            let h = s.spawn(move || work(b));
            let mut first = work(a)?;
            first.extend(
                h.join()
                    .map_err(|_| anyhow::anyhow!("sealing thread panicked"))??,
            );
            Ok(first)
        })?;
        for (i, id, bytes) in sealed {
            ids[i] = Some(id);
            out[i] = Some(bytes);
        }
    }
    Ok(out.into_iter().flatten().collect())
}

/// Runs `f` `runs` times and prints the median and slowest time.
///
/// # Errors
/// The first error of `f`.
pub(crate) fn time<T>(label: &str, runs: usize, mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let mut times = Vec::with_capacity(runs);
    let mut last = None;
    for _ in 0..runs {
        let t = Instant::now();
        last = Some(f()?);
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "  {label}: median {:.2} ms, slowest {:.2} ms ({runs} runs)",
        times[times.len() / 2],
        times[times.len() - 1]
    );
    last.ok_or_else(|| anyhow::anyhow!("no run"))
}

/// The tracker's listings on a filled archive (what `tallinn requests`
/// asks), each timed; prints the case counts found.
///
/// # Errors
/// Archive failures.
pub fn tracker_queries(a: &Archive) -> Result<()> {
    let q = |states: &[CaseState], scope: CaseScope| CaseQuery {
        states: states.to_vec(),
        loe: None,
        priority: None,
        scope,
        unanswered: false,
        limit: 51,
    };
    let runs = 9;
    let rows = time("requests (active cases, first page of 50)", runs, || {
        Ok(a.cases(&q(&[], CaseScope::All))?.len())
    })?;
    println!("    {rows} rows");
    time("requests --state fulfilled,closed", runs, || {
        Ok(a.cases(&q(
            &[CaseState::Fulfilled, CaseState::Closed],
            CaseScope::All,
        ))?
        .len())
    })?;
    time(
        "requests --loe capability --priority critical",
        runs,
        || {
            Ok(a.cases(&CaseQuery {
                loe: Some(Loe::Capability),
                priority: Some(Priority::Critical),
                ..q(&[], CaseScope::All)
            })?
            .len())
        },
    )?;
    time("requests --unanswered", runs, || {
        Ok(a.cases(&CaseQuery {
            unanswered: true,
            ..q(&[], CaseScope::All)
        })?
        .len())
    })?;
    time("requests --waiting-on-me (none)", runs, || {
        Ok(a.cases(&q(&[], CaseScope::WaitingOnMe))?.len())
    })?;
    let all = a.cases(&q(&[], CaseScope::All))?;
    if let Some(c) = all.first() {
        let r = a
            .record(c.index)?
            .ok_or_else(|| anyhow::anyhow!("case record missing"))?;
        time("requests show (one case's history)", runs, || {
            Ok(a.case_for(&r)?.map(|c| c.view.history.len()))
        })?;
    }
    let t = Instant::now();
    let cases = a.rebuild_tracker()?;
    println!(
        "  tracker index built from scratch (an archive from before the tracker): {cases} cases in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
