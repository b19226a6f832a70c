//! Who a connection is and what it may do: the principal attached at
//! connect time (from a login and passcode, or a client certificate's
//! subject, or nobody) and its rights on each destination. Every protocol
//! head gets the same rules, because it asks this service.
//!
//! Passwords are argon2id hashes ([`password`]); checking one costs about
//! 20 ms of CPU on purpose, so it runs on the blocking pool behind a
//! semaphore (a flood of logins cannot take every core), and an unknown
//! user costs the same as a known one (a decoy hash is checked), so timing
//! tells no one which users exist. Failures slow their address down
//! ([`throttle`]).

mod acl;
mod throttle;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::Semaphore;

pub(crate) use acl::Right;

use crate::config::{Anonymous, ConfigError, SecurityConfig, UserEntry};
use crate::model::Destination;
use crate::password;

/// Who a connection acts for.
#[derive(Debug, Clone)]
pub(crate) enum Principal {
    /// No credentials, where `security.anonymous` allows it.
    Anonymous,
    /// A user of the config.
    User(Arc<User>),
    /// The broker itself (the scheduler firing a message a user sent):
    /// every right, since the sender's rights were checked when it sent.
    Broker,
}

impl Principal {
    /// The user's name, if it is one.
    pub(crate) fn user(&self) -> Option<&str> {
        match self {
            Principal::User(u) => Some(&u.name),
            _ => None,
        }
    }

    /// How logs and errors name it.
    pub(crate) fn describe(&self) -> String {
        match self {
            Principal::Anonymous => "anonymous".to_owned(),
            Principal::User(u) => format!("user '{}'", u.name),
            Principal::Broker => "the broker".to_owned(),
        }
    }
}

/// A user, as connections share it.
#[derive(Debug)]
pub(crate) struct User {
    pub(crate) name: String,
    pub(crate) groups: Vec<String>,
    password: Option<String>,
}

/// Why a connection was not let in. One message for an unknown user and a
/// wrong passcode, so that the answer tells no one which users exist.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum LoginError {
    #[error("login failed: unknown user or wrong passcode")]
    BadCredentials,
    #[error(
        "login required: this broker does not accept anonymous connections (security.anonymous = \"none\")"
    )]
    Required,
}

/// What a principal was refused.
#[derive(Debug, Clone, thiserror::Error)]
#[error("not authorized: {who} lacks the {} right on {dest}", right.as_str())]
pub(crate) struct Denied {
    pub(crate) who: String,
    pub(crate) right: Right,
    pub(crate) dest: Destination,
}

/// What a user may do on the admin HTTP API, from its groups
/// (`security.admin-groups`, `security.monitor-groups`). Ordered: an
/// admin may do everything a monitor may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum AdminRole {
    /// Read-only endpoints (GET).
    Monitor,
    /// Everything.
    Admin,
}

impl AdminRole {
    /// The role's name, as the docs and the 403 answers say it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            AdminRole::Monitor => "monitor",
            AdminRole::Admin => "admin",
        }
    }
}

/// The users and rules of one broker.
pub(crate) struct Security {
    users: HashMap<String, Arc<User>>,
    admin_groups: Vec<String>,
    monitor_groups: Vec<String>,
    /// Admin API requests refused for bad credentials. Kept here, not in
    /// the master's counters, because masters and slaves alike serve the
    /// admin API, and a slave's refusals count as much.
    pub(crate) admin_login_failures_total: AtomicU64,
    /// Admin API requests by a user whose role does not allow them.
    pub(crate) admin_forbidden_total: AtomicU64,
    subjects: HashMap<String, Arc<User>>,
    anonymous: Anonymous,
    acl: acl::Acl,
    throttle: throttle::Throttle,
    /// Password checks running at once, at most.
    checking: Semaphore,
    /// The hash an unknown user's passcode is checked against.
    decoy: Arc<OnceLock<String>>,
}

/// A hash no passcode matches (of random bytes), made on first need (on
/// the blocking pool: hashing is slow on purpose).
fn decoy_hash(decoy: &OnceLock<String>) -> &str {
    decoy.get_or_init(|| {
        let mut secret = [0u8; 24];
        let _ = getrandom::fill(&mut secret);
        let text: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        password::hash(&text).unwrap_or_default()
    })
}

