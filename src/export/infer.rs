//! Column statistics for README.txt: a type inferred from every value, an
//! example, and the row count.

use serde::Serialize;

/// The inferred type of a column; empty values say nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ColType {
    /// Only empty values so far.
    Empty,
    /// `true` / `false`.
    Boolean,
    /// Whole numbers without leading zeros (codes like `007` are text).
    Integer,
    /// Numbers with a fraction or exponent (and integers mixed in).
    Decimal,
    /// `YYYY-MM-DD`.
    Date,
    /// `YYYY-MM-DDTHH:MM[:SS[.f]][Z|±HH:MM]` (or a space for `T`).
    Datetime,
    /// Anything else.
    Text,
}

impl ColType {
    /// Lower-case name for README.txt.
    pub fn name(self) -> &'static str {
        match self {
            ColType::Empty => "empty",
            ColType::Boolean => "boolean",
            ColType::Integer => "integer",
            ColType::Decimal => "decimal",
            ColType::Date => "date",
            ColType::Datetime => "datetime",
            ColType::Text => "text",
        }
    }

    fn merge(self, other: ColType) -> ColType {
        use ColType::*;
        match (self, other) {
            (a, b) if a == b => a,
            (Empty, b) => b,
            (a, Empty) => a,
            (Integer, Decimal) | (Decimal, Integer) => Decimal,
            _ => Text,
        }
    }
}

fn digits(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(u8::is_ascii_digit)
}

fn is_date(s: &[u8]) -> bool {
    s.len() == 10
        && digits(&s[..4])
        && s[4] == b'-'
        && digits(&s[5..7])
        && s[7] == b'-'
        && digits(&s[8..10])
        && (1..=12).contains(&((s[5] - b'0') * 10 + (s[6] - b'0')))
        && (1..=31).contains(&((s[8] - b'0') * 10 + (s[9] - b'0')))
}

fn is_time(s: &[u8]) -> bool {
    // HH:MM[:SS[.fff]] then an optional zone.
    if s.len() < 5 || !digits(&s[..2]) || s[2] != b':' || !digits(&s[3..5]) {
        return false;
    }
    let mut r = &s[5..];
    if r.first() == Some(&b':') {
        if r.len() < 3 || !digits(&r[1..3]) {
            return false;
        }
        r = &r[3..];
        if r.first() == Some(&b'.') {
            let n = r[1..].iter().take_while(|c| c.is_ascii_digit()).count();
            if n == 0 {
                return false;
            }
            r = &r[1 + n..];
        }
    }
    match r {
        [] | [b'Z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()),
        [b'+' | b'-', h1, h2, m1, m2] => [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()),
        _ => false,
    }
}

/// The type of one non-empty value.
pub fn classify(v: &str) -> ColType {
    let b = v.as_bytes();
    if b.is_empty() {
        return ColType::Empty;
    }
    if v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false") {
        return ColType::Boolean;
    }
    let unsigned = match b[0] {
        b'-' | b'+' => &b[1..],
        _ => b,
    };
    if digits(unsigned) {
        // A leading zero makes it a code (zip, phone, id), not a number.
        return if unsigned.len() > 1 && unsigned[0] == b'0' {
            ColType::Text
        } else {
            ColType::Integer
        };
    }
    if is_decimal(unsigned) {
        return ColType::Decimal;
    }
    if b.len() >= 10 && is_date(&b[..10]) {
        if b.len() == 10 {
            return ColType::Date;
        }
        if (b[10] == b'T' || b[10] == b' ') && is_time(&b[11..]) {
            return ColType::Datetime;
        }
    }
    ColType::Text
}

