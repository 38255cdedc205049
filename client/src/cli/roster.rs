//! `tallinn roster approve`: reading, checking and approving a roster-log
//! entry file (version 2) with the participant's identity key.

use tallinn_common::roster::{
    approval_message, fingerprint_groups, Approval, EntryKind, RosterState, SignedEntry,
};
use tallinn_common::text::escape_line as esc;

use super::*;

/// Shows the entry in `file`, checks its state rules, and (unless
/// `dry_run`) adds this participant's approval and rewrites the file.
pub(super) fn approve(ctx: &Ctx, file: &Path, dry_run: bool) -> Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut entry = SignedEntry::from_text(&text)
        .with_context(|| format!("{} is not a roster-log entry", file.display()))?;
    let body = entry.decode_body()?;
    let hash = entry.hash();
    println!("entry {} ({})", body.index, body.kind.name());
    match &body.kind {
        EntryKind::Genesis(record) | EntryKind::Amend(record) => {
            let state = RosterState::validate(record.clone(), body.index, hash)
                .context("the state this entry installs is invalid; not approving it")?;
            describe_state(&state);
        }
        EntryKind::Devices {
            participant,
            devices,
        } => {
            println!("participant: {}", esc(participant));
            for d in devices {
                println!(
                    "  device {}  {}",
                    esc(&d.device),
                    tallinn_common::identity::Fingerprint::of(&d.sign_key, &d.enc_key)
                );
            }
        }
    }
    if matches!(body.kind, EntryKind::Genesis(_)) {
        println!("deployment fingerprint: {}", fingerprint_groups(&hash));
    } else {
        println!("entry hash: {}", fingerprint_groups(&hash));
    }
    let approvers: Vec<String> = entry
        .approvals
        .iter()
        .map(|a| esc(&a.participant).into_owned())
        .collect();
    println!("approved by: [{}]", approvers.join(", "));
    if dry_run {
        return Ok(());
    }
    let me = ctx.identity.id().to_string();
    entry.add_approval(Approval {
        participant: me.clone(),
        signature: ctx.identity.sign(&approval_message(&entry.body)),
    });
    let tmp = file.with_extension("approving");
    std::fs::write(&tmp, entry.to_text()).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, file).with_context(|| format!("replacing {}", file.display()))?;
    println!(
        "approved as {me}; {} approval(s) now",
        entry.approvals.len()
    );
    Ok(())
}

fn describe_state(s: &RosterState) {
    println!(
        "chair: {}, quorum: {}, beneficiary: {}",
        s.chair(),
        s.quorum(),
        s.beneficiary()
            .map_or("none".to_string(), |b| b.to_string())
    );
    for p in s.participants() {
        let devices: Vec<String> = p
            .devices
            .values()
            .map(|d| format!("{} {}", d.device, d.fingerprint()))
            .collect();
        println!(
            "  {:<8} {:<9} {:<24} {}",
            p.id,
            p.role.to_string(),
            esc(&p.name),
            devices.join("; ")
        );
    }
    for c in s.channels() {
        let members: Vec<&str> = c.members.iter().map(|m| m.as_str()).collect();
        let observers: Vec<&str> = c.observers.iter().map(|m| m.as_str()).collect();
        println!(
            "  channel {:<16} members [{}] observers [{}]",
            c.id.as_str(),
            members.join(", "),
            observers.join(", ")
        );
    }
}
