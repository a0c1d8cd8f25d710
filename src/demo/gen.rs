//! Deterministic generator of a realistic "stockflow" account export
//! (inventory / ERP SaaS) for a simulated day `N`.
//!
//! The generator mirrors the semantics of the benchmark reference generator
//! (`bench/gen_account.py --kind stockflow`): the same nine files, the same
//! columns, roughly the same sizes and the same kind of day-to-day evolution.
//! It is written from scratch, uses only `std`, and carries its own hash /
//! PRNG so the produced bytes never depend on a crate version.
//!
//! # Model
//!
//! Every table is a sequence of rows indexed by a row number `i`.  Rows
//! `0..n0` were created over the 180 simulated days before day 0, then `dn`
//! rows (a fixed fraction of `n0`) are appended per day.  Everything about a
//! row is a pure function of `(seed, table, i, day)`:
//!
//! * static attributes hash `(seed, table, i)`;
//! * the last day a mutable row was edited is the most recent day `d <= N`
//!   whose hash `(seed, table, i, d)` falls under the table's daily edit
//!   probability, and the edited values hash `(seed, table, i, d)`;
//! * deletions are drawn per 32-day block, so checking one row is cheap;
//! * workflow tables (orders, invoices, purchase orders) derive their status
//!   from the row's age on day `N`.
//!
//! Hence day `N` is computed directly in time proportional to its size, and a
//! row that is not touched between two days is byte-identical in both and
//! keeps its relative order (rows are always written in row-number order).

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------

/// Parameters of a generated account.
///
/// Two calls with equal options and an equal day produce byte-identical files
/// with identical mtimes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenOptions {
    /// Linear size factor: 1.0 is about 100 MB at day 0, 0.01 about 1 MB.
    /// Must be finite and strictly positive. Every table has at least one row
    /// for any positive scale.
    pub scale: f64,
    /// Seed of every pseudo-random choice; different seeds give different
    /// (but equally shaped) accounts.
    pub seed: u64,
}

impl Default for GenOptions {
    /// `scale` 0.05 (about 5 MB at day 0), `seed` 42.
    fn default() -> Self {
        GenOptions {
            scale: 0.05,
            seed: 42,
        }
    }
}

/// What [`generate_day`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GenStats {
    /// Number of files written (always 9).
    pub files: u64,
    /// Total number of bytes written over all files.
    pub bytes: u64,
}

/// Writes the account export for `day` into `out` (created if missing;
/// existing files overwritten; files that no longer exist in that day's
/// export are not expected, every day has the same file set).
///
/// Files: `products.csv`, `inventory.csv`, `clients.csv`, `orders.csv`,
/// `invoices.csv`, `movements.csv`, `purchase-orders.csv`, `users.csv` (UTF-8
/// CSV with a header line, RFC 4180 quoting of fields containing a comma, a
/// quote or a line break; `\n` line ends) and `settings.json`.  Every file's
/// mtime is set to [`export_time`]`(day)`.
///
/// Guarantees: the output depends only on `(day, opts)`; day `N` is computed
/// directly (no need to generate earlier days); a row unchanged between two
/// days is byte-identical in both and keeps its relative order;
/// `movements.csv` is append-only.  Fails with `InvalidInput` if
/// `opts.scale` is not finite and positive, or with the underlying I/O error.
pub fn generate_day(out: &Path, day: u32, opts: &GenOptions) -> io::Result<GenStats> {
    if !(opts.scale.is_finite() && opts.scale > 0.0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("scale must be finite and > 0, got {}", opts.scale),
        ));
    }
    fs::create_dir_all(out)?;
    let ctx = Ctx::new(day, opts);
    let mtime = UNIX_EPOCH + Duration::from_secs(export_time(day).max(0).unsigned_abs());
    let mut stats = GenStats::default();

    let p = &ctx;
    let files: [(&str, &str, u64, RowFn); 8] = [
        (
            "products.csv",
            "id,sku,name,category,brand,description,unit,cost_price,sale_price,tax_rate,\
             barcode,weight_kg,active,created_at,updated_at\n",
            p.products.count(p.day),
            Ctx::product_row,
        ),
        (
            "inventory.csv",
            "product_id,sku,warehouse,location,quantity,reserved,reorder_point,updated_at\n",
            p.products.count(p.day),
            Ctx::inventory_rows,
        ),
        (
            "clients.csv",
            "id,code,company_name,contact_name,email,phone,tax_id,street,city,postal_code,\
             country,payment_terms,credit_limit,balance,notes,created_at,updated_at\n",
            p.clients.count(p.day),
            Ctx::client_row,
        ),
        (
            "orders.csv",
            "id,number,created_at,client_id,client_name,status,channel,currency,items,subtotal,\
             discount,tax,total,shipping_address,notes,updated_at\n",
            p.orders.count(p.day),
            Ctx::order_row,
        ),
        (
            "invoices.csv",
            "id,number,order_id,client_id,issued_at,due_date,status,currency,subtotal,tax,total,\
             paid_amount,paid_at\n",
            p.invoices.count(p.day),
            Ctx::invoice_row,
        ),
        (
            "movements.csv",
            "id,created_at,product_id,sku,warehouse,type,quantity,unit_cost,reference,user,note\n",
            p.movements.count(p.day),
            Ctx::movement_row,
        ),
        (
            "purchase-orders.csv",
            "id,number,supplier,created_at,expected_at,status,warehouse,lines,total,currency,\
             received_at,notes\n",
            p.pos.count(p.day),
            Ctx::po_row,
        ),
        (
            "users.csv",
            "id,name,email,role,active,last_login_at,created_at\n",
            p.users_n,
            Ctx::user_row,
        ),
    ];
    for (name, header, n, row) in files {
        let mut sink = Sink::create(&out.join(name))?;
        sink.buf.extend_from_slice(header.as_bytes());
        for i in 0..n {
            row(p, i, &mut sink.buf);
            sink.row_done()?;
        }
        stats.bytes += sink.finish(mtime)?;
        stats.files += 1;
    }

    let mut sink = Sink::create(&out.join("settings.json"))?;
    p.settings_json(&mut sink.buf);
    stats.bytes += sink.finish(mtime)?;
    stats.files += 1;
    Ok(stats)
}

/// Simulated export time of `day`: 2024-03-01 02:00:00 UTC + day days, as unix seconds.
pub fn export_time(day: u32) -> i64 {
    export_at(i64::from(day))
}

// ---------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------

const DAY: i64 = 86_400;
/// 2024-03-01T02:00:00Z.
const EXPORT0: i64 = 1_709_258_400;
/// Days of history contained in the day-0 export (rows created on days -180..=0).
const HIST: i64 = 180;

fn export_at(day: i64) -> i64 {
    EXPORT0 + day * DAY
}

/// A moment inside the 24 h that end with the export of `day` (never after it).
fn in_window(day: i64, h: u64) -> i64 {
    export_at(day) - DAY + 1 + (h % (DAY as u64 - 1)) as i64
}

/// Time of an event happening `k` days after a row created at `born` on day `cd`.
fn event_time(cd: i64, born: i64, k: i64, h: u64) -> i64 {
    if k <= 0 {
        (born + 60 + (h % 5400) as i64).min(export_at(cd)).max(born)
    } else {
        in_window(cd + k, h)
    }
}

/// (year, month, day) of a day count relative to 1970-01-01 (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn year_of(t: i64) -> i64 {
    civil_from_days(t.div_euclid(DAY)).0
}

// ---------------------------------------------------------------------------
// Hashing / PRNG (fixed forever: output bytes depend on them)
// ---------------------------------------------------------------------------

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64 finaliser.
#[inline]
fn fmix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hash of a key and a value: the `b`-th output of a SplitMix64 stream keyed by `a`.
#[inline]
fn mix(a: u64, b: u64) -> u64 {
    fmix(a.wrapping_add(b.wrapping_add(1).wrapping_mul(GOLDEN)))
}

/// Hash of a key and a signed day number.
#[inline]
fn mix_day(a: u64, day: i64) -> u64 {
    mix(a, day as u64)
}

/// SplitMix64 generator, used to build the value pools.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        fmix(self.0)
    }
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
    fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[self.below(v.len())]
    }
}

/// `p` as a threshold on a uniform u64.
fn threshold(p: f64) -> u64 {
    (p * 18_446_744_073_709_551_616.0) as u64
}

/// Per-day probability `p` as a threshold for "happens at least once in a block of days".
fn block_threshold(p: f64) -> u64 {
    let mut keep = 1.0f64;
    for _ in 0..DEL_BLOCK {
        keep *= 1.0 - p;
    }
    threshold(1.0 - keep)
}

const DEL_BLOCK: i64 = 32;

/// Most recent day in `from..=day` on which an event of per-day threshold `thr`
/// happened to the row with key `key`, or `None`.
#[inline]
fn last_event(key: u64, thr: u64, from: i64, day: i64) -> Option<i64> {
    let mut d = day;
    while d >= from {
        if mix_day(key, d) < thr {
            return Some(d);
        }
        d -= 1;
    }
    None
}

/// Whether the row with key `key`, alive from day `from`, has been deleted by
/// `day` (at most one deletion draw per block of `DEL_BLOCK` days).
fn deleted_by(key: u64, block_thr: u64, from: i64, day: i64) -> bool {
    if day < from {
        return false;
    }
    let mut b = (from - 1).div_euclid(DEL_BLOCK);
    let last = (day - 1).div_euclid(DEL_BLOCK);
    while b <= last {
        let h = mix_day(key, b);
        if h < block_thr {
            let d = b * DEL_BLOCK + 1 + (fmix(h) % DEL_BLOCK as u64) as i64;
            if d >= from {
                return d <= day;
            }
        }
        b += 1;
    }
    false
}

// ---------------------------------------------------------------------------
// Tables
// ---------------------------------------------------------------------------

/// Row-count model: `n0` rows spread over the history, then `dn` per day.
#[derive(Debug, Clone, Copy)]
struct Table {
    n0: u64,
    dn: u64,
}

impl Table {
    fn new(base: f64, scale: f64, growth: f64) -> Table {
        let n0 = (base * scale).round().max(1.0) as u64;
        let dn = (n0 as f64 * growth).round().max(1.0) as u64;
        Table { n0, dn }
    }

    /// Rows created up to and including `day`.
    fn count(&self, day: i64) -> u64 {
        if day >= 0 {
            self.n0 + day.unsigned_abs() * self.dn
        } else {
            let span = (HIST + 1) as u64;
            let d = (day + HIST + 1).max(0) as u64;
            (self.n0 * d).div_ceil(span).clamp(1, self.n0)
        }
    }

