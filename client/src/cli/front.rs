//! Where a command goes: to the running agent over its socket, or, when
//! none runs, to the archive opened by this process. Both answer with the
//! same [`crate::agent::api`] types from the same [`crate::agent::ops`]
//! code, so output never depends on the path taken.

use crate::agent::api::*;
use crate::agent::ops;
use crate::agent::remote::{AgentClient, RemoteError};

use super::*;

/// The command's back end.
pub(super) enum Front {
    /// A running agent.
    Agent(AgentClient),
    /// This process holds the archive (and, if started, the session).
    Direct {
        ctx: Box<Ctx>,
        client: Client,
        /// Whether a relay session was started.
        online: bool,
    },
}

fn remote(e: RemoteError) -> anyhow::Error {
    match e {
        RemoteError::Api(a) => anyhow!(a.message),
        e => anyhow!(e),
    }
}

/// The config alone (no key): enough to find the agent.
pub(super) fn load_config(cli: &Cli) -> Result<ClientConfig> {
    load_config_from(cli.config.as_deref(), cli.data_dir.as_deref())
}

/// [`load_config`] from the two global options.
pub(super) fn load_config_from(
    config: Option<&Path>,
    data_dir: Option<&Path>,
) -> Result<ClientConfig> {
    let path = config
        .map(Path::to_path_buf)
        .unwrap_or_else(default_config_path);
    let mut config = ClientConfig::read(&path)
        .context("loading the client config (use --config FILE; see config/client.toml)")?;
    if let Some(d) = data_dir {
        config.data_dir = d.to_path_buf();
        config.agent_socket = crate::agent::default_socket(d, config.device.as_str());
    }
    Ok(config)
}

/// The running agent for this config, if any.
pub(super) async fn find_agent(cli: &Cli) -> Result<Option<AgentClient>> {
    let config = load_config(cli)?;
    AgentClient::find(&config.agent_socket)
        .await
        .map_err(|e| anyhow!(e))
}

/// For a command that needs the archive to itself (`roster`, `device`):
/// borrows it from the running agent, if one runs, until the guard drops.
pub(super) async fn hold_agent(cli: &Cli) -> Result<Option<crate::agent::remote::Hold>> {
    match find_agent(cli).await? {
        Some(a) => {
            let hold = a.hold().await.map_err(remote)?;
            eprintln!("(the agent lends this command the archive, and takes it back after)");
            Ok(Some(hold))
        }
        None => Ok(None),
    }
}

impl Front {
    /// For commands that read or change the archive and outbox: the agent
    /// if it runs, else the archive opened here (no relay session).
    pub(super) async fn local(cli: &Cli) -> Result<Front> {
        if let Some(a) = find_agent(cli).await? {
            return Ok(Front::Agent(a));
        }
        let ctx = Ctx::load(cli)?;
        let client = ctx.open()?;
        Ok(Front::Direct {
            ctx: Box::new(ctx),
            client,
            online: false,
        })
    }

    /// For commands that talk to the relay: the agent if it runs, else a
    /// session started here (the config's relay settings checked first).
    pub(super) async fn online(cli: &Cli) -> Result<Front> {
        if let Some(a) = find_agent(cli).await? {
            return Ok(Front::Agent(a));
        }
        let ctx = Ctx::load(cli)?;
        ctx.config.check_relay()?;
        let client = ctx.start()?;
        client.discard_events();
        Ok(Front::Direct {
            ctx: Box::new(ctx),
            client,
            online: true,
        })
    }

    /// Closes a session started here.
    pub(super) async fn close(self) {
        if let Front::Direct {
            client,
            online: true,
            ..
        } = self
        {
            client.close().await;
        }
    }

    pub(super) async fn search(&self, q: &SearchRequest) -> Result<MessagePage> {
        match self {
            Front::Agent(a) => a.search(q).await.map_err(remote),
            Front::Direct { client, .. } => Ok(ops::search(client, q)?),
        }
    }

    pub(super) async fn show(&self, id: &str) -> Result<MessageDetail> {
        match self {
            Front::Agent(a) => a.show(id).await.map_err(remote),
            Front::Direct { client, .. } => Ok(ops::show(client, id)?),
        }
    }

    pub(super) async fn mark_read(&self, id: &str) -> Result<String> {
        match self {
            Front::Agent(a) => a.mark_read(id).await.map_err(remote),
            Front::Direct { client, .. } => Ok(ops::mark_read(client, id)?),
        }
    }

    pub(super) async fn outbox_retry(&self) -> Result<u64> {
        match self {
            Front::Agent(a) => a.outbox_retry().await.map_err(remote),
            Front::Direct { client, .. } => Ok(client.retry_outbox() as u64),
        }
    }

