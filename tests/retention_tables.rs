//! Table tests for retention decisions (`arca forget`).
//!
//! Every expected keep/remove set below is written out by hand (derived in
//! the comments next to it), never computed by the code under test. Times
//! are written as UTC `YYYY-MM-DD HH:MM` unless a helper says otherwise.

use arca::retention::{
    decide, parse_duration, parse_keep_every, Amount, Decision, Policy, RetentionError, Rule,
    RuleSet, SnapInfo, Unit, SAFETY_REASON,
};
use chrono::{NaiveDate, NaiveDateTime, TimeZone, Weekday};
use chrono_tz::Tz;

const MIN: i64 = 60;
const HOUR: i64 = 3_600;
const DAY: i64 = 86_400;

/// Unix seconds of a UTC `YYYY-MM-DD HH:MM`.
fn t(s: &str) -> i64 {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M")
        .unwrap_or_else(|e| panic!("bad test time {s:?}: {e}"))
        .and_utc()
        .timestamp()
}

/// Unix seconds of a local `YYYY-MM-DD HH:MM` in `tz` (must be unambiguous).
fn lt(tz: Tz, s: &str) -> i64 {
    let naive = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M")
        .unwrap_or_else(|e| panic!("bad test time {s:?}: {e}"));
    tz.from_local_datetime(&naive)
        .single()
        .unwrap_or_else(|| panic!("{s} is not a single local time in {tz}"))
        .timestamp()
}

/// UTC `YYYY-MM-DD HH:MM` of unix seconds.
fn show(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .expect("time in range")
        .format("%Y-%m-%d %H:%M")
        .to_string()
}

fn snap(id: &str, time: i64, account: &str, paths: &[&str], tags: &[&str]) -> SnapInfo {
    SnapInfo {
        nanos: 0,
        id: id.to_string(),
        time,
        account: account.to_string(),
        paths: paths.iter().map(|p| p.to_string()).collect(),
        tags: tags.iter().map(|p| p.to_string()).collect(),
    }
}

/// One snapshot per UTC time, account `acct`, paths `["/data"]`, ids the hex
/// of the time.
fn snaps_at(acct: &str, times: &[i64]) -> Vec<SnapInfo> {
    times
        .iter()
        .map(|&time| snap(&format!("{time:012x}"), time, acct, &["/data"], &[]))
        .collect()
}

fn run(snaps: &[SnapInfo], set: RuleSet, now: i64, allow_empty: bool) -> Vec<Decision> {
    decide(snaps, &|_| Ok(set.clone()), now, allow_empty).expect("decide")
}

/// UTC times of kept snapshots, in decision order.
fn kept(decisions: &[Decision]) -> Vec<String> {
    decisions
        .iter()
        .filter(|d| d.keep)
        .map(|d| show(d.time))
        .collect()
}

fn kept_ids(decisions: &[Decision]) -> Vec<&str> {
    decisions
        .iter()
        .filter(|d| d.keep)
        .map(|d| d.id.as_str())
        .collect()
}

fn utc_set() -> RuleSet {
    RuleSet::new(Tz::UTC, Weekday::Mon)
}

fn berlin() -> Tz {
    "Europe/Berlin".parse().expect("tz")
}

fn hourly_utc(from: &str, to: &str) -> Vec<i64> {
    (t(from)..=t(to)).step_by(HOUR as usize).collect()
}

// ---------------------------------------------------------------------------
// Count semantics

#[test]
fn daily_count_keeps_newest_of_the_most_recent_days_that_have_snapshots() {
    // Days with snapshots: Jan 1, 2, 5, 9 (gaps on 3, 4, 6, 7, 8).
    let times = [
        "2024-01-01 08:00",
        "2024-01-01 20:00",
        "2024-01-02 10:00",
        "2024-01-05 09:00",
        "2024-01-05 12:00",
        "2024-01-05 23:59",
        "2024-01-09 06:00",
    ]
    .map(t);
    let set = utc_set().with(Rule::Calendar(Unit::Daily, Amount::Count(3)));
    // `now` is irrelevant to counts: far in the future.
    let d = run(&snaps_at("a", &times), set, t("2030-01-01 00:00"), false);
    // 3 most recent days with snapshots: 9, 5, 2 (not 9, 8, 7).
    assert_eq!(
        kept(&d),
        ["2024-01-02 10:00", "2024-01-05 23:59", "2024-01-09 06:00"]
    );
    for x in d.iter().filter(|x| x.keep) {
        assert_eq!(x.reasons, ["daily 3"]);
    }
    assert!(d.iter().filter(|x| !x.keep).all(|x| x.reasons.is_empty()));
    assert_eq!(d.len(), 7);
}

#[test]
fn monthly_and_yearly_counts() {
    let times = [
        "2022-12-31 23:00",
        "2023-06-15 12:00",
        "2023-11-30 10:00",
        "2024-01-01 00:00",
        "2024-01-31 23:59",
        "2024-02-29 12:00",
        "2024-02-29 13:00",
    ]
    .map(t);
    let monthly = utc_set().with(Rule::Calendar(Unit::Monthly, Amount::Count(3)));
    // Months with snapshots, newest first: 2024-02, 2024-01, 2023-11.
    assert_eq!(
        kept(&run(&snaps_at("a", &times), monthly, 0, true)),
        ["2023-11-30 10:00", "2024-01-31 23:59", "2024-02-29 13:00"]
    );
    let yearly = utc_set().with(Rule::Calendar(Unit::Yearly, Amount::Count(5)));
    // Years 2024, 2023, 2022 (only three have snapshots).
    assert_eq!(
        kept(&run(&snaps_at("a", &times), yearly, 0, true)),
        ["2022-12-31 23:00", "2023-11-30 10:00", "2024-02-29 13:00"]
    );
}

// ---------------------------------------------------------------------------
// Duration semantics and the safety