    /// (creation day, creation time) of row `i`; monotonic in `i`.
    fn birth(&self, i: u64) -> (i64, i64) {
        if i < self.n0 {
            let off = (i * ((HIST + 1) * DAY) as u64 / self.n0) as i64;
            (-HIST + off / DAY, export_at(-HIST) - DAY + 1 + off)
        } else {
            let k = i - self.n0;
            let cd = 1 + (k / self.dn) as i64;
            let off = ((k % self.dn) * DAY as u64 / self.dn) as i64;
            (cd, export_at(cd) - DAY + 1 + off)
        }
    }
}

// Purpose tags of the hash keys.
const K_PROD: u64 = 0x5052_4f44;
const K_PROD_MOD: u64 = 0x5052_4d44;
const K_PROD_DEL: u64 = 0x5052_444c;
const K_INV: u64 = 0x494e_5654;
const K_INV_MOD: u64 = 0x494e_4d44;
const K_CLI: u64 = 0x434c_4954;
const K_CLI_MOD: u64 = 0x434c_4d44;
const K_CLI_DEL: u64 = 0x434c_444c;
const K_ORD: u64 = 0x4f52_4452;
const K_INVC: u64 = 0x494e_5643;
const K_MOV: u64 = 0x4d4f_5645;
const K_PO: u64 = 0x504f_5244;
const K_USR: u64 = 0x5553_4552;
const K_USR_LOG: u64 = 0x5553_4c47;
const K_SET: u64 = 0x5345_5454;
const K_POOLS: u64 = 0x504f_4f4c;
const K_KIND: u64 = 0x7374_6f63_6b66_6c6f; // "stockflo"

const P_PROD_MOD: f64 = 0.02;
const P_PROD_DEL: f64 = 0.0005;
const P_CLI_MOD: f64 = 0.015;
const P_CLI_DEL: f64 = 0.0002;
const P_INV_MOD: f64 = 0.05;

type RowFn = fn(&Ctx, u64, &mut Vec<u8>);

/// Everything needed to produce one day.
struct Ctx {
    day: i64,
    seed: u64,
    pools: Pools,
    products: Table,
    clients: Table,
    orders: Table,
    invoices: Table,
    movements: Table,
    pos: Table,
    users_n: u64,
    k_prod: u64,
    k_prod_mod: u64,
    k_prod_del: u64,
    k_inv: u64,
    k_inv_mod: u64,
    k_cli: u64,
    k_cli_mod: u64,
    k_cli_del: u64,
    k_ord: u64,
    k_invc: u64,
    k_mov: u64,
    k_po: u64,
    k_usr: u64,
    k_usr_log: u64,
    thr_prod_mod: u64,
    thr_prod_del: u64,
    thr_cli_mod: u64,
    thr_cli_del: u64,
    thr_inv_mod: u64,
}

impl Ctx {
    fn new(day: u32, opts: &GenOptions) -> Ctx {
        let s = opts.scale;
        let seed = mix(opts.seed, K_KIND);
        let k = |tag: u64| mix(seed, tag);
        Ctx {
            day: i64::from(day),
            seed,
            pools: Pools::new(k(K_POOLS)),
            products: Table::new(28_000.0, s, 0.002),
            clients: Table::new(32_000.0, s, 0.003),
            orders: Table::new(110_000.0, s, 0.0075),
            invoices: Table::new(100_000.0, s, 0.0075),
            movements: Table::new(400_000.0, s, 0.0075),
            pos: Table::new(25_000.0, s, 0.0075),
            users_n: (20.0 + 10.0 * s).round().max(5.0) as u64,
            k_prod: k(K_PROD),
            k_prod_mod: k(K_PROD_MOD),
            k_prod_del: k(K_PROD_DEL),
            k_inv: k(K_INV),
            k_inv_mod: k(K_INV_MOD),
            k_cli: k(K_CLI),
            k_cli_mod: k(K_CLI_MOD),
            k_cli_del: k(K_CLI_DEL),
            k_ord: k(K_ORD),
            k_invc: k(K_INVC),
            k_mov: k(K_MOV),
            k_po: k(K_PO),
            k_usr: k(K_USR),
            k_usr_log: k(K_USR_LOG),
            thr_prod_mod: threshold(P_PROD_MOD),
            thr_prod_del: block_threshold(P_PROD_DEL),
            thr_cli_mod: threshold(P_CLI_MOD),
            thr_cli_del: block_threshold(P_CLI_DEL),
            thr_inv_mod: threshold(P_INV_MOD),
        }
    }

    fn product_deleted(&self, i: u64, cd: i64) -> bool {
        deleted_by(mix(self.k_prod_del, i), self.thr_prod_del, cd + 1, self.day)
    }

    fn client_deleted(&self, i: u64, cd: i64) -> bool {
        deleted_by(mix(self.k_cli_del, i), self.thr_cli_del, cd + 1, self.day)
    }

    /// SKU of product `i` (a bijection of `i` modulo 10^6).
    fn put_sku(b: &mut Vec<u8>, i: u64) {
        b.extend_from_slice(b"SF-");
        put_pad(
            b,
            (i.wrapping_mul(386_731).wrapping_add(4_127)) % 1_000_000,
            6,
        );
    }

    // ----------------------------- products -------------------------------

    fn product_row(&self, i: u64, b: &mut Vec<u8>) {
        let (cd, born) = self.products.birth(i);
        if self.product_deleted(i, cd) {
            return;
        }
        let p = &self.pools;
        let x = mix(self.k_prod, i);
        let y = fmix(x ^ 0x5555_5555_5555_5555);
        let mut cost = 50 + x % 20_000;
        let mut updated = born;
        let mut active = true;
        let mkey = mix(self.k_prod_mod, i);
        if let Some(m) = last_event(mkey, self.thr_prod_mod, cd + 1, self.day) {
            let h = mix_day(mkey ^ 0xA5A5, m);
            cost = cost * (940 + h % 160) / 1000;
            cost = cost.max(10);
            updated = in_window(m, h >> 7);
            active = (h >> 40) % 61 != 0;
        }
        let sale = cost * (130 + (x >> 20) % 120) / 100;
        put_u64(b, 100_000 + i);
        b.push(b',');
        Ctx::put_sku(b, i);
        b.push(b',');
        b.extend_from_slice(pick(&p.pnames, x >> 28));
        b.push(b',');
        b.extend_from_slice(pick(&p.cats, y >> 7));
        b.push(b',');
        b.extend_from_slice(pick(&p.brands, y >> 11));
        b.push(b',');
        b.extend_from_slice(pick(&p.desc, y >> 17));
        b.push(b',');
        b.extend_from_slice(pick_str(UNITS, y >> 29).as_bytes());
        b.push(b',');
        put_money(b, cost);
        b.push(b',');
        put_money(b, sale);
        b.push(b',');
        put_u64(b, [21, 21, 21, 10, 4][((y >> 33) % 5) as usize]);
        b.push(b',');
        put_ean13(b, 840_000_000_000 + (x >> 13) % 10_000_000_000);
        b.push(b',');
        put_fixed3(b, 5 + (y >> 40) % 25_000);
        b.push(b',');
        b.extend_from_slice(if active { b"true" } else { b"false" });
        b.push(b',');
        put_ts(b, born);
        b.push(b',');
        put_ts(b, updated);
        b.push(b'\n');
    }

    // ----------------------------- inventory ------------------------------

    fn inventory_rows(&self, i: u64, b: &mut Vec<u8>) {
        let (cd, born) = self.products.birth(i);
        if self.product_deleted(i, cd) {
            return;
        }
        let x = mix(self.k_inv, i);
        // ~2.8 warehouses per product on average
        let mask = [7u8, 11, 13, 14, 15, 15, 3, 5, 9, 6][(x % 10) as usize];
        for (w, wh) in WAREHOUSES.iter().enumerate() {
            if (mask >> w) & 1 == 0 {
                continue;
            }
            let key = mix(self.k_inv_mod, i * 4 + w as u64);
            let (h, updated) = match last_event(key, self.thr_inv_mod, cd + 1, self.day) {
                Some(m) => {
                    let h = mix_day(key ^ 0x3C3C, m);
                    (h, in_window(m, h >> 30))
                }
                None => (mix(key, 0x1_0000_0000), born),
            };
            let qty = if h % 23 == 0 { 0 } else { h % 900 };
            let reserved = if qty > 20 { (h >> 12) % 20 } else { 0 };
            put_u64(b, 100_000 + i);
            b.push(b',');
            Ctx::put_sku(b, i);
            b.push(b',');
            b.extend_from_slice(wh.as_bytes());
            b.push(b',');
            b.push(b"ABCDEFGH"[((x >> 4) % 8) as usize]);
            b.push(b'-');
            put_pad(b, (x >> 24) % 40 + 1, 2);
            b.push(b'-');
            put_pad(b, (x >> 32) % 12 + 1, 2);
            b.push(b',');
            put_u64(b, qty);
            b.push(b',');
            put_u64(b, reserved);
            b.push(b',');
            put_u64(b, 5 + (x >> 40) % 50);
            b.push(b',');
            put_ts(b, updated);
            b.push(b'\n');
        }
    }

    // ------------------------------ clients -------------------------------

