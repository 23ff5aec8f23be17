//! `sygno`: the local modes. `serve` runs the API with a store and its
//! aggregator (the embedded store by default, or a DynamoDB table with a
//! Streams poller); `rebuild` recomputes every aggregate from the event log
//! (of a stopped embedded store, or online on a DynamoDB table); `table
//! create` makes a DynamoDB table.

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use rand::Rng;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;
use std::time::Instant;
use sygno_aggregator::dynamo;
use sygno_aggregator::dynamo::rebuild::Progress;
use sygno_handlers::local::{rebuild_store, serve, serve_dynamo, system_clock, ServeOptions};
use sygno_handlers::server::ConnectionOptions;
use sygno_shared::domain::auth::{ApiKeys, Role};
use sygno_shared::domain::limit::{
    parse_max_fields, parse_max_sources, DEFAULT_MAX_FIELDS, DEFAULT_MAX_SOURCES,
};
use sygno_shared::domain::series::Retention;
use sygno_shared::domain::time::format_rfc3339;
use sygno_shared::store::dynamo::{DynamoStore, TTL_ATTRIBUTE};
use sygno_shared::store::embedded::EmbeddedStore;
use sygno_shared::store::{EventLog, StoreError};
use sygno_shared::telemetry;
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(
    name = "sygno",
    version,
    about = "Ingests raw JSON events and serves live statistics over them."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API on a store, with the aggregator.
    ///
    /// API keys come from SYGNO_API_KEYS ("ROLES=SECRET,...", roles write,
    /// read, admin joined by "+", SECRET plain or `sha256:<hex>`).
    Serve(ServeArgs),
    /// Rebuild every aggregate from the event log. The embedded store must
    /// be stopped (for a running server use POST /admin/rebuild); on
    /// DynamoDB the rebuild runs online, while writes and the aggregator go on.
    Rebuild(RebuildArgs),
    /// Manage the DynamoDB table (region, credentials and endpoint from the
    /// standard AWS configuration, e.g. AWS_ENDPOINT_URL_DYNAMODB).
    Table {
        #[command(subcommand)]
        action: TableAction,
    },
}

#[derive(Subcommand)]
enum TableAction {
    /// Create the table with its stream (NEW_IMAGE) and TTL; does nothing
    /// to a table that exists.
    Create {
        #[arg(long, env = "SYGNO_TABLE")]
        table: String,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StoreKind {
    /// SQLite files in --data-dir.
    Embedded,
    /// The DynamoDB table --table (region, credentials and endpoint from
    /// the standard AWS configuration).
    Dynamodb,
}

#[derive(Args)]
struct StoreArgs {
    /// Where events and aggregates live.
    #[arg(long, env = "SYGNO_STORE", value_enum, default_value = "embedded")]
    store: StoreKind,
    /// Directory of the embedded store (created if missing).
    #[arg(long, env = "SYGNO_DATA_DIR", default_value = "sygno-data")]
    data_dir: PathBuf,
    /// DynamoDB table (with --store dynamodb; create it with `sygno table create`).
    #[arg(long, env = "SYGNO_TABLE", required_if_eq("store", "dynamodb"))]
    table: Option<String>,
    /// DynamoDB rebuilds: seconds between the rebuild's cut and its read of
    /// the log; longer than any write takes.
    #[arg(long, env = "SYGNO_REBUILD_SETTLE_SECS", default_value_t = 30)]
    rebuild_settle_secs: u64,
    /// Distinct numeric fields each aggregate (a source, or all events)
    /// takes within its 7-day window; more are stored but not aggregated.
    #[arg(long, env = "SYGNO_MAX_FIELDS", default_value_t = DEFAULT_MAX_FIELDS,
          value_parser = |text: &str| parse_max_fields(Some(text)))]
    max_fields: usize,
    /// Distinct sources the event log takes; a write naming a new source
    /// past it is refused (422 `too_many_sources`), nothing stored.
    #[arg(long, env = "SYGNO_MAX_SOURCES", default_value_t = DEFAULT_MAX_SOURCES,
          value_parser = |text: &str| parse_max_sources(Some(text)))]
    max_sources: usize,
    /// Days minute summaries are kept (series at 1m, 5m, 15m); at least 8.
    #[arg(long, env = "SYGNO_MINUTE_RETENTION_DAYS", default_value = "35")]
    minute_retention_days: String,
    /// Days hour summaries are kept (series at 1h, 6h, 1d); default: as
    /// long as the log.
    #[arg(long, env = "SYGNO_HOUR_RETENTION_DAYS")]
    hour_retention_days: Option<String>,
}

impl StoreArgs {
    fn retention(&self) -> anyhow::Result<Retention> {
        Retention::from_days(
            Some(&self.minute_retention_days),
            self.hour_retention_days.as_deref(),
        )
        .map_err(anyhow::Error::msg)
    }

