//! Rendering a snapshot back into the files an account owner can use: CSV
//! or JSON tables, settings and attachments in a ZIP (README "Export").
//!
//! This module holds the pure parts: which file of a snapshot becomes which
//! table of which category ([`plan`]), JSON record splitting and flattening
//! ([`json`]), column statistics ([`infer`]), README.txt ([`readme`]) and
//! the ZIP writer ([`zipout`]). `commands::export` runs them over a
//! repository.

pub mod infer;
pub mod json;
pub mod readme;
pub mod zipout;

use crate::error::{Error, Result};
use crate::id::BlobId;

/// What part of an account an exported file belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    /// Users and groups.
    Users,
    /// Business records: products, orders, invoices, app records.
    Transactional,
    /// Audit logs.
    Audit,
    /// Attachments and other files, in their original formats.
    Attachments,
}

impl Category {
    /// Every category, in README order.
    pub const ALL: [Category; 4] = [
        Category::Users,
        Category::Transactional,
        Category::Audit,
        Category::Attachments,
    ];

    /// The name used on the command line and in README.txt.
    pub fn name(self) -> &'static str {
        match self {
            Category::Users => "users",
            Category::Transactional => "transactional",
            Category::Audit => "audit",
            Category::Attachments => "attachments",
        }
    }

    /// Parses a category name.
    pub fn parse(s: &str) -> Option<Self> {
        Category::ALL.into_iter().find(|c| c.name() == s)
    }
}

/// Parses a size: a number with an optional unit, `B`, `K`/`KB` (1000),
/// `KiB` (1024), `M`/`MB`, `MiB`, `G`/`GB`, `GiB`, `T`/`TB`, `TiB`; case
/// does not matter, a fraction is allowed (`1.5GiB`).
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || {
        Error::Invalid(format!(
            "cannot parse size {s:?}: use e.g. 20MiB, 1GB or 500000"
        ))
    };
    let n: f64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    let v = n * mult as f64;
    if !v.is_finite() || v < 1.0 || v > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(v as u64)
}

/// A file of the snapshot.
#[derive(Clone, Debug)]
pub struct SrcFile {
    /// Path within the snapshot, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Its chunks, in order.
    pub chunks: Vec<BlobId>,
}

/// The SaaS product whose export layout an account has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccountKind {
    /// Kissflow: `UserAndGroup.json`, `apps/<App>/records/page-N.json`,
    /// `apps/<App>/attachments/…`, `audit-logs/audit-log-N.json`.
    Kissflow,
    /// Stockflow and anything else: CSV tables at any depth.
    Stockflow,
}

impl AccountKind {
    /// Lower-case name for README.txt.
    pub fn name(self) -> &'static str {
        match self {
            AccountKind::Kissflow => "kissflow",
            AccountKind::Stockflow => "stockflow",
        }
    }
}

/// Where a table's rows come from.
#[derive(Clone, Debug)]
pub enum Source {
    /// One CSV file.
    Csv(SrcFile),
    /// JSON files read in order, each a document of records or JSON Lines.
    Json {
        /// The files.
        files: Vec<SrcFile>,
        /// Name sub-tables after the member holding their records (`users`,
        /// `groups`) rather than after the table.
        by_member: bool,
    },
}

/// A table to export (before JSON sources are split by member).
#[derive(Clone, Debug)]
pub struct TableSpec {
    /// Name (file name without extension).
    pub name: String,
    /// Category.
    pub category: Category,
    /// Source files.
    pub source: Source,
}

impl TableSpec {
    /// Total source bytes.
    pub fn source_bytes(&self) -> u64 {
        match &self.source {
            Source::Csv(f) => f.size,
            Source::Json { files, .. } => files.iter().map(|f| f.size).sum(),
        }
    }