    fn client_row(&self, i: u64, b: &mut Vec<u8>) {
        let (cd, born) = self.clients.birth(i);
        if self.client_deleted(i, cd) {
            return;
        }
        let p = &self.pools;
        let x = mix(self.k_cli, i);
        let y = fmix(x ^ 0x6666_6666_6666_6666);
        let company = (x % p.companies.len() as u64) as usize;
        let person = ((x >> 12) % p.people.len() as u64) as usize;
        let mut addr = ((x >> 24) % p.addr.len() as u64) as usize;
        let mut balance = if y % 3 == 0 { 0 } else { y % 5_000_000 };
        let mut phone = (x >> 40) % 90_000_000 + 600_000_000;
        let mut note = (y >> 30) as usize;
        let mut terms = (y >> 50) as usize;
        let mut updated = born;
        let mkey = mix(self.k_cli_mod, i);
        if let Some(m) = last_event(mkey, self.thr_cli_mod, cd + 1, self.day) {
            let h = mix_day(mkey ^ 0x7E7E, m);
            balance = h % 5_000_000;
            updated = in_window(m, h >> 22);
            if h % 4 == 0 {
                phone = (h >> 8) % 90_000_000 + 600_000_000;
            }
            if h % 5 == 0 {
                note = (h >> 16) as usize;
            }
            if h % 7 == 0 {
                addr = ((h >> 32) % p.addr.len() as u64) as usize;
            }
            if h % 11 == 0 {
                terms = (h >> 44) as usize;
            }
        }
        let a = &p.addr[addr];
        put_u64(b, 500_000 + i);
        b.extend_from_slice(b",C");
        put_pad(b, i, 6);
        b.push(b',');
        b.extend_from_slice(&p.companies[company]);
        b.push(b',');
        b.extend_from_slice(&p.people[person]);
        b.push(b',');
        b.extend_from_slice(&p.emails[person]);
        b.push(b'@');
        b.extend_from_slice(&p.company_slugs[company]);
        b.extend_from_slice(b".example,+34 ");
        put_u64(b, phone / 1_000_000);
        b.push(b' ');
        put_pad(b, phone / 1000 % 1000, 3);
        b.push(b' ');
        put_pad(b, phone % 1000, 3);
        b.extend_from_slice(b",ES");
        b.push(b"ABCDEFGHJNPQRSUVW"[((y >> 40) % 17) as usize]);
        put_pad(b, (y >> 8) % 100_000_000, 8);
        for f in [&a.street, &a.city, &a.postal, &a.country] {
            b.push(b',');
            b.extend_from_slice(f);
        }
        b.push(b',');
        b.extend_from_slice(PAYMENT_TERMS[terms % PAYMENT_TERMS.len()].as_bytes());
        b.push(b',');
        put_money(b, ((y >> 44) % 50 + 1) * 100_000);
        b.push(b',');
        put_money(b, balance);
        b.push(b',');
        b.extend_from_slice(&p.client_notes[note % p.client_notes.len()]);
        b.push(b',');
        put_ts(b, born);
        b.push(b',');
        put_ts(b, updated);
        b.push(b'\n');
    }

    /// Base attributes of client `c` as seen by other tables:
    /// (company index, address index).
    fn client_base(&self, c: u64) -> (usize, usize) {
        let p = &self.pools;
        let x = mix(self.k_cli, c);
        (
            (x % p.companies.len() as u64) as usize,
            ((x >> 24) % p.addr.len() as u64) as usize,
        )
    }

    // ------------------------------ orders --------------------------------

    fn order_core(&self, j: u64) -> OrderCore {
        let (cd, born) = self.orders.birth(j);
        let x = mix(self.k_ord, j);
        let y = fmix(x ^ 0x7777_7777_7777_7777);
        let items = 1 + (x >> 20) % 12;
        let sub = items * (150 + (y >> 24) % 6_500);
        let disc = sub * ((x >> 30) % 4) * 5 / 100;
        let tax = (sub - disc) * 21 / 100;
        let client = (x >> 36) % self.clients.count(cd);
        OrderCore {
            cd,
            born,
            x,
            y,
            client,
            items,
            sub,
            disc,
            tax,
            currency: pick_str(CURRENCIES, y >> 44),
        }
    }

    fn order_row(&self, i: u64, b: &mut Vec<u8>) {
        let o = self.order_core(i);
        let age = self.day - o.cd;
        // ~0.25 % of orders are purged drafts, removed 1-3 days after creation
        if o.y % 400 == 0 && age > ((o.y >> 11) % 3) as i64 {
            return;
        }
        let (status, k) = order_status(age, o.x);
        let updated = event_time(o.cd, o.born, k, o.y >> 5);
        let p = &self.pools;
        let (company, addr) = self.client_base(o.client);
        put_u64(b, 900_000 + i);
        b.extend_from_slice(b",SO-");
        put_u64(b, year_of(o.born).unsigned_abs());
        b.push(b'-');
        put_pad(b, i + 1, 7);
        b.push(b',');
        put_ts(b, o.born);
        b.push(b',');
        put_u64(b, 500_000 + o.client);
        b.push(b',');
        b.extend_from_slice(&p.companies[company]);
        b.push(b',');
        b.extend_from_slice(status.as_bytes());
        b.push(b',');
        b.extend_from_slice(pick_str(CHANNELS, o.y >> 40).as_bytes());
        b.push(b',');
        b.extend_from_slice(o.currency.as_bytes());
        b.push(b',');
        put_u64(b, o.items);
        b.push(b',');
        put_money(b, o.sub);
        b.push(b',');
        put_money(b, o.disc);
        b.push(b',');
        put_money(b, o.tax);
        b.push(b',');
        put_money(b, o.sub - o.disc + o.tax);
        b.push(b',');
        b.extend_from_slice(&p.addr[addr].full);
        b.push(b',');
        b.extend_from_slice(pick(&p.order_notes, o.x >> 52));
        b.push(b',');
        put_ts(b, updated);
        b.push(b'\n');
    }

    // ----------------------------- invoices -------------------------------

    fn invoice_row(&self, i: u64, b: &mut Vec<u8>) {
        let (cd, born) = self.invoices.birth(i);
        let x = mix(self.k_invc, i);
        let age = self.day - cd;
        // the order being invoiced: same relative position in the orders table
        let j = if i < self.invoices.n0 {
            i * self.orders.n0 / self.invoices.n0
        } else {
            let k = i - self.invoices.n0;
            self.orders.n0 + k * self.orders.dn / self.invoices.dn
        };
        let o = self.order_core(j);
        let terms: i64 = [0, 15, 30, 30, 60][(x % 5) as usize];
        let sub = o.sub - o.disc;
        let tax = o.tax;
        let total = sub + tax;
        // day offset of payment; 2 % are never paid
        let pay = if (x >> 10) % 50 == 0 {
            i64::MAX
        } else {
            ((x >> 3) % (terms as u64 + 25)) as i64
        };
        let (status, paid_at) = if age >= pay {
            ("paid", Some(event_time(cd, born, pay, x >> 30)))
        } else if age > terms + 90 {
            ("written_off", None)
        } else if age > terms {
            ("overdue", None)
        } else {
            ("issued", None)
        };
        put_u64(b, 700_000 + i);
        b.extend_from_slice(b",FV");
        put_u64(b, year_of(born).unsigned_abs());
        b.push(b'/');
        put_pad(b, i + 1, 6);
        b.push(b',');
        put_u64(b, 900_000 + j);
        b.push(b',');
        put_u64(b, 500_000 + o.client);
        b.push(b',');
        put_ts(b, born);
        b.push(b',');
        put_date(b, born + terms * DAY);
        b.push(b',');
        b.extend_from_slice(status.as_bytes());
        b.push(b',');
        b.extend_from_slice(o.currency.as_bytes());
        b.push(b',');
        put_money(b, sub);
        b.push(b',');
        put_money(b, tax);
        b.push(b',');
        put_money(b, total);
        b.push(b',');
        put_money(b, if paid_at.is_some() { total } else { 0 });
        b.push(b',');
        if let Some(t) = paid_at {
            put_ts(b, t);
        }
        b.push(b'\n');
    }

    // ----------------------------- movements ------------------------------

    fn movement_row(&self, i: u64, b: &mut Vec<u8>) {
        let (cd, born) = self.movements.birth(i);
        let x = mix(self.k_mov, i);
        let prod = x % self.products.count(cd);
        let mt = pick_str(MOVE_TYPES, x >> 20);
        let mut qty = (1 + (x >> 24) % 40) as i64;
        if matches!(mt, "sale" | "transfer_out" | "scrap") {
            qty = -qty;
        }
        put_u64(b, 3_000_000 + i);
        b.push(b',');
        put_ts(b, born);
        b.push(b',');
        put_u64(b, 100_000 + prod);
        b.push(b',');
        Ctx::put_sku(b, prod);
        b.push(b',');
        b.extend_from_slice(pick_str(WAREHOUSES, x >> 36).as_bytes());
        b.push(b',');
        b.extend_from_slice(mt.as_bytes());
        b.push(b',');
        put_i64(b, qty);
        b.push(b',');
        put_fixed4(b, (x >> 40) % 2_000_000);
        b.push(b',');
        // reference: a recent order (sales) or purchase order (everything else)
        let back = (x >> 30) % 500;
        if mt == "sale" {
            let j = self.orders.count(cd).saturating_sub(1 + back);
            b.extend_from_slice(b"SO-");
            put_u64(b, year_of(self.orders.birth(j).1).unsigned_abs());
            b.push(b'-');
            put_pad(b, j + 1, 7);
        } else {
            let j = self.pos.count(cd).saturating_sub(1 + back / 4);
            b.extend_from_slice(b"PO-");
            put_pad(b, j + 1, 6);
        }
        b.extend_from_slice(b",u");
        put_pad(b, (x >> 58) % self.users_n, 3);
        b.push(b',');
        if (x >> 55) % 8 == 0 {
            b.extend_from_slice(match mt {
                "count_correction" => "recuento trimestral".as_bytes(),
                "scrap" => "merma: embalaje dañado".as_bytes(),
                "return" => "devolución de cliente revisada".as_bytes(),
                _ => b"ok",
            });
        }
        b.push(b'\n');
    }

    // -------------------------- purchase orders ---------------------------

    fn po_row(&self, i: u64, b: &mut Vec<u8>) {
        let (cd, born) = self.pos.birth(i);
        let x = mix(self.k_po, i);
        let age = self.day - cd;
        let t_sent = 1 + (x >> 62) as i64 % 2;
        let t_part = 3 + (x % 10) as i64;
        let t_recv = 5 + ((x >> 4) % 20) as i64;
        let partial = (x >> 14) % 3 == 0;
        let (status, recv) = if age >= t_recv {
            ("received", Some(t_recv))
        } else if partial && age >= t_part {
            ("partially_received", Some(t_part))
        } else if age >= t_sent {
            ("sent", None)
        } else {
            ("draft", None)
        };
        let lines = 1 + (x >> 20) % 30;
        let p = &self.pools;
        put_u64(b, 200_000 + i);
        b.extend_from_slice(b",PO-");
        put_pad(b, i + 1, 6);
        b.push(b',');
        b.extend_from_slice(pick(&p.suppliers, x >> 26));
        b.push(b',');
        put_ts(b, born);
        b.push(b',');
        put_date(b, born + t_recv * DAY);
        b.push(b',');
        b.extend_from_slice(status.as_bytes());
        b.push(b',');
        b.extend_from_slice(pick_str(WAREHOUSES, x >> 34).as_bytes());
        b.push(b',');
        put_u64(b, lines);
        b.push(b',');
        put_money(b, lines * ((x >> 40) % 50_000));
        b.extend_from_slice(b",EUR,");
        if let Some(k) = recv {
            put_ts(b, event_time(cd, born, k, x >> 9));
        }
        b.push(b',');
        b.extend_from_slice(pick(&p.order_notes, x >> 56));
        b.push(b'\n');
    }

    // ------------------------------- users --------------------------------

