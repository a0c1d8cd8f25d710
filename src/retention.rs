//! Retention policy: which snapshots `arca forget` keeps.
//!
//! Pure logic. The only input that is not a plain value is the text of a
//! policy file, which [`Policy::parse`] reads; nothing here touches the disk,
//! the clock or the repository. `now` is always an argument.
//!
//! # Model
//!
//! Snapshots ([`SnapInfo`]) are split into **groups**: one group per account
//! and set of backed-up paths (the paths are sorted and deduplicated, so their
//! order does not matter). Each group gets the [`RuleSet`] of its account: a
//! list of labelled [`Rule`]s plus the time zone and first day of the week in
//! which calendar buckets are cut. Within a group a snapshot is kept when *any*
//! rule keeps it, and its [`Decision`] lists the label of every rule that did.
//!
//! Rules:
//!
//! | CLI flag | [`Rule`] | keeps |
//! | --- | --- | --- |
//! | `--keep-last 3` | `Last(3)` | the 3 newest snapshots |
//! | `--keep-daily 7` | `Calendar(Daily, Count(7))` | the newest snapshot of each of the 7 most recent local days that hold snapshots |
//! | `--keep-daily 30d` | `Calendar(Daily, Within(30 days))` | the newest snapshot of every local day that starts within 30 days before `now` |
//! | `--keep-every 6h:7d` | `Every { width: 6h, amount: Within(7 days) }` | the newest snapshot of every 6-hour bucket that starts within 7 days before `now` |
//! | `--keep-tag T` | `Tag("T")` | every snapshot tagged `T` |
//! | `--keep-within 2d` | `Within(2 days)` | every snapshot taken at or after `now − 2d` |
//!
//! Hourly, daily, weekly, monthly and yearly buckets are the local hour, local
//! calendar day, week starting on the configured weekday (Monday by default,
//! i.e. ISO weeks), calendar month and calendar year in the group's time zone.
//! Buckets of other widths (`--keep-every 30m:…`, `6h`, `2d`, `2w`) are cut
//! on **local wall-clock time**: local seconds since 1970-01-01 00:00 local,
//! divided by the width. A 6h bucket therefore always starts at local 00:00,
//! 06:00, 12:00 or 18:00, even on 23- and 25-hour DST days (the first bucket of
//! such a day is then 5 or 7 real hours long), and the repeated hour after the
//! autumn change falls in the same bucket as its first occurrence. Widths that
//! are whole weeks are aligned to the week start; other widths to local
//! midnight of 1970-01-01, so a width that divides a day (or is whole days)
//! keeps its buckets aligned to local midnight.
//!
//! A bucket "starts within `d` before now" when its start, in local wall-clock
//! time, is not earlier than the local wall-clock time of the instant
//! `now − d`. Snapshots later than `now` (clock skew) count as within.
//!
//! Snapshot order is by time (seconds, then nanoseconds), then by id: of two
//! snapshots with the same time
//! the one with the greater id counts as the newer, so every result is
//! deterministic.
//!
//! # Safety
//!
//! * [`decide`] refuses (with [`RetentionError::NoRules`]) a group whose rule
//!   set is empty: no rule never means "remove everything".
//! * Unless `allow_empty` is set, the newest snapshot of every group is kept
//!   even when no rule keeps it (reason [`SAFETY_REASON`]), so an account whose
//!   backups stopped keeps its last good state after every tier has expired.
//!
//! # How this differs from restic
//!
//! restic's `forget --keep-daily N` counts buckets the same way: the newest
//! snapshot in each of the N most recent days that have snapshots. But restic
//! has no per-plan tiers whose length is measured back from `now` in each
//! account's own time zone (its `--keep-within-daily` measures back from the
//! newest snapshot, so a closed account keeps stale snapshots forever), and
//! restic removes every snapshot of a group if the rules allow it. arca keeps
//! the newest snapshot of each group unless `--allow-empty` is given.
//!
//! # Durations
//!
//! [`parse_duration`] accepts one or more `<number><unit>` parts, summed, with
//! no spaces: `90s`, `30m`, `6h`, `7d`, `2w`, `3mo`, `1y`, `1d12h`. Units are
//! case-sensitive: `s` second, `m` minute, `h` hour, `d` day (86 400 s),
//! `w` week (7 d), `mo` month (fixed 30 d), `y` year (fixed 365 d). A duration
//! must be greater than zero and at most 10 000 years. As a bucket *width*
//! (`every`, the left side of `--keep-every`), `1mo` and `1y` mean calendar
//! months and years and are the only widths allowed in those units; `1h`,
//! `1d` and `1w` (or equal widths such as `24h`, `7d`) are the hourly, daily
//! and weekly buckets.
//!
//! # Policy file
//!
//! ```toml
//! [defaults]               # optional; for accounts not listed below
//! plan = "starter"         # optional, but then every account must be listed with a plan
//! timezone = "UTC"         # IANA name (chrono-tz); default "UTC"
//! week_start = "monday"    # optional; default monday
//!
//! [plans.starter]
//! tiers = [
//!   { name = "continuous", every = "6h", keep = "7d" },
//!   { name = "daily", every = "1d", keep = "30d" },
//!   { name = "weekly", every = "1w", keep = "90d", week_start = "monday" },
//! ]
//! # optional extra rules of a plan:
//! # keep_last = 3
//! # keep_within = "2d"
//! # keep_tags = ["legal-hold"]
//! # week_start = "sunday"
//!
//! [plans.enterprise]
//! tiers = [
//!   { name = "continuous", every = "6h", keep = "7d" },
//!   { name = "daily", every = "1d", keep = "90d" },
//!   { name = "weekly", every = "1w", keep = "1y" },
//!   { name = "monthly", every = "1mo", keep = 24 },   # a count: the 24 most recent months
//! ]
//!
//! [accounts.acme]          # quote names with dots: [accounts."acme.io"]
//! plan = "enterprise"      # optional; default [defaults].plan
//! timezone = "Europe/Berlin"
//! # week_start = "sunday"
//! ```
//!
//! A tier's `keep` is a duration string (buckets that start within it before
//! now) or a positive integer (that many most recent buckets holding
//! snapshots). `name` defaults to the `every` text. Reasons read
//! `tier <plan>/<name>`, `plan <plan>: last 3`, `plan <plan>: tag legal-hold`,
//! `plan <plan>: within 2d`. Unknown keys are errors, so a misspelt key
//! never silently changes what is kept. The first day of the week is taken
//! from the account, else the plan (its `week_start` or its tiers' — which
//! must agree), else `[defaults]`, else Monday.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{DateTime, Datelike, NaiveDate, Weekday};
use chrono_tz::Tz;
use serde::Deserialize;

