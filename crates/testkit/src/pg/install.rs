//! Where the PostgreSQL server binaries are, and whom they run as.

use std::env;
use std::fs;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::{DATABASE_URL_ENV, PG_BINDIR_ENV, SUPERUSER};

/// The directory of the PostgreSQL server binaries (`initdb`, `postgres`,
/// `pg_ctl`): `$HALYARD_TEST_PG_BINDIR` if set, else the highest version in
/// Debian's `/usr/lib/postgresql/<version>/bin`, else `pg_config --bindir`,
/// else the first directory of `PATH` that has them.
///
/// # Panics
///
/// If none has them, saying what to install.
pub fn pg_bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let has_server =
            |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
        if let Some(dir) = env::var_os(PG_BINDIR_ENV).filter(|d| !d.is_empty()) {
            let dir = PathBuf::from(dir);
            assert!(
                has_server(&dir),
                "halyard-testkit: {PG_BINDIR_ENV}={} has no initdb and postgres",
                dir.display()
            );
            return dir;
        }
        let mut debian: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let version = entry.file_name().to_str()?.parse().ok()?;
                Some((version, entry.path().join("bin")))
            })
            .filter(|(_, dir)| has_server(dir))
            .collect();
        debian.sort();
        if let Some((_, dir)) = debian.pop() {
            return dir;
        }
        if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
            && out.status.success()
        {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if has_server(&dir) {
                return dir;
            }
        }
        env::var_os("PATH")
            .and_then(|path| env::split_paths(&path).find(|dir| has_server(dir)))
            .unwrap_or_else(|| {
                panic!(
                    "halyard-testkit: the PostgreSQL server binaries (initdb, postgres) are not \
                     installed: not in /usr/lib/postgresql/*/bin, `pg_config --bindir` or PATH. \
                     Install them (Debian/Ubuntu: `apt-get install postgresql`; scripts/test.sh \
                     does it), or set {PG_BINDIR_ENV} to their directory. Tests that only need \
                     a database can instead use a server of yours: set {DATABASE_URL_ENV}."
                )
            })
    })
}

/// The uid and gid to run server processes as: `None` (ourselves) unless
/// we are root, which `initdb` and `postgres` refuse; then the `postgres`
/// user, created (as Debian's package would) if missing.
pub(super) fn server_user() -> Option<(u32, u32)> {
    static USER: OnceLock<Option<(u32, u32)>> = OnceLock::new();
    *USER.get_or_init(|| {
        if !rustix::process::geteuid().is_root() {
            return None;
        }
        let id = |flag: &str| {
            Command::new("id")
                .args([flag, SUPERUSER])
                .stderr(Stdio::null())
                .output()
                .ok()
                .filter(|out| out.status.success())
                .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
        };
        if id("-u").is_none() {
            let _ = Command::new("useradd")
                .args(["--system", "--user-group", "--no-create-home"])
                .args([
                    "--home-dir",
                    "/var/lib/postgresql",
                    "--shell",
                    "/bin/bash",
                    SUPERUSER,
                ])
                .status();
        }
        match (id("-u"), id("-g")) {
            (Some(uid), Some(gid)) => Some((uid, gid)),
            _ => panic!(
                "halyard-testkit: running as root, PostgreSQL must run as an unprivileged user, \
                 but there is no `{SUPERUSER}` user and it could not be created \
                 (Debian's postgresql package creates it)"
            ),
        }
    })
}

/// A command for a server binary: run as [`server_user`], in `dir` (the
/// server user may not be able to enter our working directory), with
/// messages in English.
pub(super) fn server_command(program: &Path, dir: &Path) -> Command {
    let mut command = Command::new(program);
    command.current_dir(dir).env("LC_ALL", "C");
    if let Some((uid, gid)) = server_user() {
        command.uid(uid).gid(gid);
    }
    command
}