    fn user_row(&self, u: u64, b: &mut Vec<u8>) {
        let p = &self.pools;
        let x = mix(self.k_usr, u);
        let person = (x % p.people.len() as u64) as usize;
        let created_day = -HIST - 200 + ((x >> 40) % 380) as i64;
        let created = in_window(created_day, x >> 8);
        // dormant accounts log in rarely, the others on most days
        let dormant = (x >> 20) % 9 == 0;
        let thr = threshold(if dormant { 0.03 } else { 0.7 });
        let key = mix(self.k_usr_log, u);
        let login = last_event(key, thr, created_day + 1, self.day);
        put_user_id(b, u);
        b.push(b',');
        b.extend_from_slice(&p.people[person]);
        b.push(b',');
        b.extend_from_slice(&p.emails[person]);
        b.extend_from_slice(b"@distribuciones-nandu.example,");
        b.extend_from_slice(pick_str(ROLES, x >> 24).as_bytes());
        b.push(b',');
        b.extend_from_slice(if dormant && (x >> 30) % 2 == 0 {
            b"false"
        } else {
            b"true"
        });
        b.push(b',');
        if let Some(d) = login {
            put_ts(b, in_window(d, mix_day(key ^ 0x1111, d)));
        }
        b.push(b',');
        put_ts(b, created);
        b.push(b'\n');
    }

    // ----------------------------- settings -------------------------------

    fn settings_json(&self, b: &mut Vec<u8>) {
        let s = self.seed;
        let day = self.day;
        let k = mix(s, K_SET);
        let mut flags = Vec::new();
        let mut b2b = false;
        for (f, name) in FLAGS.iter().enumerate() {
            let fk = mix(k, f as u64);
            let mut v = fk & 1 == 1;
            for d in 1..=day {
                if mix_day(fk, d) % 40 == 0 {
                    v = !v;
                }
            }
            if *name == "b2b_portal" {
                b2b = v;
            }
            flags.push((*name, J::Bool(v)));
        }
        let count = |t: &Table| J::Int(t.count(day) as i64);
        let numbering = |prefix: &str, t: &Table| {
            J::Obj(vec![
                ("prefix", J::Str(prefix.to_string())),
                ("next", J::Int(t.count(day) as i64 + 1)),
            ])
        };
        let epoch = day.div_euclid(30);
        let token = format!(
            "{:016x}{:016x}",
            mix_day(mix(k, 3), epoch),
            mix_day(mix(k, 4), epoch)
        );
        let mut api_keys = Vec::new();
        for key in 0..3 + day / 20 {
            let scopes = if key % 2 == 1 {
                vec![J::Str("read".into()), J::Str("write".into())]
            } else {
                vec![J::Str("read".into())]
            };
            api_keys.push(J::Obj(vec![
                ("id", J::Str(format!("key_{key}"))),
                ("created", J::Str(date_string(export_at(-100 + key * 37)))),
                ("scopes", J::Arr(scopes)),
            ]));
        }
        let warehouses = WAREHOUSES
            .iter()
            .map(|w| {
                J::Obj(vec![
                    ("code", J::Str((*w).to_string())),
                    ("name", J::Str(format!("Almacén {w}"))),
                    ("active", J::Bool(true)),
                ])
            })
            .collect();
        let active_users = (0..self.users_n)
            .filter(|u| (mix(self.k_usr, *u) >> 20) % 9 != 0)
            .count();
        let api_calls = 40_000 + mix_day(mix(k, 5), day) % 20_000;
        let doc = J::Obj(vec![
            (
                "account",
                J::Obj(vec![
                    ("id", J::Str(format!("acc_{:012x}", mix(k, 1) >> 16))),
                    ("kind", J::Str("stockflow".into())),
                    ("company", J::Str("Distribuciones Ñandú, S.L.".into())),
                    (
                        "tax_id",
                        J::Str(format!("ESB{:08}", mix(k, 2) % 100_000_000)),
                    ),
                    ("timezone", J::Str("Europe/Madrid".into())),
                    ("currency", J::Str("EUR".into())),
                    ("locale", J::Str("es-ES".into())),
                    ("plan", J::Str("business".into())),
                ]),
            ),
            (
                "numbering",
                J::Obj(vec![
                    ("orders", numbering("SO", &self.orders)),
                    ("invoices", numbering("FV", &self.invoices)),
                    ("purchase_orders", numbering("PO", &self.pos)),
                    ("products", numbering("PR", &self.products)),
                    ("clients", numbering("CL", &self.clients)),
                ]),
            ),
            ("feature_flags", J::Obj(flags)),
            (
                "taxes",
                J::Obj(vec![
                    (
                        "ES",
                        J::Obj(vec![
                            ("general", J::Int(21)),
                            ("reducido", J::Int(10)),
                            ("superreducido", J::Int(4)),
                        ]),
                    ),
                    ("PT", J::Obj(vec![("normal", J::Int(23))])),
                    (
                        "DE",
                        J::Obj(vec![("standard", J::Int(19)), ("ermäßigt", J::Int(7))]),
                    ),
                ]),
            ),
            ("warehouses", J::Arr(warehouses)),
            (
                "integrations",
                J::Obj(vec![
                    (
                        "shopify",
                        J::Obj(vec![
                            ("enabled", J::Bool(b2b)),
                            ("token", J::Str(token)),
                            (
                                "webhook_url",
                                J::Str("https://hooks.example/\"sf\"/in".into()),
                            ),
                        ]),
                    ),
                    (
                        "accounting",
                        J::Obj(vec![
                            ("provider", J::Str("holded".into())),
                            (
                                "last_sync",
                                J::Str(ts_string(
                                    export_at(day) - 3600 + (day * 13).rem_euclid(1800),
                                )),
                            ),
                        ]),
                    ),
                ]),
            ),
            ("api_keys", J::Arr(api_keys)),
            (
                "usage",
                J::Obj(vec![
                    ("products", count(&self.products)),
                    ("movements", count(&self.movements)),
                    ("active_users", J::Int(active_users as i64)),
                    ("api_calls_30d", J::Int(api_calls as i64)),
                ]),
            ),
            ("last_export_at", J::Str(ts_string(export_at(day)))),
            (
                "notes",
                J::Str(format!(
                    "Configuración generada automáticamente — día {day}\nNo editar a mano."
                )),
            ),
        ]);
        let mut s = String::new();
        doc.write(&mut s, 0);
        s.push('\n');
        b.extend_from_slice(s.as_bytes());
    }
}

struct OrderCore {
    cd: i64,
    born: i64,
    x: u64,
    y: u64,
    client: u64,
    items: u64,
    sub: u64,
    disc: u64,
    tax: u64,
    currency: &'static str,
}

/// Status of an order of the given age (days since creation) and the day
/// offset of its last transition.
fn order_status(age: i64, x: u64) -> (&'static str, i64) {
    let conf = (x & 1) as i64;
    let ship = conf + 1 + ((x >> 1) % 3) as i64;
    let deliv = ship + 1 + ((x >> 3) % 5) as i64;
    if (x >> 8) % 40 == 0 {
        let cancel = ((x >> 14) % ship as u64) as i64;
        if age >= cancel {
            return ("cancelled", cancel);
        }
    }
    if age >= deliv {
        let ret = deliv + 2 + ((x >> 26) % 8) as i64;
        if (x >> 20) % 50 == 0 && age >= ret {
            return ("returned", ret);
        }
        return ("delivered", deliv);
    }
    if age >= ship {
        return ("shipped", ship);
    }
    if age >= conf {
        return ("confirmed", conf);
    }
    ("pending", 0)
}

// ---------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------

const SPILL_AT: usize = 1 << 16;

/// A file being written: rows are formatted into `buf`, which is handed to a
/// `BufWriter` whenever it grows past `SPILL_AT`.
struct Sink {
    file: BufWriter<File>,
    buf: Vec<u8>,
    bytes: u64,
}

impl Sink {
    fn create(path: &Path) -> io::Result<Sink> {
        Ok(Sink {
            file: BufWriter::with_capacity(SPILL_AT * 2, File::create(path)?),
            buf: Vec::with_capacity(SPILL_AT + 4096),
            bytes: 0,
        })
    }

    #[inline]
    fn row_done(&mut self) -> io::Result<()> {
        if self.buf.len() >= SPILL_AT {
            self.spill()?;
        }
        Ok(())
    }

    fn spill(&mut self) -> io::Result<()> {
        self.file.write_all(&self.buf)?;
        self.bytes += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Flushes, closes and stamps the file; returns its size.
    fn finish(mut self, mtime: SystemTime) -> io::Result<u64> {
        self.spill()?;
        let file = self.file.into_inner().map_err(|e| e.into_error())?;
        file.set_modified(mtime)?;
        Ok(self.bytes)
    }
}

#[inline]
fn put_u64(b: &mut Vec<u8>, mut v: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    b.extend_from_slice(&tmp[i..]);
}

#[inline]
fn put_i64(b: &mut Vec<u8>, v: i64) {
    if v < 0 {
        b.push(b'-');
    }
    put_u64(b, v.unsigned_abs());
}

/// `v` in decimal, left-padded with zeros to at least `width` digits.
#[inline]
fn put_pad(b: &mut Vec<u8>, mut v: u64, width: usize) {
    let mut tmp = [b'0'; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let start = i.min(tmp.len() - width.min(tmp.len()));
    b.extend_from_slice(&tmp[start..]);
}

#[inline]
fn put2(b: &mut Vec<u8>, v: u32) {
    b.push(b'0' + (v / 10) as u8);
    b.push(b'0' + (v % 10) as u8);
}

/// Cents as `123.45`.
#[inline]
fn put_money(b: &mut Vec<u8>, cents: u64) {
    put_u64(b, cents / 100);
    b.push(b'.');
    put2(b, (cents % 100) as u32);
}

/// Thousandths as `12.345`.
fn put_fixed3(b: &mut Vec<u8>, v: u64) {
    put_u64(b, v / 1000);
    b.push(b'.');
    put_pad(b, v % 1000, 3);
}

/// Ten-thousandths as `12.3456`.
fn put_fixed4(b: &mut Vec<u8>, v: u64) {
    put_u64(b, v / 10_000);
    b.push(b'.');
    put_pad(b, v % 10_000, 4);
}

/// EAN-13 barcode: the 12-digit `body` followed by its check digit.
fn put_ean13(b: &mut Vec<u8>, body: u64) {
    let mut sum = 0;
    let mut v = body;
    for pos in 0..12 {
        let d = v % 10;
        v /= 10;
        sum += if pos % 2 == 0 { 3 * d } else { d };
    }
    put_pad(b, body, 12);
    put_u64(b, (10 - sum % 10) % 10);
}

/// User id as `u007`.
fn put_user_id(b: &mut Vec<u8>, u: u64) {
    b.push(b'u');
    put_pad(b, u, 3);
}

fn put_date(b: &mut Vec<u8>, t: i64) {
    let (y, m, d) = civil_from_days(t.div_euclid(DAY));
    put_pad(b, y.max(0).unsigned_abs(), 4);
    b.push(b'-');
    put2(b, m);
    b.push(b'-');
    put2(b, d);
}

/// RFC 3339 UTC timestamp `2024-03-01T02:00:00Z`.
fn put_ts(b: &mut Vec<u8>, t: i64) {
    put_date(b, t);
    let s = t.rem_euclid(DAY) as u32;
    b.push(b'T');
    put2(b, s / 3600);
    b.push(b':');
    put2(b, s / 60 % 60);
    b.push(b':');
    put2(b, s % 60);
    b.push(b'Z');
}

fn ts_string(t: i64) -> String {
    let mut b = Vec::with_capacity(20);
    put_ts(&mut b, t);
    String::from_utf8_lossy(&b).into_owned()
}

fn date_string(t: i64) -> String {
    let mut b = Vec::with_capacity(10);
    put_date(&mut b, t);
    String::from_utf8_lossy(&b).into_owned()
}

#[inline]
fn pick(v: &[Vec<u8>], h: u64) -> &[u8] {
    &v[(h % v.len() as u64) as usize]
}

#[inline]
fn pick_str(v: &'static [&'static str], h: u64) -> &'static str {
    v[(h % v.len() as u64) as usize]
}

