//! Table tests for the crontab → Quartz translation and for fire-time evaluation.

use chrono::NaiveDate;

use super::*;

fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> NaiveDateTime {
    NaiveDate::from_ymd_opt(y, mo, d)
        .and_then(|date| date.and_hms_opt(h, mi, 0))
        .expect("valid test date")
}

#[test]
fn translates_crontab_to_quartz() {
    // (crontab, Quartz, Quartz of the day-of-week half when crontab's OR rule applies)
    let table: &[(&str, &str, Option<&str>)] = &[
        ("* * * * *", "0 * * * * *", None),
        ("0 2 * * *", "0 0 2 * * *", None),
        ("*/15 * * * *", "0 */15 * * * *", None),
        ("0-30/5 9-17 * * *", "0 0-30/5 9-17 * * *", None),
        ("0 9,12,15 1,15 * *", "0 0 9,12,15 1,15 * *", None),
        ("30 4 * JAN-MAR *", "0 30 4 * 1-3 *", None),
        ("30 4 * jul,Dec *", "0 30 4 * 7,12 *", None),
        ("0 0 * * 0", "0 0 0 * * 1", None),
        ("0 0 * * 7", "0 0 0 * * 1", None),
        ("0 0 * * 6", "0 0 0 * * 7", None),
        ("0 0 * * SUN", "0 0 0 * * 1", None),
        ("0 0 * * sat", "0 0 0 * * 7", None),
        ("0 0 * * 1-5", "0 0 0 * * 2-6", None),
        ("0 0 * * MON-FRI", "0 0 0 * * 2-6", None),
        ("0 0 * * 5-7", "0 0 0 * * 1,6-7", None),
        ("0 0 * * FRI-SUN", "0 0 0 * * 1,6-7", None),
        ("0 0 * * 6-0", "0 0 0 * * 1,7", None),
        ("0 0 * * 0-7", "0 0 0 * * 1-7", None),
        ("0 0 * * 7-7", "0 0 0 * * 1", None),
        ("0 0 * * */2", "0 0 0 * * 1,3,5,7", None),
        ("0 0 * * 1-5/2", "0 0 0 * * 2,4,6", None),
        ("0 0 * * MON,WED,FRI", "0 0 0 * * 2,4,6", None),
        ("0 0 * * 0,3,7", "0 0 0 * * 1,4", None),
        ("0 0 1 * MON", "0 0 0 1 * *", Some("0 0 0 * * 2")),
        ("0 0 */2 * MON", "0 0 0 */2 * 2", None),
        ("0 0 1-7 * *", "0 0 0 1-7 * *", None),
        ("15 0 2 * * *", "15 0 2 * * *", None),
        ("30 */5 * * * MON-FRI", "30 */5 * * * 2-6", None),
        ("*/10 * * * * *", "*/10 * * * * *", None),
        ("@hourly", "0 0 * * * *", None),
        ("@daily", "0 0 0 * * *", None),
        ("@midnight", "0 0 0 * * *", None),
        ("@weekly", "0 0 0 * * 1", None),
        ("@monthly", "0 0 0 1 * *", None),
        ("@yearly", "0 0 0 1 1 *", None),
        ("@annually", "0 0 0 1 1 *", None),
        ("  0   2 * * *  ", "0 0 2 * * *", None),
    ];
    for (crontab, quartz, or_dow) in table {
        let expr = CronExpr::parse(crontab)
            .unwrap_or_else(|e| panic!("`{crontab}` should parse, got: {e}"));
        assert_eq!(expr.quartz, *quartz, "quartz of `{crontab}`");
        assert_eq!(
            expr.or_day_of_week.as_ref().map(|q| q.quartz.as_str()),
            *or_dow,
            "day-of-week half of `{crontab}`"
        );
    }
}

