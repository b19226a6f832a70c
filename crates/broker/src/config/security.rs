//! `[security]`: users, anonymous access and per-destination rights
//! (docs/SECURITY.md). The rules themselves live in `service/auth`; this is
//! the schema and what can be checked without starting anything.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `[security]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// What a connection without credentials may do. Unset: `all` while
    /// the broker has no users (a laptop's broker keeps working), `none`
    /// as soon as it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anonymous: Option<Anonymous>,
    /// Start even though a client or admin listener is on a non-loopback
    /// address while anyone may connect without credentials. Off: such a
    /// broker refuses to start, since anyone who can reach the port could
    /// read, send and delete every message.
    pub allow_anonymous_network: bool,
    /// A TOML file with more `[[users]]` entries (same fields as
    /// `[[security.users]]`), so that password hashes can live apart from
    /// the rest of the configuration, with tighter file permissions.
    /// Relative paths are relative to the working directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub users_file: Option<PathBuf>,
    /// `[[security.users]]`.
    pub users: Vec<UserEntry>,
    /// `[[security.authorization]]`: ActiveMQ's `authorizationEntry`. With
    /// none, every authenticated user may do everything; with some, a
    /// user may do only what an entry matching the destination grants one
    /// of its groups.
    pub authorization: Vec<AuthorizationEntry>,
    /// `[security.temporary]`: ActiveMQ's `tempDestinationAuthorizationEntry`,
    /// the rights on every temporary queue and topic. Unset: any
    /// authenticated user may make and use them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temporary: Option<Rights>,
    /// Failed logins from one address slow that address down: its next
    /// attempt waits this long, doubling with each further failure.
    pub login_delay_ms: u64,
    /// The longest wait a failed login earns.
    pub login_delay_max_ms: u64,
    /// Users in any of these groups may do everything on the admin HTTP
    /// API (once the broker has users, it asks for HTTP basic auth).
    pub admin_groups: Vec<String>,
    /// Users in any of these groups may use the admin API's read-only
    /// endpoints (GET): status, destinations, scheduled, metrics.
    pub monitor_groups: Vec<String>,
}

/// What a connection without credentials may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Anonymous {
    /// Refused: every connection must log in.
    None,
    /// Subscribe and browse anything; send nothing, create nothing.
    Read,
    /// Everything.
    All,
}

impl Anonymous {
    /// The word the config and the logs use.
    pub fn as_str(self) -> &'static str {
        match self {
            Anonymous::None => "none",
            Anonymous::Read => "read",
            Anonymous::All => "all",
        }
    }
}

/// One user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct UserEntry {
    /// The login.
    pub name: String,
    /// The password's argon2id hash in PHC form (`$argon2id$v=19$…`), as
    /// `halyard passwd` prints it; never the password itself. Absent: the
    /// user logs in only with a client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Groups, which authorization entries grant rights to.
    #[serde(default)]
    pub groups: Vec<String>,
    /// The subject of a client certificate (mutual TLS) that logs in as
    /// this user, e.g. `CN=app1,O=Acme`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_subject: Option<String>,
}

/// The groups granted each right.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Rights {
    /// May subscribe and browse.
    pub read: Vec<String>,
    /// May send.
    pub write: Vec<String>,
    /// May create the destination (its first use, by a send or a
    /// subscription).
    pub admin: Vec<String>,
}

/// One authorization entry: the destinations (one of `queue`, `topic`) and
/// the groups granted each right on them. Names take ActiveMQ's wildcards
/// (`orders.>`, `*.eu`); several entries may match a destination, and
/// their grants add up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AuthorizationEntry {
    /// Queues this entry is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Topics this entry is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// The grants.
    #[serde(flatten)]
    pub rights: Rights,
}

/// The users file's shape.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    users: Vec<UserEntry>,
}

impl Default for SecurityConfig {
    fn default() -> SecurityConfig {
        SecurityConfig {
            anonymous: None,
            allow_anonymous_network: false,
            users_file: None,
            users: Vec::new(),
            authorization: Vec::new(),
            temporary: None,
            login_delay_ms: 100,
            login_delay_max_ms: 10_000,
            admin_groups: vec!["admins".to_owned()],
            monitor_groups: vec!["monitors".to_owned()],
        }
    }
}

impl SecurityConfig {
    /// What anonymous connections may do, the setting or its default.
    pub fn anonymous(&self, has_users: bool) -> Anonymous {
        self.anonymous.unwrap_or(if has_users {
            Anonymous::None
        } else {
            Anonymous::All
        })
    }

    /// Every user: `[[security.users]]` and the users file's.
    pub fn all_users(&self) -> Result<Vec<UserEntry>, ConfigError> {
        let mut users = self.users.clone();
        if let Some(path) = &self.users_file {
            users.extend(read_users_file(path)?);
        }
        Ok(users)
    }

    /// Checks what can be checked without the users file: entries name one
    /// kind of destination with a valid pattern, hashes are argon2id PHC
    /// strings, users and subjects are unique.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        check_users(&self.users, "security.users")?;
        for (i, e) in self.authorization.iter().enumerate() {
            let bad = |message: String| ConfigError::Invalid {
                key: "security.authorization",
                message: format!("entry {i} (from 0): {message}"),
            };
            let name = match (&e.queue, &e.topic) {
                (Some(q), None) => q,
                (None, Some(t)) => t,
                _ => return Err(bad("needs exactly one of `queue` or `topic`".into())),
            };
            crate::model::NamePattern::parse(name).map_err(|p| bad(p.to_string()))?;
        }
        if self.login_delay_ms > self.login_delay_max_ms {
            return Err(ConfigError::Invalid {
                key: "security.login-delay-ms",
                message: "must not exceed security.login-delay-max-ms".into(),
            });
        }
        Ok(())
    }
}

fn read_users_file(path: &Path) -> Result<Vec<UserEntry>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let file: UsersFile = toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: super::parse_message(&e),
    })?;
    check_users(&file.users, "security.users-file")?;
    Ok(file.users)
}

/// Users are unique by name and by certificate subject, and their hashes
/// are argon2id PHC strings.
pub(crate) fn check_users(users: &[UserEntry], key: &'static str) -> Result<(), ConfigError> {
    let mut names = std::collections::HashSet::new();
    let mut subjects = std::collections::HashSet::new();
    for u in users {
        let bad = |message: String| ConfigError::Invalid {
            key,
            message: format!("user '{}': {message}", u.name),
        };
        if u.name.is_empty() || u.name.chars().any(char::is_control) {
            return Err(bad("a name must be non-empty and printable".into()));
        }
        if !names.insert(u.name.as_str()) {
            return Err(bad("listed twice".into()));
        }
        if let Some(s) = &u.certificate_subject
            && !subjects.insert(s.as_str())
        {
            return Err(bad(format!(
                "certificate subject '{s}' belongs to two users"
            )));
        }
        match &u.password {
            Some(p) => crate::password::check_hash(p).map_err(bad)?,
            None if u.certificate_subject.is_none() => {
                return Err(bad(
                    "needs a `password` (an argon2id hash from `halyard passwd`) or a `certificate-subject`"
                        .into(),
                ));
            }
            None => {}
        }
    }
    Ok(())
}