    /// Whether `--include NAME` selects this table: its name, a source
    /// path, its output file name, or (kissflow users) a member name.
    pub fn matches(&self, name: &str) -> bool {
        let name = name.trim_matches('/');
        if self.name == name
            || format!("{}.csv", self.name) == name
            || format!("{}.jsonl", self.name) == name
        {
            return true;
        }
        match &self.source {
            Source::Csv(f) => f.path == name,
            Source::Json { files, by_member } => {
                files.iter().any(|f| f.path == name)
                    || (*by_member && matches!(name, "users" | "groups"))
            }
        }
    }
}

/// An attachment or other file copied as it is.
#[derive(Clone, Debug)]
pub struct Attachment {
    /// Path inside the export folder.
    pub out: String,
    /// The file.
    pub file: SrcFile,
}

impl Attachment {
    /// Whether `--include NAME` selects it (a path or a folder of it).
    pub fn matches(&self, name: &str) -> bool {
        let name = name.trim_matches('/');
        [&self.out, &self.file.path]
            .iter()
            .any(|p| p.as_str() == name || p.starts_with(&format!("{name}/")))
    }
}

/// Which file of a snapshot becomes what (README "Export" documents it).
#[derive(Clone, Debug)]
pub struct Plan {
    /// The account's layout.
    pub kind: AccountKind,
    /// `settings.json`, always exported as it is.
    pub settings: Option<SrcFile>,
    /// Tables.
    pub tables: Vec<TableSpec>,
    /// Attachments and other files.
    pub attachments: Vec<Attachment>,
}

fn json_shape_ok(path: &str) -> bool {
    path.ends_with(".json") || path.ends_with(".jsonl") || path.ends_with(".ndjson")
}

/// Whether a JSON file is JSON Lines (by extension).
pub fn is_json_lines(path: &str) -> bool {
    path.ends_with(".jsonl") || path.ends_with(".ndjson")
}

fn stem(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let base = file.rsplit_once('.').map(|(s, _)| s).unwrap_or(file);
    let dir = path.rsplit_once('/').map(|(d, _)| d);
    match dir {
        Some(d) => format!("{}-{base}", d.replace('/', "-")),
        None => base.to_string(),
    }
}

