//! Per-destination rights, ActiveMQ's `authorizationPlugin` model: entries
//! name queues or topics with wildcards and grant `read`, `write` and
//! `admin` to groups. Every entry that matches a destination adds its
//! grants (as ActiveMQ's `DefaultAuthorizationMap` unions them); a
//! destination no entry matches grants nothing. Temporary destinations
//! have one entry of their own.

use crate::config::{AuthorizationEntry, Rights};
use crate::model::{Destination, DestinationKind, NamePattern};

/// A right on a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Right {
    /// Subscribe, browse.
    Read,
    /// Send.
    Write,
    /// Create (the first use of a destination that does not exist).
    Admin,
}

impl Right {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Right::Read => "read",
            Right::Write => "write",
            Right::Admin => "admin",
        }
    }

    fn groups(self, rights: &Rights) -> &[String] {
        match self {
            Right::Read => &rights.read,
            Right::Write => &rights.write,
            Right::Admin => &rights.admin,
        }
    }
}

struct Entry {
    topic: bool,
    pattern: NamePattern,
    rights: Rights,
}

/// The compiled `[[security.authorization]]` entries.
pub(crate) struct Acl {
    entries: Vec<Entry>,
    temporary: Option<Rights>,
}

impl Acl {
    /// Compiles entries the config validated.
    pub(crate) fn new(entries: &[AuthorizationEntry], temporary: Option<Rights>) -> Acl {
        let entries = entries
            .iter()
            .filter_map(|e| {
                let (topic, name) = match (&e.queue, &e.topic) {
                    (Some(q), None) => (false, q),
                    (None, Some(t)) => (true, t),
                    _ => return None,
                };
                Some(Entry {
                    topic,
                    pattern: NamePattern::parse(name).ok()?,
                    rights: e.rights.clone(),
                })
            })
            .collect();
        Acl { entries, temporary }
    }

    /// Whether there are entries at all: with none, authentication is the
    /// only gate.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether one of `groups` has `right` on `dest`. A wildcard name (a
    /// subscription to `orders.>`) needs the right from entries that cover
    /// every name it stands for.
    pub(crate) fn allows(&self, groups: &[String], right: Right, dest: &Destination) -> bool {
        let granted = |rights: &Rights| right.groups(rights).iter().any(|g| groups.contains(g));
        if dest.kind().is_temporary() {
            return self.temporary.as_ref().is_none_or(granted);
        }
        let topic = dest.kind() == DestinationKind::Topic;
        self.entries
            .iter()
            .filter(|e| e.topic == topic && covers(&e.pattern, dest.name()))
            .any(|e| granted(&e.rights))
    }
}

/// Whether every name `name` stands for (it may be a wildcard) matches
/// `pattern`: `orders.>` covers `orders.*.eu` and `orders.>`, but `orders.*`
/// does not cover `orders.>`.
fn covers(pattern: &NamePattern, name: &str) -> bool {
    if !NamePattern::is_wildcard(name) {
        return pattern.matches(name);
    }
    let mut want = pattern.as_str().split('.');
    let mut have = name.split('.');
    loop {
        match (want.next(), have.next()) {
            (Some(">"), _) => return true,
            (None, None) => return true,
            (Some(_), Some(">")) | (None, Some(_)) | (Some(_), None) => return false,
            (Some("*"), Some(_)) => {}
            (Some(w), Some(h)) => {
                if w != h {
                    return false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(
        queue: Option<&str>,
        topic: Option<&str>,
        read: &[&str],
        write: &[&str],
    ) -> AuthorizationEntry {
        let v = |s: &[&str]| s.iter().map(|g| g.to_string()).collect();
        AuthorizationEntry {
            queue: queue.map(str::to_owned),
            topic: topic.map(str::to_owned),
            rights: Rights {
                read: v(read),
                write: v(write),
                admin: v(&["admins"]),
            },
        }
    }

    #[test]
    fn grants_add_up_over_matching_entries_by_kind() {
        let acl = Acl::new(
            &[
                entry(Some(">"), None, &["admins"], &["admins"]),
                entry(Some("orders.>"), None, &["readers"], &["writers"]),
                entry(None, Some("prices.*"), &["readers"], &[]),
            ],
            None,
        );
        let g = |s: &str| vec![s.to_owned()];
        let q = Destination::queue;
        let t = Destination::topic;
        assert!(acl.allows(&g("readers"), Right::Read, &q("orders.eu")));
        assert!(!acl.allows(&g("readers"), Right::Write, &q("orders.eu")));
        assert!(acl.allows(&g("writers"), Right::Write, &q("orders")));
        assert!(!acl.allows(&g("readers"), Right::Read, &q("payments")));
        assert!(acl.allows(&g("admins"), Right::Read, &q("payments")));
        assert!(acl.allows(&g("readers"), Right::Read, &t("prices.eur")));
        assert!(!acl.allows(&g("readers"), Right::Read, &t("prices.eur.spot")));
        assert!(
            !acl.allows(&g("readers"), Right::Read, &q("prices.eur")),
            "kinds apart"
        );
        assert!(acl.allows(&g("admins"), Right::Admin, &q("orders.x")));
        assert!(!acl.allows(&g("writers"), Right::Admin, &q("orders.x")));
        // Wildcard subscriptions need entries covering all they stand for.
        assert!(acl.allows(&g("readers"), Right::Read, &q("orders.*.eu")));
        assert!(acl.allows(&g("readers"), Right::Read, &q("orders.>")));
        assert!(acl.allows(&g("readers"), Right::Read, &t("prices.*")));
        assert!(!acl.allows(&g("readers"), Right::Read, &t("prices.>")));
        assert!(!acl.allows(&g("readers"), Right::Read, &q(">")));
    }

    #[test]
    fn temporary_destinations_have_their_own_entry() {
        let temp = Destination::new(DestinationKind::TempQueue, "x-1").unwrap();
        let open = Acl::new(&[], None);
        assert!(open.allows(&[], Right::Write, &temp));
        let closed = Acl::new(
            &[],
            Some(Rights {
                read: vec!["apps".into()],
                write: vec!["apps".into()],
                admin: vec!["apps".into()],
            }),
        );
        assert!(closed.allows(&["apps".into()], Right::Admin, &temp));
        assert!(!closed.allows(&["others".into()], Right::Write, &temp));
    }
}
