//! `halyard broker`.

use std::path::PathBuf;

use anyhow::Context;
use halyard_broker::{Broker, BrokerConfig, StoreKind};

/// The environment variables of the flags below (and other commands'): the
/// command line reads them itself.
const FLAG_VARS: [&str; 12] = [
    "HALYARD_LOG_FORMAT",
    "HALYARD_CONFIG",
    "HALYARD_NAME",
    "HALYARD_DATA_DIR",
    "HALYARD_STOMP",
    "HALYARD_WS",
    "HALYARD_OPENWIRE",
    "HALYARD_HTTP",
    "HALYARD_STORE",
    "HALYARD_STORE_URL",
    "HALYARD_URL",
    "HALYARD_LOG",
];

/// Settings come from, in order of precedence: flags, `HALYARD_*`
/// environment variables (every setting has one: `HALYARD_SECTION__KEY`),
/// the config file, built-in defaults.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// TOML config file (see docs/CONFIGURATION.md).
    #[arg(long, env = "HALYARD_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Broker name, used in logs and message ids [default: halyard].
    #[arg(long, env = "HALYARD_NAME")]
    name: Option<String>,
    /// Data directory [default: ./data].
    #[arg(long, env = "HALYARD_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// STOMP listen address [default: 127.0.0.1:61613].
    #[arg(long, env = "HALYARD_STOMP", value_name = "ADDR")]
    stomp: Option<String>,
    /// STOMP over WebSocket listen address; "" for none
    /// [default: 127.0.0.1:61614].
    #[arg(long, env = "HALYARD_WS", value_name = "ADDR")]
    ws: Option<String>,
    /// OpenWire listen address, for ActiveMQ's JMS clients; "" for none
    /// [default: 127.0.0.1:61616].
    #[arg(long, env = "HALYARD_OPENWIRE", value_name = "ADDR")]
    openwire: Option<String>,
    /// Admin HTTP listen address [default: 127.0.0.1:8161].
    #[arg(long, env = "HALYARD_HTTP", value_name = "ADDR")]
    http: Option<String>,
    /// Message store: journal (files in the data directory), postgres (a
    /// shared database, see --store-url) or memory [default: journal].
    #[arg(long, env = "HALYARD_STORE", value_name = "KIND")]
    store: Option<StoreKind>,
    /// The postgres store's database, e.g.
    /// postgres://halyard:secret@db.example.com:5432/halyard.
    #[arg(
        long,
        env = "HALYARD_STORE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    store_url: Option<String>,
    /// Log lines as readable text, or as one JSON object a line (timestamp,
    /// level, target, fields) for log shippers.
    #[arg(
        long,
        env = "HALYARD_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    pub(crate) log_format: LogFormat,
    /// Print every setting's environment variable with its default
    /// (`HALYARD_SECTION__KEY=value`, listed from the config schema), and
    /// the command line's own variables, then exit.
    #[arg(long)]
    print_env: bool,
}

/// How log lines are written (to standard error).
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// One readable line per event.
    Text,
    /// One JSON object per line.
    Json,
}

impl Args {
    fn config(self) -> anyhow::Result<BrokerConfig> {
        let mut config = BrokerConfig::load(self.config.as_deref(), std::env::vars(), &FLAG_VARS)?;
        if let Some(v) = self.name {
            config.name = v;
        }
        if let Some(v) = self.data_dir {
            config.data_dir = v;
        }
        if let Some(v) = self.stomp {
            config.set_stomp(v);
        }
        if let Some(v) = self.ws {
            config.set_ws(v);
        }
        if let Some(v) = self.openwire {
            config.set_openwire(v);
        }
        if let Some(v) = self.http {
            config.http = v;
        }
        if let Some(v) = self.store {
            config.store.kind = v;
        }
        if let Some(v) = self.store_url {
            config.store.url = v;
        }
        config.validate()?;
        Ok(config)
    }
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    if args.print_env {
        print_env();
        return Ok(());
    }
    let config = args.config()?;
    // Starting may wait (for a database that is not up yet): a signal
    // meanwhile stops the wait.
    let broker = tokio::select! {
        b = Broker::start(config) => b?,
        r = shutdown_signal() => {
            r.context("cannot listen for signals")?;
            tracing::info!("stopped before the broker started");
            return Ok(());
        }
    };
    let failure = tokio::select! {
        r = reload_on_hangup(&broker) => {
            r.context("cannot listen for SIGHUP")?;
            None
        }
        r = shutdown_signal() => {
            r.context("cannot listen for signals")?;
            None
        }
        // Fenced, or the store failed, or the takeover failed: stop, so
        // that another broker can serve the data directory.
        reason = broker.failed() => Some(reason),
    };
    broker.shutdown().await;
    match failure {
        Some(reason) => anyhow::bail!("{reason}"),
        None => Ok(()),
    }
}

/// Re-reads the `[tls]` certificate on each SIGHUP, for ever (a failed
/// reload is logged by the broker and keeps the old certificate).
async fn reload_on_hangup(broker: &Broker) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP received: reloading the TLS certificate");
        let _ = broker.reload_tls();
    }
    // No more signals can arrive: keep serving.
    std::future::pending::<()>().await;
    Ok(())
}

async fn shutdown_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    Ok(())
}

/// `--print-env`: the settings' variables (from the schema) as lines a
/// shell or an env file takes, then the flags' variables, commented out
/// since their defaults are the settings' own.
fn print_env() {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let mut lines = String::from("# Every setting (docs/CONFIGURATION.md), with its default:\n");
    let settings = BrokerConfig::env_vars();
    for (var, default) in &settings {
        lines.push_str(&format!("{var}={default}\n"));
    }
    lines.push_str("# The command line's own (see `halyard broker --help`):\n");
    for var in FLAG_VARS {
        if !settings.iter().any(|(v, _)| v == var) {
            lines.push_str(&format!("# {var}=\n"));
        }
    }
    // A closed pipe (`| head`) is not an error worth reporting.
    let _ = out.write_all(lines.as_bytes());
}
