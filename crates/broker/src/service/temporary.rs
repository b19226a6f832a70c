//! Temporary destinations a client creates and deletes explicitly (JMS's
//! `createTemporaryQueue()` / `TemporaryQueue.delete()`). STOMP has no such
//! request: its temporary destinations come into being on first use.

use super::connection::Connection;
use super::error::ServiceError;
use super::{Right, ServiceError as E};
use crate::model::Destination;

impl Connection {
    /// Creates temporary destination `dest`, which must be this
    /// connection's own (named in its scope). It lives until the
    /// connection closes or deletes it. Creating is administering it, as
    /// in ActiveMQ (`[security.temporary]` grants it).
    pub(crate) fn create_temporary(&mut self, dest: &Destination) -> Result<(), ServiceError> {
        if !dest.is_temp_of(&self.temp_scope) {
            return Err(E::OthersTemporary(dest.clone()));
        }
        self.authorize(Right::Admin, dest)?;
        self.destination(dest).map(|_| ())
    }

    /// Deletes this connection's temporary destination `dest`, dropping what
    /// it holds. Another connection's is refused; an unknown one of ours is
    /// nothing to do.
    pub(crate) fn delete_temporary(&mut self, dest: &Destination) -> Result<(), ServiceError> {
        if !dest.is_temp_of(&self.temp_scope) {
            return Err(E::OthersTemporary(dest.clone()));
        }
        if let Some(i) = self.temps.iter().position(|d| d == dest) {
            self.temps.swap_remove(i);
            self.service.core.delete_destination(dest);
        }
        Ok(())
    }
}
