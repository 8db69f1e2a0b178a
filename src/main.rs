//! The `auditrail` binary: parse the command line, set up logging, and hand over to the
//! library. Exit codes: 0 done, 1 failed while running, 2 bad config, unreadable input or a
//! bad command line (clap's own usage errors exit 2 too).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use auditrail::check::{
    self, CheckError, ExplainFormat, ExplainOptions, LineRange, LineRangeError,
};
use auditrail::config::{Config, Purpose};
use auditrail::pipeline::Processor;
use auditrail::report;
use auditrail::verify::Options as VerifyOptions;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "auditrail",
    version,
    about = "Ship an application's audit trail from its stdout to Kafka"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Read a finite input once and print every record that would be shipped, one JSON line
    /// each; a summary of the counts goes to stderr.
    Check {
        #[arg(long, short)]
        config: PathBuf,
        /// The log to read (`-` for stdin); takes the place of `source.paths`.
        #[arg(long, short)]
        input: String,
        /// Instead of the records, say for each input line why it was or was not shipped:
        /// framing, pre-check, JSON objects and detectors, type, filters, retention.
        #[arg(long)]
        explain: bool,
        /// With --explain: only physical lines N-M (from 1, as `grep -n` numbers them); `N`
        /// is one line, `N-` runs to the end.
        #[arg(
            long,
            value_name = "N-M",
            requires = "explain",
            allow_hyphen_values = true,
            value_parser = parse_lines
        )]
        lines: Option<LineRange>,
        /// With --explain: `text` (the default) or `json` (one object per entry).
        #[arg(long, value_name = "FORMAT", requires = "explain", value_parser = parse_explain_format)]
        explain_format: Option<ExplainFormat>,
    },
    /// Check a config and explain every problem it has.
    Validate {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Tail the configured files and ship records to the configured outputs until SIGTERM.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Integrity helpers.
    Integrity {
        #[command(subcommand)]
        command: IntegrityCommand,
    },
    /// Read the audit topics from their beginning to their end at start and check every
    /// segment's chain and digests: a JSON report on stdout, a summary on stderr; exit 0
    /// when clean, 1 on any sign of tampering or loss, 2 when nothing could be verified.
    Verify(VerifyArgs),
}

/// `auditrail verify`'s options, as given on the command line.
#[derive(clap::Args)]
struct VerifyArgs {
    /// Kafka brokers, host:port[,host:port…] (wins over the config's).
    #[arg(long)]
    brokers: Option<String>,
    /// An auditrail config: brokers and security settings from outputs.kafka, and the
    /// topics of retention.classes (and the dead-letter topic) unless --topic is given.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// A topic to read (repeat for each; every class topic a segment's records go to).
    #[arg(long = "topic", value_name = "TOPIC")]
    topics: Vec<String>,
    /// The topic the digests are in (wins over the config's integrity.digests.topic).
    #[arg(long)]
    digest_topic: Option<String>,
    /// The Ed25519 public key (PEM) digests must be signed with.
    #[arg(long, value_name = "FILE")]
    public_key: Option<PathBuf>,
    /// The chain key (the Secret's file): links are HMAC-SHA-256 (wins over the
    /// config's integrity.chain_key_file).
    #[arg(long, value_name = "FILE")]
    chain_key_file: Option<PathBuf>,
    /// Give up (exit 2) when nothing could be read for this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    stall_timeout: u64,
    /// Seconds between progress lines on stderr (0: none).
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    progress_every: u64,
}

impl VerifyArgs {
    fn options(self) -> VerifyOptions {
        VerifyOptions {
            brokers: self.brokers,
            config: self.config,
            topics: self.topics,
            digest_topic: self.digest_topic,
            public_key: self.public_key,
            chain_key_file: self.chain_key_file,
            stall_timeout: Duration::from_secs(self.stall_timeout),
            progress_every: Duration::from_secs(self.progress_every),
        }
    }
}