/// Seconds in a minute.
const MINUTE: i64 = 60;
/// Seconds in an hour.
const HOUR: i64 = 3_600;
/// Seconds in a day (a duration; calendar days are cut on local time).
const DAY: i64 = 86_400;
/// Seconds in a week.
const WEEK: i64 = 7 * DAY;
/// Seconds in the fixed 30-day month of durations (`mo`).
const MONTH_DURATION: i64 = 30 * DAY;
/// Seconds in the fixed 365-day year of durations (`y`).
const YEAR_DURATION: i64 = 365 * DAY;
/// Largest accepted duration: 10 000 years of 365 days.
const MAX_DURATION: i64 = 10_000 * YEAR_DURATION;
/// Instants are clamped to this range (well inside chrono's) before being
/// converted to local time, so cut-offs computed from odd inputs never fail.
const INSTANT_LIMIT: i64 = 200_000 * YEAR_DURATION;

/// Reason given when a snapshot is kept only because it is the newest of its
/// group and `allow_empty` was not set.
pub const SAFETY_REASON: &str = "newest of its group (safety)";

/// What went wrong. Every message names the offending input; none of this
/// module's functions panic on bad input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RetentionError {
    /// A duration such as `7x` or `30` (no unit) did not parse.
    #[error("bad duration {input:?}: {why}")]
    BadDuration {
        /// The text as given.
        input: String,
        /// What is wrong with it.
        why: String,
    },
    /// A keep amount is neither a positive count nor a duration.
    #[error("bad keep amount {input:?}: {why}")]
    BadAmount {
        /// The text as given.
        input: String,
        /// What is wrong with it.
        why: String,
    },
    /// A bucket width (`every`, left side of `--keep-every`) did not parse.
    #[error("bad bucket width {input:?}: {why}")]
    BadWidth {
        /// The text as given.
        input: String,
        /// What is wrong with it.
        why: String,
    },
    /// `--keep-every` text is not `WIDTH:AMOUNT`.
    #[error("bad keep-every {input:?}: {why}")]
    BadKeepEvery {
        /// The text as given.
        input: String,
        /// What is wrong with it.
        why: String,
    },
    /// A time zone name is not in the IANA database shipped with chrono-tz.
    #[error(
        "unknown time zone {0:?} (expected an IANA name such as \"Europe/Berlin\" or \"UTC\")"
    )]
    UnknownTimeZone(String),
    /// A weekday name is not one of monday … sunday (or mon … sun).
    #[error("unknown weekday {0:?} (expected monday, tuesday, …, sunday)")]
    UnknownWeekday(String),
    /// An account names a plan the policy does not define.
    #[error("unknown plan {plan:?} for account {account:?}")]
    UnknownPlan {
        /// The plan named.
        plan: String,
        /// The account that names it.
        account: String,
    },
    /// `[defaults]` names a plan the policy does not define.
    #[error("unknown plan {0:?} in [defaults]")]
    UnknownDefaultPlan(String),
    /// An account has no plan of its own and `[defaults]` names none.
    #[error("account {0:?} has no plan: it is not listed with one and [defaults] names none")]
    NoPlan(String),
    /// The policy file is not valid TOML or has unknown or mistyped keys.
    #[error("policy file: {0}")]
    Syntax(String),
    /// The policy file is well-formed but inconsistent (e.g. a plan without
    /// rules, or tiers that disagree on the week start).
    #[error("policy file: {0}")]
    InvalidPolicy(String),
    /// An error at a given place in the policy file (e.g.
    /// `plans.starter.tiers[1] ("daily")`).
    #[error("policy file, {at}: {error}")]
    InPolicy {
        /// Where in the file.
        at: String,
        /// The error found there.
        error: Box<RetentionError>,
    },
    /// A group's rule set is empty: arca refuses to decide rather than
    /// remove everything.
    #[error("no retention rule given for {group}: refusing to forget anything (give at least one --keep-* rule or a policy)")]
    NoRules {
        /// The group (account and paths).
        group: String,
    },
    /// A rule built in code has impossible values (e.g. a zero width).
    #[error("invalid rule {label:?}: {why}")]
    InvalidRule {
        /// The rule's label.
        label: String,
        /// What is wrong with it.
        why: String,
    },
    /// A snapshot's time cannot be placed on the calendar.
    #[error("snapshot {id} has a time ({time}) outside the supported calendar range")]
    TimeOutOfRange {
        /// The snapshot id.
        id: String,
        /// Its time, unix seconds.
        time: i64,
    },
}

