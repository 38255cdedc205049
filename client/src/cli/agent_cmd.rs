//! `tallinn agent`: unlock the key once, hold the session, the archive and
//! the outbox, and serve the local API until SIGINT or SIGTERM; tells the
//! service manager when it is ready (`sd_notify`).

use super::*;

pub(super) async fn agent(cli: &Cli, socket: Option<&Path>) -> Result<()> {
    // The passphrase is kept: after a command that borrowed the archive
    // rotated the key, the agent opens the new key file without asking.
    super::prompt::remember();
    let ctx = Ctx::load(cli)?;
    ctx.config.check_relay()?;
    let socket = socket
        .map(Path::to_path_buf)
        .unwrap_or_else(|| ctx.config.agent_socket.clone());
    // A live agent on the socket is named before the archive is touched.
    if let Ok(Some(other)) = crate::agent::remote::AgentClient::find(&socket).await {
        let pid = other.status().await.map(|s| s.pid).unwrap_or(0);
        return Err(crate::agent::AgentError::AlreadyRunning { pid, socket }.into());
    }
    let client = ctx.start()?;
    let listener = crate::agent::bind(&socket).await?;
    eprintln!(
        "agent for {} ({}) on {}; relay {}; Ctrl-C to stop",
        ctx.identity.id(),
        ctx.config.device,
        socket.display(),
        ctx.config.relay
    );
    let _ = tallinn_host::systemd::notify("READY=1\nSTATUS=serving the local API");
    let watchdog = tallinn_host::systemd::watchdog_interval().map(|every| {
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let _ = tallinn_host::systemd::notify("WATCHDOG=1");
            }
        })
    });
    let wait = ctx.config.connect_timeout.min(Duration::from_secs(5));
    let (config, data_dir) = (cli.config.clone(), cli.data_dir.clone());
    let reload: crate::agent::Reload = std::sync::Arc::new(move || {
        Ctx::load_from(config.as_deref(), data_dir.as_deref())
            .and_then(|c| c.settings())
            .map_err(|e| super::error_text(&e))
    });
    crate::agent::run(
        client,
        listener,
        &socket,
        wait,
        ctx.roster_text.clone(),
        Some(reload),
        shutdown_signal(),
    )
    .await;
    let _ = tallinn_host::systemd::notify("STOPPING=1");
    if let Some(w) = watchdog {
        w.abort();
    }
    eprintln!("agent stopped");
    Ok(())
}

/// SIGINT (Ctrl-C) or SIGTERM (the service manager).
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