#[test]
fn daily_duration_measured_from_now_expires_but_safety_keeps_newest() {
    let times = [
        "2024-01-01 10:00",
        "2024-01-02 10:00",
        "2024-01-03 10:00",
        "2024-01-03 18:00",
    ]
    .map(t);
    let set = utc_set().with(Rule::Calendar(Unit::Daily, Amount::Within(30 * DAY)));
    let now = t("2024-06-01 00:00"); // the account stopped backing up months ago
    let d = run(&snaps_at("closed", &times), set.clone(), now, false);
    assert_eq!(kept(&d), ["2024-01-03 18:00"]);
    let newest = d.iter().find(|x| x.keep).expect("one kept");
    assert_eq!(newest.reasons, [SAFETY_REASON]);
    assert_eq!(SAFETY_REASON, "newest of its group (safety)");

    let d = run(&snaps_at("closed", &times), set.clone(), now, true);
    assert!(kept(&d).is_empty());
    assert_eq!(d.len(), 4);

    // While still within 30 days, the same rule keeps one per day.
    let d = run(
        &snaps_at("closed", &times),
        set,
        t("2024-01-20 00:00"),
        true,
    );
    assert_eq!(
        kept(&d),
        ["2024-01-01 10:00", "2024-01-02 10:00", "2024-01-03 18:00"]
    );
}

#[test]
fn daily_duration_counts_buckets_that_start_within_the_duration() {
    // now = Jan 10 12:00, 3d → cut-off Jan 7 12:00. Day buckets starting at or
    // after it: Jan 8, 9, 10. Jan 7's bucket started before the cut-off even
    // though its 18:00 snapshot is after it.
    let times = [
        "2024-01-06 12:00",
        "2024-01-07 18:00",
        "2024-01-08 01:00",
        "2024-01-08 02:00",
        "2024-01-09 05:00",
        "2024-01-10 11:00",
    ]
    .map(t);
    let set = utc_set().with(Rule::Calendar(Unit::Daily, Amount::Within(3 * DAY)));
    let d = run(
        &snaps_at("a", &times),
        set.clone(),
        t("2024-01-10 12:00"),
        false,
    );
    assert_eq!(
        kept(&d),
        ["2024-01-08 02:00", "2024-01-09 05:00", "2024-01-10 11:00"]
    );
    assert!(d
        .iter()
        .filter(|x| x.keep)
        .all(|x| x.reasons == ["daily (3d)"]));
    // now = Jan 10 00:00 → cut-off Jan 7 00:00, exactly the start of Jan 7's
    // bucket, which is therefore within; Jan 10 11:00 is after now (clock
    // skew) and counts as within too.
    let d = run(&snaps_at("a", &times), set, t("2024-01-10 00:00"), true);
    assert_eq!(
        kept(&d),
        [
            "2024-01-07 18:00",
            "2024-01-08 02:00",
            "2024-01-09 05:00",
            "2024-01-10 11:00"
        ]
    );
}

#[test]
fn keep_within_is_inclusive_at_the_boundary() {
    let now = t("2024-05-10 12:00");
    let times = [
        now - 3 * DAY,
        now - 2 * DAY - 1,
        now - 2 * DAY,
        now - DAY,
        now - 1,
    ];
    let set = utc_set().with(Rule::Within(2 * DAY));
    let d = run(&snaps_at("a", &times), set, now, true);
    assert_eq!(
        kept(&d),
        ["2024-05-08 12:00", "2024-05-09 12:00", "2024-05-10 11:59"]
    );
    assert_eq!(
        d.iter().find(|x| x.keep).map(|x| x.reasons.clone()),
        Some(vec!["within 2d".to_string()])
    );
}

// ---------------------------------------------------------------------------
// Aligned buckets across DST (Europe/Berlin)

#[test]
fn every_6h_across_spring_dst_change_uses_local_00_06_12_18() {
    // 2024-03-31: 02:00 CET jumps to 03:00 CEST at 01:00 UTC. Local bucket
    // starts in UTC: Mar 30 17:00 (18:00 CET), Mar 30 23:00 (00:00 CET),
    // Mar 31 04:00 (06:00 CEST), 10:00, 16:00, 22:00 (00:00 CEST Apr 1).
    // Hourly snapshots Mar 30 20:00 … Mar 31 23:00 UTC; newest of each bucket:
    let times = hourly_utc("2024-03-30 20:00", "2024-03-31 23:00");
    assert_eq!(times.len(), 28);
    let set = RuleSet::new(berlin(), Weekday::Mon).with(parse_keep_every("6h:7d").expect("parse"));
    let d = run(&snaps_at("acme", &times), set, t("2024-04-02 00:00"), true);
    assert_eq!(
        kept(&d),
        [
            "2024-03-30 22:00", // local Mar 30 23:00 CET, bucket 18-24
            "2024-03-31 03:00", // local 05:00 CEST, bucket 00-06 (5 real hours)
            "2024-03-31 09:00", // local 11:00, bucket 06-12
            "2024-03-31 15:00", // local 17:00, bucket 12-18
            "2024-03-31 21:00", // local 23:00, bucket 18-24
            "2024-03-31 23:00", // local Apr 1 01:00, bucket 00-06
        ]
    );
    assert!(d
        .iter()
        .filter(|x| x.keep)
        .all(|x| x.reasons == ["every 6h (7d)"]));
}

#[test]
fn every_6h_across_autumn_dst_change_uses_local_00_06_12_18() {
    // 2024-10-27: 03:00 CEST falls back to 02:00 CET at 01:00 UTC. Local bucket
    // starts in UTC: Oct 26 16:00 (18:00 CEST), Oct 26 22:00 (00:00 CEST),
    // Oct 27 05:00 (06:00 CET; the 00-06 bucket is 7 real hours), 11:00,
    // 17:00, 23:00 (00:00 Oct 28).
    let times = hourly_utc("2024-10-26 20:00", "2024-10-27 23:00");
    assert_eq!(times.len(), 28);
    let set = RuleSet::new(berlin(), Weekday::Mon).with(parse_keep_every("6h:7d").expect("parse"));
    let d = run(&snaps_at("acme", &times), set, t("2024-10-29 00:00"), true);
    assert_eq!(
        kept(&d),
        [
            "2024-10-26 21:00", // local 23:00 CEST
            "2024-10-27 04:00", // local 05:00 CET
            "2024-10-27 10:00", // local 11:00
            "2024-10-27 16:00", // local 17:00
            "2024-10-27 22:00", // local 23:00
            "2024-10-27 23:00", // local Oct 28 00:00
        ]
    );
}

