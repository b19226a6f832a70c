//! `halyard passwd`: hashes a password for `[[security.users]]`, so that
//! the config holds an argon2id hash and never the password.

use std::io::{BufRead, IsTerminal};

use anyhow::{Context, bail};

/// Hash a password for the config (argon2id); prints the line to paste.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Print a whole `[[security.users]]` entry for this user instead of
    /// the `password = …` line alone.
    #[arg(long)]
    user: Option<String>,
    /// The user's groups, comma-separated (with --user).
    #[arg(long, value_delimiter = ',', requires = "user")]
    groups: Vec<String>,
    /// Read the password from the first line of standard input instead of
    /// asking on the terminal (for scripts; the line is not echoed anywhere).
    #[arg(long)]
    stdin: bool,
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let password = if args.stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    } else {
        if !std::io::stdin().is_terminal() {
            bail!("no terminal to ask for the password on; pipe it in with --stdin");
        }
        let first = rpassword::prompt_password("Password: ").context("cannot read the password")?;
        let again = rpassword::prompt_password("Again: ").context("cannot read the password")?;
        if first != again {
            bail!("the two passwords differ; nothing was printed");
        }
        first
    };
    if password.is_empty() {
        bail!("the password is empty");
    }
    let hash = halyard_broker::password::hash(&password)?;
    match args.user {
        None => println!("password = {}", toml_string(&hash)),
        Some(user) => {
            println!("[[security.users]]");
            println!("name = {}", toml_string(&user));
            println!("password = {}", toml_string(&hash));
            let groups: Vec<String> = args.groups.iter().map(|g| toml_string(g)).collect();
            println!("groups = [{}]", groups.join(", "));
        }
    }
    Ok(())
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}
