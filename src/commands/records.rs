//! Single records (`restore --table T --where COLUMN=VALUE`): the rows of
//! one table of a snapshot whose fields have given values, as they were
//! stored, without restoring the files around them.
//!
//! Tables are named as `export` names them (README "Export"): a CSV file is
//! one table whose columns are its header; JSON record files are read as
//! records (array members, member arrays, JSON Lines) whose columns are
//! their flattened field paths (`customer.id`). The table streams through
//! the same bounded read-ahead as `export`; only the matching records are
//! handed on.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;

use crate::commands::export::{collect_files, csv_error, each_record, Ctx, Raw, Tee};
use crate::commands::Progress;
use crate::error::{Error, Result};
use crate::export::json;
use crate::export::zipout::Fit;
use crate::export::{self as ex, Source, SrcFile, TableSpec};
use crate::format::snapshot::Snapshot;
use crate::id::{BlobId, SnapshotId};
use crate::repository::IndexedRepository;

/// Which records to find.
#[derive(Clone, Debug, Default)]
pub struct RecordQuery {
    /// The table: `clients`, `clients.csv`, a source path, an app's name.
    pub table: String,
    /// `(column, value)` pairs a record must all have; every record of the
    /// table when empty.
    pub conditions: Vec<(String, String)>,
}

/// Parses `COLUMN=VALUE` (the value may hold `=`; the column may not be
/// empty).
pub fn parse_condition(s: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((c, v)) if !c.is_empty() => Ok((c.to_string(), v.to_string())),
        _ => Err(Error::Invalid(format!(
            "--where wants COLUMN=VALUE, got {s:?}"
        ))),
    }
}

/// How a table's records are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TableFormat {
    /// Rows of a CSV file under its header.
    Csv,
    /// JSON records.
    Json,
}

/// One record found.
pub struct Match<'a> {
    /// The file it is in.
    pub path: &'a str,
    /// CSV: the file's header line as stored (with its line end).
    pub header: Option<&'a [u8]>,
    /// The record: a CSV row as stored (with its line end), or a JSON
    /// record compacted onto one line (no line end).
    pub raw: &'a [u8],
    /// Its fields as `(column, text)`: the header's names against the row,
    /// or the record's flattened fields.
    pub fields: &'a [(String, String)],
}

/// What a search read and found.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FindReport {
    /// The table's name.
    pub table: String,
    /// How its records are stored.
    pub format: TableFormat,
    /// Its files.
    pub files: Vec<String>,
    /// Records read.
    pub scanned: u64,
    /// Records that matched.
    pub matched: u64,
}