#[test]
fn every_duration_drops_buckets_before_the_cutoff_across_dst() {
    // Same spring data; 1d of history from now = Mar 31 23:30 UTC (Apr 1
    // 01:30 CEST): cut-off Mar 30 23:30 UTC = Mar 31 00:30 local. Buckets
    // starting at or after local 00:30: 06, 12, 18 on Mar 31 and 00 Apr 1.
    let times = hourly_utc("2024-03-30 20:00", "2024-03-31 23:00");
    let set = RuleSet::new(berlin(), Weekday::Mon).with(parse_keep_every("6h:1d").expect("parse"));
    let d = run(&snaps_at("acme", &times), set, t("2024-03-31 23:30"), true);
    assert_eq!(
        kept(&d),
        [
            "2024-03-31 09:00",
            "2024-03-31 15:00",
            "2024-03-31 21:00",
            "2024-03-31 23:00"
        ]
    );
}

#[test]
fn hourly_buckets_put_the_repeated_autumn_hour_in_one_bucket() {
    // Local 02:15 CEST, 02:45 CEST, 02:15 CET, 02:45 CET, 03:15 CET.
    let times = [
        "2024-10-27 00:15",
        "2024-10-27 00:45",
        "2024-10-27 01:15",
        "2024-10-27 01:45",
        "2024-10-27 02:15",
    ]
    .map(t);
    let set =
        RuleSet::new(berlin(), Weekday::Mon).with(Rule::Calendar(Unit::Hourly, Amount::Count(10)));
    let d = run(&snaps_at("acme", &times), set, 0, true);
    assert_eq!(kept(&d), ["2024-10-27 01:45", "2024-10-27 02:15"]);
}

#[test]
fn every_30m_in_the_repeated_autumn_hour_keeps_one_per_wall_clock_half_hour() {
    // Local 02:10 CEST (00:10Z), 02:40 CEST (00:40Z), 02:10 CET (01:10Z),
    // 02:40 CET (01:40Z): two wall-clock half hours, each seen twice. Newest
    // of 02:00-02:30 is 01:10Z, of 02:30-03:00 is 01:40Z.
    let times = [
        "2024-10-27 00:10",
        "2024-10-27 00:40",
        "2024-10-27 01:10",
        "2024-10-27 01:40",
    ]
    .map(t);
    for amount in ["30m:10", "30m:7d"] {
        let set =
            RuleSet::new(berlin(), Weekday::Mon).with(parse_keep_every(amount).expect("parse"));
        let d = run(&snaps_at("acme", &times), set, t("2024-10-28 00:00"), true);
        assert_eq!(
            kept(&d),
            ["2024-10-27 01:10", "2024-10-27 01:40"],
            "{amount}"
        );
    }
}

// ---------------------------------------------------------------------------
// Weeks

#[test]
fn week_start_monday_vs_sunday_in_berlin() {
    let tz = berlin();
    // A and B are on the same UTC day (Jun 9) but in different local weeks
    // when weeks start on Monday.
    let c = lt(tz, "2024-06-05 12:00"); // Wed
    let dd = lt(tz, "2024-06-08 12:00"); // Sat
    let a = lt(tz, "2024-06-09 23:30"); // Sun, 21:30Z
    let b = lt(tz, "2024-06-10 00:30"); // Mon, Jun 9 22:30Z
    assert_eq!(show(a), "2024-06-09 21:30");
    assert_eq!(show(b), "2024-06-09 22:30");
    let snaps = vec![
        snap("0c", c, "acme", &["/"], &[]),
        snap("0d", dd, "acme", &["/"], &[]),
        snap("0a", a, "acme", &["/"], &[]),
        snap("0b", b, "acme", &["/"], &[]),
    ];
    let weekly = Rule::Calendar(Unit::Weekly, Amount::Count(10));
    // Monday start: week of Jun 3 = {C, D, A} → A; week of Jun 10 = {B} → B.
    let d = run(
        &snaps,
        RuleSet::new(tz, Weekday::Mon).with(weekly.clone()),
        0,
        true,
    );
    assert_eq!(kept_ids(&d), ["0a", "0b"]);
    // Sunday start: week of Jun 2 = {C, D} → D; week of Jun 9 = {A, B} → B.
    let d = run(
        &snaps,
        RuleSet::new(tz, Weekday::Sun).with(weekly.clone()),
        0,
        true,
    );
    assert_eq!(kept_ids(&d), ["0d", "0b"]);
    // In UTC with Monday start all four are in the week of Jun 3 → B only.
    let d = run(
        &snaps,
        RuleSet::new(Tz::UTC, Weekday::Mon).with(weekly),
        0,
        true,
    );
    assert_eq!(kept_ids(&d), ["0b"]);
}

#[test]
fn two_week_buckets_are_aligned_to_the_week_start() {
    // Fortnights (Monday start) are counted from Monday 1969-12-29; 2024-01-01
    // is 19726 days = 2818 weeks later, so fortnights start Jan 1, Jan 15, ….
    let times = ["2024-01-14 12:00", "2024-01-15 12:00", "2024-01-20 12:00"].map(t);
    let set = utc_set().with(parse_keep_every("2w:10").expect("parse"));
    let d = run(&snaps_at("a", &times), set, 0, true);
    assert_eq!(kept(&d), ["2024-01-14 12:00", "2024-01-20 12:00"]);
    assert!(d
        .iter()
        .filter(|x| x.keep)
        .all(|x| x.reasons == ["every 14d 10"]));
}

// ---------------------------------------------------------------------------
// Time zones and grouping

#[test]
fn day_buckets_follow_each_accounts_time_zone() {
    let times = [
        "2024-01-10 03:00", // NY Jan 9 22:00 EST
        "2024-01-10 12:00", // NY Jan 10 07:00
        "2024-01-11 02:00", // NY Jan 10 21:00
        "2024-01-11 06:00", // NY Jan 11 01:00
    ]
    .map(t);
    let mut snaps = snaps_at("utc-co", &times);
    snaps.extend(snaps_at("ny-co", &times));
    let ny: Tz = "America/New_York".parse().expect("tz");
    let rules_for = move |account: &str| -> Result<RuleSet, RetentionError> {
        let tz = if account == "ny-co" { ny } else { Tz::UTC };
        Ok(RuleSet::new(tz, Weekday::Mon).with(Rule::Calendar(Unit::Daily, Amount::Count(10))))
    };
    let d = decide(&snaps, &rules_for, 0, true).expect("decide");
    let of = |acct: &str| -> Vec<String> {
        d.iter()
            .filter(|x| x.account == acct && x.keep)
            .map(|x| show(x.time))
            .collect()
    };
    // UTC days: Jan 10 {03, 12} → 12; Jan 11 {02, 06} → 06.
    assert_eq!(of("utc-co"), ["2024-01-10 12:00", "2024-01-11 06:00"]);
    // NY days: Jan 9 {03Z} ; Jan 10 {12Z, 02Z+1} → 02Z+1 ; Jan 11 {06Z}.
    assert_eq!(
        of("ny-co"),
        ["2024-01-10 03:00", "2024-01-11 02:00", "2024-01-11 06:00"]
    );
}

