//! `auditrail-gen`: the standard benchmark workload (issue 8), deterministic from a seed.
//!
//! Writes a kubelet CRI log (`<RFC3339Nano> stdout F <json>`), one physical line per logical
//! line, no partial chunks:
//!
//! - 10% (`--audit-percent`) Immuta-style audit records, about 600 bytes a CRI line:
//!   `"level":"audit"`, a `recordType` from [`RECORD_TYPES`], a `dataAccess.query` SQL string,
//!   `id` and `sessionId`, `userId`, `profileId`, `timestamp` (ISO-8601) and `dateTime` (epoch ms);
//! - 90% ordinary JSON application lines, about 214 bytes a CRI line: `level` info (70%),
//!   debug (20%) or warning (10%), `timestamp`, `message`, `requestId`, `durationMs`, `path`.
//!
//! About 250 bytes a line on average, so 1,000,000 lines make about 250 MB. Which lines are
//! audit records is drawn per line (so the share is 10% on average, not exactly); the summary
//! printed on stderr (`{"lines","audit","ordinary","bytes"}`) gives the exact counts.
//!
//! Two modes:
//! - file (default): `--lines N` lines; the CRI timestamps start at `--start` and advance by
//!   0–200 µs a line (drawn from the seed), so the same seed gives the same bytes;
//! - live (`--rate BYTES_PER_SEC --duration SECONDS`): appends to `--output` at that rate, in
//!   10 ms batches, with the current time as each line's CRI timestamp (for latency
//!   measurements); the content is still drawn from the seed, only the timestamps are live.
//!
//! ```sh
//! auditrail-gen --lines 1000000 --seed 1 --output /tmp/bench/0.log
//! auditrail-gen --rate 10000000 --duration 60 --output /var/log/pods/x/app/0.log
//! ```

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "auditrail-gen",
    about = "Write the standard auditrail benchmark workload: a CRI log, 10% Immuta audit records"
)]
struct Cli {
    /// Lines to write (file mode). In live mode, an optional cap.
    #[arg(long)]
    lines: Option<u64>,
    /// Seed of the generator: the same seed, line count and start give the same bytes.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Percentage of lines that are audit records.
    #[arg(long, default_value_t = 10.0)]
    audit_percent: f64,
    /// CRI timestamp of the first line (file mode).
    #[arg(long, default_value = "2026-01-01T00:00:00Z")]
    start: String,
    /// Where to write (appended to; created if missing); stdout when absent.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Live mode: bytes per second to append, with current timestamps.
    #[arg(long)]
    rate: Option<u64>,
    /// Live mode: how long to write, in seconds.
    #[arg(long, default_value_t = 60.0)]
    duration: f64,
}

/// splitmix64: tiny, fast, and good enough to vary a workload deterministically.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() >> 32) * n) >> 32
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A random UUID-shaped id (version 4 layout).
    fn uuid(&mut self, out: &mut String) {
        let a = self.next();
        let b = self.next();
        let _ = write!(
            out,
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | (b >> 48) & 0x3fff,
            b & 0xffff_ffff_ffff
        );
    }
}

/// Immuta audit record types. The first six are kept forever by `examples/auditrail.yaml`'s
/// retention, the others 60 days, so both class topics receive records.
const RECORD_TYPES: &[&str] = &[
    "sqlQuery",
    "blobFetch",
    "spark",
    "globalPolicyCreate",
    "policyExemption",
    "dataSourceSubscription",
    "dataSourceGet",
    "dataSourceCreate",
    "dataSourceUpdate",
    "dataSourceDelete",
    "projectCreate",
    "projectUpdate",
    "authenticate",
    "apiKeyCreated",
    "purposeCreate",
    "userUpdate",
];

const COMPONENTS: &[&str] = &[
    "dataSource",
    "governance",
    "project",
    "policy",
    "auth",
    "query-engine",
];

const TABLES: &[&str] = &[
    "public.customer_orders",
    "finance.ledger_entries",
    "hr.employee_compensation",
    "sales.opportunities_2025",
    "marketing.campaign_events",
    "clinical.patient_visits",
];

const COLUMNS: &[&str] = &[
    "customer_id",
    "order_total",
    "created_at",
    "region_code",
    "account_status",
    "email_address",
    "postal_code",
    "last_login_at",
];

const MESSAGES: &[&str] = &[
    "request completed",
    "cache miss, loading from store",
    "connection pool refilled",
    "user session refreshed",
    "policy evaluation finished",
    "slow upstream response",
];

const PATHS: &[&str] = &[
    "/api/v2/dataSource",
    "/api/v2/project",
    "/api/v2/policy/global",
    "/api/v2/user/profile",
    "/bim/query",
];

