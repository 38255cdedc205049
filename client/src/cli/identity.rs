//! `tallinn keygen` and `tallinn roster show`: identities and the roster.

use super::*;
use std::os::unix::fs::DirBuilderExt as _;

pub(super) fn keygen(
    id: &str,
    name: Option<&str>,
    role: RoleArg,
    passphrase: bool,
    out: Option<&Path>,
) -> Result<()> {
    let pid = ParticipantId::new(id)?;
    let out = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(format!("{id}.key")));
    let pass = if passphrase {
        Some(super::prompt::new()?)
    } else {
        None
    };
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        // A fresh machine has no ~/.config/tallinn yet: create it, private.
        if !parent.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
    }
    let identity = Identity::generate(pid);
    identity.write_secret_file(
        &out,
        pass.as_ref().map(|p| p.as_bytes()),
        KdfParams::default(),
    )?;
    let role = match role {
        RoleArg::Member => "member",
        RoleArg::Observer => "observer",
    };
    eprintln!(
        "secret key written to {} (mode 0600; keep it private)",
        out.display()
    );
    println!(
        "{}",
        identity.roster_entry(name.unwrap_or(id), role).trim_end()
    );
    println!("# fingerprint: {}", identity.fingerprint());
    eprintln!("Send the [[participant]] entry above to the relay operator and read the fingerprint to them out of band.");
    Ok(())
}

pub(super) fn roster_show(ctx: &Ctx, json: bool) -> Result<()> {
    let r = &ctx.roster;
    if json {
        let participants: Vec<_> = r
            .participants()
            .map(|p| json!({"id": p.id().as_str(), "name": p.name, "role": p.role.to_string(), "fingerprint": p.fingerprint().to_string()}))
            .collect();
        let channels: Vec<_> = r
            .channels()
            .map(|c| json!({"id": c.id.as_str(), "description": c.description, "members": c.members.iter().map(|m| m.as_str()).collect::<Vec<_>>(), "observers": c.observers.iter().map(|m| m.as_str()).collect::<Vec<_>>()}))
            .collect();
        return print_json(
            &json!({"fingerprint": r.fingerprint_hex(), "beneficiary": r.beneficiary().map(|b| b.as_str()), "participants": participants, "channels": channels}),
        );
    }
    println!("roster fingerprint {}", r.fingerprint_hex());
    if let Some(b) = r.beneficiary() {
        println!("beneficiary {b}");
    }
    println!("\nparticipants:");
    for p in r.participants() {
        println!(
            "  {:<6} {:<9} {}  {}",
            p.id(),
            p.role.to_string(),
            p.fingerprint(),
            p.name
        );
    }
    println!("\nchannels:");
    for c in r.channels() {
        let m: Vec<&str> = c.members.iter().map(|m| m.as_str()).collect();
        let o: Vec<&str> = c.observers.iter().map(|m| m.as_str()).collect();
        println!("  {:<20} {}", c.id.as_str(), c.description);
        println!("  {:<20} members: {}", "", m.join(" "));
        if !o.is_empty() {
            println!("  {:<20} observers: {}", "", o.join(" "));
        }
    }
    Ok(())
}