/// Finds the records of `q.table` in the snapshot whose root is `tree` and
/// hands each match to `emit`, in file order. Errors: no such table
/// ([`Error::MissingPath`], exit 13); a CSV table without a condition's
/// column, or a JSON table none of whose records has it ([`Error::Invalid`],
/// naming the columns there are). Finding nothing is not an error here.
pub fn find(
    repo: &IndexedRepository,
    tree: &BlobId,
    q: &RecordQuery,
    progress: &dyn Progress,
    emit: &mut dyn FnMut(Match<'_>) -> Result<()>,
) -> Result<FindReport> {
    repo.check_features(crate::format::config::Operation::Read)?;
    let spec = table_of(repo, tree, q)?;
    progress.set_total(spec.source_bytes());
    progress.message("searching");
    scan(repo, &spec, q, progress, emit)
}

/// The table `q` names in the snapshot whose root is `tree`.
fn table_of(repo: &IndexedRepository, tree: &BlobId, q: &RecordQuery) -> Result<TableSpec> {
    let mut files = Vec::new();
    collect_files(repo, tree, "", &mut files)?;
    ex::plan(files)
        .tables
        .into_iter()
        .find(|t| t.matches(&q.table))
        .ok_or_else(|| Error::MissingPath(PathBuf::from(&q.table)))
}

/// The chunks of a table's files: equal lists hold equal records.
fn content_key(spec: &TableSpec) -> Vec<BlobId> {
    match &spec.source {
        Source::Csv(f) => f.chunks.clone(),
        Source::Json { files, .. } => files.iter().flat_map(|f| f.chunks.clone()).collect(),
    }
}

fn scan(
    repo: &IndexedRepository,
    spec: &TableSpec,
    q: &RecordQuery,
    progress: &dyn Progress,
    emit: &mut dyn FnMut(Match<'_>) -> Result<()>,
) -> Result<FindReport> {
    let mut cx = Ctx {
        repo,
        progress,
        bytes_read: 0,
    };
    let mut report = FindReport {
        table: spec.name.clone(),
        format: TableFormat::Csv,
        files: Vec::new(),
        scanned: 0,
        matched: 0,
    };
    match &spec.source {
        Source::Csv(file) => {
            report.files.push(file.path.clone());
            find_csv(&mut cx, file, q, &mut report, emit)?;
        }
        Source::Json { files, by_member } => {
            report.format = TableFormat::Json;
            // Kissflow's UserAndGroup.json holds two tables, one a member.
            let member = (*by_member && matches!(q.table.as_str(), "users" | "groups"))
                .then(|| q.table.clone());
            if let Some(m) = &member {
                report.table = m.clone();
            }
            find_json(&mut cx, files, member.as_deref(), q, &mut report, emit)?;
        }
    }
    Ok(report)
}

/// The matching records of one snapshot in a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// The snapshot.
    pub snapshot: SnapshotId,
    /// Its time, unix seconds.
    pub time: i64,
    /// CSV: the header line as stored.
    pub header: Option<Vec<u8>>,
    /// The records, as [`Match::raw`] gives them.
    pub records: Vec<Vec<u8>>,
    /// Each record's fields, as [`Match::fields`] gives them.
    pub fields: Vec<Vec<(String, String)>>,
    /// The table is not in this snapshot (or cannot be searched there:
    /// see [`HistoryReport::skipped`]).
    pub absent: bool,
}

impl Version {
    fn same_records(&self, other: &Version) -> bool {
        self.absent == other.absent && self.header == other.header && self.records == other.records
    }
}

/// What a history read.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct HistoryReport {
    /// Snapshots looked at.
    pub snapshots: u64,
    /// Of those, the ones whose table was read (the others held the same
    /// table as the snapshot before, chunk for chunk).
    pub read: u64,
    /// Versions handed on: the first snapshot's and every change.
    pub versions: u64,
    /// Snapshots where the table could not be searched, with why (a column
    /// it did not have yet).
    pub skipped: Vec<String>,
}