fn is_decimal(s: &[u8]) -> bool {
    let (mant, exp) = match s.iter().position(|c| *c == b'e' || *c == b'E') {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let ok_mant = match mant.iter().position(|c| *c == b'.') {
        Some(i) => {
            let (a, f) = (&mant[..i], &mant[i + 1..]);
            digits(f) && (a.is_empty() || (digits(a) && !(a.len() > 1 && a[0] == b'0')))
        }
        None => exp.is_some() && digits(mant) && !(mant.len() > 1 && mant[0] == b'0'),
    };
    let ok_exp = match exp {
        None => true,
        Some(e) => {
            let e = match e.first() {
                Some(b'-' | b'+') => &e[1..],
                _ => e,
            };
            digits(e)
        }
    };
    ok_mant && ok_exp
}

/// Longest example shown in README.txt, in characters.
const EXAMPLE_CHARS: usize = 60;

/// One column's statistics.
#[derive(Clone, Debug, Serialize)]
pub struct Column {
    /// The column (field) name.
    pub name: String,
    /// The inferred type.
    #[serde(rename = "type")]
    pub ty: ColType,
    /// The first non-empty value, shortened.
    pub example: String,
    /// Rows with a non-empty value.
    pub filled: u64,
}

/// Statistics of one table.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TableStats {
    /// Columns in output order.
    pub columns: Vec<Column>,
    /// Data rows (records).
    pub rows: u64,
}

impl TableStats {
    /// Stats for a table with a known header.
    pub fn with_header<S: AsRef<str>>(names: &[S]) -> Self {
        let mut t = TableStats::default();
        for n in names {
            t.add_column(n.as_ref());
        }
        t
    }

    /// Adds a column (first-seen order) and returns its index.
    pub fn add_column(&mut self, name: &str) -> usize {
        self.columns.push(Column {
            name: name.to_string(),
            ty: ColType::Empty,
            example: String::new(),
            filled: 0,
        });
        self.columns.len() - 1
    }

    /// Records one value of column `i` (ignored past the known columns).
    pub fn observe(&mut self, i: usize, v: &str) {
        let Some(c) = self.columns.get_mut(i) else {
            return;
        };
        if v.is_empty() {
            return;
        }
        c.filled += 1;
        if c.example.is_empty() {
            c.example = shorten(v);
        }
        if c.ty != ColType::Text {
            c.ty = c.ty.merge(classify(v));
        }
    }
}

fn shorten(v: &str) -> String {
    let one_line: String = v
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(EXAMPLE_CHARS + 1)
        .collect();
    if one_line.chars().count() > EXAMPLE_CHARS {
        let mut s: String = one_line.chars().take(EXAMPLE_CHARS - 1).collect();
        s.push('…');
        s
    } else {
        one_line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_values() {
        use ColType::*;
        for (v, t) in [
            ("42", Integer),
            ("-7", Integer),
            ("007", Text),
            ("0", Integer),
            ("3.14", Decimal),
            ("-0.5", Decimal),
            (".5", Decimal),
            ("1e6", Decimal),
            ("1.", Text),
            ("TRUE", Boolean),
            ("false", Boolean),
            ("2024-03-01", Date),
            ("2024-13-01", Text),
            ("2024-03-01T02:00:00Z", Datetime),
            ("2024-03-01 02:00", Datetime),
            ("2024-03-01T02:00:00.123+01:00", Datetime),
            ("2024-03-01T02:00:00X", Text),
            ("José", Text),
            ("", Empty),
        ] {
            assert_eq!(classify(v), t, "{v:?}");
        }
    }

    #[test]
    fn merges_and_keeps_examples() {
        let mut s = TableStats::with_header(&["a", "b", "c"]);
        for row in [
            ["1", "", "x"],
            ["2.5", "2024-01-01", "3"],
            ["", "2024-01-02", ""],
        ] {
            for (i, v) in row.iter().enumerate() {
                s.observe(i, v);
            }
            s.rows += 1;
        }
        let t: Vec<_> = s
            .columns
            .iter()
            .map(|c| (c.ty, c.example.as_str(), c.filled))
            .collect();
        assert_eq!(
            t,
            vec![
                (ColType::Decimal, "1", 2),
                (ColType::Date, "2024-01-01", 2),
                (ColType::Text, "x", 2)
            ]
        );
        assert_eq!(shorten(&"é".repeat(100)).chars().count(), EXAMPLE_CHARS);
    }
}