/// CSV field: quoted (RFC 4180) if it contains a comma, quote or line break.
fn csv_field(s: &str) -> Vec<u8> {
    if s.bytes().any(|c| matches!(c, b',' | b'"' | b'\n' | b'\r')) {
        let mut out = Vec::with_capacity(s.len() + 4);
        out.push(b'"');
        out.extend_from_slice(s.replace('"', "\"\"").as_bytes());
        out.push(b'"');
        out
    } else {
        s.as_bytes().to_vec()
    }
}

/// Minimal JSON document, printed like Python's `json.dumps(indent=2, ensure_ascii=False)`.
enum J {
    Obj(Vec<(&'static str, J)>),
    Arr(Vec<J>),
    Str(String),
    Int(i64),
    Bool(bool),
}

impl J {
    fn write(&self, out: &mut String, depth: usize) {
        match self {
            J::Obj(items) if items.is_empty() => out.push_str("{}"),
            J::Arr(items) if items.is_empty() => out.push_str("[]"),
            J::Obj(items) => {
                out.push('{');
                for (n, (k, v)) in items.iter().enumerate() {
                    out.push_str(if n == 0 { "\n" } else { ",\n" });
                    indent(out, depth + 1);
                    json_str(out, k);
                    out.push_str(": ");
                    v.write(out, depth + 1);
                }
                out.push('\n');
                indent(out, depth);
                out.push('}');
            }
            J::Arr(items) => {
                out.push('[');
                for (n, v) in items.iter().enumerate() {
                    out.push_str(if n == 0 { "\n" } else { ",\n" });
                    indent(out, depth + 1);
                    v.write(out, depth + 1);
                }
                out.push('\n');
                indent(out, depth);
                out.push(']');
            }
            J::Str(s) => json_str(out, s),
            J::Int(v) => out.push_str(&v.to_string()),
            J::Bool(v) => out.push_str(if *v { "true" } else { "false" }),
        }
    }
}

fn indent(out: &mut String, depth: usize) {
    for _ in 0..depth {
        out.push_str("  ");
    }
}

fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

// ---------------------------------------------------------------------------
// Value pools
// ---------------------------------------------------------------------------

struct Address {
    street: Vec<u8>,
    city: Vec<u8>,
    postal: Vec<u8>,
    country: Vec<u8>,
    /// "street, postal city, country", CSV-escaped.
    full: Vec<u8>,
}

/// Deterministic value pools, CSV-escaped once.
struct Pools {
    /// "First Last".
    people: Vec<Vec<u8>>,
    /// ASCII "first.last" of the same index.
    emails: Vec<Vec<u8>>,
    companies: Vec<Vec<u8>>,
    /// ASCII domain label of the same index.
    company_slugs: Vec<Vec<u8>>,
    addr: Vec<Address>,
    pnames: Vec<Vec<u8>>,
    desc: Vec<Vec<u8>>,
    cats: Vec<Vec<u8>>,
    brands: Vec<Vec<u8>>,
    order_notes: Vec<Vec<u8>>,
    client_notes: Vec<Vec<u8>>,
    suppliers: Vec<Vec<u8>>,
}

impl Pools {
    fn new(key: u64) -> Pools {
        let mut r = SplitMix64(key);
        let mut people = Vec::with_capacity(4096);
        let mut emails = Vec::with_capacity(4096);
        for _ in 0..4096 {
            let (f, l) = (r.pick(FIRST), r.pick(LAST));
            let mut e = ascii_slug(f, '.');
            e.push(b'.');
            e.extend_from_slice(&ascii_slug(l, '.'));
            people.push(csv_field(&format!("{f} {l}")));
            emails.push(e);
        }
        let mut companies = Vec::with_capacity(4096);
        let mut company_slugs = Vec::with_capacity(4096);
        for _ in 0..4096 {
            let fmt = r.pick(COMPANY_FMT);
            let name = fmt
                .replace("{f}", r.pick(FIRST))
                .replace("{l2}", r.pick(LAST))
                .replace("{l}", r.pick(LAST));
            let mut slug = ascii_slug(&name, '-');
            if slug.is_empty() {
                slug = b"empresa".to_vec();
            }
            companies.push(csv_field(&name));
            company_slugs.push(slug);
        }
        let mut addr = Vec::with_capacity(8192);
        for _ in 0..8192 {
            let (city, postal, country) = CITIES[r.below(CITIES.len())];
            let street = format!(
                "{} {}{}",
                r.pick(STREETS),
                1 + r.below(240),
                r.pick(STREET_EXTRA)
            );
            addr.push(Address {
                full: csv_field(&format!("{street}, {postal} {city}, {country}")),
                street: csv_field(&street),
                city: csv_field(city),
                postal: csv_field(postal),
                country: csv_field(country),
            });
        }
        let mut pnames = Vec::with_capacity(8192);
        for _ in 0..8192 {
            let n = format!("{} {} {}", r.pick(NOUNS), r.pick(ATTRS), r.pick(BRANDS));
            pnames.push(csv_field(&n));
        }
        let mut desc = Vec::with_capacity(2048);
        for _ in 0..2048 {
            let k = 1 + r.below(4);
            let mut used: Vec<usize> = Vec::with_capacity(k);
            while used.len() < k {
                let s = r.below(SENTENCES.len());
                if !used.contains(&s) {
                    used.push(s);
                }
            }
            let sep = if r.below(20) == 0 { "\n" } else { " " };
            let parts: Vec<&str> = used.iter().map(|s| SENTENCES[*s]).collect();
            desc.push(csv_field(&parts.join(sep)));
        }
        let esc = |v: &[&str]| v.iter().map(|s| csv_field(s)).collect::<Vec<_>>();
        Pools {
            people,
            emails,
            companies,
            company_slugs,
            addr,
            pnames,
            desc,
            cats: esc(CATEGORIES),
            brands: esc(BRANDS),
            order_notes: esc(ORDER_NOTES),
            client_notes: esc(CLIENT_NOTES),
            suppliers: esc(SUPPLIERS),
        }
    }
}

/// ASCII transliteration of one lower-case character ("" drops it).
fn fold_char(c: char) -> &'static str {
    match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ą' | 'ă' => "a",
        'æ' => "ae",
        'ç' | 'ć' | 'č' => "c",
        'ď' | 'đ' | 'ð' => "d",
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ę' | 'ě' => "e",
        'ğ' => "g",
        'ì' | 'í' | 'î' | 'ï' | 'ī' | 'ı' => "i",
        'ł' | 'ľ' | 'ĺ' => "l",
        'ñ' | 'ń' | 'ň' => "n",
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' | 'ő' => "o",
        'œ' => "oe",
        'ř' => "r",
        'ś' | 'š' | 'ş' | 'ș' => "s",
        'ß' => "ss",
        'ť' | 'ţ' | 'ț' => "t",
        'ù' | 'ú' | 'û' | 'ü' | 'ū' | 'ů' | 'ű' => "u",
        'ý' | 'ÿ' => "y",
        'ź' | 'ż' | 'ž' => "z",
        'þ' => "th",
        _ => "",
    }
}

/// Lower-case ASCII slug of `s`: letters are transliterated (letters
/// without a transliteration and apostrophes vanish), runs of anything else
/// become one `sep`.
fn ascii_slug(s: &str, sep: char) -> Vec<u8> {
    let mut out = String::new();
    let mut pending = false;
    for c in s.chars().flat_map(char::to_lowercase) {
        let folded = fold_char(c);
        if c.is_ascii_alphanumeric() || !folded.is_empty() {
            if pending && !out.is_empty() {
                out.push(sep);
            }
            pending = false;
            if c.is_ascii_alphanumeric() {
                out.push(c);
            } else {
                out.push_str(folded);
            }
        } else if c != '\'' && !c.is_alphabetic() {
            pending = true;
        }
    }
    out.into_bytes()
}

#[rustfmt::skip]
const FIRST: &[&str] = &[
    "José", "María", "François", "Zoë", "Łukasz", "Søren", "Jürgen", "Ana", "João", "Chloé",
    "Björn", "Inês", "Matías", "Nuño", "Agnieszka", "Emma", "Liam", "Noah", "Olivia", "Hélène",
    "René", "Ólafur", "Dóra", "Ștefan", "Çağla", "Mehmet", "Yūki", "Anaïs", "Maëlle", "Gaël",
    "Jesús", "Ramón", "Lucía", "Ángel", "Wojciech", "Zdeněk", "Kateřina", "Märta", "Åsa", "Ole",
    "Niamh", "Siobhán", "Seán", "Paulo", "Renée", "Thérèse", "Élodie", "Íñigo", "Nuria", "Pilar",
    "Tomás", "Václav", "Dušan", "Miloš", "Ivana", "Greta", "Heinz", "Klaus", "Ute", "Frédéric",
    "Sébastien", "Véronique", "Laura", "Sofia", "Giulia", "Niccolò", "Aurélie", "Loïc", "Mónica",
    "Begoña", "Xoán", "Iñaki", "Ainhoa", "Raúl", "Óscar", "Sergio", "David", "Sarah", "Michael",
    "Jennifer", "Ahmed", "Fatima", "Wei", "Mei", "Hiroshi", "Sakura", "Priya", "Arjun", "Olga",
    "Dmitri", "Kasia", "Bartłomiej", "Gréta", "Zsófia", "Ádám", "Carmen", "Manuel", "Rocío",
];