impl RetentionError {
    fn at(self, at: impl Into<String>) -> Self {
        RetentionError::InPolicy {
            at: at.into(),
            error: Box::new(self),
        }
    }
}

/// What [`decide`] needs to know about one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapInfo {
    /// Snapshot id (hex); breaks ties between equal times.
    pub id: String,
    /// When the snapshot was taken, unix seconds UTC.
    pub time: i64,
    /// Sub-second part of the time: orders snapshots taken within one
    /// second (a CLI backup records it) before the id does.
    pub nanos: u32,
    /// The account it belongs to; selects the [`RuleSet`].
    pub account: String,
    /// Backed-up paths; with the account they form the group.
    pub paths: Vec<String>,
    /// Tags, matched exactly by [`Rule::Tag`].
    pub tags: Vec<String>,
}

/// A calendar bucket size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Unit {
    /// Local clock hour.
    Hourly,
    /// Local calendar day.
    Daily,
    /// Week beginning on the rule set's `week_start` (Monday: ISO weeks).
    Weekly,
    /// Calendar month.
    Monthly,
    /// Calendar year.
    Yearly,
}

impl Unit {
    /// The lowercase adjective used in labels: `hourly` … `yearly`.
    pub fn name(self) -> &'static str {
        match self {
            Unit::Hourly => "hourly",
            Unit::Daily => "daily",
            Unit::Weekly => "weekly",
            Unit::Monthly => "monthly",
            Unit::Yearly => "yearly",
        }
    }
}

/// How many buckets a bucketed rule keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Amount {
    /// The N most recent buckets that hold snapshots (restic's meaning).
    Count(u32),
    /// Every bucket that starts within this many seconds before `now`.
    Within(i64),
}

impl Amount {
    /// Parses `7` (a count, must be positive) or a duration such as `30d`
    /// (see [`parse_duration`]). Text with digits that is not a count is
    /// reported as [`RetentionError::BadDuration`], other text as
    /// [`RetentionError::BadAmount`].
    pub fn parse(s: &str) -> Result<Self, RetentionError> {
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return match s.parse::<u32>() {
                Ok(0) => Err(RetentionError::BadAmount {
                    input: s.to_string(),
                    why: "a count must be at least 1".to_string(),
                }),
                Ok(n) => Ok(Amount::Count(n)),
                Err(_) => Err(RetentionError::BadAmount {
                    input: s.to_string(),
                    why: "count too large".to_string(),
                }),
            };
        }
        if s.bytes().any(|b| b.is_ascii_digit()) {
            // Meant as a duration: report it as one (`bad duration "7x"`).
            return parse_duration(s).map(Amount::Within);
        }
        Err(RetentionError::BadAmount {
            input: s.to_string(),
            why: "expected a count such as 7 or a duration such as 30d".to_string(),
        })
    }
}

impl fmt::Display for Amount {
    /// `3` for counts, `(30d)` for durations, as used in labels.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Amount::Count(n) => write!(f, "{n}"),
            Amount::Within(d) => write!(f, "({})", format_duration(*d)),
        }
    }
}

/// One keep rule. A snapshot is kept when any rule of its group keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Rule {
    /// The N newest snapshots of the group.
    Last(u32),
    /// The newest snapshot in each calendar bucket selected by the amount.
    Calendar(Unit, Amount),
    /// The newest snapshot in each bucket of `width` seconds (cut on local
    /// wall-clock time, see the module docs) selected by the amount.
    Every {
        /// Bucket width in seconds, greater than zero.
        width: i64,
        /// Which buckets.
        amount: Amount,
    },
    /// Every snapshot carrying this tag.
    Tag(String),
    /// Every snapshot taken at or after `now − seconds`.
    Within(i64),
}

impl Rule {
    /// Builds the bucketed rule for a width text such as `6h`, `1d`, `1w`,
    /// `1mo`: `1h`/`1d`/`1w`/`1mo`/`1y` (and equal widths such as `24h`)
    /// give [`Rule::Calendar`], anything else [`Rule::Every`].
    pub fn every(width: &str, amount: Amount) -> Result<Rule, RetentionError> {
        Ok(match parse_width(width)? {
            Width::Calendar(unit) => Rule::Calendar(unit, amount),
            Width::Aligned(width) => Rule::Every { width, amount },
        })
    }

