//! The schedule a message's properties ask for, and its firing times.

use super::spec::{self, SpecError};
use crate::config::TimeZone;
use crate::model::{Properties, Value};

fn props(p: &[(&str, Value)]) -> Properties {
    p.iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn s(v: &str) -> Value {
    Value::String(v.to_owned())
}

#[test]
fn a_message_without_delay_period_or_cron_is_not_scheduled() {
    assert!(spec::parse(&props(&[]), 1000).unwrap().is_none());
    // A repeat alone schedules nothing (as ActiveMQ).
    assert!(
        spec::parse(&props(&[(spec::REPEAT, s("3"))]), 1000)
            .unwrap()
            .is_none()
    );
    // A firing (it has a job id) is never scheduled again.
    let fired = props(&[(spec::DELAY, s("10")), (spec::JOB_ID, s("ID:x-1"))]);
    assert!(spec::parse(&fired, 1000).unwrap().is_none());
}

#[test]
fn strings_and_integers_are_read_as_ms() {
    let p = props(&[
        (spec::DELAY, s("1500")),
        (spec::PERIOD, Value::I64(200)),
        (spec::REPEAT, Value::I32(2)),
    ]);
    let sp = spec::parse(&p, 1000).unwrap().unwrap();
    assert_eq!((sp.delay, sp.period, sp.repeat), (1500, 200, 2));
    // The delay counts first; then each repeat a period after the last firing.
    assert_eq!(sp.first_due(10_000, TimeZone::Utc).unwrap(), 11_500);
    assert_eq!(sp.next_due(1, 11_500, TimeZone::Utc), Some(11_700));
    assert_eq!(sp.next_due(2, 11_700, TimeZone::Utc), Some(11_900));
    assert_eq!(sp.next_due(3, 11_900, TimeZone::Utc), None);
    // Without a delay, the first firing is a period away.
    let p = props(&[(spec::PERIOD, s("300"))]);
    let sp = spec::parse(&p, 1000).unwrap().unwrap();
    assert_eq!(sp.first_due(0, TimeZone::Utc).unwrap(), 300);
    assert_eq!(sp.next_due(1, 300, TimeZone::Utc), None);
}

#[test]
fn bad_values_are_refused() {
    let bad = |p: &[(&str, Value)]| spec::parse(&props(p), 10).unwrap_err();
    assert!(matches!(
        bad(&[(spec::DELAY, s("-1"))]),
        SpecError::Negative { .. }
    ));
    assert!(matches!(
        bad(&[(spec::DELAY, s("x"))]),
        SpecError::NotANumber { .. }
    ));
    assert!(matches!(
        bad(&[(spec::DELAY, Value::F64(1.0))]),
        SpecError::NotANumber { .. }
    ));
    assert!(matches!(
        bad(&[(spec::PERIOD, s("5")), (spec::REPEAT, s("11"))]),
        SpecError::RepeatTooLarge { .. }
    ));
    assert!(matches!(
        bad(&[(spec::CRON, s("61 * * * *"))]),
        SpecError::Cron { .. }
    ));
    assert!(matches!(
        bad(&[(spec::CRON, s("* * * * *")), (spec::REPEAT, s("1"))]),
        SpecError::RepeatWithoutPeriod
    ));
    assert!(matches!(
        bad(&[(spec::DELAY, s("5")), (spec::REPEAT, s("1"))]),
        SpecError::RepeatWithoutPeriod
    ));
}

#[test]
fn cron_fires_at_its_times_with_seconds_and_without() {
    // 2026-01-01T00:00:00.250Z
    let t = 1_767_225_600_250;
    let every_second = spec::parse(&props(&[(spec::CRON, s("* * * * * *"))]), 10)
        .unwrap()
        .unwrap();
    assert_eq!(
        every_second.first_due(t, TimeZone::Utc).unwrap(),
        1_767_225_601_000
    );
    assert_eq!(
        every_second.next_due(5, 1_767_225_601_000, TimeZone::Utc),
        Some(1_767_225_602_000)
    );
    let hourly = spec::parse(
        &props(&[(spec::CRON, s("0 * * * *")), (spec::DELAY, s("10"))]),
        10,
    )
    .unwrap()
    .unwrap();
    // The cron time, plus the delay (as ActiveMQ).
    assert_eq!(
        hourly.first_due(t, TimeZone::Utc).unwrap(),
        1_767_229_200_010
    );
}

#[test]
fn cron_with_repeat_starts_a_run_at_each_cron_time() {
    // 2026-01-01T00:00:00.250Z
    let t = 1_767_225_600_250;
    let runs = spec::parse(
        &props(&[
            (spec::CRON, s("* * * * * *")),
            (spec::REPEAT, s("2")),
            (spec::PERIOD, s("100")),
        ]),
        10,
    )
    .unwrap()
    .unwrap();
    assert!(runs.starts_runs());
    // As ActiveMQ: the first cron time has the period added...
    let first = runs.first_due(t, TimeZone::Utc).unwrap();
    assert_eq!(first, 1_767_225_601_100);
    // ...a run started then fires a period later...
    assert_eq!(runs.run_first_due(first), 1_767_225_601_200);
    // ...and the cron schedule goes on at its next time, with nothing added.
    assert_eq!(
        runs.next_due(1, first, TimeZone::Utc),
        Some(1_767_225_602_000)
    );
    let with_delay = spec::parse(
        &props(&[
            (spec::CRON, s("* * * * * *")),
            (spec::REPEAT, s("1")),
            (spec::PERIOD, s("100")),
            (spec::DELAY, s("30")),
        ]),
        10,
    )
    .unwrap()
    .unwrap();
    assert_eq!(with_delay.run_first_due(first), first + 30);
    let plain = spec::parse(&props(&[(spec::CRON, s("* * * * * *"))]), 10)
        .unwrap()
        .unwrap();
    assert!(!plain.starts_runs());
}