    pub(super) async fn requests(&self, q: &CaseListRequest) -> Result<CaseList> {
        match self {
            Front::Agent(a) => a.requests(q).await.map_err(remote),
            Front::Direct { client, .. } => Ok(crate::agent::cases::requests(client, q)?),
        }
    }

    pub(super) async fn request_show(&self, id: &str) -> Result<CaseDetail> {
        match self {
            Front::Agent(a) => a.request_show(id).await.map_err(remote),
            Front::Direct { client, .. } => Ok(crate::agent::cases::request_show(client, id)?),
        }
    }

    pub(super) async fn share(&self, q: &ShareRequest) -> Result<ShareOutcome> {
        match self {
            Front::Agent(a) => a.share(q).await.map_err(remote),
            Front::Direct { client, .. } => Ok(crate::agent::cases::share(client, q)?),
        }
    }

    pub(super) async fn thread(&self, id: &str) -> Result<Vec<MessageView>> {
        match self {
            Front::Agent(a) => a.thread(id).await.map_err(remote),
            Front::Direct { client, .. } => Ok(ops::thread(client, id)?),
        }
    }

    pub(super) async fn compose(&self, c: &ComposeRequest) -> Result<SendOutcome> {
        match self {
            Front::Agent(a) => a.compose(c).await.map_err(remote),
            Front::Direct { ctx, client, .. } => {
                Ok(ops::compose(client, c, ctx.config.connect_timeout).await?)
            }
        }
    }

    pub(super) async fn outbox(&self) -> Result<Vec<OutboxItem>> {
        match self {
            Front::Agent(a) => a.outbox().await.map_err(remote),
            Front::Direct { client, .. } => Ok(ops::outbox(client)?),
        }
    }

    pub(super) async fn outbox_drop(&self, id: &str) -> Result<String> {
        match self {
            Front::Agent(a) => a.outbox_drop(id).await.map_err(remote),
            Front::Direct { client, .. } => Ok(ops::outbox_drop(client, id)?),
        }
    }

    pub(super) async fn outbox_resend(&self, id: &str) -> Result<(String, String)> {
        match self {
            Front::Agent(a) => a.outbox_resend(id).await.map_err(remote),
            Front::Direct { client, .. } => Ok(ops::outbox_resend(client, id)?),
        }
    }

    pub(super) async fn attachment(&self, id: &str, n: usize) -> Result<Vec<u8>> {
        match self {
            Front::Agent(a) => a.attachment(id, n).await.map_err(remote),
            Front::Direct { client, .. } => Ok(ops::attachment(client, id, n)?.1),
        }
    }

    pub(super) async fn quarantine_retry(&self) -> Result<QuarantineRetry> {
        match self {
            Front::Agent(a) => a.quarantine_retry().await.map_err(remote),
            Front::Direct { client, .. } => Ok(ops::quarantine_retry(client)?),
        }
    }

    pub(super) async fn quarantine_purge(&self, before_ms: u64) -> Result<PurgeResult> {
        match self {
            Front::Agent(a) => a.quarantine_purge(before_ms).await.map_err(remote),
            Front::Direct { client, .. } => {
                Ok(ops::quarantine_purge(client, &PurgeRequest { before_ms })?)
            }
        }
    }

    pub(super) async fn archive_stats(&self) -> Result<crate::archive::Stats> {
        match self {
            Front::Agent(a) => a.archive_stats().await.map_err(remote),
            Front::Direct { client, .. } => Ok(ops::archive_stats(client)?),
        }
    }

    pub(super) async fn archive_verify(&self, deep: bool) -> Result<VerifyView> {
        match self {
            Front::Agent(a) => a.archive_verify(deep).await.map_err(remote),
            Front::Direct { client, .. } => Ok(ops::archive_verify(client, deep)?),
        }
    }

    /// The audit export into `out`: records written and the head hash.
    pub(super) async fn archive_export(
        &self,
        selection: &crate::export::Selection,
        out: &mut impl std::io::Write,
        progress: impl FnMut(u64),
    ) -> Result<(u64, String)> {
        match self {
            Front::Agent(a) => a
                .archive_export(selection, out, progress)
                .await
                .map_err(remote),
            Front::Direct { ctx, client, .. } => {
                let n = ops::export(client, &ctx.roster_text, now_ms(), selection, out, progress)?;
                Ok((n, hex::encode(client.archive().head_hash())))
            }
        }
    }

    pub(super) async fn quarantine(&self) -> Result<Vec<QuarantineItem>> {
        match self {
            Front::Agent(a) => a.quarantine().await.map_err(remote),
            Front::Direct { client, .. } => Ok(ops::quarantine(client)?),
        }
    }
}