    /// The label used in reasons when none is given: `last 3`, `daily 7`,
    /// `daily (30d)`, `every 6h (7d)`, `tag legal-hold`, `within 2d`.
    pub fn label(&self) -> String {
        match self {
            Rule::Last(n) => format!("last {n}"),
            Rule::Calendar(unit, amount) => format!("{} {amount}", unit.name()),
            Rule::Every { width, amount } => {
                format!("every {} {amount}", format_duration(*width))
            }
            Rule::Tag(t) => format!("tag {t}"),
            Rule::Within(d) => format!("within {}", format_duration(*d)),
        }
    }
}

/// The rules of one account, with the calendar they are cut in.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSet {
    /// `(label, rule)`; the label is what [`Decision::reasons`] lists.
    pub rules: Vec<(String, Rule)>,
    /// Time zone of the calendar buckets.
    pub tz: Tz,
    /// First day of weekly buckets (and of widths that are whole weeks).
    pub week_start: Weekday,
}

impl RuleSet {
    /// An empty rule set in `tz` with weeks starting on `week_start`.
    pub fn new(tz: Tz, week_start: Weekday) -> Self {
        RuleSet {
            rules: Vec::new(),
            tz,
            week_start,
        }
    }

    /// Adds a rule labelled with [`Rule::label`].
    pub fn push(&mut self, rule: Rule) {
        self.rules.push((rule.label(), rule));
    }

    /// Builder form of [`RuleSet::push`].
    #[must_use]
    pub fn with(mut self, rule: Rule) -> Self {
        self.push(rule);
        self
    }

    /// Adds a rule with an explicit label.
    #[must_use]
    pub fn with_labeled(mut self, label: impl Into<String>, rule: Rule) -> Self {
        self.rules.push((label.into(), rule));
        self
    }
}

impl Default for RuleSet {
    /// No rules, UTC, weeks starting on Monday.
    fn default() -> Self {
        RuleSet::new(Tz::UTC, Weekday::Mon)
    }
}

/// The verdict on one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Snapshot id.
    pub id: String,
    /// Snapshot time, unix seconds.
    pub time: i64,
    /// Snapshot account.
    pub account: String,
    /// The group: `account [path, path]` with the paths sorted.
    pub group: String,
    /// Whether the snapshot is kept; always equal to `!reasons.is_empty()`.
    pub keep: bool,
    /// Labels of the rules that keep it, in rule order, then
    /// [`SAFETY_REASON`] if only the safety keeps it. Empty when removed.
    pub reasons: Vec<String>,
}

/// Parses a duration (see the module docs) into seconds, > 0.
pub fn parse_duration(s: &str) -> Result<i64, RetentionError> {
    duration_parts(s).map_err(|why| RetentionError::BadDuration {
        input: s.to_string(),
        why,
    })
}

/// Parses the `--keep-every` argument `WIDTH:AMOUNT`, e.g. `6h:7d` (one per
/// 6-hour bucket for 7 days) or `1d:30` (the newest of each of the 30 most
/// recent days with snapshots). See [`Rule::every`] and [`Amount::parse`].
pub fn parse_keep_every(s: &str) -> Result<Rule, RetentionError> {
    let bad = |why: String| RetentionError::BadKeepEvery {
        input: s.to_string(),
        why,
    };
    let Some((width, amount)) = s.split_once(':') else {
        return Err(bad(
            "expected WIDTH:AMOUNT such as 6h:7d or 1d:30".to_string()
        ));
    };
    let amount = Amount::parse(amount).map_err(|e| bad(e.to_string()))?;
    Rule::every(width, amount).map_err(|e| bad(e.to_string()))
}

/// Parses an IANA time zone name (`UTC`, `Europe/Berlin`, …).
pub fn parse_time_zone(s: &str) -> Result<Tz, RetentionError> {
    s.parse::<Tz>()
        .map_err(|_| RetentionError::UnknownTimeZone(s.to_string()))
}

/// Parses a weekday: `monday` … `sunday` or `mon` … `sun`, any case.
pub fn parse_weekday(s: &str) -> Result<Weekday, RetentionError> {
    s.parse::<Weekday>()
        .map_err(|_| RetentionError::UnknownWeekday(s.to_string()))
}

/// Formats seconds compactly: `365d` → `1y`, `7d`, `1d12h`, `90m` → `1h30m`.
pub fn format_duration(secs: i64) -> String {
    if secs <= 0 {
        return format!("{secs}s");
    }
    if secs % YEAR_DURATION == 0 {
        return format!("{}y", secs / YEAR_DURATION);
    }
    let mut out = String::new();
    let mut rest = secs;
    for (unit, name) in [(DAY, "d"), (HOUR, "h"), (MINUTE, "m"), (1, "s")] {
        if rest >= unit {
            out.push_str(&format!("{}{name}", rest / unit));
            rest %= unit;
        }
    }
    out
}

const UNITS_HELP: &str = "use s, m, h, d, w, mo or y";