/// Draws one application line (without the CRI prefix) into `out`; returns whether it is an
/// audit record. `at` is the runtime's timestamp of the line: the application's own times are
/// a few milliseconds earlier.
fn application_line(
    rng: &mut Rng,
    audit_fraction: f64,
    at: DateTime<Utc>,
    out: &mut String,
) -> bool {
    let app_time = at - chrono::Duration::microseconds(rng.below(5_000) as i64);
    let timestamp = app_time.to_rfc3339_opts(SecondsFormat::Millis, true);
    if rng.unit() < audit_fraction {
        let record_type = rng.pick(RECORD_TYPES);
        let table = rng.pick(TABLES);
        out.push_str("{\"level\":\"audit\",\"timestamp\":\"");
        out.push_str(&timestamp);
        let _ = write!(out, "\",\"message\":\"Audit - {record_type}\",\"id\":\"");
        rng.uuid(out);
        let _ = write!(
            out,
            "\",\"dateTime\":{},\"component\":\"{}\",\"profileId\":{},\"userId\":\"user{}@example.com\",\"recordType\":\"{record_type}\",\"success\":{},",
            app_time.timestamp_millis(),
            rng.pick(COMPONENTS),
            rng.below(5_000),
            rng.below(100_000),
            rng.below(50) != 0,
        );
        let _ = write!(
            out,
            "\"dataAccess\":{{\"dataSourceId\":{},\"projectId\":{},\"purposeIds\":[{},{}],\"query\":\"SELECT {}, {}, {} FROM {table} WHERE {} = '{}' AND {} > '2025-{:02}-{:02}' LIMIT {}\"}},",
            rng.below(10_000),
            rng.below(1_000),
            rng.below(100),
            rng.below(100),
            rng.pick(COLUMNS),
            rng.pick(COLUMNS),
            rng.pick(COLUMNS),
            rng.pick(COLUMNS),
            rng.below(1_000_000),
            rng.pick(COLUMNS),
            1 + rng.below(12),
            1 + rng.below(28),
            10 * (1 + rng.below(100)),
        );
        out.push_str("\"sessionId\":\"");
        rng.uuid(out);
        out.push_str("\"}");
        true
    } else {
        let level = match rng.below(10) {
            0..=6 => "info",
            7 | 8 => "debug",
            _ => "warning",
        };
        let _ = write!(
            out,
            "{{\"level\":\"{level}\",\"timestamp\":\"{timestamp}\",\"message\":\"{}\",\"requestId\":\"{:016x}\",\"durationMs\":{},\"path\":\"{}/{}\"}}",
            rng.pick(MESSAGES),
            rng.next(),
            rng.below(2_000),
            rng.pick(PATHS),
            rng.below(100_000),
        );
        false
    }
}

#[derive(Default)]
struct Counts {
    lines: u64,
    audit: u64,
    bytes: u64,
}

impl Counts {
    fn summary(&self, seconds: Option<f64>) -> String {
        let mut s = format!(
            "{{\"lines\":{},\"audit\":{},\"ordinary\":{},\"bytes\":{}",
            self.lines,
            self.audit,
            self.lines - self.audit,
            self.bytes
        );
        if let Some(t) = seconds {
            let _ = write!(s, ",\"seconds\":{t:.3}");
        }
        s.push('}');
        s
    }
}

/// Appends one CRI line for time `at` to `out`.
fn cri_line(
    rng: &mut Rng,
    audit_fraction: f64,
    at: DateTime<Utc>,
    out: &mut String,
    counts: &mut Counts,
) {
    let start = out.len();
    out.push_str(&at.to_rfc3339_opts(SecondsFormat::Nanos, true));
    out.push_str(" stdout F ");
    if application_line(rng, audit_fraction, at, out) {
        counts.audit += 1;
    }
    out.push('\n');
    counts.lines += 1;
    counts.bytes += (out.len() - start) as u64;
}

fn main() -> io::Result<()> {
    let cli = Cli::parse();
    let audit_fraction = (cli.audit_percent / 100.0).clamp(0.0, 1.0);
    let mut rng = Rng(cli.seed);
    let mut counts = Counts::default();
    let mut text = String::with_capacity(256 * 1024);

    let sink: Box<dyn Write> = match &cli.output {
        Some(path) => Box::new(OpenOptions::new().create(true).append(true).open(path)?),
        None => Box::new(io::stdout().lock()),
    };

    match cli.rate {
        None => {
            let start = DateTime::parse_from_rfc3339(&cli.start)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("--start: {e}")))?
                .with_timezone(&Utc);
            let lines = cli.lines.unwrap_or(1_000_000);
            let mut out = BufWriter::with_capacity(1 << 20, sink);
            let mut at = start;
            for _ in 0..lines {
                at += chrono::Duration::microseconds(rng.below(201) as i64);
                cri_line(&mut rng, audit_fraction, at, &mut text, &mut counts);
                if text.len() >= 128 * 1024 {
                    out.write_all(text.as_bytes())?;
                    text.clear();
                }
            }
            out.write_all(text.as_bytes())?;
            out.flush()?;
            eprintln!("{}", counts.summary(None));
        }
        Some(rate) => {
            // Whole lines only, one write per 10 ms tick, so a tailer never sees half a line
            // for long and the timestamps are at most one tick older than the write.
            let mut out = sink;
            let began = Instant::now();
            let duration = Duration::from_secs_f64(cli.duration.max(0.0));
            let cap = cli.lines.unwrap_or(u64::MAX);
            let tick = Duration::from_millis(10);
            let mut next = began;
            while began.elapsed() < duration && counts.lines < cap {
                let due = (rate as f64 * began.elapsed().as_secs_f64()) as u64;
                while counts.bytes < due && counts.lines < cap {
                    cri_line(&mut rng, audit_fraction, Utc::now(), &mut text, &mut counts);
                }
                if !text.is_empty() {
                    out.write_all(text.as_bytes())?;
                    text.clear();
                }
                next += tick;
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            out.flush()?;
            eprintln!("{}", counts.summary(Some(began.elapsed().as_secs_f64())));
        }
    }
    Ok(())
}