    fn rebuild_options(&self, force: bool) -> dynamo::rebuild::Options {
        dynamo::rebuild::Options {
            max_fields: self.max_fields,
            settle: Duration::from_secs(self.rebuild_settle_secs),
            force,
            ..dynamo::rebuild::Options::default()
        }
    }

    fn table(&self) -> anyhow::Result<&str> {
        self.table
            .as_deref()
            .context("--store dynamodb needs --table (or SYGNO_TABLE)")
    }
}

#[derive(Args)]
struct RebuildArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// DynamoDB: start even though another rebuild seems to be in progress
    /// (one that died; its half-built generation is abandoned).
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "SYGNO_ADDR", default_value = "127.0.0.1:5005")]
    addr: String,
    #[command(flatten)]
    store: StoreArgs,
    /// Also generate a random write key and read key, printed once.
    #[arg(long)]
    dev: bool,
    /// Seconds a client has to send a request's headers (from connecting,
    /// or from the end of its previous response).
    #[arg(long, env = "SYGNO_HEADER_TIMEOUT_SECS", default_value_t = 10.0)]
    header_timeout_secs: f64,
    /// Seconds a client has to send a request's body once its headers arrived.
    #[arg(long, env = "SYGNO_BODY_TIMEOUT_SECS", default_value_t = 30.0)]
    body_timeout_secs: f64,
    /// Most connections open at once. Default: the file-descriptor limit
    /// (soft RLIMIT_NOFILE) less 64, at most 16384. At the cap the oldest
    /// connections are asked to close (idle ones close at once).
    #[arg(long, env = "SYGNO_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Record no metrics and answer 404 at /metrics.
    #[arg(long, env = "SYGNO_NO_METRICS")]
    no_metrics: bool,
}

impl ServeArgs {
    fn options(&self) -> anyhow::Result<ServeOptions> {
        let seconds = |value: f64, flag: &str| {
            Duration::try_from_secs_f64(value)
                .ok()
                .filter(|d| !d.is_zero())
                .with_context(|| format!("--{flag} must be a positive number of seconds"))
        };
        Ok(ServeOptions {
            connections: ConnectionOptions {
                header_timeout: seconds(self.header_timeout_secs, "header-timeout-secs")?,
                body_timeout: seconds(self.body_timeout_secs, "body-timeout-secs")?,
                max_connections: self.max_connections,
            },
            metrics: !self.no_metrics,
            ..ServeOptions::default()
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init(telemetry::json_requested());
    match cli.command {
        Command::Serve(args) => run_serve(args).await,
        Command::Rebuild(args) => match args.store.store {
            StoreKind::Embedded => run_rebuild(args.store).await,
            StoreKind::Dynamodb => run_dynamo_rebuild(args).await,
        },
        Command::Table {
            action: TableAction::Create { table },
        } => {
            DynamoStore::from_env(&table)
                .await
                .create_table()
                .await
                .with_context(|| format!("creating table {table}"))?;
            writeln!(
                std::io::stdout(),
                "table {table} is ready: keys pk/sk, stream NEW_IMAGE, TTL on {TTL_ATTRIBUTE}"
            )?;
            Ok(())
        }
    }
}

fn configured_keys() -> anyhow::Result<ApiKeys> {
    match std::env::var("SYGNO_API_KEYS") {
        Ok(spec) => Ok(ApiKeys::parse(&spec)?),
        Err(std::env::VarError::NotPresent) => Ok(ApiKeys::default()),
        Err(std::env::VarError::NotUnicode(_)) => bail!("SYGNO_API_KEYS is not valid UTF-8"),
    }
}

fn random_key() -> String {
    let bytes: [u8; 24] = rand::rng().random();
    hex::encode(bytes)
}

fn open_store(args: &StoreArgs) -> anyhow::Result<EmbeddedStore> {
    let store = match EmbeddedStore::open(&args.data_dir) {
        Err(StoreError::Locked(dir)) => bail!(
            "the data directory {dir} is in use by a running sygno; stop it first, or rebuild online with POST /admin/rebuild"
        ),
        other => other.with_context(|| format!("opening the store in {}", args.data_dir.display()))?,
    };
    store.set_max_sources(args.max_sources);
    Ok(store)
}

async fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut keys = configured_keys()?;
    let mut out = std::io::stdout().lock();
    if args.dev {
        let (write, read) = (random_key(), random_key());
        keys.add(&write, &[Role::Write]);
        keys.add(&read, &[Role::Read]);
        writeln!(
            out,
            "--dev: generated API keys (shown once, valid until this process stops)"
        )?;
        writeln!(out, "  write key: {write}")?;
        writeln!(out, "  read key:  {read}")?;
    }
    if keys.is_empty() {
        bail!("no API keys: set SYGNO_API_KEYS (for example SYGNO_API_KEYS=\"write=...,read=...\") or start with --dev");
    }
    let serve_options = args.options()?;
    let retention = args.store.retention()?;
    if args.store.store == StoreKind::Dynamodb {
        let table = args.store.table()?;
        let store = DynamoStore::from_env(table)
            .await
            .with_retention(retention)
            .with_max_sources(args.store.max_sources);
        store
            .ping()
            .await
            .with_context(|| format!("reaching DynamoDB table {table}"))?;
        let listener = bind(&args.addr).await?;
        let addr = listener.local_addr()?;
        let shutdown = shutdown_signal();
        writeln!(
            out,
            "sygno listening on http://{addr} (DynamoDB table {table})"
        )?;
        out.flush()?;
        drop(out);
        let options = args.store.rebuild_options(false);
        serve_dynamo(
            listener,
            store,
            keys,
            system_clock(),
            options,
            serve_options.retain(retention),
            shutdown,
        )
        .await?;
        return Ok(());
    }
    let store = open_store(&args.store)?;
    let listener = bind(&args.addr).await?;
    let addr = listener.local_addr()?;
    let shutdown = shutdown_signal();
    writeln!(
        out,
        "sygno listening on http://{addr} (data in {})",
        args.store.data_dir.display()
    )?;
    out.flush()?;
    drop(out);
    let max_fields = args.store.max_fields;
    serve(
        listener,
        store,
        keys,
        system_clock(),
        max_fields,
        serve_options.retain(retention),
        shutdown,
    )
    .await?;
    Ok(())
}

async fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))
}