/// The units of a duration part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DurUnit {
    Second,
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl DurUnit {
    fn seconds(self) -> i64 {
        match self {
            DurUnit::Second => 1,
            DurUnit::Minute => MINUTE,
            DurUnit::Hour => HOUR,
            DurUnit::Day => DAY,
            DurUnit::Week => WEEK,
            DurUnit::Month => MONTH_DURATION,
            DurUnit::Year => YEAR_DURATION,
        }
    }
}

/// Splits `1d12h` into `[(1, Day), (12, Hour)]`; the error is the reason.
fn split_duration(s: &str) -> Result<Vec<(i64, DurUnit)>, String> {
    if s.is_empty() {
        return Err("empty".to_string());
    }
    let mut parts = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let (number, after) = rest.split_at(digits);
        let letters = after.len()
            - after
                .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                .len();
        let (unit, after) = after.split_at(letters);
        if number.is_empty() {
            return Err(match after.chars().next().filter(|_| unit.is_empty()) {
                Some(c) => format!("unexpected {c:?}; expected digits then a unit ({UNITS_HELP})"),
                None => format!("expected a number before {unit:?}"),
            });
        }
        let unit = match unit {
            "s" => DurUnit::Second,
            "m" => DurUnit::Minute,
            "h" => DurUnit::Hour,
            "d" => DurUnit::Day,
            "w" => DurUnit::Week,
            "mo" => DurUnit::Month,
            "y" => DurUnit::Year,
            "" => return Err(format!("missing unit after {number} ({UNITS_HELP})")),
            other => return Err(format!("unknown unit {other:?} ({UNITS_HELP})")),
        };
        let n: i64 = number.parse().map_err(|_| "number too large".to_string())?;
        parts.push((n, unit));
        rest = after;
    }
    Ok(parts)
}

fn sum_parts(parts: &[(i64, DurUnit)]) -> Result<i64, String> {
    let mut total: i64 = 0;
    for &(n, unit) in parts {
        total = n
            .checked_mul(unit.seconds())
            .and_then(|v| total.checked_add(v))
            .filter(|&v| v <= MAX_DURATION)
            .ok_or_else(|| "too large (at most 10000y)".to_string())?;
    }
    if total <= 0 {
        return Err("must be greater than zero".to_string());
    }
    Ok(total)
}

fn duration_parts(s: &str) -> Result<i64, String> {
    sum_parts(&split_duration(s)?)
}

/// A parsed bucket width.
enum Width {
    Calendar(Unit),
    Aligned(i64),
}

fn parse_width(s: &str) -> Result<Width, RetentionError> {
    let bad = |why: String| RetentionError::BadWidth {
        input: s.to_string(),
        why,
    };
    let parts = split_duration(s).map_err(bad)?;
    match parts.as_slice() {
        [(1, DurUnit::Month)] => return Ok(Width::Calendar(Unit::Monthly)),
        [(1, DurUnit::Year)] => return Ok(Width::Calendar(Unit::Yearly)),
        _ => {}
    }
    if parts
        .iter()
        .any(|(_, u)| matches!(u, DurUnit::Month | DurUnit::Year))
    {
        return Err(bad(
            "months and years are calendar buckets: use exactly 1mo or 1y".to_string(),
        ));
    }
    let secs = sum_parts(&parts).map_err(bad)?;
    Ok(match secs {
        HOUR => Width::Calendar(Unit::Hourly),
        DAY => Width::Calendar(Unit::Daily),
        WEEK => Width::Calendar(Unit::Weekly),
        w => Width::Aligned(w),
    })
}

// ---------------------------------------------------------------------------
// Deciding

/// How snapshots are cut into buckets, on local wall-clock seconds.
#[derive(Debug, Clone, Copy)]
enum Bucketing {
    /// `floor((local - anchor) / width)`.
    Aligned {
        width: i64,
        anchor: i64,
    },
    Month,
    Year,
}

impl Bucketing {
    fn of(rule: &Rule, week_start: Weekday) -> Option<(Bucketing, Amount)> {
        let aligned = |width: i64| Bucketing::Aligned {
            width,
            anchor: if width % WEEK == 0 {
                week_anchor(week_start)
            } else {
                0
            },
        };
        match rule {
            Rule::Calendar(unit, amount) => Some((
                match unit {
                    Unit::Hourly => aligned(HOUR),
                    Unit::Daily => aligned(DAY),
                    Unit::Weekly => aligned(WEEK),
                    Unit::Monthly => Bucketing::Month,
                    Unit::Yearly => Bucketing::Year,
                },
                *amount,
            )),
            Rule::Every { width, amount } => Some((aligned(*width), *amount)),
            _ => None,
        }
    }

    /// The bucket of a local wall-clock time: `(id, start as local seconds)`.
    /// Ids grow with time.
    fn bucket(self, local: i64) -> Option<(i64, i64)> {
        match self {
            Bucketing::Aligned { width, anchor } => {
                let id = local.checked_sub(anchor)?.checked_div_euclid(width)?;
                Some((id, id.checked_mul(width)?.checked_add(anchor)?))
            }
            Bucketing::Month | Bucketing::Year => {
                let t = DateTime::from_timestamp(local, 0)?.naive_utc();
                let (id, month) = match self {
                    Bucketing::Month => {
                        (i64::from(t.year()) * 12 + i64::from(t.month0()), t.month())
                    }
                    _ => (i64::from(t.year()), 1),
                };
                let start = NaiveDate::from_ymd_opt(t.year(), month, 1)?
                    .and_hms_opt(0, 0, 0)?
                    .and_utc()
                    .timestamp();
                Some((id, start))
            }
        }
    }
}