impl Security {
    /// Builds the rules from `[security]` (reading the users file).
    pub(crate) fn new(config: &SecurityConfig) -> Result<Security, ConfigError> {
        let entries = config.all_users()?;
        crate::config::check_users(&entries, "security.users")?;
        let mut users = HashMap::new();
        let mut subjects = HashMap::new();
        for UserEntry {
            name,
            password,
            groups,
            certificate_subject,
        } in entries
        {
            let user = Arc::new(User {
                name: name.clone(),
                groups,
                password,
            });
            if let Some(s) = certificate_subject {
                subjects.insert(s, user.clone());
            }
            users.insert(name, user);
        }
        let anonymous = config.anonymous(!users.is_empty());
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Security {
            users,
            admin_groups: config.admin_groups.clone(),
            monitor_groups: config.monitor_groups.clone(),
            admin_login_failures_total: AtomicU64::new(0),
            admin_forbidden_total: AtomicU64::new(0),
            subjects,
            anonymous,
            acl: acl::Acl::new(&config.authorization, config.temporary.clone()),
            throttle: throttle::Throttle::new(
                Duration::from_millis(config.login_delay_ms),
                Duration::from_millis(config.login_delay_max_ms),
            ),
            checking: Semaphore::new(cores),
            decoy: Arc::default(),
        })
    }

    /// Who a client is, from what it offered: a login (checked against its
    /// passcode), else a client certificate's subject, else nobody.
    pub(crate) async fn authenticate(
        &self,
        peer: SocketAddr,
        login: Option<&str>,
        passcode: Option<&str>,
        tls_subject: Option<&str>,
    ) -> Result<Principal, LoginError> {
        // Clients that have no credentials often send empty ones; and a
        // broker without users ignores credentials, as ActiveMQ without an
        // authentication plugin does, so that clients set up with a login
        // keep working against a development broker.
        let login = login.filter(|l| !l.is_empty() && !self.users.is_empty());
        if let Some(login) = login {
            return self
                .check_password(peer, login, passcode.unwrap_or(""))
                .await
                .map(Principal::User);
        }
        if let Some(user) = tls_subject.and_then(|s| self.subjects.get(s)) {
            return Ok(Principal::User(user.clone()));
        }
        match self.anonymous {
            Anonymous::None => Err(LoginError::Required),
            Anonymous::Read | Anonymous::All => Ok(Principal::Anonymous),
        }
    }

    /// Whether the broker has users at all: without any, the admin API
    /// stays open (as the client listeners do; `check_exposure` refuses a
    /// public address in that case).
    pub(crate) fn has_users(&self) -> bool {
        !self.users.is_empty()
    }

    /// Checks an HTTP basic-auth login (the admin API) the way a STOMP
    /// login is checked: the same users, the same per-address slowdown,
    /// decoy hash and bound on parallel checks, so the admin port is no
    /// cheaper a place to guess passwords.
    pub(crate) async fn authenticate_http(
        &self,
        peer: SocketAddr,
        login: &str,
        password: &str,
    ) -> Result<Arc<User>, LoginError> {
        self.check_password(peer, login, password).await
    }

    /// The user's admin API role, if it has one: admin beats monitor.
    pub(crate) fn admin_role(&self, user: &User) -> Option<AdminRole> {
        let member = |groups: &[String]| user.groups.iter().any(|g| groups.contains(g));
        if member(&self.admin_groups) {
            Some(AdminRole::Admin)
        } else if member(&self.monitor_groups) {
            Some(AdminRole::Monitor)
        } else {
            None
        }
    }

    async fn check_password(
        &self,
        peer: SocketAddr,
        login: &str,
        passcode: &str,
    ) -> Result<Arc<User>, LoginError> {
        let ip = peer.ip();
        tokio::time::sleep_until(self.throttle.turn(ip)).await;
        let user = self.users.get(login).cloned();
        let hash = user.as_ref().and_then(|u| u.password.clone());
        let passcode = passcode.to_owned();
        let decoy = self.decoy.clone();
        let ok = {
            let _permit = self.checking.acquire().await;
            tokio::task::spawn_blocking(move || {
                let hash = hash.as_deref().unwrap_or_else(|| decoy_hash(&decoy));
                password::verify(hash, &passcode)
            })
            .await
            .unwrap_or(false)
        };
        match user {
            Some(user) if ok && user.password.is_some() => {
                self.throttle.succeeded(ip);
                Ok(user)
            }
            _ => {
                self.throttle.failed(ip);
                Err(LoginError::BadCredentials)
            }
        }
    }

    /// Whether `principal` may do anything at all, so that its requests
    /// need no check (a broker without users, or with no authorization
    /// entries for a user).
    pub(crate) fn unrestricted(&self, principal: &Principal) -> bool {
        match principal {
            Principal::Broker => true,
            Principal::Anonymous => self.anonymous == Anonymous::All,
            Principal::User(_) => self.acl.is_empty(),
        }
    }

    /// Whether `principal` has `right` on `dest`.
    pub(crate) fn authorize(
        &self,
        principal: &Principal,
        right: Right,
        dest: &Destination,
    ) -> Result<(), Denied> {
        let allowed = self.unrestricted(principal)
            || match principal {
                Principal::Broker => true,
                Principal::Anonymous => self.anonymous == Anonymous::Read && right == Right::Read,
                Principal::User(u) => self.acl.allows(&u.groups, right, dest),
            };
        if allowed {
            Ok(())
        } else {
            Err(Denied {
                who: principal.describe(),
                right,
                dest: dest.clone(),
            })
        }
    }
}
