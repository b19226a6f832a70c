//! The `halyard` command: run a broker, send and receive messages.

/// Prints a command's output to stdout like `print!`, except that a closed
/// pipe (`halyard dstat | head -1`) ends the output quietly instead of
/// panicking, as Unix tools do. Other write errors are reported once.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::write_out(format_args!($($arg)*))
    };
}

/// [`out!`] with a newline.
macro_rules! outln {
    () => {
        $crate::write_out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

mod admin_client;
mod bench;
mod broker;
mod connect;
mod docs;
mod ops;
mod passwd;
mod receive;
mod send;
mod status;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// Halyard: a fault-tolerant STOMP message broker.
#[derive(Parser)]
#[command(name = "halyard", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a broker.
    Broker(broker::Args),
    /// Send messages to a destination.
    Send(send::Args),
    /// Receive messages from a destination and print them.
    Receive(receive::Args),
    /// Measure a broker's throughput and latency.
    Bench(bench::Args),
    /// Show a broker's role (master or slave), epoch and last takeover.
    Status(status::Args),
    /// Hash a password for [[security.users]] (argon2id); prints the line
    /// to paste into the config.
    Passwd(passwd::Args),
    /// Destination statistics (depth, producers, consumers, counters,
    /// rates with --watch), like ActiveMQ's `activemq dstat`.
    Dstat(ops::DstatArgs),
    /// Show a queue's messages (headers and body) without consuming them.
    Browse(ops::BrowseArgs),
    /// Delete a queue's waiting messages (asks first).
    Purge(ops::PurgeArgs),
    /// Move or copy messages from one queue to another.
    Move(ops::MoveArgs),
    /// Dead-letter queues: put dead letters back where they came from.
    Dlq(ops::DlqArgs),
    /// List client connections, or close one.
    Connections(ops::ConnectionsArgs),
    /// Print a shell completion script (bash, zsh, fish, ...).
    Completions(docs::CompletionsArgs),
    /// Print the man page, or write one per command with --out DIR.
    Man(docs::ManArgs),
}

/// Where `send` and `receive` go.
#[derive(clap::Args)]
struct Target {
    /// Broker URL, e.g. stomp://127.0.0.1:61613, or a failover list that
    /// reconnects (and resends what was not confirmed) when a broker fails:
    /// failover:(stomp://a:61613,stomp://b:61613)?maxReconnectAttempts=10
    /// (ActiveMQ's options; see docs/CLIENT.md). Over TLS:
    /// ssl://host:61612?trustCa=ca.pem (see docs/TLS.md).
    #[arg(long, env = "HALYARD_URL", default_value = "stomp://127.0.0.1:61613")]
    url: String,
    /// Destination, e.g. /queue/orders or /topic/prices (ActiveMQ's
    /// queue://orders and topic://prices are accepted too).
    #[arg(long, short = 'd', value_parser = connect::destination)]
    destination: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (default_log, format) = match &cli.command {
        Cmd::Broker(args) => ("info", args.log_format),
        _ => ("warn", broker::LogFormat::Text),
    };
    init_logging(default_log, format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("halyard: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Cmd::Broker(args) => broker::run(args).await,
            Cmd::Send(args) => send::run(args).await,
            Cmd::Receive(args) => receive::run(args).await,
            Cmd::Bench(args) => bench::run(args).await,
            Cmd::Status(args) => status::run(args).await,
            Cmd::Passwd(args) => passwd::run(args),
            Cmd::Dstat(args) => ops::dstat(args).await,
            Cmd::Browse(args) => ops::browse(args).await,
            Cmd::Purge(args) => ops::purge(args).await,
            Cmd::Move(args) => ops::move_messages(args).await,
            Cmd::Dlq(args) => ops::dlq(args).await,
            Cmd::Connections(args) => ops::connections(args).await,
            Cmd::Completions(args) => docs::completions(args, Cli::command()),
            Cmd::Man(args) => docs::man(args, Cli::command()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("halyard: error: {}", report(&e));
            let code = match e.downcast_ref::<receive::TooFew>() {
                Some(t) => t.exit_code(),
                None => admin_client::exit_code(&e),
            };
            ExitCode::from(code)
        }
    }
}

/// The error and its causes, joined by ": ", leaving out a cause whose text
/// an outer error already quotes (many errors include their source in their
/// own message, which `{:#}` would print twice).
fn report(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn init_logging(default: &str, format: broker::LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    use std::io::IsTerminal;
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        broker::LogFormat::Text => fmt.with_ansi(std::io::stderr().is_terminal()).init(),
        broker::LogFormat::Json => fmt.json().init(),
    }
}

/// Writes to stdout for [`out!`]: a reader that went away is not an error
/// worth a panic or a message; anything else is said once on stderr.
fn write_out(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    static FAILED: AtomicBool = AtomicBool::new(false);
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.flush())
        && e.kind() != std::io::ErrorKind::BrokenPipe
        && !FAILED.swap(true, Ordering::Relaxed)
    {
        eprintln!("halyard: error: cannot write the output: {e}");
    }
}