/// Local seconds of the first `week_start` day on or before 1970-01-01 (a
/// Thursday), so that `floor((local - anchor) / WEEK)` numbers weeks.
fn week_anchor(week_start: Weekday) -> i64 {
    let back = (3 - i64::from(week_start.num_days_from_monday())).rem_euclid(7);
    -back * DAY
}

/// Wall-clock seconds since 1970-01-01 00:00 local for a unix time.
fn local_seconds(tz: Tz, time: i64) -> Option<i64> {
    let utc = DateTime::from_timestamp(time, 0)?;
    Some(utc.with_timezone(&tz).naive_local().and_utc().timestamp())
}

/// Group key: account, then sorted and deduplicated paths.
type GroupKey = (String, Vec<String>);

fn group_name(key: &GroupKey) -> String {
    format!("{} [{}]", key.0, key.1.join(", "))
}

fn validate(label: &str, rule: &Rule) -> Result<(), RetentionError> {
    let invalid = |why: &str| RetentionError::InvalidRule {
        label: label.to_string(),
        why: why.to_string(),
    };
    match rule {
        Rule::Every { width, .. } if *width <= 0 => Err(invalid("bucket width must be positive")),
        Rule::Within(d)
        | Rule::Calendar(_, Amount::Within(d))
        | Rule::Every {
            amount: Amount::Within(d),
            ..
        } if *d < 0 => Err(invalid("duration must not be negative")),
        _ => Ok(()),
    }
}

/// Decides, for every snapshot, whether it is kept and why.
///
/// Guarantees:
/// * one [`Decision`] per input snapshot, sorted by account, then the group's
///   sorted paths, then time, then id;
/// * `rules_for` is called once per distinct account; its error is returned;
/// * a group whose rule set is empty is refused with
///   [`RetentionError::NoRules`], so no rules never removes everything;
/// * unless `allow_empty`, the newest snapshot (by time, then id) of every
///   group is kept;
/// * `keep == !reasons.is_empty()` for every decision;
/// * the result depends only on the arguments (not on input order or the
///   clock).
pub fn decide(
    snaps: &[SnapInfo],
    rules_for: &dyn Fn(&str) -> Result<RuleSet, RetentionError>,
    now: i64,
    allow_empty: bool,
) -> Result<Vec<Decision>, RetentionError> {
    let mut groups: BTreeMap<GroupKey, Vec<&SnapInfo>> = BTreeMap::new();
    for s in snaps {
        let mut paths = s.paths.clone();
        paths.sort();
        paths.dedup();
        groups
            .entry((s.account.clone(), paths))
            .or_default()
            .push(s);
    }

    let mut rule_sets: BTreeMap<String, RuleSet> = BTreeMap::new();
    let mut out = Vec::with_capacity(snaps.len());
    for (key, mut members) in groups {
        members.sort_by(|a, b| (a.time, a.nanos, &a.id).cmp(&(b.time, b.nanos, &b.id)));
        let set = match rule_sets.entry(key.0.clone()) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => e.insert(rules_for(&key.0)?),
        };
        let name = group_name(&key);
        if set.rules.is_empty() {
            return Err(RetentionError::NoRules { group: name });
        }
        let reasons = decide_group(&members, set, now)?;
        let newest = members.len().checked_sub(1);
        for (i, (snap, mut why)) in members.iter().zip(reasons).enumerate() {
            if why.is_empty() && !allow_empty && Some(i) == newest {
                why.push(SAFETY_REASON.to_string());
            }
            out.push(Decision {
                id: snap.id.clone(),
                time: snap.time,
                account: snap.account.clone(),
                group: name.clone(),
                keep: !why.is_empty(),
                reasons: why,
            });
        }
    }
    Ok(out)
}