#[test]
fn groups_by_account_and_sorted_paths() {
    let snaps = vec![
        snap("01", t("2024-01-01 00:00"), "b", &["/mail"], &[]),
        snap("02", t("2024-01-02 00:00"), "a", &["/mail"], &[]),
        snap("03", t("2024-01-03 00:00"), "a", &["/drive"], &[]),
        snap("04", t("2024-01-04 00:00"), "a", &["/mail"], &[]),
        snap("05", t("2024-01-05 00:00"), "a", &["/x", "/y"], &[]),
        snap("06", t("2024-01-06 00:00"), "a", &["/y", "/x"], &[]),
        snap("07", t("2024-01-07 00:00"), "a", &["/drive"], &[]),
        snap("08", t("2024-01-08 00:00"), "b", &["/mail"], &[]),
    ];
    let d = run(&snaps, utc_set().with(Rule::Last(1)), 0, true);
    let rows: Vec<(&str, &str, bool)> = d
        .iter()
        .map(|x| (x.group.as_str(), x.id.as_str(), x.keep))
        .collect();
    assert_eq!(
        rows,
        [
            ("a [/drive]", "03", false),
            ("a [/drive]", "07", true),
            ("a [/mail]", "02", false),
            ("a [/mail]", "04", true),
            ("a [/x, /y]", "05", false),
            ("a [/x, /y]", "06", true),
            ("b [/mail]", "01", false),
            ("b [/mail]", "08", true),
        ]
    );
}

#[test]
fn keep_tag_keeps_every_tagged_snapshot() {
    let snaps = vec![
        snap("01", t("2023-01-01 00:00"), "a", &["/"], &["legal-hold"]),
        snap("02", t("2023-02-01 00:00"), "a", &["/"], &["other"]),
        snap(
            "03",
            t("2023-03-01 00:00"),
            "a",
            &["/"],
            &["x", "legal-hold"],
        ),
        snap("04", t("2023-04-01 00:00"), "a", &["/"], &["legal-hold-2"]),
        snap("05", t("2023-05-01 00:00"), "a", &["/"], &[]),
    ];
    let set = utc_set().with(Rule::Tag("legal-hold".to_string()));
    let d = run(&snaps, set.clone(), t("2024-01-01 00:00"), true);
    assert_eq!(kept_ids(&d), ["01", "03"]);
    assert!(d
        .iter()
        .filter(|x| x.keep)
        .all(|x| x.reasons == ["tag legal-hold"]));
    // Without allow_empty the newest (untagged) survives too.
    let d = run(&snaps, set, t("2024-01-01 00:00"), false);
    assert_eq!(kept_ids(&d), ["01", "03", "05"]);
}

#[test]
fn keep_last_breaks_time_ties_by_id() {
    let at = t("2024-01-01 00:00");
    let snaps = vec![
        snap("c3", at, "a", &["/"], &[]),
        snap("a1", at, "a", &["/"], &[]),
        snap("b2", at, "a", &["/"], &[]),
        snap("00", at - 1, "a", &["/"], &[]),
    ];
    let d = run(&snaps, utc_set().with(Rule::Last(2)), 0, true);
    // Order: 00, a1, b2, c3 (greater id counts as newer at equal time).
    let ids: Vec<&str> = d.iter().map(|x| x.id.as_str()).collect();
    assert_eq!(ids, ["00", "a1", "b2", "c3"]);
    assert_eq!(kept_ids(&d), ["b2", "c3"]);
    assert!(d.iter().filter(|x| x.keep).all(|x| x.reasons == ["last 2"]));
}

#[test]
fn decisions_do_not_depend_on_input_order() {
    let times = [
        "2024-01-01 08:00",
        "2024-01-02 10:00",
        "2024-01-02 11:00",
        "2024-01-05 09:00",
    ]
    .map(t);
    let set = utc_set().with(Rule::Calendar(Unit::Daily, Amount::Count(2)));
    let forward = snaps_at("a", &times);
    let mut backward = forward.clone();
    backward.reverse();
    assert_eq!(
        run(&forward, set.clone(), 0, false),
        run(&backward, set, 0, false)
    );
}

