//! Reading a message's `AMQ_SCHEDULED_*` properties into a schedule, and
//! working out its firing times.
//!
//! The semantics are ActiveMQ's (`SchedulerBroker`, `JobSchedulerImpl`):
//! a message is scheduled if it has a delay, a period or a cron expression
//! (a repeat alone schedules nothing), and not if it carries a
//! `scheduledJobId` (it is a firing already, and must not be scheduled
//! again). The first firing is at the cron expression's next time (or now,
//! without one) plus the delay if there is one, else plus the period. A
//! schedule without cron fires `repeat + 1` times, each repeat `period` ms
//! after the firing before it. A cron schedule fires at every time the
//! expression names, without end.
//!
//! Cron with a repeat (ActiveMQ 5.17's `JobSchedulerImpl`): the cron
//! schedule itself delivers nothing; at each of its times it starts a run,
//! a new schedule without cron of the same message (its delay, period and
//! repeat) counted from that moment, so `repeat + 1` deliveries, the first
//! a delay (or, without one, a period) after the cron time and the rest
//! `period` apart. As in ActiveMQ the first cron time already has the delay
//! (or period) added, and the run adds it again; runs may overlap when a
//! run is longer than the cron interval.
//!
//! Where ActiveMQ quietly does something odd, Halyard refuses with a clear
//! error instead: negative numbers, values that are not whole numbers,
//! a repeat above `scheduler.max-repeat`, an invalid cron expression, and
//! a repeat without a period (ActiveMQ would fire all repeats at once).

use std::str::FromStr;

use crate::config::TimeZone;
use crate::model::{Properties, Value};

/// ms before the first firing.
pub(crate) const DELAY: &str = "AMQ_SCHEDULED_DELAY";
/// ms between firings.
pub(crate) const PERIOD: &str = "AMQ_SCHEDULED_PERIOD";
/// Firings after the first.
pub(crate) const REPEAT: &str = "AMQ_SCHEDULED_REPEAT";
/// A cron expression (5 fields, or 6 with seconds first).
pub(crate) const CRON: &str = "AMQ_SCHEDULED_CRON";
/// Set on every firing: the scheduled message's id (ActiveMQ's name).
pub(crate) const JOB_ID: &str = "scheduledJobId";
/// The further destinations of a composite destination, kept with the
/// scheduled message (comma-separated canonical names) so that a firing
/// after a restart goes to all of them; never shown to a consumer.
pub(crate) const ALSO: &str = "_HALYARD_SCHEDULED_ALSO";

/// What a message's properties ask of the scheduler.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub(crate) delay: u64,
    pub(crate) period: u64,
    pub(crate) repeat: u32,
    pub(crate) cron: Option<croner::Cron>,
}

