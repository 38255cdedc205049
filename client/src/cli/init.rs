//! `tallinn init`: a new point of contact's machine in one step.

use super::*;

/// `$XDG_DATA_HOME/tallinn`, else `~/.local/share/tallinn`.
fn default_data_dir() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("tallinn")
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

pub(super) fn init(cli: &Cli, a: &InitArgs) -> Result<()> {
    let pid = ParticipantId::new(&a.id)?;
    let config_path = cli.config.clone().unwrap_or_else(default_config_path);
    let dir = config_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let key_path = dir.join("identity.key");
    let data_dir = cli.data_dir.clone().unwrap_or_else(default_data_dir);
    if config_path.exists() && !a.force {
        bail!(
            "{} exists: this machine is set up already (add --force to write it again)",
            config_path.display()
        );
    }
    if key_path.exists() {
        bail!(
            "{} exists and is never replaced: move it away first if you really mean a new key",
            key_path.display()
        );
    }
    // Everything is checked before anything is written.
    crate::config::parse_pin(&a.pin).context("--pin")?;
    if let Some(d) = &a.deployment {
        crate::config::parse_pin(d).map_err(|_| anyhow!("--deployment: expected 64 hex digits"))?;
    }
    tallinn_common::identity::DeviceId::new(a.device.as_str())
        .map_err(|e| anyhow!("--device: {e}"))?;
    let probe: crate::config::FileConfig = toml::from_str(&format!(
        "relay = {}\nrelay_pin = {}",
        toml_str(&a.relay),
        toml_str(&a.pin)
    ))?;
    let probe = ClientConfig::from_file(probe, &dir)?;
    if let Err(e) = probe.relay_addr() {
        // A name that does not resolve yet is fine (offline set-up); a
        // missing or bad port is not.
        if e.to_string().contains("port") {
            return Err(anyhow!(e).context("--relay"));
        }
    }
    let roster_text = match &a.roster {
        Some(f) => {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("reading the roster {}", f.display()))?;
            Roster::parse(&text)
                .with_context(|| format!("the roster {} is invalid", f.display()))?;
            Some(text)
        }
        None => None,
    };
    let pass = if a.no_passphrase {
        None
    } else {
        Some(super::prompt::new()?)
    };

    tallinn_host::durable::private_dir(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    tallinn_host::durable::private_dir(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let identity = Identity::generate(pid);
    identity.write_secret_file(
        &key_path,
        pass.as_ref().map(|p| p.as_bytes()),
        KdfParams::default(),
    )?;
    if let Some(text) = &roster_text {
        std::fs::write(dir.join("roster.toml"), text)
            .with_context(|| format!("writing {}", dir.join("roster.toml").display()))?;
    }
    let mut config = format!(
        "# Written by `tallinn init`; see config/client.toml for every key.\n\
         relay = {}\nrelay_pin = {}\nidentity = \"identity.key\"\ndevice = {}\ndata_dir = {}\n",
        toml_str(&a.relay),
        toml_str(&a.pin),
        toml_str(&a.device),
        toml_str(&data_dir.to_string_lossy()),
    );
    if roster_text.is_some() {
        config.push_str("roster = \"roster.toml\"\n");
    }
    if let Some(d) = &a.deployment {
        config.push_str(&format!("deployment = {}\n", toml_str(d)));
    }
    std::fs::write(&config_path, config)
        .with_context(|| format!("writing {}", config_path.display()))?;
    // What was written must load.
    ClientConfig::read(&config_path).context("the config just written")?;

    let role = match a.role {
        RoleArg::Member => "member",
        RoleArg::Observer => "observer",
    };
    eprintln!("config    {}", config_path.display());
    eprintln!(
        "key       {} (mode 0600, {})",
        key_path.display(),
        if pass.is_some() {
            "passphrase-protected"
        } else {
            "no passphrase"
        }
    );
    eprintln!("archive   {}", data_dir.display());
    eprintln!("device    {}", a.device);
    eprintln!();
    println!(
        "{}",
        identity
            .roster_entry(a.name.as_deref().unwrap_or(&a.id), role)
            .trim_end()
    );
    println!("# fingerprint: {}", identity.fingerprint());
    eprintln!();
    eprintln!("Next: send the [[participant]] entry above to the relay operator and read them the fingerprint out of band.");
    eprintln!("Once you are in the roster: `tallinn agent` (or `systemctl --user enable --now tallinn-agent`), then `tallinn inbox`.");
    Ok(())
}