/// The history of the records `q` finds through `snaps` (oldest first): the
/// first snapshot's records, then those of every snapshot where they differ
/// from the snapshot before (changed, added, gone, or the table absent).
/// A snapshot whose table has the same chunks as the one before is not read
/// again. Needs at least one condition. Fails only if the table is in none
/// of the snapshots, or can be searched in none of them.
pub fn history(
    repo: &IndexedRepository,
    snaps: &[(SnapshotId, Snapshot)],
    q: &RecordQuery,
    progress: &dyn Progress,
    emit: &mut dyn FnMut(&Version) -> Result<()>,
) -> Result<HistoryReport> {
    repo.check_features(crate::format::config::Operation::Read)?;
    if q.conditions.is_empty() {
        return Err(Error::Invalid(
            "a record's history needs at least one --where".into(),
        ));
    }
    let mut report = HistoryReport::default();
    let mut prev: Option<(Option<Vec<BlobId>>, Version)> = None;
    let mut found_table = false;
    let mut last_err = None;
    progress.message("searching");
    for (id, snap) in snaps {
        crate::commands::check_interrupt()?;
        report.snapshots += 1;
        let mut v = Version {
            snapshot: *id,
            time: snap.time,
            header: None,
            records: Vec::new(),
            fields: Vec::new(),
            absent: false,
        };
        let spec = match table_of(repo, &snap.tree, q) {
            Ok(s) => Some(s),
            Err(Error::MissingPath(_)) => None,
            Err(e) => return Err(e),
        };
        let key = spec.as_ref().map(content_key);
        if key.is_some() && prev.as_ref().is_some_and(|(pkey, _)| *pkey == key) {
            continue;
        }
        match &spec {
            None => v.absent = true,
            Some(spec) => {
                found_table = true;
                report.read += 1;
                let r = scan(repo, spec, q, progress, &mut |m| {
                    if v.header.is_none() {
                        v.header = m.header.map(<[u8]>::to_vec);
                    }
                    v.records.push(m.raw.to_vec());
                    v.fields.push(m.fields.to_vec());
                    Ok(())
                });
                match r {
                    Ok(_) => {}
                    Err(Error::Invalid(why)) => {
                        report
                            .skipped
                            .push(format!("snapshot {}: {why}", id.short()));
                        last_err = Some(Error::Invalid(why));
                        v = Version {
                            absent: true,
                            header: None,
                            records: Vec::new(),
                            fields: Vec::new(),
                            ..v
                        };
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        let changed = prev.as_ref().is_none_or(|(_, pv)| !pv.same_records(&v));
        if changed {
            report.versions += 1;
            emit(&v)?;
        }
        prev = Some((key, v));
    }
    if !found_table {
        return Err(Error::MissingPath(PathBuf::from(&q.table)));
    }
    if report.skipped.len() as u64 == report.read {
        if let Some(e) = last_err {
            return Err(e);
        }
    }
    Ok(report)
}

fn find_csv(
    cx: &mut Ctx,
    file: &SrcFile,
    q: &RecordQuery,
    report: &mut FindReport,
    emit: &mut dyn FnMut(Match<'_>) -> Result<()>,
) -> Result<()> {
    let path = file.path.as_str();
    cx.with_reader(file, &mut |r| {
        let raw = Rc::new(RefCell::new(Raw::default()));
        let tee = Tee {
            inner: r,
            raw: Rc::clone(&raw),
        };
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(tee);
        let mut rec = csv::ByteRecord::new();
        let mut header: Option<(Vec<String>, Vec<u8>, Vec<usize>)> = None;
        let mut fields: Vec<(String, String)> = Vec::new();
        let mut start = 0u64;
        while rdr
            .read_byte_record(&mut rec)
            .map_err(|e| csv_error(e, path))?
        {
            let end = rdr.position().byte();
            let Some((names, head, cols)) = &header else {
                let mut names: Vec<String> = rec
                    .iter()
                    .map(|f| String::from_utf8_lossy(f).into_owned())
                    .collect();
                if let Some(h) = names.first_mut() {
                    if let Some(x) = h.strip_prefix('\u{feff}') {
                        *h = x.to_string();
                    }
                }
                let cols = q
                    .conditions
                    .iter()
                    .map(|(c, _)| {
                        names.iter().position(|n| n == c).ok_or_else(|| {
                            Error::Invalid(format!(
                                "table {} ({path}) has no column {c:?}; its columns: {}",
                                report.table,
                                names.join(", ")
                            ))
                        })
                    })
                    .collect::<Result<Vec<usize>>>()?;
                let head = as_line(raw.borrow().slice(start, end), None);
                header = Some((names, head, cols));
                start = end;
                continue;
            };
            report.scanned += 1;
            let hit = cols
                .iter()
                .zip(&q.conditions)
                .all(|(&i, (_, v))| rec.get(i) == Some(v.as_bytes()));
            if hit {
                report.matched += 1;
                fields.clear();
                for (i, f) in rec.iter().enumerate() {
                    let name = names
                        .get(i)
                        .cloned()
                        .unwrap_or_else(|| format!("column_{}", i + 1));
                    fields.push((name, String::from_utf8_lossy(f).into_owned()));
                }
                let row = as_line(raw.borrow().slice(start, end), Some(head));
                emit(Match {
                    path,
                    header: Some(head),
                    raw: &row,
                    fields: &fields,
                })?;
            }
            raw.borrow_mut().release(end);
            start = end;
        }
        Ok(())
    })
}

/// A record's bytes as one line: the CSV reader's positions leave a CRLF's
/// LF (and any blank lines) at the start of the next record's bytes, and
/// the last record may have no line end; the line gets the ending of
/// `like` (the header) or its own.
fn as_line(raw: &[u8], like: Option<&[u8]>) -> Vec<u8> {
    let body = raw
        .iter()
        .position(|&b| b != b'\n' && b != b'\r')
        .map_or(&raw[raw.len()..], |i| &raw[i..]);
    let mut out = body.to_vec();
    if out.last() == Some(&b'\r') {
        out.push(b'\n');
    } else if out.last() != Some(&b'\n') {
        if like.is_some_and(|h| h.ends_with(b"\r\n")) {
            out.push(b'\r');
        }
        out.push(b'\n');
    }
    out
}

fn find_json(
    cx: &mut Ctx,
    files: &[SrcFile],
    member: Option<&str>,
    q: &RecordQuery,
    report: &mut FindReport,
    emit: &mut dyn FnMut(Match<'_>) -> Result<()>,
) -> Result<()> {
    let mut flat = Vec::new();
    let mut line = Vec::new();
    // Whether any record had each condition's field.
    let mut seen = vec![false; q.conditions.len()];
    let mut columns: Vec<String> = Vec::new();
    for file in files {
        report.files.push(file.path.clone());
        let path = file.path.as_str();
        let _ = each_record(cx, std::slice::from_ref(file), &mut |k, rec| {
            if member.is_some() && k.as_deref() != member {
                return Ok(Fit::Ok);
            }
            report.scanned += 1;
            json::flatten(rec, &mut flat)?;
            let mut hit = true;
            for (i, (c, v)) in q.conditions.iter().enumerate() {
                match flat.iter().find(|(col, _)| col == c) {
                    Some((_, text)) => {
                        seen[i] = true;
                        hit &= text == v;
                    }
                    None => hit = false,
                }
            }
            if columns.len() < 64 {
                for (col, _) in &flat {
                    if columns.len() < 64 && !columns.contains(col) {
                        columns.push(col.clone());
                    }
                }
            }
            if hit {
                report.matched += 1;
                line.clear();
                json::compact(rec, &mut line);
                emit(Match {
                    path,
                    header: None,
                    raw: &line,
                    fields: &flat,
                })?;
            }
            Ok(Fit::Ok)
        })?;
    }
    if report.scanned > 0 {
        if let Some(i) = seen.iter().position(|s| !s) {
            return Err(Error::Invalid(format!(
                "no record of table {} has a field {:?}; fields there include: {}",
                report.table,
                q.conditions[i].0,
                columns.join(", ")
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::backup::{backup, BackupOptions};
    use crate::commands::NoProgress;
    use crate::repository::InitOptions;
    use crate::testutil::{memory_repo, small_chunk_repo};

    /// (path, header, raw, fields) of every match.
    type Found = Vec<(String, Option<Vec<u8>>, Vec<u8>, Vec<(String, String)>)>;

    fn run(
        repo: &IndexedRepository,
        tree: &BlobId,
        table: &str,
        w: &[(&str, &str)],
    ) -> Result<(FindReport, Found)> {
        let q = RecordQuery {
            table: table.into(),
            conditions: w
                .iter()
                .map(|(c, v)| (c.to_string(), v.to_string()))
                .collect(),
        };
        let mut found = Vec::new();
        let r = find(repo, tree, &q, &NoProgress, &mut |m| {
            found.push((
                m.path.to_string(),
                m.header.map(<[u8]>::to_vec),
                m.raw.to_vec(),
                m.fields.to_vec(),
            ));
            Ok(())
        })?;
        Ok((r, found))
    }

    fn repo_with(files: &[(&str, Vec<u8>)]) -> (tempfile::TempDir, IndexedRepository, BlobId) {
        let tmp = tempfile::tempdir().unwrap();
        // Small chunks, so that tables span many and rows straddle them.
        let repo = small_chunk_repo(&tmp.path().join("cache")).unwrap();
        let src = tmp.path().join("src");
        for (p, data) in files {
            let p = src.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, data).unwrap();
        }
        let out = backup(
            &repo,
            &BackupOptions {
                paths: vec![src],
                account: "acme".into(),
                ..BackupOptions::default()
            },
            &NoProgress,
        )
        .unwrap();
        let tree = out.snapshot.tree;
        (tmp, repo, tree)
    }

    #[test]
    fn csv_rows_come_back_as_stored_under_their_header() {
        // A BOM, CRLF line ends, quoted fields with commas, quotes and a
        // line break; about 600 KB, so dozens of chunks.
        let head = "\u{feff}id,name,city,note\r\n";
        let mut csv = head.as_bytes().to_vec();
        let mut rows = Vec::new();
        for i in 0..6000 {
            let row = match i {
                4321 => "4321,\"Smith, \"\"Jr\"\"\",Oslo,\"two\nlines\"\r\n".to_string(),
                _ => format!(
                    "{i},name {i},{},plain note number {i} of the table\r\n",
                    ["Oslo", "Lima", "Kyiv"][i % 3]
                ),
            };
            csv.extend_from_slice(row.as_bytes());
            rows.push(row);
        }
        let (_t, repo, tree) = repo_with(&[
            ("clients.csv", csv),
            ("orders.csv", b"a,b\n1,2\n\n\n3,4".to_vec()),
        ]);

        let (r, found) = run(&repo, &tree, "clients", &[("id", "4321")]).unwrap();
        assert_eq!(
            (r.scanned, r.matched, r.format),
            (6000, 1, TableFormat::Csv)
        );
        assert_eq!(r.files, ["clients.csv"]);
        let (path, header, raw, fields) = &found[0];
        assert_eq!(path, "clients.csv");
        assert_eq!(header.as_deref(), Some(head.as_bytes()));
        assert_eq!(raw, rows[4321].as_bytes(), "the row's bytes as stored");
        assert_eq!(
            fields[0],
            ("id".into(), "4321".into()),
            "BOM stripped from the name"
        );
        assert_eq!(fields[1].1, "Smith, \"Jr\"");
        assert_eq!(fields[3].1, "two\nlines");

        // Every row of a value, in order; two conditions are both needed.
        let (r, found) = run(&repo, &tree, "clients.csv", &[("city", "Kyiv")]).unwrap();
        assert_eq!(r.matched, 2000);
        assert_eq!(found[0].2, rows[2].as_bytes());
        assert_eq!(found[1999].2, rows[5999].as_bytes());
        let (r, found) = run(&repo, &tree, "clients", &[("city", "Kyiv"), ("id", "5")]).unwrap();
        assert_eq!(r.matched, 1);
        assert_eq!(found[0].2, rows[5].as_bytes());
        let (r, _) = run(&repo, &tree, "clients", &[("city", "Kyiv"), ("id", "4")]).unwrap();
        assert_eq!(r.matched, 0);
        // No condition: the whole table. Blank lines are not records, and
        // a last row without a line end gets one.
        let (r, found) = run(&repo, &tree, "orders", &[]).unwrap();
        assert_eq!((r.scanned, r.matched), (2, 2));
        assert_eq!(found[0].1.as_deref(), Some(b"a,b\n".as_slice()));
        assert_eq!(found[0].2, b"1,2\n");
        assert_eq!(found[1].2, b"3,4\n");

        // No such column, no such table.
        let e = run(&repo, &tree, "clients", &[("idd", "1")]).unwrap_err();
        assert!(
            matches!(&e, Error::Invalid(m) if m.contains("no column \"idd\"") && m.contains("id, name, city, note")),
            "{e}"
        );
        let e = run(&repo, &tree, "client", &[("id", "1")]).unwrap_err();
        assert_eq!(e.exit_code(), crate::error::exit::MISSING_PATH);
    }

    #[test]
    fn json_records_match_on_flattened_fields() {
        let mut page = b"[\n".to_vec();
        for i in 0..3000 {
            if i > 0 {
                page.extend_from_slice(b",\n");
            }
            page.extend_from_slice(
                format!(
                    "{{\"_id\": \"R{i}\", \"Amount\": {i}.5, \"_created_by\": {{\"_id\": \"U{}\", \"name\": \"n\"}}, \"tags\": [1, 2]}}",
                    i % 7
                )
                .as_bytes(),
            );
        }
        page.extend_from_slice(b"\n]\n");
        let users = br#"{"users": [{"_id": "U1", "Name": "Ana"}, {"_id": "U2", "Name": "Bo"}],
                        "groups": [{"_id": "G1", "Name": "Ops"}]}"#;
        let (_t, repo, tree) = repo_with(&[
            ("apps/CRM/records/page-00001.json", page),
            (
                "apps/CRM/records/page-00002.json",
                b"[{\"_id\": \"R9999\", \"Amount\": 1}]".to_vec(),
            ),
            ("UserAndGroup.json", users.to_vec()),
            (
                "audit-logs/audit-log-000001.json",
                br#"{"events": [{"id": 1, "user": "U1"}]}"#.to_vec(),
            ),
        ]);

        let (r, found) = run(&repo, &tree, "CRM", &[("_id", "R2024")]).unwrap();
        assert_eq!(
            (r.scanned, r.matched, r.format),
            (3001, 1, TableFormat::Json)
        );
        assert_eq!(r.files.len(), 2);
        assert_eq!(found[0].0, "apps/CRM/records/page-00001.json");
        assert_eq!(found[0].1, None);
        assert_eq!(
            found[0].2,
            br#"{"_id":"R2024","Amount":2024.5,"_created_by":{"_id":"U1","name":"n"},"tags":[1,2]}"#,
            "compacted, fields in stored order"
        );
        // Nested fields by dotted path, numbers by their JSON text, across
        // pages.
        let (r, _) = run(&repo, &tree, "CRM", &[("_created_by._id", "U3")]).unwrap();
        assert_eq!(r.matched, (0..3000).filter(|i| i % 7 == 3).count() as u64);
        let (r, found) = run(&repo, &tree, "CRM", &[("Amount", "1")]).unwrap();
        assert_eq!(r.matched, 1);
        assert_eq!(found[0].0, "apps/CRM/records/page-00002.json");
        // Kissflow's users and groups are two tables of one file.
        let (r, found) = run(&repo, &tree, "users", &[("_id", "U2")]).unwrap();
        assert_eq!((r.table.as_str(), r.scanned, r.matched), ("users", 2, 1));
        assert_eq!(found[0].2, br#"{"_id":"U2","Name":"Bo"}"#);
        let (r, _) = run(&repo, &tree, "groups", &[("_id", "U2")]).unwrap();
        assert_eq!((r.scanned, r.matched), (1, 0));
        let (r, _) = run(&repo, &tree, "audit-log", &[("user", "U1")]).unwrap();
        assert_eq!(r.matched, 1);
        // A field no record has is named, with the fields there are.
        let e = run(&repo, &tree, "CRM", &[("amount", "1")]).unwrap_err();
        assert!(
            matches!(&e, Error::Invalid(m) if m.contains("\"amount\"") && m.contains("Amount")),
            "{e}"
        );
    }

    #[test]
    fn a_record_history_shows_the_first_state_and_every_change() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = memory_repo(&tmp.path().join("cache"), InitOptions::default()).unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        let days: [Option<&str>; 7] = [
            Some("id,name\n1,Ana\n"),         // no id 2 yet
            Some("id,name\n1,Ana\n2,Bo\n"),   // added
            Some("id,name\n1,Ana\n2,Bo\n"),   // same bytes: not read
            Some("id,name\n1,Ana B\n2,Bo\n"), // another row changed: read, same
            Some("id,name\n2,Bob\n"),         // changed
            None,                             // table gone
            Some("code\n7\n"),                // no column id: skipped
        ];
        for (i, d) in days.iter().enumerate() {
            let f = src.join("clients.csv");
            match d {
                Some(c) => std::fs::write(&f, c).unwrap(),
                None => std::fs::remove_file(&f).unwrap(),
            }
            std::fs::write(src.join("keep.txt"), format!("{i}")).unwrap();
            backup(
                &repo,
                &BackupOptions {
                    paths: vec![src.clone()],
                    account: "acme".into(),
                    time: Some((1_709_258_400 + i as i64 * 86_400, 0)),
                    ..BackupOptions::default()
                },
                &NoProgress,
            )
            .unwrap();
        }
        let mut snaps = repo.snapshots().unwrap();
        snaps.sort_by_key(|(_, s)| s.time);
        let q = RecordQuery {
            table: "clients".into(),
            conditions: vec![("id".into(), "2".into())],
        };
        let mut got = Vec::new();
        let r = history(&repo, &snaps, &q, &NoProgress, &mut |v| {
            got.push(v.clone());
            Ok(())
        })
        .unwrap();
        let day = |v: &Version| (v.time - 1_709_258_400) / 86_400;
        let seen: Vec<(i64, bool, Vec<Vec<u8>>)> = got
            .iter()
            .map(|v| (day(v), v.absent, v.records.clone()))
            .collect();
        assert_eq!(
            seen,
            [
                (0, false, vec![]),
                (1, false, vec![b"2,Bo\n".to_vec()]),
                (4, false, vec![b"2,Bob\n".to_vec()]),
                (5, true, vec![]),
            ],
            "day 6 has no column id: skipped, the same as absent"
        );
        assert_eq!(got[1].header.as_deref(), Some(b"id,name\n".as_slice()));
        assert_eq!(
            (r.snapshots, r.read, r.versions),
            (7, 5, 4),
            "day 2 not read"
        );
        assert_eq!(r.skipped.len(), 1);
        assert!(r.skipped[0].contains("no column \"id\""), "{:?}", r.skipped);

        // Only the snapshots given; a table in none of them; no condition.
        let mut n = 0;
        history(&repo, &snaps[4..5], &q, &NoProgress, &mut |_| {
            n += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 1);
        let e = history(&repo, &snaps[5..6], &q, &NoProgress, &mut |_| Ok(())).unwrap_err();
        assert!(matches!(e, Error::MissingPath(_)), "{e}");
        let e = history(&repo, &snaps[6..], &q, &NoProgress, &mut |_| Ok(())).unwrap_err();
        assert!(
            matches!(&e, Error::Invalid(m) if m.contains("no column")),
            "{e}"
        );
        let all = RecordQuery {
            conditions: vec![],
            ..q
        };
        assert!(history(&repo, &snaps, &all, &NoProgress, &mut |_| Ok(())).is_err());
    }

    #[test]
    fn conditions_parse() {
        assert_eq!(parse_condition("id=7").unwrap(), ("id".into(), "7".into()));
        assert_eq!(
            parse_condition("note=a=b").unwrap(),
            ("note".into(), "a=b".into())
        );
        assert_eq!(
            parse_condition("note=").unwrap(),
            ("note".into(), String::new())
        );
        assert!(parse_condition("=7").is_err());
        assert!(parse_condition("id").is_err());
    }
}
