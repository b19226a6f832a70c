//! `halyard completions` and `halyard man`: shell completions and man
//! pages generated from the command line's own definition, so they never
//! drift from `--help`.

use std::path::PathBuf;

use anyhow::Context;
use clap_complete::Shell;

/// Prints a shell completion script.
#[derive(clap::Args)]
pub(crate) struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    shell: Shell,
}

/// Writes man pages.
#[derive(clap::Args)]
pub(crate) struct ManArgs {
    /// Write one page per command (halyard.1, halyard-dstat.1, ...) into
    /// this directory; without it, print halyard(1) on stdout.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

pub(crate) fn completions(a: CompletionsArgs, mut cmd: clap::Command) -> anyhow::Result<()> {
    // Into a buffer first: clap_complete panics when its writer fails
    // (`halyard completions bash | head` closes the pipe).
    let mut text = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "halyard", &mut text);
    print_all(&text)
}

/// Writes `bytes` to stdout; a reader that went away (`| head`) is not an
/// error.
fn print_all(bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(e).context("cannot write to stdout"))
        }
        _ => Ok(()),
    }
}

pub(crate) fn man(a: ManArgs, cmd: clap::Command) -> anyhow::Result<()> {
    match a.out {
        None => {
            let mut text = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut text)
                .context("cannot render the man page")?;
            print_all(&text)?;
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(cmd, &dir)
                .with_context(|| format!("cannot write man pages into {}", dir.display()))?;
            println!("man pages written to {}", dir.display());
        }
    }
    Ok(())
}