#[rustfmt::skip]
const LAST: &[&str] = &[
    "García", "Müller", "Dubois", "Nowak", "Jensen", "Schäfer", "Fernández", "Gonçalves",
    "Lefèvre", "Østergaard", "Łęcki", "Šimek", "Novák", "Dvořák", "Kovačević", "Yılmaz", "Öztürk",
    "Rossi", "Bianchi", "Smith", "O'Brien", "Núñez", "Peña", "Ibáñez", "Sánchez", "Martín",
    "López", "Pérez", "Gómez", "Díaz", "Muñoz", "Álvarez", "Jiménez", "Ruiz", "Hernández",
    "Moreno", "Herrera", "Weiß", "Groß", "Köhler", "Jäger", "Bäcker", "Möller", "Håkansson",
    "Lindström", "Ångström", "Virtanen", "Mäkinen", "Nieminen", "Hämäläinen", "Kowalski",
    "Wiśniewski", "Wójcik", "Kamiński", "Lewandowski", "Zieliński", "Szymański", "Woźniak",
    "Dąbrowski", "Kozłowski", "Brown", "Johnson", "Williams", "Tanaka", "Suzuki", "Kumar", "Singh",
    "Ivanov", "Petrov", "Nagy", "Horváth", "Tóth", "Szabó", "Papadopoulos", "Γεωργίου", "Silva",
    "Santos", "Oliveira", "Costa", "Pereira", "Carvalho", "Rodrigues", "Almeida", "Ferreira",
    "Sørensen", "Nielsen", "Hansen", "Pedersen", "Andersen", "Larsen", "Jovanović", "de la Fuente",
];

const CITIES: &[(&str, &str, &str)] = &[
    ("Madrid", "28013", "España"),
    ("Barcelona", "08001", "España"),
    ("Málaga", "29001", "España"),
    ("València", "46002", "España"),
    ("A Coruña", "15001", "España"),
    ("São Paulo", "01310-100", "Brasil"),
    ("Zürich", "8001", "Schweiz"),
    ("Genève", "1201", "Suisse"),
    ("Kraków", "31-042", "Polska"),
    ("Łódź", "90-001", "Polska"),
    ("München", "80331", "Deutschland"),
    ("Düsseldorf", "40213", "Deutschland"),
    ("Köln", "50667", "Deutschland"),
    ("Montréal", "H2Y 1C6", "Canada"),
    ("Québec", "G1R 4P5", "Canada"),
    ("Reykjavík", "101", "Ísland"),
    ("Bogotá", "110111", "Colombia"),
    ("Medellín", "050001", "Colombia"),
    ("Cancún", "77500", "México"),
    ("Ciudad de México", "06000", "México"),
    ("Lisboa", "1100-148", "Portugal"),
    ("Porto", "4000-322", "Portugal"),
    ("Paris", "75001", "France"),
    ("Lyon", "69002", "France"),
    ("Besançon", "25000", "France"),
    ("Wien", "1010", "Österreich"),
    ("Göteborg", "411 03", "Sverige"),
    ("Malmö", "211 20", "Sverige"),
    ("København", "1050", "Danmark"),
    ("Århus", "8000", "Danmark"),
    ("Praha", "110 00", "Česko"),
    ("Brno", "602 00", "Česko"),
    ("İstanbul", "34000", "Türkiye"),
    ("Milano", "20121", "Italia"),
    ("Torino", "10121", "Italia"),
    ("Bruxelles", "1000", "Belgique"),
    ("Dublin", "D02 X285", "Ireland"),
    ("London", "EC1A 1BB", "United Kingdom"),
    ("New York", "10001", "USA"),
    ("San José", "95113", "USA"),
];

#[rustfmt::skip]
const STREETS: &[&str] = &[
    "Calle Mayor", "Rue de la Paix", "Hauptstraße", "Avenida Paulista", "Bahnhofstrasse",
    "ul. Floriańska", "Königsallee", "Rua Augusta", "Via Roma", "Gran Vía", "Carrer de Balmes",
    "Boulevard Saint-Germain", "Strøget", "Drottninggatan", "Karlova", "İstiklal Caddesi",
    "Paseo de la Reforma", "Rue Sainte-Catherine", "Laugavegur", "Carrera 7", "Main Street",
    "Broadway", "Calle de Alcalá", "Avinguda Diagonal", "Schönhauser Allee", "Nørrebrogade",
];

#[rustfmt::skip]
const STREET_EXTRA: &[&str] = &[
    "", "", "", ", 2º B", ", Bajo", ", Nave 7", ", Pol. Ind. Sur", ", Apt. 4", ", 3ª planta",
];

const COMPANY_FMT: &[&str] = &[
    "{l} & {l2} S.L.",
    "{l} GmbH",
    "{l} Hermanos, S.A.",
    "Café \"{l}\"",
    "{l} & Söhne KG",
    "Boutique {f}",
    "{l} Distribución",
    "{l} Sp. z o.o.",
    "{l} AB",
    "{l} Ltd.",
    "{l}, {l2} y Cía.",
    "Ferretería {l}",
    "{f} {l}",
    "{l} Import-Export",
    "Librería {l}",
    "{l} s.r.o.",
    "{l} ApS",
    "Suministros {l} e Hijos, S.L.",
];

#[rustfmt::skip]
const NOUNS: &[&str] = &[
    "Tornillo hexagonal", "Tuerca autoblocante", "Arandela plana", "Café molido", "Té verde",
    "Aceite de oliva", "Cable eléctrico", "Bombilla LED", "Cinta adhesiva", "Guantes de nitrilo",
    "Caja de cartón", "Papel térmico", "Cuaderno A5", "Bolígrafo gel", "Taladro percutor",
    "Destornillador", "Llave inglesa", "Martillo", "Pintura acrílica", "Brocha", "Silicona",
    "Schraube", "Dübel", "Kaffeebohnen", "Müsli", "Crème hydratante", "Savon à l'huile d'olive",
    "Chaussettes laine", "Écouteurs Bluetooth", "Câble USB-C", "Chargeur rapide", "Étiquettes",
    "Żarówka", "Kubek ceramiczny", "Sweater", "T-shirt", "Vaso de vidrio", "Plato llano",
    "Sartén antiadherente", "Olla a presión", "Jabón líquido", "Champú", "Pañales", "Toalla",
];

#[rustfmt::skip]
const ATTRS: &[&str] = &[
    "M8 x 40 mm", "M6 x 20 mm", "250 g", "500 g", "1 kg", "1 L", "5 L", "2,5 mm²", "10 W", "E27",
    "50 m", "talla M", "talla L", "XL", "rojo", "azul", "negro", "blanco", "inox", "acero",
    "pack 12", "pack 100", "18 V", "Ø 24 cm", "100 % algodón", "bio", "sin gluten",
    "édition limitée",
];

#[rustfmt::skip]
const CATEGORIES: &[&str] = &[
    "Ferretería", "Alimentación", "Electricidad", "Papelería", "Herramientas", "Pinturas",
    "Textil", "Hogar", "Cosmética", "Electrónica", "Embalaje", "Limpieza", "Menaje", "Bricolage",
    "Jardín & Exterior", "Iluminación, lámparas",
];

#[rustfmt::skip]
const BRANDS: &[&str] = &[
    "Acmé", "Bosch", "Würth", "Hacendado", "Nestlé", "Dr. Oetker", "Philips", "Tesa", "Scotch",
    "Pilot", "Stabilo", "Makita", "Bahco", "Titanlux", "Quilosa", "Decathlon", "Zwilling",
    "Le Creuset", "L'Oréal", "Nivea", "Ikéa", "Tefal", "Arcos", "Lékué", "Ñandú",
];

const SENTENCES: &[&str] = &[
    "Producto de alta calidad, ideal para uso profesional y doméstico.",
    "Fabricado en la UE; cumple la normativa CE.",
    "Resistente a la corrosión, al agua y a temperaturas extremas.",
    "Haltbar und vielseitig einsetzbar, für Innen- und Außenbereich.",
    "Livré en carton recyclable, garantie 2 ans.",
    "Compatible con la mayoría de modelos del mercado.",
    "Ver ficha técnica para dimensiones, peso y materiales.",
    "Nuevo formato \"ahorro\", más unidades por caja.",
    "Conservar en lugar fresco y seco, lejos de la luz solar.",
    "Wysoka jakość, niska cena.",
    "Unidad de venta: caja; mínimo de pedido 2 unidades.",
    "Disponible en varios colores, tallas y acabados.",
];

const ORDER_NOTES: &[&str] = &[
    "",
    "",
    "",
    "",
    "",
    "",
    "Entregar antes de las 10:00, código portal 4521",
    "Llamar al cliente antes de enviar",
    "Cliente VIP, revisar embalaje",
    "Bitte an der Rezeption abgeben",
    "Livraison à l'entrepôt n° 2, quai B",
    "Pedido urgente\nConfirmar stock con almacén",
    "Factura con \"IVA incluido\", por favor",
    "Enviar factura a contabilidad@ejemplo.es; copia al comprador",
    "Pago por transferencia, 30 días",
    "Pedido recibido por teléfono\n-- Ana G.",
];

const CLIENT_NOTES: &[&str] = &[
    "",
    "",
    "",
    "",
    "Buen pagador",
    "Retrasos en pagos, pedir prepago",
    "Contacto preferido: WhatsApp",
    "Descuento 5 % pactado, válido hasta fin de año",
    "Horario: L-V 9:00-14:00, 16:00-19:00",
    "Prefiere \"entrega en tienda\"",
    "Antiguo cliente de la sucursal de Sevilla\nMigrado en 2023",
    "Kunde seit 2019, Rahmenvertrag Nr. 4411",
    "Relance de paiement envoyée",
];

const SUPPLIERS: &[&str] = &[
    "Proveedores Ibéricos S.A.",
    "Großhandel Müller GmbH",
    "Distribuciones Núñez, S.L.",
    "Import Łódź Sp. z o.o.",
    "Comercial Peña & Hijos",
    "Société Générale d'Équipement",
    "Nordic Supply ApS",
    "Atlântico Trading Lda.",
    "Alpen Werkzeug AG",
    "Shenzhen Bright Co., Ltd.",
];

const WAREHOUSES: &[&str] = &["MAD-01", "BCN-02", "VLC-03", "SEV-04"];

const MOVE_TYPES: &[&str] = &[
    "sale",
    "sale",
    "sale",
    "sale",
    "purchase_receipt",
    "transfer_out",
    "transfer_in",
    "adjustment",
    "return",
    "count_correction",
    "production",
    "scrap",
];