/// Maps the files of a snapshot to tables, settings and attachments.
///
/// Kissflow (recognised by `UserAndGroup.json`, `apps/` or `audit-logs/`):
/// `UserAndGroup.json` → users (tables `users`, `groups`);
/// `apps/<App>/records/*.json` → transactional table `<App>`;
/// `audit-logs/*.json` → audit table `audit-log`;
/// `apps/<App>/attachments/<rest>` → attachments `attachments/<App>/<rest>`.
/// Stockflow: `users.csv` → users, every other CSV → transactional. In both,
/// other CSV and JSON files are transactional tables named by their path,
/// and any other file is an attachment kept at its path.
pub fn plan(mut files: Vec<SrcFile>) -> Plan {
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let kissflow = files.iter().any(|f| {
        f.path == "UserAndGroup.json"
            || f.path.starts_with("apps/")
            || f.path.starts_with("audit-logs/")
    });
    let mut plan = Plan {
        kind: if kissflow {
            AccountKind::Kissflow
        } else {
            AccountKind::Stockflow
        },
        settings: None,
        tables: Vec::new(),
        attachments: Vec::new(),
    };
    let add_json =
        |tables: &mut Vec<TableSpec>, name: String, cat: Category, f: SrcFile, by_member: bool| {
            if let Some(t) = tables.iter_mut().find(|t| t.name == name) {
                if let Source::Json { files, .. } = &mut t.source {
                    files.push(f);
                    return;
                }
            }
            tables.push(TableSpec {
                name,
                category: cat,
                source: Source::Json {
                    files: vec![f],
                    by_member,
                },
            });
        };
    for f in files {
        let p = f.path.clone();
        if p == "settings.json" {
            plan.settings = Some(f);
            continue;
        }
        if kissflow {
            let parts: Vec<&str> = p.split('/').collect();
            if p == "UserAndGroup.json" {
                add_json(
                    &mut plan.tables,
                    "UserAndGroup".into(),
                    Category::Users,
                    f,
                    true,
                );
                continue;
            }
            if let ["apps", app, "records", file] = parts.as_slice() {
                if json_shape_ok(file) {
                    add_json(
                        &mut plan.tables,
                        app.to_string(),
                        Category::Transactional,
                        f,
                        false,
                    );
                    continue;
                }
            }
            if let ["audit-logs", file] = parts.as_slice() {
                if json_shape_ok(file) {
                    add_json(
                        &mut plan.tables,
                        "audit-log".into(),
                        Category::Audit,
                        f,
                        false,
                    );
                    continue;
                }
            }
            if parts.len() > 3 && parts[0] == "apps" && parts[2] == "attachments" {
                let out = format!("attachments/{}/{}", parts[1], parts[3..].join("/"));
                plan.attachments.push(Attachment { out, file: f });
                continue;
            }
        }
        if p.ends_with(".csv") {
            let name = stem(&p);
            let category = if name == "users" {
                Category::Users
            } else {
                Category::Transactional
            };
            plan.tables.push(TableSpec {
                name,
                category,
                source: Source::Csv(f),
            });
        } else if json_shape_ok(&p) {
            add_json(
                &mut plan.tables,
                stem(&p),
                Category::Transactional,
                f,
                false,
            );
        } else {
            plan.attachments.push(Attachment { out: p, file: f });
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(p: &str) -> SrcFile {
        SrcFile {
            path: p.into(),
            size: 1,
            chunks: vec![],
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("20MiB").unwrap(), 20 << 20);
        assert_eq!(parse_size("1GB").unwrap(), 1_000_000_000);
        assert_eq!(parse_size("1.5gib").unwrap(), 3 << 29);
        assert_eq!(parse_size("500000").unwrap(), 500_000);
        assert_eq!(parse_size("64 KiB").unwrap(), 64 << 10);
        for bad in ["", "MB", "12XB", "-1MB", "0", "1..2MB"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn stockflow_mapping() {
        let p = plan(vec![
            f("users.csv"),
            f("orders.csv"),
            f("settings.json"),
            f("sub/x.csv"),
            f("logo.png"),
        ]);
        assert_eq!(p.kind, AccountKind::Stockflow);
        let t: Vec<_> = p
            .tables
            .iter()
            .map(|t| (t.name.as_str(), t.category))
            .collect();
        assert_eq!(
            t,
            vec![
                ("orders", Category::Transactional),
                ("sub-x", Category::Transactional),
                ("users", Category::Users)
            ]
        );
        assert!(p.settings.is_some());
        assert_eq!(p.attachments[0].out, "logo.png");
        assert!(p.tables[0].matches("orders.csv") && p.tables[0].matches("orders"));
    }

    #[test]
    fn kissflow_mapping() {
        let p = plan(vec![
            f("UserAndGroup.json"),
            f("apps/CRM/records/page-00002.json"),
            f("apps/CRM/records/page-00001.json"),
            f("apps/CRM/attachments/Pk1/a b.pdf"),
            f("audit-logs/audit-log-000001.json"),
            f("settings.json"),
        ]);
        assert_eq!(p.kind, AccountKind::Kissflow);
        let t: Vec<_> = p
            .tables
            .iter()
            .map(|t| (t.name.as_str(), t.category))
            .collect();
        assert_eq!(
            t,
            vec![
                ("UserAndGroup", Category::Users),
                ("CRM", Category::Transactional),
                ("audit-log", Category::Audit)
            ]
        );
        let Source::Json { files, .. } = &p.tables[1].source else {
            panic!()
        };
        assert_eq!(files[0].path, "apps/CRM/records/page-00001.json");
        assert_eq!(p.attachments[0].out, "attachments/CRM/Pk1/a b.pdf");
        assert!(p.attachments[0].matches("attachments/CRM"));
        assert!(p.tables[0].matches("users"));
    }
}