#[derive(Subcommand)]
enum IntegrityCommand {
    /// Print the public key (PEM) of the digests' Ed25519 signing key: the file
    /// `verify --public-key` takes.
    PublicKey {
        /// The signing key (PKCS#8 PEM); wins over the config's.
        #[arg(long, value_name = "FILE")]
        signing_key_file: Option<PathBuf>,
        /// An auditrail config: the key of integrity.digests.signing_key_file.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

/// Exit code for a bad config or unreadable input.
const USAGE: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Check {
            config,
            input,
            explain,
            lines,
            explain_format,
        } => {
            let explain = explain.then(|| ExplainOptions {
                lines: lines.unwrap_or(LineRange::ALL),
                format: explain_format.unwrap_or_default(),
            });
            check(&config, &input, explain)
        }
        Command::Validate { config } => validate(&config),
        Command::Run { config } => run(&config),
        Command::Integrity {
            command:
                IntegrityCommand::PublicKey {
                    signing_key_file,
                    config,
                },
        } => {
            match auditrail::public_key::public_key_pem(
                signing_key_file.as_deref(),
                config.as_deref(),
            ) {
                Ok(pem) => {
                    print!("{pem}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(USAGE, &e),
            }
        }
        Command::Verify(args) => verify(&args.options()),
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // JSON inside a cluster (no terminal), a human format on a terminal.
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        builder.init();
    } else {
        builder.json().flatten_event(true).init();
    }
}

fn fail(code: u8, error: &dyn std::error::Error) -> ExitCode {
    eprintln!("auditrail: {}", report(error));
    ExitCode::from(code)
}

fn parse_lines(s: &str) -> Result<LineRange, LineRangeError> {
    s.parse()
}

fn parse_explain_format(s: &str) -> Result<ExplainFormat, String> {
    s.parse()
}

fn check(config_path: &Path, input: &str, explain: Option<ExplainOptions>) -> ExitCode {
    let config = match Config::load(config_path, Purpose::Check) {
        Ok(c) => c,
        Err(e) => return fail(USAGE, &e),
    };
    let processor = match Processor::new(config.stages()) {
        Ok(p) => p,
        Err(e) => return fail(USAGE, &e),
    };
    let mut out = std::io::stdout().lock();
    let done = match explain {
        None => check::check(&config, &processor, input, &mut out),
        Some(options) => check::explain(&config, &processor, input, options, &mut out),
    };
    match done {
        Ok(stats) => {
            let summary = serde_json::to_string(&stats).unwrap_or_default();
            let _ = writeln!(std::io::stderr(), "{summary}");
            ExitCode::SUCCESS
        }
        Err(e @ CheckError::Input { .. }) => fail(USAGE, &e),
        Err(e) => fail(1, &e),
    }
}

fn validate(config_path: &Path) -> ExitCode {
    match Config::load(config_path, Purpose::Run) {
        Ok(_) => {
            println!("{}: ok", config_path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: invalid", config_path.display());
            for problem in e.problems() {
                eprintln!("  {problem}");
            }
            ExitCode::from(USAGE)
        }
    }
}

fn run(config_path: &Path) -> ExitCode {
    let config = match Config::load(config_path, Purpose::Run) {
        Ok(c) => c,
        Err(e) => return fail(USAGE, &e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(1, &e),
    };
    match runtime.block_on(auditrail::run::run(config, config_path.to_path_buf())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = report(&e), "auditrail stopped");
            ExitCode::from(if e.is_usage() { USAGE } else { 1 })
        }
    }
}

fn verify(options: &VerifyOptions) -> ExitCode {
    match auditrail::verify::run(options) {
        Ok(report) => {
            eprint!("{}", report.summary());
            let json = serde_json::to_string_pretty(&report).unwrap_or_default();
            let _ = writeln!(std::io::stdout(), "{json}");
            ExitCode::from(if report.clean { 0 } else { 1 })
        }
        Err(e) => fail(USAGE, &e),
    }
}