const CHANNELS: &[&str] = &[
    "web",
    "pos",
    "b2b",
    "marketplace:amazon",
    "marketplace:mercadolibre",
    "phone",
    "email",
];

#[rustfmt::skip]
const CURRENCIES: &[&str] = &[
    "EUR", "EUR", "EUR", "EUR", "USD", "GBP", "MXN", "BRL", "PLN", "CHF",
];

const UNITS: &[&str] = &["ud", "kg", "L", "m", "caja", "pack"];

const PAYMENT_TERMS: &[&str] = &["contado", "30 días", "60 días", "90 días", "prepago"];

const ROLES: &[&str] = &["admin", "manager", "warehouse", "sales", "accountant"];

const FLAGS: &[&str] = &[
    "multi_warehouse",
    "lot_tracking",
    "serial_numbers",
    "negative_stock",
    "auto_reorder",
    "b2b_portal",
    "pos_offline",
    "email_invoices",
    "beta_dashboard",
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};
    use std::error::Error;
    use std::ops::Range;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};

    type R = Result<(), Box<dyn Error>>;
    /// Inclusive (low, high) bounds of a fraction.
    type Bounds = (f64, f64);

    const CSVS: [&str; 8] = [
        "products.csv",
        "inventory.csv",
        "clients.csv",
        "orders.csv",
        "invoices.csv",
        "movements.csv",
        "purchase-orders.csv",
        "users.csv",
    ];
    const ALL: [&str; 9] = [
        "products.csv",
        "inventory.csv",
        "clients.csv",
        "orders.csv",
        "invoices.csv",
        "movements.csv",
        "purchase-orders.csv",
        "users.csv",
        "settings.json",
    ];

    /// A unique scratch directory under the system temp dir, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            static N: AtomicU32 = AtomicU32::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let p = std::env::temp_dir()
                .join(format!("arca-demo-gen-{tag}-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            Scratch(p)
        }
        fn dir(&self, sub: &str) -> PathBuf {
            self.0.join(sub)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn gen(dir: &Path, day: u32, scale: f64) -> io::Result<GenStats> {
        generate_day(dir, day, &GenOptions { scale, seed: 42 })
    }

    type Record = (Vec<String>, Range<usize>);

    /// RFC 4180 parser: records (fields + byte range of the raw record, without
    /// its final `\n`). Rejects bare quotes, CR, invalid UTF-8 and a missing
    /// final newline.
    fn parse_csv(data: &[u8]) -> Result<Vec<Record>, String> {
        let mut recs = Vec::new();
        let mut fields: Vec<String> = Vec::new();
        let mut cur: Vec<u8> = Vec::new();
        let mut start = 0;
        let mut field_start = true;
        let mut i = 0;
        let finish = |cur: &mut Vec<u8>| {
            String::from_utf8(std::mem::take(cur)).map_err(|e| format!("utf-8: {e}"))
        };
        while i < data.len() {
            let c = data[i];
            match c {
                b'"' if field_start => {
                    // quoted field
                    i += 1;
                    loop {
                        match data.get(i) {
                            None => return Err(format!("unterminated quote at {start}")),
                            Some(b'"') if data.get(i + 1) == Some(&b'"') => {
                                cur.push(b'"');
                                i += 2;
                            }
                            Some(b'"') => {
                                i += 1;
                                break;
                            }
                            Some(&o) => {
                                cur.push(o);
                                i += 1;
                            }
                        }
                    }
                    match data.get(i) {
                        Some(b',') | Some(b'\n') => {}
                        _ => return Err(format!("garbage after closing quote at {i}")),
                    }
                    field_start = false;
                    continue;
                }
                b'"' => return Err(format!("quote inside unquoted field at {i}")),
                b'\r' => return Err(format!("bare CR at {i}")),
                b',' => {
                    fields.push(finish(&mut cur)?);
                    field_start = true;
                }
                b'\n' => {
                    fields.push(finish(&mut cur)?);
                    recs.push((std::mem::take(&mut fields), start..i));
                    start = i + 1;
                    field_start = true;
                }
                _ => {
                    cur.push(c);
                    field_start = false;
                }
            }
            i += 1;
        }
        if start != data.len() {
            return Err("missing final newline".into());
        }
        Ok(recs)
    }

    /// Data rows of a CSV as (key, raw bytes), in file order.
    fn keyed(data: &[u8], name: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
        let recs = parse_csv(data)?;
        Ok(recs
            .iter()
            .skip(1)
            .map(|(f, r)| {
                let key = if name == "inventory.csv" {
                    format!("{}/{}", f[0], f[2])
                } else {
                    f[0].clone()
                };
                (key, data[r.clone()].to_vec())
            })
            .collect())
    }

    #[derive(Debug, Default)]
    struct Diff {
        old_rows: usize,
        added: usize,
        deleted: usize,
        changed: usize,
    }

    impl Diff {
        fn frac(&self, n: usize) -> f64 {
            n as f64 / self.old_rows.max(1) as f64
        }
    }

    /// Row-level diff keyed like `keyed`; also checks that rows present on
    /// both days keep their relative order.
    fn diff(a: &[u8], b: &[u8], name: &str) -> Result<Diff, Box<dyn Error>> {
        let ra = keyed(a, name)?;
        let rb = keyed(b, name)?;
        let ma: HashMap<&str, &[u8]> = ra.iter().map(|(k, v)| (k.as_str(), &v[..])).collect();
        let mb: HashMap<&str, &[u8]> = rb.iter().map(|(k, v)| (k.as_str(), &v[..])).collect();
        assert_eq!(ma.len(), ra.len(), "{name}: duplicate keys");
        assert_eq!(mb.len(), rb.len(), "{name}: duplicate keys");
        let common_a: Vec<&str> = ra
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| mb.contains_key(k))
            .collect();
        let common_b: Vec<&str> = rb
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| ma.contains_key(k))
            .collect();
        assert_eq!(common_a, common_b, "{name}: surviving rows were reordered");
        Ok(Diff {
            old_rows: ra.len(),
            added: rb
                .iter()
                .filter(|(k, _)| !ma.contains_key(k.as_str()))
                .count(),
            deleted: ra
                .iter()
                .filter(|(k, _)| !mb.contains_key(k.as_str()))
                .count(),
            changed: common_a.iter().filter(|k| ma[*k] != mb[*k]).count(),
        })
    }

    /// Tiny strict JSON validator (RFC 8259 grammar, no semantics).
    struct JsonCheck<'a> {
        s: &'a [u8],
        i: usize,
    }

    impl JsonCheck<'_> {
        fn ws(&mut self) {
            while matches!(self.s.get(self.i), Some(b' ' | b'\n' | b'\r' | b'\t')) {
                self.i += 1;
            }
        }
        fn lit(&mut self, w: &str) -> Result<(), String> {
            if self.s[self.i..].starts_with(w.as_bytes()) {
                self.i += w.len();
                Ok(())
            } else {
                Err(format!("bad literal at {}", self.i))
            }
        }
        fn digits(&mut self) -> usize {
            let st = self.i;
            while matches!(self.s.get(self.i), Some(b'0'..=b'9')) {
                self.i += 1;
            }
            self.i - st
        }
        fn string(&mut self) -> Result<(), String> {
            self.lit("\"")?;
            loop {
                match self.s.get(self.i) {
                    None => return Err("unterminated string".into()),
                    Some(b'"') => {
                        self.i += 1;
                        return Ok(());
                    }
                    Some(b'\\') => {
                        self.i += 1;
                        match self.s.get(self.i) {
                            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                                self.i += 1
                            }
                            Some(b'u') => {
                                let hex = self.s.get(self.i + 1..self.i + 5).ok_or("short \\u")?;
                                if !hex.iter().all(u8::is_ascii_hexdigit) {
                                    return Err("bad \\u".into());
                                }
                                self.i += 5;
                            }
                            _ => return Err(format!("bad escape at {}", self.i)),
                        }
                    }
                    Some(c) if *c < 0x20 => return Err(format!("control char at {}", self.i)),
                    Some(_) => self.i += 1,
                }
            }
        }
        fn value(&mut self, depth: usize) -> Result<(), String> {
            if depth > 64 {
                return Err("too deep".into());
            }
            self.ws();
            match self.s.get(self.i) {
                Some(b'{') => {
                    self.i += 1;
                    self.ws();
                    if self.s.get(self.i) == Some(&b'}') {
                        self.i += 1;
                        return Ok(());
                    }
                    loop {
                        self.ws();
                        self.string()?;
                        self.ws();
                        self.lit(":")?;
                        self.value(depth + 1)?;
                        self.ws();
                        match self.s.get(self.i) {
                            Some(b',') => self.i += 1,
                            Some(b'}') => {
                                self.i += 1;
                                return Ok(());
                            }
                            _ => return Err(format!("expected , or }} at {}", self.i)),
                        }
                    }
                }
                Some(b'[') => {
                    self.i += 1;
                    self.ws();
                    if self.s.get(self.i) == Some(&b']') {
                        self.i += 1;
                        return Ok(());
                    }
                    loop {
                        self.value(depth + 1)?;
                        self.ws();
                        match self.s.get(self.i) {
                            Some(b',') => self.i += 1,
                            Some(b']') => {
                                self.i += 1;
                                return Ok(());
                            }
                            _ => return Err(format!("expected , or ] at {}", self.i)),
                        }
                    }
                }
                Some(b'"') => self.string(),
                Some(b't') => self.lit("true"),
                Some(b'f') => self.lit("false"),
                Some(b'n') => self.lit("null"),
                Some(b'-' | b'0'..=b'9') => {
                    if self.s[self.i] == b'-' {
                        self.i += 1;
                    }
                    let n = self.digits();
                    if n == 0 || (n > 1 && self.s[self.i - n] == b'0') {
                        return Err(format!("bad number at {}", self.i));
                    }
                    if self.s.get(self.i) == Some(&b'.') {
                        self.i += 1;
                        if self.digits() == 0 {
                            return Err("bad fraction".into());
                        }
                    }
                    if matches!(self.s.get(self.i), Some(b'e' | b'E')) {
                        self.i += 1;
                        if matches!(self.s.get(self.i), Some(b'+' | b'-')) {
                            self.i += 1;
                        }
                        if self.digits() == 0 {
                            return Err("bad exponent".into());
                        }
                    }
                    Ok(())
                }
                _ => Err(format!("unexpected byte at {}", self.i)),
            }
        }
    }

    fn check_json(s: &[u8]) -> Result<(), String> {
        std::str::from_utf8(s).map_err(|e| e.to_string())?;
        let mut c = JsonCheck { s, i: 0 };
        c.ws();
        if c.s.get(c.i) != Some(&b'{') {
            return Err("top level is not an object".into());
        }
        c.value(0)?;
        c.ws();
        if c.i != s.len() {
            return Err(format!("trailing data at {}", c.i));
        }
        Ok(())
    }

    #[test]
    fn export_time_and_calendar() {
        assert_eq!(export_time(0), 1_709_258_400);
        assert_eq!(export_time(1) - export_time(0), 86_400);
        assert_eq!(ts_string(export_time(0)), "2024-03-01T02:00:00Z");
        assert_eq!(ts_string(export_time(365)), "2025-03-01T02:00:00Z");
        assert_eq!(ts_string(export_at(-1)), "2024-02-29T02:00:00Z");
        assert_eq!(date_string(0), "1970-01-01");
        assert_eq!(ts_string(951_782_399), "2000-02-28T23:59:59Z");
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        let mut b = Vec::new();
        put_ean13(&mut b, 400_638_133_393);
        assert_eq!(b, b"4006381333931");
        b.clear();
        put_pad(&mut b, 42, 6);
        put_money(&mut b, 5);
        put_fixed4(&mut b, 12_345);
        put_i64(&mut b, -7);
        assert_eq!(b, b"0000420.051.2345-7");
    }

    #[test]
    fn same_args_give_identical_files_and_overwrite_works() -> R {
        let s = Scratch::new("same");
        let (a, b) = (s.dir("a"), s.dir("b"));
        let st_a = gen(&a, 3, 0.05)?;
        // b first holds a later (bigger) day, then is overwritten with day 3
        gen(&b, 9, 0.05)?;
        let st_b = gen(&b, 3, 0.05)?;
        assert_eq!(st_a, st_b);
        assert_eq!(st_a.files, 9);
        let mut total = 0;
        for f in ALL {
            let da = fs::read(a.join(f))?;
            assert_eq!(
                da,
                fs::read(b.join(f))?,
                "{f} differs between identical runs"
            );
            total += da.len() as u64;
        }
        assert_eq!(total, st_a.bytes);
        // another seed gives another account of the same shape
        let c = s.dir("c");
        generate_day(
            &c,
            3,
            &GenOptions {
                scale: 0.05,
                seed: 7,
            },
        )?;
        assert_ne!(
            fs::read(a.join("clients.csv"))?,
            fs::read(c.join("clients.csv"))?
        );
        Ok(())
    }

    #[test]
    fn next_day_differs_and_movements_are_append_only() -> R {
        let s = Scratch::new("next");
        let (d3, d4) = (s.dir("d3"), s.dir("d4"));
        gen(&d3, 3, 0.05)?;
        gen(&d4, 4, 0.05)?;
        for f in ALL {
            assert_ne!(
                fs::read(d3.join(f))?,
                fs::read(d4.join(f))?,
                "{f} did not change"
            );
        }
        let m3 = fs::read(d3.join("movements.csv"))?;
        let m4 = fs::read(d4.join("movements.csv"))?;
        let l3: Vec<&[u8]> = m3.split(|c| *c == b'\n').collect();
        let l4: Vec<&[u8]> = m4.split(|c| *c == b'\n').collect();
        let n90 = l3.len() * 9 / 10;
        assert!(n90 > 100);
        assert_eq!(
            l3[..n90],
            l4[..n90],
            "first 90 % of movements lines changed"
        );
        // in fact the whole previous day is a prefix
        assert!(m4.starts_with(&m3), "movements.csv is not append-only");
        let grow = (l4.len() - l3.len()) as f64 / l3.len() as f64;
        assert!((0.005..0.012).contains(&grow), "movements growth {grow}");
        Ok(())
    }

    #[test]
    fn daily_change_rates_are_realistic() -> R {
        let s = Scratch::new("rates");
        let (d5, d6, d25) = (s.dir("d5"), s.dir("d6"), s.dir("d25"));
        gen(&d5, 5, 0.2)?;
        gen(&d6, 6, 0.2)?;
        gen(&d25, 25, 0.2)?;
        // (file, changed range, added range) as fractions of the old row count
        let expect: [(&str, Bounds, Bounds); 7] = [
            ("inventory.csv", (0.02, 0.10), (0.0, 0.01)),
            ("products.csv", (0.01, 0.035), (0.001, 0.004)),
            ("clients.csv", (0.007, 0.025), (0.002, 0.005)),
            ("orders.csv", (0.007, 0.025), (0.005, 0.011)),
            ("invoices.csv", (0.004, 0.015), (0.005, 0.011)),
            ("purchase-orders.csv", (0.006, 0.022), (0.005, 0.011)),
            ("movements.csv", (0.0, 0.0), (0.005, 0.011)),
        ];
        for (f, (c_lo, c_hi), (a_lo, a_hi)) in expect {
            let d = diff(&fs::read(d5.join(f))?, &fs::read(d6.join(f))?, f)?;
            let (c, a) = (d.frac(d.changed), d.frac(d.added));
            assert!(c >= c_lo && c <= c_hi, "{f}: changed fraction {c} ({d:?})");
            assert!(a >= a_lo && a <= a_hi, "{f}: added fraction {a} ({d:?})");
            assert!(d.frac(d.deleted) < 0.002, "{f}: too many deletions ({d:?})");
        }
        // deletions do happen over a few weeks (orders: purged drafts)
        for f in ["products.csv", "clients.csv", "orders.csv", "inventory.csv"] {
            let d = diff(&fs::read(d5.join(f))?, &fs::read(d25.join(f))?, f)?;
            assert!(d.deleted > 0, "{f}: no deletions between day 5 and 25");
        }
        let d = diff(
            &fs::read(d5.join("movements.csv"))?,
            &fs::read(d25.join("movements.csv"))?,
            "movements.csv",
        )?;
        assert_eq!((d.changed, d.deleted), (0, 0));
        let u = diff(
            &fs::read(d5.join("users.csv"))?,
            &fs::read(d6.join("users.csv"))?,
            "users.csv",
        )?;
        assert!(u.changed > 0 && u.added == 0 && u.deleted == 0, "{u:?}");
        Ok(())
    }

    #[test]
    fn csv_files_are_well_formed() -> R {
        let s = Scratch::new("csv");
        let d = s.dir("d");
        gen(&d, 2, 0.05)?;
        let first_cols = [
            ("products.csv", "id,sku,name,"),
            ("inventory.csv", "product_id,sku,warehouse,"),
            ("clients.csv", "id,code,company_name,"),
            ("orders.csv", "id,number,created_at,"),
            ("invoices.csv", "id,number,order_id,"),
            ("movements.csv", "id,created_at,product_id,"),
            ("purchase-orders.csv", "id,number,supplier,"),
            ("users.csv", "id,name,email,"),
        ];
        let mut quoted_newlines = 0;
        for (f, head) in first_cols {
            let data = fs::read(d.join(f))?;
            assert!(data.starts_with(head.as_bytes()), "{f}: header");
            let recs = parse_csv(&data).map_err(|e| format!("{f}: {e}"))?;
            assert!(recs.len() > 2, "{f}: no data rows");
            let cols = recs[0].0.len();
            assert!(cols >= 7);
            for (n, (fields, range)) in recs.iter().enumerate() {
                assert_eq!(
                    fields.len(),
                    cols,
                    "{f} record {n}: {}",
                    String::from_utf8_lossy(&data[range.clone()])
                );
                quoted_newlines += usize::from(fields.iter().any(|x| x.contains('\n')));
            }
            // keys are unique
            let keys: HashSet<String> = keyed(&data, f)?.into_iter().map(|(k, _)| k).collect();
            assert_eq!(keys.len(), recs.len() - 1, "{f}: duplicate keys");
        }
        assert!(
            quoted_newlines > 0,
            "expected some multi-line quoted fields"
        );
        Ok(())
    }

    #[test]
    fn settings_json_is_valid() -> R {
        let s = Scratch::new("json");
        for day in [0, 7, 45] {
            let d = s.dir(&format!("d{day}"));
            gen(&d, day, 0.05)?;
            let j = fs::read(d.join("settings.json"))?;
            check_json(&j).map_err(|e| format!("day {day}: {e}"))?;
            let text = String::from_utf8(j)?;
            let stamp = format!("\"last_export_at\": \"{}\"", ts_string(export_time(day)));
            assert!(text.contains(&stamp), "day {day}: {stamp} missing");
        }
        assert!(check_json(b"{\"a\": [1, 2,]}").is_err());
        assert!(check_json(b"{\"a\": \"x\"} x").is_err());
        assert!(check_json(b"{\"a\": {\"b\": [true, null, -1.5e3]}}").is_ok());
        Ok(())
    }

    #[test]
    fn small_scales_work() -> R {
        let s = Scratch::new("small");
        let d = s.dir("d");
        let st = gen(&d, 0, 0.01)?;
        assert!(
            st.bytes > 300_000 && st.bytes < 3_000_000,
            "scale 0.01 wrote {} bytes",
            st.bytes
        );
        for (scale, day) in [(0.01, 0), (0.0001, 0), (0.0001, 3), (0.01, 1000)] {
            let d = s.dir(&format!("{scale}-{day}"));
            gen(&d, day, scale)?;
            for f in CSVS {
                let data = fs::read(d.join(f))?;
                let recs = parse_csv(&data).map_err(|e| format!("{f}: {e}"))?;
                assert!(
                    recs.len() >= 2,
                    "{f} has no rows at scale {scale} day {day}"
                );
            }
            check_json(&fs::read(d.join("settings.json"))?)?;
        }
        Ok(())
    }

    #[test]
    fn mtimes_are_the_export_time() -> R {
        let s = Scratch::new("mtime");
        for day in [0, 11] {
            let d = s.dir(&format!("d{day}"));
            gen(&d, day, 0.01)?;
            let want = UNIX_EPOCH + Duration::from_secs(export_time(day).unsigned_abs());
            for f in ALL {
                assert_eq!(fs::metadata(d.join(f))?.modified()?, want, "{f} day {day}");
            }
        }
        Ok(())
    }

    #[test]
    fn bad_scale_is_rejected() {
        let d = std::env::temp_dir().join("arca-demo-gen-never-created");
        for scale in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let e = generate_day(&d, 0, &GenOptions { scale, seed: 1 });
            assert!(
                matches!(&e, Err(e) if e.kind() == io::ErrorKind::InvalidInput),
                "scale {scale}"
            );
        }
        assert!(!d.exists());
        assert_eq!(
            GenOptions::default(),
            GenOptions {
                scale: 0.05,
                seed: 42
            }
        );
    }
}