/// Reasons per member (members sorted oldest first).
fn decide_group(
    members: &[&SnapInfo],
    set: &RuleSet,
    now: i64,
) -> Result<Vec<Vec<String>>, RetentionError> {
    let mut locals = Vec::with_capacity(members.len());
    for s in members {
        locals.push(local_seconds(set.tz, s.time).ok_or_else(|| {
            RetentionError::TimeOutOfRange {
                id: s.id.clone(),
                time: s.time,
            }
        })?);
    }
    let cutoff_local = |d: i64| {
        let instant = now.saturating_sub(d).clamp(-INSTANT_LIMIT, INSTANT_LIMIT);
        local_seconds(set.tz, instant).unwrap_or(i64::MIN)
    };

    let mut reasons: Vec<Vec<String>> = vec![Vec::new(); members.len()];
    let mut keep = |i: usize, label: &str| {
        if let Some(r) = reasons.get_mut(i) {
            r.push(label.to_string());
        }
    };
    for (label, rule) in &set.rules {
        validate(label, rule)?;
        match rule {
            Rule::Last(n) => {
                let n = usize::try_from(*n).unwrap_or(usize::MAX);
                for i in (0..members.len()).rev().take(n) {
                    keep(i, label);
                }
            }
            Rule::Tag(tag) => {
                for (i, s) in members.iter().enumerate() {
                    if s.tags.iter().any(|t| t == tag) {
                        keep(i, label);
                    }
                }
            }
            Rule::Within(d) => {
                let cutoff = now.saturating_sub(*d);
                for (i, s) in members.iter().enumerate() {
                    if s.time >= cutoff {
                        keep(i, label);
                    }
                }
            }
            Rule::Calendar(..) | Rule::Every { .. } => {
                let Some((bucketing, amount)) = Bucketing::of(rule, set.week_start) else {
                    continue;
                };
                // `Some(local cut-off)` for durations, `None` for counts.
                let cutoff = match amount {
                    Amount::Within(d) => Some(cutoff_local(d)),
                    Amount::Count(_) => None,
                };
                let mut seen = BTreeSet::new();
                let mut counted: u32 = 0;
                // Newest first: the first member met in a bucket is its newest.
                for (i, (&local, s)) in locals.iter().zip(members).enumerate().rev() {
                    let (id, start) =
                        bucketing
                            .bucket(local)
                            .ok_or_else(|| RetentionError::TimeOutOfRange {
                                id: s.id.clone(),
                                time: s.time,
                            })?;
                    if !seen.insert(id) {
                        continue;
                    }
                    match (cutoff, amount) {
                        (Some(cutoff), _) => {
                            // Not monotonic across a DST change for widths
                            // under an hour, so no early exit here.
                            if start >= cutoff {
                                keep(i, label);
                            }
                        }
                        (None, Amount::Count(n)) => {
                            if counted >= n {
                                break;
                            }
                            counted += 1;
                            keep(i, label);
                        }
                        (None, Amount::Within(_)) => {}
                    }
                }
            }
        }
    }
    Ok(reasons)
}

