//! The demo's coordination scenes (issue 14), on the version-2 deployment
//! after the year of changes (the chair is Poland, Lithuania was admitted):
//!
//! 1. the request tracker: Ukraine files two needs and Poland pledges to
//!    one; Ukraine's tracker shows the round's case fulfilled, one pledged
//!    and one open;
//! 2. the chair's announcement, and the former chair refused;
//! 3. a bilateral Poland-Ukraine conversation at TLP:RED (RED refused in
//!    plenary);
//! 4. the chair shares plenary's history with Lithuania, which verifies
//!    each message against the roster of its time and its commitment.

use std::io::Write;
use std::time::Duration;

use anyhow::{anyhow, Result};
use tallinn_client::archive::{CaseQuery, CaseScope, Direction, Filter};
use tallinn_client::{Client, ClientError};
use tallinn_common::message::{Kind, Loe, Message, MsgId, Priority, Tlp};
use tallinn_common::tracker::CaseState;

const STEP: Duration = Duration::from_secs(30);

/// Waits until `client` has archived every id in `want` (bounded).
async fn archived(client: &Client, want: &[MsgId]) -> Result<()> {
    let mut st = client.state();
    let all = || {
        want.iter()
            .all(|id| client.archive().lookup(id).ok().flatten().is_some())
    };
    tokio::time::timeout(STEP, async {
        while !all() {
            if st.changed().await.is_err() {
                break;
            }
        }
    })
    .await
    .map_err(|_| anyhow!("messages did not arrive in time"))?;
    if all() {
        Ok(())
    } else {
        Err(anyhow!("the client stopped before the messages arrived"))
    }
}

fn need(subject: &str, loe: Loe, priority: Priority) -> Message {
    Message {
        kind: Kind::Request {
            loe,
            category: "hardware".into(),
            priority,
        },
        ..Message::note(Tlp::Amber, subject, "Details in the attached needs list.")
    }
}

/// The participants' clients the scenes use.
pub struct Clients<'a> {
    /// Ukraine.
    pub ua: &'a Client,
    /// Estonia (the chair before the rotation).
    pub ee: &'a Client,
    /// The United Kingdom (front office).
    pub gb: &'a Client,
    /// Lithuania (admitted this year).
    pub lt: &'a Client,
    /// Poland (the chair).
    pub pl: &'a Client,
}