async fn run_dynamo_rebuild(args: RebuildArgs) -> anyhow::Result<()> {
    let table = args.store.table()?;
    // Rebuilt summaries carry the configured retention's TTL.
    let store = DynamoStore::from_env(table)
        .await
        .with_retention(args.store.retention()?);
    let options = args.store.rebuild_options(args.force);
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut progress = |p: Progress| match p {
        Progress::Started { generation, cut } => eprintln!(
            "rebuild: generation {generation}; reading events received up to {} in {} s",
            format_rfc3339(cut),
            options.settle.as_secs() + options.margin.as_secs()
        ),
        Progress::Read(read) if last_report.elapsed().as_millis() >= 500 => {
            last_report = Instant::now();
            eprintln!("rebuild: {read} events read");
        }
        Progress::Read(_) => {}
        Progress::Cleaned { deleted } => {
            eprintln!("rebuild: switched over; {deleted} items of older generations deleted")
        }
        Progress::Merged(done, total) => {
            if done == total || last_report.elapsed().as_millis() >= 500 {
                last_report = Instant::now();
                eprintln!("rebuild: {done}/{total} summaries and aggregates written");
            }
        }
    };
    let report = dynamo::rebuild::rebuild(&store, &system_clock(), options, &mut progress)
        .await
        .with_context(|| format!("rebuilding the aggregates of table {table}"))?;
    writeln!(
        std::io::stdout(),
        "rebuilt the aggregates of {table} from {} events (generation {}, {} summaries; \
         {} log items skipped) in {:.1} s",
        report.events,
        report.generation,
        report.summaries,
        report.skipped,
        started.elapsed().as_secs_f64()
    )?;
    Ok(())
}

async fn run_rebuild(args: StoreArgs) -> anyhow::Result<()> {
    let store = open_store(&args)?;
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut progress = |read: u64, target: u64| {
        if last_report.elapsed().as_millis() >= 500 || read >= target {
            last_report = Instant::now();
            let percent = (read * 100).checked_div(target).unwrap_or(100);
            eprintln!("rebuild: {read}/{target} events ({percent}%)");
        }
    };
    let rebuilt = rebuild_store(&store, &system_clock(), args.max_fields, &mut progress).await?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "rebuilt the aggregates from the log up to event {} ({} aggregates, {} summaries) in {:.1} s",
        rebuilt.checkpoint,
        rebuilt.scopes.len(),
        rebuilt.summaries,
        started.elapsed().as_secs_f64()
    )?;
    Ok(())
}

/// Completes on SIGINT or SIGTERM. The handlers are installed when this is
/// called, not when the future is first polled: a signal that comes after
/// "listening" is printed but before the server first waits on it (while
/// the aggregates load, or on a starved runtime) still stops the server
/// gracefully instead of killing it.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let listen = |kind: SignalKind| match signal(kind) {
        Ok(signal) => Some(signal),
        Err(e) => {
            tracing::warn!(error = %e, "a shutdown signal cannot be listened for");
            None
        }
    };
    let interrupt = listen(SignalKind::interrupt());
    let terminate = listen(SignalKind::terminate());
    async move {
        tokio::select! {
            () = received(interrupt) => {},
            () = received(terminate) => {},
        }
        tracing::info!("shutdown signal received");
    }
}

/// Completes when `signal` comes (never without one).
async fn received(signal: Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(mut signal) => {
            signal.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}