/// Why a message's schedule is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SpecError {
    #[error("{name} must be a whole number of ms, not '{value}'")]
    NotANumber { name: &'static str, value: String },
    #[error("{name} must not be negative ({value})")]
    Negative { name: &'static str, value: i64 },
    #[error("{REPEAT} {value} is above scheduler.max-repeat ({max})")]
    RepeatTooLarge { value: i64, max: u32 },
    #[error("{CRON} '{expr}' is not a valid cron expression: {reason}")]
    Cron { expr: String, reason: String },
    #[error("{REPEAT} needs an {PERIOD} greater than 0")]
    RepeatWithoutPeriod,
    #[error("{CRON} '{expr}' names no future time")]
    CronNever { expr: String },
}

/// Whether `properties` schedule the message: what they ask for, or `None`
/// when the message is delivered at once.
pub(crate) fn parse(properties: &Properties, max_repeat: u32) -> Result<Option<Spec>, SpecError> {
    let cron = properties.get(CRON);
    let period = properties.get(PERIOD);
    let delay = properties.get(DELAY);
    if properties.get(JOB_ID).is_some() || (cron.is_none() && period.is_none() && delay.is_none()) {
        return Ok(None);
    }
    let delay = delay.map(|v| number(DELAY, v)).transpose()?.unwrap_or(0);
    let period = period.map(|v| number(PERIOD, v)).transpose()?.unwrap_or(0);
    let repeat = match properties.get(REPEAT) {
        None => 0,
        Some(v) => {
            let n = number(REPEAT, v)?;
            if n > u64::from(max_repeat) {
                return Err(SpecError::RepeatTooLarge {
                    value: n as i64,
                    max: max_repeat,
                });
            }
            n as u32
        }
    };
    let cron = match cron {
        None => None,
        Some(v) => {
            let expr = match v {
                Value::String(s) => s.trim().to_owned(),
                other => other.to_string(),
            };
            if expr.is_empty() {
                None
            } else {
                Some(croner::Cron::from_str(&expr).map_err(|e| SpecError::Cron {
                    expr: expr.clone(),
                    reason: e.to_string(),
                })?)
            }
        }
    };
    if repeat > 0 && period == 0 {
        return Err(SpecError::RepeatWithoutPeriod);
    }
    Ok(Some(Spec {
        delay,
        period,
        repeat,
        cron,
    }))
}

/// A property's value as a whole number of ms (or a count): an integer, or
/// a string holding one (STOMP's headers are strings).
fn number(name: &'static str, v: &Value) -> Result<u64, SpecError> {
    let n = match v {
        Value::I8(n) => i64::from(*n),
        Value::I16(n) => i64::from(*n),
        Value::I32(n) => i64::from(*n),
        Value::I64(n) => *n,
        Value::String(s) => s.trim().parse::<i64>().map_err(|_| SpecError::NotANumber {
            name,
            value: s.chars().take(64).collect(),
        })?,
        other => {
            return Err(SpecError::NotANumber {
                name,
                value: other.to_string().chars().take(64).collect(),
            });
        }
    };
    if n < 0 {
        return Err(SpecError::Negative { name, value: n });
    }
    Ok(n as u64)
}

impl Spec {
    /// Whether each cron time starts a run of repeats (see the module
    /// docs) instead of delivering.
    pub(crate) fn starts_runs(&self) -> bool {
        self.cron.is_some() && self.repeat > 0
    }

    /// When a run started at `now` by a cron schedule with repeats fires
    /// first: as a schedule without cron made then.
    pub(crate) fn run_first_due(&self, now: u64) -> u64 {
        now.saturating_add(if self.delay > 0 {
            self.delay
        } else {
            self.period
        })
    }

    /// When a schedule made at `now` fires first.
    pub(crate) fn first_due(&self, now: u64, zone: TimeZone) -> Result<u64, SpecError> {
        let start = match &self.cron {
            Some(c) => next_cron(c, now, zone).ok_or_else(|| SpecError::CronNever {
                expr: c.to_string(),
            })?,
            None => now,
        };
        let offset = if self.delay > 0 {
            self.delay
        } else {
            self.period
        };
        Ok(start.saturating_add(offset))
    }

    /// After firing number `fired` (1 for the first) at `now`: when it
    /// fires next, or `None` if that was its last firing.
    pub(crate) fn next_due(&self, fired: u32, now: u64, zone: TimeZone) -> Option<u64> {
        match &self.cron {
            Some(c) => next_cron(c, now, zone),
            None if fired <= self.repeat => Some(now.saturating_add(self.period)),
            None => None,
        }
    }
}

/// The first time after `after` (ms since the epoch) that `cron` names, in
/// zone `zone`.
fn next_cron(cron: &croner::Cron, after: u64, zone: TimeZone) -> Option<u64> {
    use chrono::TimeZone as _;
    let at = i64::try_from(after).ok()?;
    let next = match zone {
        TimeZone::Utc => {
            let t = chrono::Utc.timestamp_millis_opt(at).single()?;
            cron.find_next_occurrence(&t, false)
                .ok()?
                .timestamp_millis()
        }
        TimeZone::Local => {
            let t = chrono::Local.timestamp_millis_opt(at).single()?;
            cron.find_next_occurrence(&t, false)
                .ok()?
                .timestamp_millis()
        }
    };
    u64::try_from(next).ok()
}