/// Plays the scenes; check failures are pushed to `failures`.
///
/// # Errors
/// A step that could not run at all.
pub async fn scenes(c: Clients<'_>, failures: &mut Vec<String>, out: &mut dyn Write) -> Result<()> {
    let Clients { ua, ee, gb, lt, pl } = c;

    writeln!(out, "\n== The request tracker")?;
    let (sat, _) = ua
        .send(
            "loe-capability",
            &need(
                "Satellite terminals for field teams",
                Loe::Capability,
                Priority::High,
            ),
        )
        .await?;
    let (laptops, _) = ua
        .send(
            "loe-sustainability",
            &need(
                "Forensic laptops for the regional CERTs",
                Loe::Sustainability,
                Priority::Normal,
            ),
        )
        .await?;
    archived(pl, &[sat]).await?;
    let offer = Message {
        kind: Kind::Offer { request: sat },
        ..Message::note(
            Tlp::Amber,
            "Twenty terminals from the reserve",
            "Delivery in two weeks.",
        )
    };
    let (offer, _) = pl.send("loe-capability", &offer).await?;
    archived(ua, &[offer, laptops]).await?;
    let cases = ua.archive().cases(&CaseQuery {
        states: CaseState::ALL.to_vec(),
        loe: None,
        priority: None,
        scope: CaseScope::All,
        unanswered: false,
        limit: 20,
    })?;
    writeln!(out, "  Ukraine's tracker (`tallinn requests --state all`):")?;
    for case in &cases {
        let offers: Vec<&str> = case.view.offers.iter().map(|o| o.from.as_str()).collect();
        writeln!(
            out,
            "  {:<11} {:<8} {:<14} {} offers [{}]  {}",
            case.view.state.name(),
            format!("{:?}", case.facts.priority).to_lowercase(),
            format!("{:?}", case.facts.loe).to_lowercase(),
            &case.facts.request.to_hex()[..8],
            offers.join(", "),
            case.facts.subject
        )?;
    }
    for want in [CaseState::Fulfilled, CaseState::Pledged, CaseState::Open] {
        if !cases.iter().any(|c| c.view.state == want) {
            failures.push(format!("Ukraine's tracker shows no {want} case"));
        }
    }

    writeln!(out, "\n== The chair's announcements")?;
    let chair = pl
        .roster()
        .log()
        .map(|l| l.current().chair().to_string())
        .unwrap_or_default();
    let (ann, _) = pl
        .send(
            "announcements",
            &Message::note(
                Tlp::Green,
                "Next plenary: Thursday 10:00 CET",
                "Agenda: pledges for Line of Effort 2.",
            ),
        )
        .await?;
    archived(lt, &[ann]).await?;
    writeln!(
        out,
        "  {chair} (the chair) posts in announcements; Lithuania receives it, like every member and observer"
    )?;
    match ee
        .send(
            "announcements",
            &Message::note(Tlp::Green, "From the former chair", "…"),
        )
        .await
    {
        Err(e @ ClientError::NotAllowed(_)) => {
            writeln!(out, "  EE, chair until the rotation, tries: REFUSED: {e}")?
        }
        other => failures.push(format!(
            "the former chair posted an announcement: {other:?}"
        )),
    }

    writeln!(
        out,
        "\n== A bilateral conversation, Poland and Ukraine, at TLP:RED"
    )?;
    match pl
        .send(
            "plenary",
            &Message::note(Tlp::Red, "Names of the on-site team", "…"),
        )
        .await
    {
        Err(e @ ClientError::AboveTlp { .. }) => writeln!(out, "  RED in plenary: REFUSED: {e}")?,
        other => failures.push(format!("RED went to plenary: {other:?}")),
    }
    let (conv, _) = pl.direct_conversation(&["UA".into()])?;
    let (red, _) = pl
        .send(
            &conv,
            &Message::note(
                Tlp::Red,
                "Names of the on-site team",
                "Sent to Ukraine alone.",
            ),
        )
        .await?;
    archived(ua, &[red]).await?;
    let answer = Message {
        reply_to: Some(red),
        ..Message::note(Tlp::Red, "Received; escort arranged at the border", "…")
    };
    let (back, _) = ua.send(&conv, &answer).await?;
    archived(pl, &[back]).await?;
    writeln!(
        out,
        "  PL → {conv} [TLP:RED] and UA's answer in the same conversation; nobody else holds a key to either"
    )?;
    if gb.archive().lookup(&red)?.is_some() {
        failures.push("GB received a bilateral PL-UA message".into());
    }

    writeln!(
        out,
        "\n== Lithuania, admitted this year, receives the history of plenary and Line of Effort 1 from the chair"
    )?;
    let (conv, added) = pl.direct_conversation(&["LT".into()])?;
    let mut history = Vec::new();
    for channel in ["plenary", "loe-immediate"] {
        let mut h = pl.archive().search(
            &Filter {
                channel: Some(channel.into()),
                ..Default::default()
            },
            1000,
        )?;
        h.reverse();
        history.extend(h);
    }
    let results = pl.share(&conv, &history)?;
    let shared: Vec<MsgId> = results
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(m, _)| *m)
        .collect();
    writeln!(
        out,
        "  {chair} shares {} messages in {conv} ({} added: the beneficiary is in every direct conversation)",
        shared.len(),
        added.join(", ")
    )?;
    for (m, r) in &results {
        if let Err(why) = r {
            writeln!(out, "  not shared {}: {why}", &m.to_hex()[..8])?;
        }
    }
    archived(lt, &shared).await?;
    let mut verified = 0;
    for id in &shared {
        if let Some(r) = lt.archive().get(id)? {
            if r.direction == Direction::Shared {
                if verified == 0 {
                    writeln!(
                        out,
                        "  e.g. {:?} by {}, sealed at roster epoch {}: signature checked against that epoch's roster, content against its commitment",
                        r.message.subject,
                        r.sender,
                        tallinn_common::envelope::UntrustedEnvelope::decode(&r.envelope)
                            .ok()
                            .and_then(|u| u.claimed_header().roster_epoch)
                            .unwrap_or(0)
                    )?;
                }
                verified += 1;
            }
        }
    }
    writeln!(
        out,
        "  Lithuania archived {verified} message(s) it never received, each marked \"shared by {chair}\"; the rest it had already"
    )?;
    if verified == 0 {
        failures.push("Lithuania archived no shared history".into());
    }
    // The round's case is now in Lithuania's tracker too.
    let cases = lt.archive().cases(&CaseQuery {
        states: CaseState::ALL.to_vec(),
        loe: Some(Loe::Immediate),
        priority: None,
        scope: CaseScope::All,
        unanswered: false,
        limit: 20,
    })?;
    match cases.first() {
        Some(c) => writeln!(
            out,
            "  Lithuania's tracker now holds the round's case: {} ({})",
            c.view.state.name(),
            c.facts.subject
        )?,
        None => failures.push("the shared round is not in Lithuania's tracker".into()),
    }
    Ok(())
}