#[test]
fn multiple_rules_list_every_reason_in_rule_order() {
    let snaps = vec![
        snap("01", t("2024-01-01 10:00"), "a", &["/"], &["pre-migration"]),
        snap("02", t("2024-01-02 10:00"), "a", &["/"], &[]),
        snap("03", t("2024-01-03 09:00"), "a", &["/"], &[]),
        snap("04", t("2024-01-03 10:00"), "a", &["/"], &[]),
        snap("05", t("2024-01-04 10:00"), "a", &["/"], &["pre-migration"]),
    ];
    let set = utc_set()
        .with(Rule::Last(1))
        .with(Rule::Calendar(Unit::Daily, Amount::Count(2)))
        .with(Rule::Tag("pre-migration".to_string()))
        .with_labeled("custom label", Rule::Within(2 * DAY));
    let now = t("2024-01-04 12:00"); // within 2d: from Jan 2 12:00
    let d = run(&snaps, set, now, true);
    let table: Vec<(&str, Vec<&str>)> = d
        .iter()
        .map(|x| {
            (
                x.id.as_str(),
                x.reasons.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        table,
        [
            ("01", vec!["tag pre-migration"]),
            ("02", vec![]),
            ("03", vec!["custom label"]),
            ("04", vec!["daily 2", "custom label"]),
            (
                "05",
                vec!["last 1", "daily 2", "tag pre-migration", "custom label"]
            ),
        ]
    );
    assert!(d.iter().all(|x| x.keep != x.reasons.is_empty()));
}

// ---------------------------------------------------------------------------
// Refusals

#[test]
fn no_rules_is_refused_and_rule_errors_propagate() {
    let snaps = snaps_at("a", &[t("2024-01-01 00:00")]);
    let err = decide(&snaps, &|_| Ok(utc_set()), 0, true).expect_err("no rules");
    assert_eq!(
        err,
        RetentionError::NoRules {
            group: "a [/data]".to_string()
        }
    );
    assert!(err.to_string().contains("refusing"), "{err}");

    let err = decide(
        &snaps,
        &|acct| Err(RetentionError::NoPlan(acct.to_string())),
        0,
        true,
    )
    .expect_err("propagates");
    assert_eq!(err, RetentionError::NoPlan("a".to_string()));

    let bad = utc_set().with(Rule::Every {
        width: 0,
        amount: Amount::Count(1),
    });
    assert!(matches!(
        decide(&snaps, &|_| Ok(bad.clone()), 0, true),
        Err(RetentionError::InvalidRule { .. })
    ));

    // No snapshots: nothing to decide, rules_for is not even asked.
    let d = decide(&[], &|_| Err(RetentionError::NoPlan("x".into())), 0, false).expect("empty");
    assert!(d.is_empty());
}

// ---------------------------------------------------------------------------
// Parsing

#[test]
fn durations_table() {
    let table: &[(&str, i64)] = &[
        ("1s", 1),
        ("90s", 90),
        ("30m", 30 * MIN),
        ("6h", 6 * HOUR),
        ("7d", 7 * DAY),
        ("2w", 14 * DAY),
        ("3mo", 90 * DAY),
        ("1y", 365 * DAY),
        ("1d12h", 36 * HOUR),
        ("1h30m", 90 * MIN),
        ("1y2w", 379 * DAY),
    ];
    for &(text, secs) in table {
        assert_eq!(parse_duration(text), Ok(secs), "{text}");
    }
}

#[test]
fn duration_errors_table() {
    let table: &[(&str, &str)] = &[
        ("7x", "bad duration \"7x\": unknown unit \"x\" (use s, m, h, d, w, mo or y)"),
        ("30", "bad duration \"30\": missing unit after 30 (use s, m, h, d, w, mo or y)"),
        ("", "bad duration \"\": empty"),
        ("d", "bad duration \"d\": expected a number before \"d\""),
        ("0d", "bad duration \"0d\": must be greater than zero"),
        ("-1d", "bad duration \"-1d\": unexpected '-'; expected digits then a unit (use s, m, h, d, w, mo or y)"),
        ("1 d", "bad duration \"1 d\": missing unit after 1 (use s, m, h, d, w, mo or y)"),
        ("1D", "bad duration \"1D\": unknown unit \"D\" (use s, m, h, d, w, mo or y)"),
        ("10001y", "bad duration \"10001y\": too large (at most 10000y)"),
        ("99999999999999999999d", "bad duration \"99999999999999999999d\": number too large"),
    ];
    for &(text, message) in table {
        let err = parse_duration(text).expect_err(text);
        assert_eq!(err.to_string(), message, "{text}");
    }
}

#[test]
fn keep_every_table() {
    let table: &[(&str, Rule)] = &[
        (
            "6h:7d",
            Rule::Every {
                width: 6 * HOUR,
                amount: Amount::Within(7 * DAY),
            },
        ),
        (
            "30m:2d",
            Rule::Every {
                width: 30 * MIN,
                amount: Amount::Within(2 * DAY),
            },
        ),
        (
            "2d:10",
            Rule::Every {
                width: 2 * DAY,
                amount: Amount::Count(10),
            },
        ),
        ("1h:24", Rule::Calendar(Unit::Hourly, Amount::Count(24))),
        (
            "1d:30d",
            Rule::Calendar(Unit::Daily, Amount::Within(30 * DAY)),
        ),
        (
            "24h:30d",
            Rule::Calendar(Unit::Daily, Amount::Within(30 * DAY)),
        ),
        ("1w:10", Rule::Calendar(Unit::Weekly, Amount::Count(10))),
        ("7d:10", Rule::Calendar(Unit::Weekly, Amount::Count(10))),
        (
            "1mo:1y",
            Rule::Calendar(Unit::Monthly, Amount::Within(365 * DAY)),
        ),
        ("1y:5", Rule::Calendar(Unit::Yearly, Amount::Count(5))),
    ];
    for (text, rule) in table {
        assert_eq!(parse_keep_every(text).as_ref(), Ok(rule), "{text}");
    }
    assert_eq!(
        parse_keep_every("6h:7d").map(|r| r.label()),
        Ok("every 6h (7d)".to_string())
    );
    assert_eq!(
        Rule::Calendar(Unit::Daily, Amount::Within(30 * DAY)).label(),
        "daily (30d)"
    );
    assert_eq!(
        Rule::Calendar(Unit::Weekly, Amount::Within(365 * DAY)).label(),
        "weekly (1y)"
    );
    assert_eq!(Rule::Within(36 * HOUR).label(), "within 1d12h");
    for bad in [
        "6h", "6h:", ":7d", "0h:7d", "2mo:1y", "1mo1d:3", "6h:0", "6h:7x", "6x:7d", "6h:abc",
    ] {
        let err = parse_keep_every(bad).expect_err(bad);
        assert!(
            err.to_string()
                .starts_with(&format!("bad keep-every {bad:?}: ")),
            "{bad}: {err}"
        );
    }
    assert_eq!(
        parse_keep_every("2mo:1y").map_err(|e| e.to_string()),
        Err("bad keep-every \"2mo:1y\": bad bucket width \"2mo\": months and years are calendar buckets: use exactly 1mo or 1y".to_string())
    );
}

// ---------------------------------------------------------------------------
// Policy file

const POLICY: &str = r#"
[defaults]
plan = "starter"
timezone = "UTC"

[plans.starter]
tiers = [
  { name = "continuous", every = "6h", keep = "7d" },
  { name = "daily", every = "1d", keep = "30d" },
  { name = "weekly", every = "1w", keep = "90d", week_start = "monday" },
]

[plans.growth]
tiers = [
  { name = "continuous", every = "6h", keep = "7d" },
  { name = "daily", every = "1d", keep = "30d" },
  { name = "weekly", every = "1w", keep = "90d", week_start = "monday" },
]

[plans.enterprise]
tiers = [
  { name = "continuous", every = "6h", keep = "7d" },
  { name = "daily", every = "1d", keep = "90d" },
  { name = "weekly", every = "1w", keep = "1y" },
  { name = "monthly", every = "1mo", keep = "3y" },
]
keep_tags = ["legal-hold"]

[accounts.acme]
plan = "enterprise"
timezone = "Europe/Berlin"

[accounts.globex]
plan = "growth"
"#;

/// 400 days, 2023-11-28 … 2024-12-31, at 01:00, 07:00, 13:00 and 19:00 UTC.
fn four_a_day(account: &str) -> Vec<SnapInfo> {
    let first = NaiveDate::from_ymd_opt(2023, 11, 28).expect("date");
    let mut out = Vec::new();
    for day in 0..400 {
        let date = first + chrono::Duration::days(day);
        for hour in [1, 7, 13, 19] {
            let time = date
                .and_hms_opt(hour, 0, 0)
                .expect("time")
                .and_utc()
                .timestamp();
            out.push(snap(&format!("{time:012x}"), time, account, &["/"], &[]));
        }
    }
    assert_eq!(show(out.last().expect("some").time), "2024-12-31 19:00");
    out
}

fn count_reason(d: &[Decision], account: &str, reason: &str) -> usize {
    d.iter()
        .filter(|x| x.account == account && x.reasons.iter().any(|r| r == reason))
        .count()
}

#[test]
fn policy_example_starter_vs_enterprise_over_400_days() {
    let policy = Policy::parse(POLICY).expect("policy parses");
    let mut snaps = four_a_day("initech"); // not listed: defaults (starter, UTC)
    snaps.extend(four_a_day("globex")); // growth, UTC
    snaps.extend(four_a_day("acme")); // enterprise, Europe/Berlin
    assert_eq!(snaps.len(), 3 * 1600);
    // A legal hold on an old acme snapshot (enterprise keeps that tag) and on
    // an initech one (starter has no tag rule: no effect).
    for s in snaps.iter_mut() {
        if s.time == t("2023-12-05 07:00") && s.account != "globex" {
            s.tags.push("legal-hold".to_string());
        }
    }
    let now = t("2024-12-31 20:00");
    let d = decide(&snaps, &|a| policy.rules_for(a), now, false).expect("decide");
    assert_eq!(d.len(), 4800);

    // Starter (UTC), now = Dec 31 20:00:
    // * continuous 6h/7d: cut-off Dec 24 20:00; 6h buckets from Dec 25 00:00,
    //   one snapshot each: 7 days × 4 = 28.
    // * daily 1d/30d: cut-off Dec 1 20:00; days Dec 2 … Dec 31 = 30, each
    //   keeping 19:00; Dec 25 … 31 are already kept → 23 more.
    // * weekly 1w/90d: cut-off Oct 2 20:00 (Wed); weeks from Mon Oct 7 to
    //   Mon Dec 30 = 13, each keeping its Sunday 19:00 (and Dec 31 19:00 for
    //   the last); Dec 8, 15, 22, 29, 31 are already daily → 8 more:
    //   Oct 13, 20, 27, Nov 3, 10, 17, 24, Dec 1.
    // Total 28 + 23 + 8 = 59.
    let mut expected_starter: Vec<String> = [
        "2024-10-13",
        "2024-10-20",
        "2024-10-27",
        "2024-11-03",
        "2024-11-10",
        "2024-11-17",
        "2024-11-24",
        "2024-12-01",
    ]
    .iter()
    .map(|day| format!("{day} 19:00"))
    .collect();
    for day in 2..=24 {
        expected_starter.push(format!("2024-12-{day:02} 19:00"));
    }
    for day in 25..=31 {
        for hour in ["01", "07", "13", "19"] {
            expected_starter.push(format!("2024-12-{day} {hour}:00"));
        }
    }
    for account in ["initech", "globex"] {
        let got: Vec<String> = d
            .iter()
            .filter(|x| x.account == account && x.keep)
            .map(|x| show(x.time))
            .collect();
        assert_eq!(got, expected_starter, "{account}");
    }
    assert_eq!(expected_starter.len(), 59);
    assert_eq!(count_reason(&d, "initech", "tier starter/continuous"), 28);
    assert_eq!(count_reason(&d, "initech", "tier starter/daily"), 30);
    assert_eq!(count_reason(&d, "initech", "tier starter/weekly"), 13);
    assert_eq!(count_reason(&d, "globex", "tier growth/weekly"), 13);
    assert_eq!(count_reason(&d, "initech", SAFETY_REASON), 0);

    let reasons_at = |account: &str, when: &str| -> Vec<String> {
        d.iter()
            .find(|x| x.account == account && x.time == t(when))
            .map(|x| x.reasons.clone())
            .unwrap_or_default()
    };
    assert_eq!(
        reasons_at("initech", "2024-12-31 19:00"),
        [
            "tier starter/continuous",
            "tier starter/daily",
            "tier starter/weekly"
        ]
    );
    assert_eq!(
        reasons_at("initech", "2024-12-01 19:00"),
        ["tier starter/weekly"]
    );
    assert_eq!(
        reasons_at("initech", "2024-12-02 19:00"),
        ["tier starter/daily"]
    );
    assert!(reasons_at("initech", "2023-12-05 07:00").is_empty());
    assert_eq!(
        reasons_at("globex", "2024-12-25 01:00"),
        ["tier growth/continuous"]
    );

    // Enterprise (Europe/Berlin; the 01/07/13/19 UTC snapshots are local
    // 02/08/14/20 CET or 03/09/15/21 CEST, always the same local date):
    // * continuous 6h/7d: cut-off local Dec 24 21:00 → Dec 25 … 31: 28.
    // * daily 1d/90d: cut-off Oct 2 20:00Z = Oct 2 22:00 CEST → days Oct 3 …
    //   Dec 31 = 29 + 30 + 31 = 90; minus Dec 25 … 31 → 83 more.
    // * weekly 1w/1y (365d): cut-off 2024-01-01 20:00Z = 21:00 CET → weeks
    //   Mon Jan 8 … Mon Dec 30 = 52 (Sundays Jan 14 … Dec 29 and Dec 31);
    //   13 Sundays Oct 6 … Dec 29 and Dec 31 are already daily → 38 more.
    // * monthly 1mo/3y: all 14 months Nov 2023 … Dec 2024, last day 19:00Z;
    //   already kept: Oct 31, Nov 30, Dec 31 2024 (daily), Mar 31 and Jun 30
    //   2024 (Sundays, weekly) → 9 more.
    // * tag legal-hold: 2023-12-05 07:00 → 1 more.
    // Total 28 + 83 + 38 + 9 + 1 = 159.
    let acme_kept = d.iter().filter(|x| x.account == "acme" && x.keep).count();
    assert_eq!(acme_kept, 159);
    assert_eq!(count_reason(&d, "acme", "tier enterprise/continuous"), 28);
    assert_eq!(count_reason(&d, "acme", "tier enterprise/daily"), 90);
    assert_eq!(count_reason(&d, "acme", "tier enterprise/weekly"), 52);
    assert_eq!(count_reason(&d, "acme", "tier enterprise/monthly"), 14);
    assert_eq!(
        count_reason(&d, "acme", "plan enterprise: tag legal-hold"),
        1
    );
    assert_eq!(
        reasons_at("acme", "2023-12-05 07:00"),
        ["plan enterprise: tag legal-hold"]
    );
    assert_eq!(
        reasons_at("acme", "2023-11-30 19:00"),
        ["tier enterprise/monthly"]
    );
    assert_eq!(
        reasons_at("acme", "2024-03-31 19:00"),
        ["tier enterprise/weekly", "tier enterprise/monthly"]
    );
    assert_eq!(
        reasons_at("acme", "2024-01-14 19:00"),
        ["tier enterprise/weekly"]
    );
    assert!(reasons_at("acme", "2024-01-07 19:00").is_empty());
    assert!(reasons_at("acme", "2024-10-02 19:00").is_empty());
    assert_eq!(
        reasons_at("acme", "2024-10-03 19:00"),
        ["tier enterprise/daily"]
    );
    assert!(reasons_at("acme", "2024-12-24 19:00").contains(&"tier enterprise/daily".to_string()));
    assert!(
        !reasons_at("acme", "2024-12-24 19:00").contains(&"tier enterprise/continuous".to_string())
    );

    // Two years later (now = 2026-12-31 20:00) no continuous, daily or
    // weekly bucket is within its tier: initech and globex keep only their
    // newest (safety). acme's monthly 3y (1095d) cut-off is 2024-01-01
    // 20:00Z = 21:00 CET, after the start of January 2024, so the months
    // Feb … Dec 2024 (11, the newest among them) are kept, plus the hold.
    let later = t("2026-12-31 20:00");
    let d = decide(&snaps, &|a| policy.rules_for(a), later, false).expect("decide");
    let count = |acct: &str| d.iter().filter(|x| x.account == acct && x.keep).count();
    assert_eq!(count("initech"), 1);
    assert_eq!(count("globex"), 1);
    assert_eq!(count("acme"), 11 + 1);
    assert!(reasons_at_in(&d, "acme", "2024-01-31 19:00").is_empty());
    assert_eq!(
        reasons_at_in(&d, "acme", "2024-02-29 19:00"),
        ["tier enterprise/monthly"]
    );
    assert_eq!(
        reasons_at_in(&d, "initech", "2024-12-31 19:00"),
        [SAFETY_REASON]
    );
}

fn reasons_at_in(d: &[Decision], account: &str, when: &str) -> Vec<String> {
    d.iter()
        .find(|x| x.account == account && x.time == t(when))
        .map(|x| x.reasons.clone())
        .unwrap_or_default()
}

#[test]
fn policy_resolves_plan_time_zone_and_week_start() {
    let policy = Policy::parse(
        r#"
[defaults]
plan = "basic"
timezone = "America/New_York"
week_start = "sunday"

[plans.basic]
tiers = [{ every = "1w", keep = 4 }]

[plans.euro]
week_start = "monday"
keep_last = 3
keep_within = "36h"
tiers = [{ name = "weekly", every = "1w", keep = "90d", week_start = "mon" }]

[accounts."acme.io"]
plan = "euro"
timezone = "Europe/Berlin"

[accounts.sat]
week_start = "saturday"
"#,
    )
    .expect("parses");
    let ny: Tz = "America/New_York".parse().expect("tz");

    let basic = policy.rules_for("unlisted").expect("defaults");
    assert_eq!(basic.tz, ny);
    assert_eq!(basic.week_start, Weekday::Sun);
    assert_eq!(
        basic.rules,
        [(
            "tier basic/1w".to_string(),
            Rule::Calendar(Unit::Weekly, Amount::Count(4))
        )]
    );
    assert_eq!(policy.plan_for("unlisted"), Ok("basic"));

    let euro = policy.rules_for("acme.io").expect("listed");
    assert_eq!(euro.tz, berlin());
    assert_eq!(euro.week_start, Weekday::Mon);
    let labels: Vec<&str> = euro.rules.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(
        labels,
        [
            "tier euro/weekly",
            "plan euro: last 3",
            "plan euro: within 1d12h"
        ]
    );
    assert_eq!(euro.rules[2].1, Rule::Within(36 * HOUR));

    let sat = policy.rules_for("sat").expect("listed");
    assert_eq!(sat.week_start, Weekday::Sat);
    assert_eq!(sat.tz, ny);
    assert_eq!(policy.plan_for("sat"), Ok("basic"));
}

#[test]
fn policy_week_start_changes_what_a_plan_keeps() {
    let text = |week_start: &str| {
        format!(
            r#"
[plans.p]
tiers = [{{ name = "w", every = "1w", keep = 10 }}]
[accounts.acme]
plan = "p"
timezone = "Europe/Berlin"
week_start = "{week_start}"
"#
        )
    };
    let tz = berlin();
    let snaps = vec![
        snap("0c", lt(tz, "2024-06-05 12:00"), "acme", &["/"], &[]),
        snap("0d", lt(tz, "2024-06-08 12:00"), "acme", &["/"], &[]),
        snap("0a", lt(tz, "2024-06-09 23:30"), "acme", &["/"], &[]),
        snap("0b", lt(tz, "2024-06-10 00:30"), "acme", &["/"], &[]),
    ];
    for (ws, expected) in [("monday", ["0a", "0b"]), ("sunday", ["0d", "0b"])] {
        let policy = Policy::parse(&text(ws)).expect("parses");
        let d = decide(&snaps, &|a| policy.rules_for(a), 0, true).expect("decide");
        assert_eq!(kept_ids(&d), expected, "{ws}");
        assert!(d
            .iter()
            .filter(|x| x.keep)
            .all(|x| x.reasons == ["tier p/w"]));
    }
}

#[test]
fn policy_errors_table() {
    const PLAN: &str = "[plans.p]\ntiers = [{ every = \"1d\", keep = \"7d\" }]\n";
    let table: Vec<(String, &str)> = vec![
        (
            format!("{PLAN}[accounts.y]\nplan = \"x\"\n"),
            "unknown plan \"x\" for account \"y\"",
        ),
        (
            format!("[defaults]\nplan = \"x\"\n{PLAN}"),
            "unknown plan \"x\" in [defaults]",
        ),
        (
            format!("{PLAN}[accounts.y]\ntimezone = \"UTC\"\n"),
            "account \"y\" has no plan: it is not listed with one and [defaults] names none",
        ),
        (
            "[plans.p]\ntiers = [{ name = \"daily\", every = \"1d\", keep = \"7x\" }]\n".to_string(),
            "policy file, plans.p.tiers[0] (\"daily\"), keep: bad duration \"7x\": unknown unit \"x\" (use s, m, h, d, w, mo or y)",
        ),
        (
            "[plans.p]\ntiers = [{ every = \"2mo\", keep = 3 }]\n".to_string(),
            "policy file, plans.p.tiers[0] (\"2mo\"), every: bad bucket width \"2mo\": months and years are calendar buckets: use exactly 1mo or 1y",
        ),
        (
            "[plans.p]\ntiers = [{ every = \"1d\", keep = 0 }]\n".to_string(),
            "policy file, plans.p.tiers[0] (\"1d\"), keep: bad keep amount \"0\": a count must be between 1 and 4294967295",
        ),
        (
            "[plans.p]\ntiers = [{ every = \"1d\", keep = true }]\n".to_string(),
            "policy file, plans.p.tiers[0] (\"1d\"), keep: bad keep amount \"true\": expected a count such as 7 or a duration string such as \"30d\"",
        ),
        (
            "[plans.p]\ntiers = [{ every = \"1d\", keep = \"forever\" }]\n".to_string(),
            "policy file, plans.p.tiers[0] (\"1d\"), keep: bad keep amount \"forever\": expected a count such as 7 or a duration such as 30d",
        ),
        (
            format!("[defaults]\ntimezone = \"Mars/Olympus\"\n{PLAN}"),
            "policy file, defaults.timezone: unknown time zone \"Mars/Olympus\" (expected an IANA name such as \"Europe/Berlin\" or \"UTC\")",
        ),
        (
            format!("{PLAN}[accounts.y]\nplan = \"p\"\ntimezone = \"Europe/Berln\"\n"),
            "policy file, accounts.y.timezone: unknown time zone \"Europe/Berln\" (expected an IANA name such as \"Europe/Berlin\" or \"UTC\")",
        ),
        (
            format!("{PLAN}[accounts.y]\nplan = \"p\"\nweek_start = \"funday\"\n"),
            "policy file, accounts.y.week_start: unknown weekday \"funday\" (expected monday, tuesday, …, sunday)",
        ),
        (
            "[plans.p]\ntiers = []\n".to_string(),
            "policy file: plan \"p\" has no rules (give tiers, keep_last, keep_within or keep_tags)",
        ),
        (
            "[plans.p]\nkeep_within = \"2\"\n".to_string(),
            "policy file, plans.p.keep_within: bad duration \"2\": missing unit after 2 (use s, m, h, d, w, mo or y)",
        ),
        (
            "[plans.p]\nkeep_last = 0\n".to_string(),
            "policy file, plans.p.keep_last: bad keep amount \"0\": a count must be at least 1",
        ),
        (
            "[plans.p]\nweek_start = \"sunday\"\ntiers = [{ name = \"w\", every = \"1w\", keep = 4, week_start = \"monday\" }]\n".to_string(),
            "policy file: plans.p.tiers[0] (\"w\") starts weeks on Mon but plans.p.week_start says Sun: a plan has one week start",
        ),
    ];
    for (text, message) in &table {
        let err = Policy::parse(text).expect_err(text);
        assert_eq!(err.to_string(), *message, "{text}");
    }

    // TOML-level errors: the message carries toml's position and the key.
    for (text, needle) in [
        ("[plans.p]\nkeep_daily = 3\n", "keep_daily"),
        ("[plans.p]\ntiers = [{ every = \"1d\" }]\n", "keep"),
        ("[plans.p\n", "policy file: "),
        ("[defaults]\nplan = 3\n", "plan"),
    ] {
        let err = Policy::parse(text).expect_err(text);
        assert!(matches!(err, RetentionError::Syntax(_)), "{text}: {err:?}");
        let message = err.to_string();
        assert!(message.contains(needle), "{text}: {message}");
    }

    // A policy without [defaults].plan: unlisted accounts are an error.
    let policy = Policy::parse(PLAN).expect("parses");
    assert_eq!(
        policy.rules_for("nobody"),
        Err(RetentionError::NoPlan("nobody".to_string()))
    );
}

/// Regression: three backups within one second were ordered by id alone, so
/// `--keep-last 1` could keep an older one than `restore latest` shows.
#[test]
fn sub_second_times_order_snapshots_before_ids() {
    let mk = |id: &str, nanos: u32| SnapInfo {
        nanos,
        ..snap(id, 1_709_258_400, "a", &["/d"], &[])
    };
    let snaps = [mk("ff", 100), mk("00", 900), mk("88", 500)];
    let rules = |_: &str| Ok(RuleSet::default().with(Rule::Last(1)));
    let d = decide(&snaps, &rules, 1_709_258_401, false).unwrap();
    let kept: Vec<&str> = d.iter().filter(|x| x.keep).map(|x| x.id.as_str()).collect();
    assert_eq!(kept, vec!["00"]);
}