#[test]
fn refuses_quartz_syntax_bad_ranges_and_wrong_field_counts() {
    use CronField::*;
    let table: &[(&str, CronError)] = &[
        ("", CronError::Empty),
        ("   ", CronError::Empty),
        ("* * * *", CronError::WrongFieldCount { count: 4 }),
        ("0 0 0 * * * 2030", CronError::WrongFieldCount { count: 7 }),
        (
            "0 0 ? * MON",
            CronError::QuartzOnly {
                field: DayOfMonth,
                token: "?".into(),
            },
        ),
        (
            "0 0 L * *",
            CronError::QuartzOnly {
                field: DayOfMonth,
                token: "L".into(),
            },
        ),
        (
            "0 0 15W * *",
            CronError::QuartzOnly {
                field: DayOfMonth,
                token: "15W".into(),
            },
        ),
        (
            "0 0 * * 5L",
            CronError::QuartzOnly {
                field: DayOfWeek,
                token: "5L".into(),
            },
        ),
        (
            "0 0 * * MON#2",
            CronError::QuartzOnly {
                field: DayOfWeek,
                token: "MON#2".into(),
            },
        ),
        (
            "61 * * * *",
            CronError::OutOfRange {
                field: Minute,
                value: "61".into(),
                min: 0,
                max: 59,
            },
        ),
        (
            "0 24 * * *",
            CronError::OutOfRange {
                field: Hour,
                value: "24".into(),
                min: 0,
                max: 23,
            },
        ),
        (
            "0 0 0 * *",
            CronError::OutOfRange {
                field: DayOfMonth,
                value: "0".into(),
                min: 1,
                max: 31,
            },
        ),
        (
            "0 0 * 13 *",
            CronError::OutOfRange {
                field: Month,
                value: "13".into(),
                min: 1,
                max: 12,
            },
        ),
        (
            "0 0 * * 8",
            CronError::OutOfRange {
                field: DayOfWeek,
                value: "8".into(),
                min: 0,
                max: 7,
            },
        ),
        (
            "60 0 0 * * *",
            CronError::OutOfRange {
                field: Second,
                value: "60".into(),
                min: 0,
                max: 59,
            },
        ),
        (
            "0 0 * * MOX",
            CronError::UnknownName {
                field: DayOfWeek,
                name: "MOX".into(),
            },
        ),
        (
            "0 0 * FOO *",
            CronError::UnknownName {
                field: Month,
                name: "FOO".into(),
            },
        ),
        (
            "0 MON * * *",
            CronError::UnknownName {
                field: Hour,
                name: "MON".into(),
            },
        ),
        (
            "0 22-2 * * *",
            CronError::BackwardsRange {
                field: Hour,
                text: "22-2".into(),
            },
        ),
        (
            "*/0 * * * *",
            CronError::BadStep {
                field: Minute,
                text: "*/0".into(),
            },
        ),
        (
            "1,,2 * * * *",
            CronError::Syntax {
                field: Minute,
                text: "".into(),
            },
        ),
        (
            "@reboot",
            CronError::UnknownMacro {
                name: "@reboot".into(),
            },
        ),
        (
            "0 0 30 2 *",
            CronError::NeverFires {
                expression: "0 0 30 2 *".into(),
            },
        ),
    ];
    for (crontab, expected) in table {
        match CronExpr::parse(crontab) {
            Ok(expr) => panic!("`{crontab}` should fail, got quartz `{}`", expr.quartz),
            Err(err) => assert_eq!(&err, expected, "error for `{crontab}`"),
        }
    }
}

#[test]
fn error_messages_name_the_field() {
    let err = CronExpr::parse("61 * * * *").expect_err("out of range");
    assert_eq!(err.to_string(), "minute field `61` is out of range 0-59");
    assert!(err.help().contains("between 0 and 59"));
    let err = CronExpr::parse("0 0 ? * *").expect_err("quartz");
    assert_eq!(
        err.to_string(),
        "day-of-month field `?` is Quartz syntax, not crontab"
    );
}

#[test]
fn next_after_follows_the_expression() {
    let daily = CronExpr::parse("0 2 * * *").expect("valid");
    assert_eq!(
        daily.next_after(at(2024, 3, 1, 1, 0)),
        Some(at(2024, 3, 1, 2, 0))
    );
    // Strictly after: a fire time equal to `after` is not returned again.
    assert_eq!(
        daily.next_after(at(2024, 3, 1, 2, 0)),
        Some(at(2024, 3, 2, 2, 0))
    );

    // 2024-03-01 is a Friday; FRI-SUN fires Fri, Sat, Sun, then next Friday.
    let weekend = CronExpr::parse("0 9 * * FRI-SUN").expect("valid");
    let mut t = at(2024, 3, 1, 0, 0);
    let mut fired = Vec::new();
    for _ in 0..4 {
        t = weekend.next_after(t).expect("fires");
        fired.push(t);
    }
    assert_eq!(
        fired,
        vec![
            at(2024, 3, 1, 9, 0),
            at(2024, 3, 2, 9, 0),
            at(2024, 3, 3, 9, 0),
            at(2024, 3, 8, 9, 0)
        ]
    );

    let sunday_as_seven = CronExpr::parse("0 0 * * 7").expect("valid");
    assert_eq!(
        sunday_as_seven.next_after(at(2024, 3, 1, 0, 0)),
        Some(at(2024, 3, 3, 0, 0))
    );

    let hourly = CronExpr::parse("@hourly").expect("valid");
    assert_eq!(
        hourly.next_after(at(2024, 3, 1, 10, 30)),
        Some(at(2024, 3, 1, 11, 0))
    );
}

#[test]
fn restricted_day_of_month_and_day_of_week_match_either_like_crontab() {
    // The 1st of the month OR any Monday. 2024-04-01 is a Monday, 2024-05-01 a Wednesday.
    let expr = CronExpr::parse("0 0 1 * MON").expect("valid");
    let mut t = at(2024, 4, 20, 0, 0);
    let mut fired = Vec::new();
    for _ in 0..4 {
        t = expr.next_after(t).expect("fires");
        fired.push(t);
    }
    assert_eq!(
        fired,
        vec![
            at(2024, 4, 22, 0, 0), // Monday
            at(2024, 4, 29, 0, 0), // Monday
            at(2024, 5, 1, 0, 0),  // the 1st, a Wednesday
            at(2024, 5, 6, 0, 0),  // Monday
        ]
    );

    // A `*` in either field means both must match: every other day that is a Monday.
    let and = CronExpr::parse("0 0 */2 * MON").expect("valid");
    assert!(and.or_day_of_week.is_none());
    // 2024-04-22 is a Monday but day 22 is not in 1,3,5...; 2024-04-29 (29) is.
    assert_eq!(
        and.next_after(at(2024, 4, 20, 0, 0)),
        Some(at(2024, 4, 29, 0, 0))
    );
}