// ---------------------------------------------------------------------------
// Policy file

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    defaults: Option<RawDefaults>,
    #[serde(default)]
    plans: BTreeMap<String, RawPlan>,
    #[serde(default)]
    accounts: BTreeMap<String, RawAccount>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    plan: Option<String>,
    timezone: Option<String>,
    week_start: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    #[serde(default)]
    tiers: Vec<RawTier>,
    week_start: Option<String>,
    keep_last: Option<u32>,
    keep_within: Option<String>,
    #[serde(default)]
    keep_tags: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTier {
    name: Option<String>,
    every: String,
    keep: toml::Value,
    week_start: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccount {
    plan: Option<String>,
    timezone: Option<String>,
    week_start: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
struct Plan {
    rules: Vec<(String, Rule)>,
    week_start: Option<Weekday>,
}

#[derive(Debug, Clone, PartialEq)]
struct AccountSettings {
    plan: Option<String>,
    tz: Option<Tz>,
    week_start: Option<Weekday>,
}

/// A parsed and fully validated policy file (shape in the module docs).
///
/// Once [`Policy::parse`] succeeds, every duration, time zone, weekday and
/// plan reference in the file is valid, so [`Policy::rules_for`] fails only
/// for an unlisted account when `[defaults]` names no plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    default_plan: Option<String>,
    default_tz: Tz,
    default_week_start: Option<Weekday>,
    plans: BTreeMap<String, Plan>,
    accounts: BTreeMap<String, AccountSettings>,
}

fn opt_weekday(s: &Option<String>, at: &str) -> Result<Option<Weekday>, RetentionError> {
    s.as_deref()
        .map(parse_weekday)
        .transpose()
        .map_err(|e| e.at(at))
}

fn opt_tz(s: &Option<String>, at: &str) -> Result<Option<Tz>, RetentionError> {
    s.as_deref()
        .map(parse_time_zone)
        .transpose()
        .map_err(|e| e.at(at))
}

fn keep_amount(v: &toml::Value) -> Result<Amount, RetentionError> {
    match v {
        toml::Value::String(s) => Amount::parse(s),
        toml::Value::Integer(n) => match u32::try_from(*n) {
            Ok(n) if n > 0 => Ok(Amount::Count(n)),
            _ => Err(RetentionError::BadAmount {
                input: n.to_string(),
                why: "a count must be between 1 and 4294967295".to_string(),
            }),
        },
        other => Err(RetentionError::BadAmount {
            input: other.to_string(),
            why: "expected a count such as 7 or a duration string such as \"30d\"".to_string(),
        }),
    }
}

fn parse_plan(name: &str, raw: &RawPlan) -> Result<Plan, RetentionError> {
    let mut week_start = opt_weekday(&raw.week_start, &format!("plans.{name}.week_start"))?;
    let mut week_from = format!("plans.{name}.week_start");
    let mut rules = Vec::new();
    for (i, tier) in raw.tiers.iter().enumerate() {
        let tier_name = tier.name.clone().unwrap_or_else(|| tier.every.clone());
        let at = format!("plans.{name}.tiers[{i}] ({tier_name:?})");
        let amount = keep_amount(&tier.keep).map_err(|e| e.at(format!("{at}, keep")))?;
        let rule = Rule::every(&tier.every, amount).map_err(|e| e.at(format!("{at}, every")))?;
        if let Some(ws) = opt_weekday(&tier.week_start, &format!("{at}, week_start"))? {
            match week_start {
                Some(prev) if prev != ws => {
                    return Err(RetentionError::InvalidPolicy(format!(
                        "{at} starts weeks on {ws:?} but {week_from} says {prev:?}: a plan has one week start"
                    )))
                }
                _ => {
                    week_start = Some(ws);
                    week_from = at.clone();
                }
            }
        }
        rules.push((format!("tier {name}/{tier_name}"), rule));
    }
    if let Some(n) = raw.keep_last {
        if n == 0 {
            return Err(RetentionError::BadAmount {
                input: "0".to_string(),
                why: "a count must be at least 1".to_string(),
            }
            .at(format!("plans.{name}.keep_last")));
        }
        rules.push((format!("plan {name}: last {n}"), Rule::Last(n)));
    }
    if let Some(d) = &raw.keep_within {
        let secs = parse_duration(d).map_err(|e| e.at(format!("plans.{name}.keep_within")))?;
        rules.push((
            format!("plan {name}: within {}", format_duration(secs)),
            Rule::Within(secs),
        ));
    }
    for tag in &raw.keep_tags {
        rules.push((format!("plan {name}: tag {tag}"), Rule::Tag(tag.clone())));
    }
    if rules.is_empty() {
        return Err(RetentionError::InvalidPolicy(format!(
            "plan {name:?} has no rules (give tiers, keep_last, keep_within or keep_tags)"
        )));
    }
    Ok(Plan { rules, week_start })
}

impl Policy {
    /// Parses and validates a policy file's text. Errors name the place in
    /// the file (`plans.starter.tiers[1] ("daily"), keep: bad keep amount …`)
    /// or the offending reference (`unknown plan "x" for account "y"`).
    pub fn parse(toml_text: &str) -> Result<Self, RetentionError> {
        let raw: RawPolicy =
            toml::from_str(toml_text).map_err(|e| RetentionError::Syntax(e.to_string()))?;

        let mut plans = BTreeMap::new();
        for (name, plan) in &raw.plans {
            plans.insert(name.clone(), parse_plan(name, plan)?);
        }

        let (default_plan, default_tz, default_week_start) = match &raw.defaults {
            Some(d) => {
                if let Some(p) = &d.plan {
                    if !plans.contains_key(p) {
                        return Err(RetentionError::UnknownDefaultPlan(p.clone()));
                    }
                }
                (
                    d.plan.clone(),
                    opt_tz(&d.timezone, "defaults.timezone")?.unwrap_or(Tz::UTC),
                    opt_weekday(&d.week_start, "defaults.week_start")?,
                )
            }
            None => (None, Tz::UTC, None),
        };

        let mut accounts = BTreeMap::new();
        for (name, a) in &raw.accounts {
            match a.plan.as_ref().or(default_plan.as_ref()) {
                None => return Err(RetentionError::NoPlan(name.clone())),
                Some(p) if !plans.contains_key(p) => {
                    return Err(RetentionError::UnknownPlan {
                        plan: p.clone(),
                        account: name.clone(),
                    })
                }
                Some(_) => {}
            }
            accounts.insert(
                name.clone(),
                AccountSettings {
                    plan: a.plan.clone(),
                    tz: opt_tz(&a.timezone, &format!("accounts.{name}.timezone"))?,
                    week_start: opt_weekday(&a.week_start, &format!("accounts.{name}.week_start"))?,
                },
            );
        }

        Ok(Policy {
            default_plan,
            default_tz,
            default_week_start,
            plans,
            accounts,
        })
    }

    /// The plan that applies to `account`: its own, else `[defaults].plan`.
    pub fn plan_for(&self, account: &str) -> Result<&str, RetentionError> {
        self.accounts
            .get(account)
            .and_then(|a| a.plan.as_deref())
            .or(self.default_plan.as_deref())
            .ok_or_else(|| RetentionError::NoPlan(account.to_string()))
    }

    /// The rule set of `account`: its plan's rules (labelled `tier plan/name`
    /// etc.), its time zone (else the default, else UTC) and week start
    /// (account, plan, defaults, Monday). Never empty.
    pub fn rules_for(&self, account: &str) -> Result<RuleSet, RetentionError> {
        let plan_name = self.plan_for(account)?;
        let plan = self
            .plans
            .get(plan_name)
            .ok_or_else(|| RetentionError::UnknownPlan {
                plan: plan_name.to_string(),
                account: account.to_string(),
            })?;
        let settings = self.accounts.get(account);
        let tz = settings.and_then(|a| a.tz).unwrap_or(self.default_tz);
        let week_start = settings
            .and_then(|a| a.week_start)
            .or(plan.week_start)
            .or(self.default_week_start)
            .unwrap_or(Weekday::Mon);
        Ok(RuleSet {
            rules: plan.rules.clone(),
            tz,
            week_start,
        })
    }
}
