//! README.txt: what every file of an export is, its columns, their types
//! and an example, and how the export was made.

use std::fmt::Write as _;

use super::infer::TableStats;
use super::Category;
use crate::format::exportrec::ExportFormat;

/// One table as written.
#[derive(Clone, Debug)]
pub struct TableOut {
    /// Table name.
    pub name: String,
    /// Entry names in the ZIP (more than one when cut into pieces).
    pub entries: Vec<String>,
    /// Category.
    pub category: Category,
    /// The source files, described.
    pub source: String,
    /// Columns and rows.
    pub stats: TableStats,
}

/// Everything README.txt describes.
#[derive(Clone, Debug)]
pub struct ReadmeInfo {
    /// Account.
    pub account: String,
    /// Account layout name.
    pub kind: &'static str,
    /// Snapshot id (hex).
    pub snapshot: String,
    /// Snapshot time, RFC 3339.
    pub snapshot_time: String,
    /// Export time, RFC 3339.
    pub export_time: String,
    /// Format.
    pub format: ExportFormat,
    /// Categories included.
    pub categories: Vec<Category>,
    /// Tables.
    pub tables: Vec<TableOut>,
    /// settings.json included.
    pub settings: bool,
    /// Attachments: entry names and sizes.
    pub attachments: Vec<(Vec<String>, u64)>,
    /// Part size when split.
    pub split: Option<u64>,
    /// The `--include` names, when the export was limited to them.
    pub include: Vec<String>,
}

/// Attachments listed one by one; past this, only counted.
const LIST_ATTACHMENTS: usize = 1000;

/// Renders README.txt.
pub fn render(i: &ReadmeInfo) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Export of account {}", i.account);
    let _ = writeln!(s, "{}\n", "=".repeat(18 + i.account.chars().count()));
    let _ = writeln!(s, "Snapshot:     {} taken {}", i.snapshot, i.snapshot_time);
    let _ = writeln!(
        s,
        "Exported:     {} by arca {}",
        i.export_time,
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(s, "Account type: {}", i.kind);
    let cats: Vec<&str> = i.categories.iter().map(|c| c.name()).collect();
    let _ = writeln!(s, "Contains:     {} (and settings.json)", cats.join(", "));
    if !i.include.is_empty() {
        let _ = writeln!(s, "Only:         {}", i.include.join(", "));
    }
    let _ = writeln!(s, "Format:       {}\n", i.format.name());
    match i.format {
        ExportFormat::Csv => s.push_str(
            "Tables are UTF-8 CSV files with one header row. Tables that were CSV in the\n\
             account are byte for byte the files that were backed up. Tables that were\n\
             JSON records are flattened: a nested field becomes a column with a dotted\n\
             name (details.field), a list becomes its JSON text in one field, null an\n\
             empty field; the header is every field seen in any record, in the order\n\
             first seen, so a record without a field has an empty value there.\n\n",
        ),
        ExportFormat::Json => s.push_str(
            "Tables are JSON Lines files (.jsonl): one JSON object per line, one line\n\
             per record. JSON Lines rather than one JSON array because a table of any\n\
             size can be read and written a record at a time (by jq, pandas\n\
             read_json(lines=True), spark, or line by line), a damaged line costs one\n\
             record, and a split table stays valid in every piece. Rows of CSV tables\n\
             become objects keyed by the header, with every value a string exactly as\n\
             in the CSV; JSON records are passed through unchanged, only written on\n\
             one line.\n\n",
        ),
    }
    if let Some(n) = i.split {
        let _ = writeln!(
            s,
            "The export is split into ZIP files of at most {n} bytes, each complete on\n\
             its own. A file too large for one part is cut into pieces: tables at record\n\
             boundaries as NAME.001.csv, NAME.002.csv, ... each with the header row;\n\
             other files by bytes as NAME.001, NAME.002, ... (join them in order, e.g.\n\
             cat NAME.0* > NAME). This README is in the last part.\n"
        );
    }
    s.push_str(
        "Types below are inferred from every value: integer, decimal, boolean, date\n\
                (YYYY-MM-DD), datetime (ISO 8601), text; empty means no value at all.\n\n",
    );
    for cat in &i.categories {
        let tables: Vec<&TableOut> = i.tables.iter().filter(|t| t.category == *cat).collect();
        if *cat == Category::Attachments {
            continue;
        }
        let _ = writeln!(s, "## {} tables\n", cat.name());
        if tables.is_empty() {
            s.push_str("(none exported)\n\n");
        }
        for t in tables {
            let _ = writeln!(s, "### {}", t.entries.join(", "));
            let _ = writeln!(
                s,
                "Table {} from {}: {} rows, {} columns.",
                t.name,
                t.source,
                t.stats.rows,
                t.stats.columns.len()
            );
            let w = t
                .stats
                .columns
                .iter()
                .map(|c| c.name.chars().count())
                .max()
                .unwrap_or(4)
                .clamp(6, 40);
            let _ = writeln!(s, "  {:<w$}  {:<8}  example", "column", "type");
            for c in &t.stats.columns {
                let _ = writeln!(s, "  {:<w$}  {:<8}  {}", c.name, c.ty.name(), c.example);
            }
            s.push('\n');
        }
    }
    if i.settings {
        s.push_str("## settings.json\n\nThe account's settings, exactly as backed up.\n\n");
    }
    if i.categories.contains(&Category::Attachments) || !i.attachments.is_empty() {
        let total: u64 = i.attachments.iter().map(|a| a.1).sum();
        let _ = writeln!(
            s,
            "## attachments and other files\n\n{} files, {} bytes, in their original formats\n\
             (JSON files that hold no records are here too, as they were):",
            i.attachments.len(),
            total
        );
        for (names, size) in i.attachments.iter().take(LIST_ATTACHMENTS) {
            let _ = writeln!(s, "  {}  ({size} bytes)", names.join(", "));
        }
        if i.attachments.len() > LIST_ATTACHMENTS {
            let _ = writeln!(
                s,
                "  ... and {} more",
                i.attachments.len() - LIST_ATTACHMENTS
            );
        }
        s.push('\n');
    }
    s
}
