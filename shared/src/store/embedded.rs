//! The embedded store: SQLite on disk, the local default.
//!
//! # Files in the data directory
//! - `events.db`: the event log (`events`, append-only by trigger) and the
//!   idempotency records, WAL mode, `synchronous=FULL`: a commit is on disk
//!   before any append it holds is acknowledged.
//! - `aggregates.db`: minute and hour summaries per aggregate (in
//!   generations: a rebuild fills a new one and switches to it), scope
//!   states, rendered rows and sources entries, and the checkpoint. A separate file, so the aggregator never waits for the
//!   event writer's lock, and rows are derived data that a rebuild remakes.
//! - `sygno.lock`: held (advisory lock) while a process has the store open,
//!   so two processes never fold the same log into the same rows.
//!
//! # Group commit
//! One writer thread owns the log's write connection. Appends queue on a
//! channel; the thread takes every queued append (up to [`MAX_GROUP`]), writes
//! them in one transaction (a savepoint each, so one failure fails only its
//! own request), commits once, then answers them all. Durability therefore
//! costs one fsync per group, not per request. After each commit it
//! publishes the new head sequence number, which wakes the aggregator.

use crate::domain::event::{Appended, LoggedEvent, NewEvent};
use crate::domain::expose::ExposeKind;
use crate::domain::fold::{Scope, SummaryKey};
use crate::domain::limit::DEFAULT_MAX_SOURCES;
use crate::domain::summary::Summary;
use crate::domain::tiers::Tier;
use crate::store::codec::{self, decode_summary, encode_summary};
use crate::store::{
    AggregateCommit, AggregateStore, ChangeFeed, EventLog, Result, StoreError, StoredAggregates,
    ViewStore,
};
use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use tokio::sync::{mpsc, oneshot, watch};

/// Most events committed in one transaction (but a single request's
/// batch, up to 1,000 events, always goes whole).
pub const MAX_GROUP: usize = 1024;
/// Most indexes of one tier [`AggregateStore::prune`] deletes per scope in
/// one call (a week of minutes).
const PRUNE_CHUNK: i64 = 7 * 24 * 60;
/// Read connections for series (SQLite reads in WAL mode run in parallel).
const SUMMARY_READERS: usize = 4;
/// Appends waiting for the writer before callers wait to enqueue.
const QUEUE: usize = 8192;

const EVENTS_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    event_time_ms INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    name TEXT NOT NULL,
    user_id TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency (
    user_id TEXT NOT NULL,
    key TEXT NOT NULL,
    seq INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (user_id, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log_sources (
    name TEXT PRIMARY KEY
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS events_append_only_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_append_only_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
";

/// The aggregates' schema version (`PRAGMA user_version`): a store of an
/// older one has its aggregates dropped at open, and the worker folds the
/// log again from the start (aggregates are derived data).
const AGGREGATES_VERSION: i64 = 4;

const AGGREGATES_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    checkpoint INTEGER NOT NULL,
    generation INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS summaries (
    generation INTEGER NOT NULL,
    scope TEXT NOT NULL,
    tier INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    summary BLOB NOT NULL,
    PRIMARY KEY (generation, scope, tier, idx)
);
CREATE TABLE IF NOT EXISTS scopes (
    scope TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    field_limit BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS views (
    scope TEXT NOT NULL,
    kind TEXT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (scope, kind)
);
CREATE TABLE IF NOT EXISTS sources (
    name TEXT PRIMARY KEY,
    doc TEXT NOT NULL
);
";

/// The tables of every older version of the aggregates (1: one global
/// aggregate; 2: summaries in a WITHOUT ROWID table, which stores rows of
/// kilobytes poorly).
const OLDER_AGGREGATE_TABLES: &str = "
DROP TABLE IF EXISTS checkpoint; DROP TABLE IF EXISTS buckets;
DROP TABLE IF EXISTS latest; DROP TABLE IF EXISTS views;
DROP TABLE IF EXISTS meta; DROP TABLE IF EXISTS summaries;
DROP TABLE IF EXISTS scopes; DROP TABLE IF EXISTS sources;
";

/// A scope as the `scope` columns hold it: `''` for all events, else the
/// source's name (never empty).
fn scope_column(scope: &Scope) -> &str {
    scope.name().unwrap_or("")
}

fn scope_of_column(text: String) -> Scope {
    if text.is_empty() {
        Scope::All
    } else {
        Scope::Source(text)
    }
}

fn tier_column(tier: Tier) -> i64 {
    match tier {
        Tier::Minute => 0,
        Tier::Hour => 1,
    }
}

/// One request's appends: one event, or a whole batch (stored all or none).
struct AppendJob {
    events: Vec<NewEvent>,
    reply: oneshot::Sender<Result<Vec<Appended>>>,
}

/// The SQLite store. Cheap to clone; the writer thread stops when the last
/// clone is dropped, after committing what was queued.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

struct Inner {
    dir: PathBuf,
    writer: Option<mpsc::Sender<AppendJob>>,
    writer_thread: Option<JoinHandle<()>>,
    head: watch::Receiver<u64>,
    /// Read connection to `events.db` (feed and health).
    events: Mutex<Connection>,
    aggregates: Mutex<Connection>,
    /// Read connections to `aggregates.db` (series): several, so that
    /// series reads use every core ([`SUMMARY_READERS`]).
    summaries_readers: Vec<Mutex<Connection>>,
    /// The rendered rows and sources entries, as last committed.
    views: RwLock<Views>,
    /// The most distinct sources the log takes (read by the writer).
    max_sources: Arc<AtomicUsize>,
    /// Held for the store's life; released on drop.
    _lock: File,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel lets the writer commit what is queued and stop.
        self.writer.take();
        if let Some(thread) = self.writer_thread.take() {
            let _ = thread.join();
        }
    }
}

fn sql_err(e: rusqlite::Error) -> StoreError {
    StoreError::unavailable(e)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn open_db(path: &Path, synchronous: &str) -> Result<Connection> {
    let conn = Connection::open(path).map_err(sql_err)?;
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; PRAGMA busy_timeout = 5000;"
    ))
    .map_err(sql_err)?;
    Ok(conn)
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(StoreError::unavailable)?;
        let lock_file = File::create(dir.join("sygno.lock")).map_err(StoreError::unavailable)?;
        if lock_file.try_lock().is_err() {
            return Err(StoreError::Locked(dir.display().to_string()));
        }
        let events_path = dir.join("events.db");
        let writer_conn = open_db(&events_path, "FULL")?;
        writer_conn.execute_batch(EVENTS_SCHEMA).map_err(sql_err)?;
        let known = log_sources(&writer_conn).map_err(sql_err)?;
        let max_sources = Arc::new(AtomicUsize::new(DEFAULT_MAX_SOURCES));
        let reader = open_db(&events_path, "FULL")?;
        let head: u64 = reader
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))
            .map_err(sql_err)?;
        let aggregates = open_db(&dir.join("aggregates.db"), "NORMAL")?;
        migrate_aggregates(&aggregates)?;
        let views = load_views(&aggregates)?;
        let summaries_readers = (0..SUMMARY_READERS)
            .map(|_| open_db(&dir.join("aggregates.db"), "NORMAL").map(Mutex::new))
            .collect::<Result<Vec<_>>>()?;

        let (head_tx, head_rx) = watch::channel(head);
        let (tx, rx) = mpsc::channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("sygno-log-writer".into())
            .spawn({
                let max = Arc::clone(&max_sources);
                move || writer_loop(writer_conn, rx, head_tx, Sources { known, max })
            })
            .map_err(StoreError::unavailable)?;
        Ok(EmbeddedStore {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                writer: Some(tx),
                writer_thread: Some(thread),
                head: head_rx,
                events: Mutex::new(reader),
                aggregates: Mutex::new(aggregates),
                summaries_readers,
                views: RwLock::new(views),
                max_sources,
                _lock: lock_file,
            }),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Sets the most distinct sources the log takes (default
    /// [`DEFAULT_MAX_SOURCES`]): a batch naming a new source past it is
    /// refused whole. Sources already in the log stay writable.
    pub fn set_max_sources(&self, max: usize) {
        self.inner.max_sources.store(max, Ordering::SeqCst);
    }

    async fn with_events<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&lock(&inner.events)).map_err(sql_err))
            .await
            .map_err(StoreError::unavailable)?
    }

    async fn with_aggregates<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&mut lock(&inner.aggregates)))
            .await
            .map_err(StoreError::unavailable)?
    }
}

/// Creates the aggregates' tables; drops those of an older version.
fn migrate_aggregates(conn: &Connection) -> Result<()> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sql_err)?;
    if version < AGGREGATES_VERSION {
        if version > 0 || table_exists(conn, "buckets")? {
            tracing::warn!(
                "aggregates are of an older format: they will be folded again from the log"
            );
        }
        conn.execute_batch(OLDER_AGGREGATE_TABLES)
            .map_err(sql_err)?;
    }
    conn.execute_batch(AGGREGATES_SCHEMA).map_err(sql_err)?;
    // Stored before the v1 window rows were derived from the stats rows
    // (see `write_commit`); stale since.
    let derived: Vec<String> = ExposeKind::ALL
        .into_iter()
        .filter(|k| k.stats_row().is_some())
        .map(|k| format!("'{}'", k.as_str()))
        .collect();
    conn.execute(
        &format!("DELETE FROM views WHERE kind IN ({})", derived.join(", ")),
        [],
    )
    .map_err(sql_err)?;
    conn.execute_batch(&format!("PRAGMA user_version = {AGGREGATES_VERSION}"))
        .map_err(sql_err)
}

fn table_exists(conn: &Connection, name: &str) -> Result<bool> {
    conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
    .map_err(sql_err)
}

/// The rendered rows held for reads.
#[derive(Default)]
struct Views {
    rows: HashMap<(Scope, ExposeKind), Arc<str>>,
    sources: BTreeMap<String, Arc<str>>,
}

fn load_views(conn: &Connection) -> Result<Views> {
    let mut views = Views::default();
    let mut stmt = conn
        .prepare("SELECT scope, kind, doc FROM views")
        .map_err(sql_err)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .map_err(sql_err)?;
    for row in rows {
        let (scope, kind, doc) = row.map_err(sql_err)?;
        let Some(kind) = ExposeKind::parse(&kind) else {
            continue;
        };
        let scope = scope_of_column(scope);
        for derived in ExposeKind::ALL
            .into_iter()
            .filter(|d| d.stats_row() == Some(kind))
        {
            match crate::views::derive_window(derived, &doc) {
                Some(row) => {
                    views.rows.insert((scope.clone(), derived), Arc::from(row));
                }
                // The worker's first step renders every aggregate again.
                None => tracing::warn!(
                    source = scope.name().unwrap_or("(all events)"),
                    kind = kind.as_str(),
                    "a stored row that does not read was skipped"
                ),
            }
        }
        views.rows.insert((scope, kind), Arc::from(doc));
    }
    let mut stmt = conn
        .prepare("SELECT name, doc FROM sources")
        .map_err(sql_err)?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .map_err(sql_err)?;
    for row in rows {
        let (name, doc) = row.map_err(sql_err)?;
        views.sources.insert(name, Arc::from(doc));
    }
    Ok(views)
}

/// The sources of the log, as the writer checks new ones against the
/// bound: `log_sources` holds every name ever appended, written in the
/// same transaction as the events.
struct Sources {
    known: HashSet<String>,
    max: Arc<AtomicUsize>,
}

/// The names in `log_sources`, filled from the events first if the table
/// is new to a log that has events (a store from before the bound).
fn log_sources(conn: &Connection) -> rusqlite::Result<HashSet<String>> {
    let empty: bool = conn.query_row("SELECT NOT EXISTS (SELECT 1 FROM log_sources)", [], |r| {
        r.get(0)
    })?;
    if empty {
        conn.execute(
            "INSERT OR IGNORE INTO log_sources (name) SELECT DISTINCT name FROM events",
            [],
        )?;
    }
    let mut stmt = conn.prepare("SELECT name FROM log_sources")?;
    let names = stmt.query_map([], |r| r.get::<_, String>(0))?;
    names.collect()
}

fn writer_loop(
    mut conn: Connection,
    mut rx: mpsc::Receiver<AppendJob>,
    head: watch::Sender<u64>,
    mut sources: Sources,
) {
    let mut jobs = Vec::with_capacity(MAX_GROUP);
    // A job taken that would have made the last group pass MAX_GROUP.
    let mut held: Option<AppendJob> = None;
    while let Some(first) = held.take().or_else(|| rx.blocking_recv()) {
        let mut events = first.events.len();
        jobs.push(first);
        while events < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) if events + job.events.len() > MAX_GROUP => {
                    held = Some(job);
                    break;
                }
                Ok(job) => {
                    events += job.events.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        match commit_group(&mut conn, &jobs, &mut sources) {
            Ok(results) => {
                // Published before the answers: an acknowledged append is
                // within the head, and the aggregator wakes at once.
                let last = results
                    .iter()
                    .filter_map(|r| r.as_ref().ok().and_then(|(_, seq)| *seq))
                    .max();
                if let Some(seq) = last {
                    head.send_replace(seq);
                }
                for (job, result) in jobs.drain(..).zip(results) {
                    let _ = job.reply.send(result.map(|(appended, _)| appended));
                }
            }
            Err(e) => {
                tracing::error!(error.cause_chain = ?e, appends = jobs.len(), "event log commit failed");
                let message = e.to_string();
                for job in jobs.drain(..) {
                    let _ = job
                        .reply
                        .send(Err(StoreError::Unavailable(message.clone().into())));
                }
            }
        }
    }
}

type GroupResult = Vec<Result<(Vec<Appended>, Option<u64>)>>;

/// Commits a group of jobs in one transaction, each all or nothing; a job
/// naming new sources past the bound is refused, storing nothing.
fn commit_group(
    conn: &mut Connection,
    jobs: &[AppendJob],
    sources: &mut Sources,
) -> rusqlite::Result<GroupResult> {
    let max = sources.max.load(Ordering::SeqCst);
    let mut tx = conn.transaction()?;
    // New sources of the group's earlier jobs: known once it commits.
    let mut added: HashSet<String> = HashSet::new();
    let results = jobs
        .iter()
        .map(|job| {
            let new: BTreeSet<&str> = job
                .events
                .iter()
                .map(|e| e.name.as_str())
                .filter(|name| !sources.known.contains(*name) && !added.contains(*name))
                .collect();
            if !new.is_empty() && sources.known.len() + added.len() + new.len() > max {
                return Err(StoreError::TooManySources { max });
            }
            let appended = append_job(&mut tx, &job.events, &new).map_err(sql_err)?;
            added.extend(new.into_iter().map(str::to_owned));
            Ok(appended)
        })
        .collect();
    tx.commit()?;
    sources.known.extend(added);
    Ok(results)
}

/// Appends one request's events inside a savepoint, and registers its
/// `new_sources`: all of them, or (on any failure) none. Returns the
/// greatest new sequence number, `None` when every event was a duplicate.
fn append_job(
    tx: &mut Transaction<'_>,
    events: &[NewEvent],
    new_sources: &BTreeSet<&str>,
) -> rusqlite::Result<(Vec<Appended>, Option<u64>)> {
    let sp = tx.savepoint()?;
    let mut last = None;
    let appended = events
        .iter()
        .map(|e| {
            let (appended, seq) = append_one(&sp, e)?;
            last = seq.or(last);
            Ok(appended)
        })
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for name in new_sources {
        sp.prepare_cached("INSERT OR IGNORE INTO log_sources (name) VALUES (?1)")?
            .execute([name])?;
    }
    sp.commit()?;
    Ok((appended, last))
}

/// Appends one event (or finds its idempotent twin). Returns the new
/// sequence number, `None` for a duplicate.
fn append_one(sp: &Connection, e: &NewEvent) -> rusqlite::Result<(Appended, Option<u64>)> {
    if let Some(key) = &e.idempotency_key {
        let first = sp
            .prepare_cached(
                "SELECT ev.event_id, ev.event_time_ms FROM idempotency i \
                 JOIN events ev ON ev.seq = i.seq WHERE i.user_id = ?1 AND i.key = ?2",
            )?
            .query_row(params![e.user_id, key], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        if let Some((event_id, event_time)) = first {
            return Ok((
                Appended {
                    event_id,
                    event_time,
                    duplicate: true,
                },
                None,
            ));
        }
    }
    sp.prepare_cached(
        "INSERT INTO events (event_id, event_time_ms, received_ms, name, user_id, data) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        e.event_id,
        e.event_time,
        e.received_at,
        e.name,
        e.user_id,
        e.data
    ])?;
    let seq = sp.last_insert_rowid();
    if let Some(key) = &e.idempotency_key {
        sp.prepare_cached(
            "INSERT INTO idempotency (user_id, key, seq, created_ms) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![e.user_id, key, seq, e.received_at])?;
    }
    let seq = u64::try_from(seq).unwrap_or_default();
    Ok((
        Appended {
            event_id: e.event_id.clone(),
            event_time: e.event_time,
            duplicate: false,
        },
        Some(seq),
    ))
}

#[async_trait]
impl EventLog for EmbeddedStore {
    /// The batch is one job of the writer's group commit: stored in one
    /// transaction, all or nothing.
    async fn append_batch(&self, events: Vec<NewEvent>) -> Result<Vec<Appended>> {
        let closed = || StoreError::Unavailable("the event log writer has stopped".into());
        let writer = self.inner.writer.as_ref().ok_or_else(closed)?;
        let (reply, answer) = oneshot::channel();
        writer
            .send(AppendJob { events, reply })
            .await
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    async fn ping(&self) -> Result<()> {
        if self.inner.writer.as_ref().is_none_or(|w| w.is_closed()) {
            return Err(StoreError::Unavailable(
                "the event log writer has stopped".into(),
            ));
        }
        self.with_events(|c| c.query_row("SELECT 1", [], |_| Ok(())))
            .await
    }
}

#[async_trait]
impl ChangeFeed for EmbeddedStore {
    async fn read_after(&self, after: u64, limit: usize) -> Result<Vec<LoggedEvent>> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_events(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT seq, event_id, event_time_ms, name, user_id, data, received_ms \
                 FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![after, limit], |r| {
                Ok(LoggedEvent {
                    seq: r.get(0)?,
                    event_id: r.get(1)?,
                    event_time: r.get(2)?,
                    name: r.get(3)?,
                    user_id: r.get(4)?,
                    data: r.get(5)?,
                    received_at: r.get(6)?,
                })
            })?;
            let mut events = Vec::new();
            let mut bytes = 0;
            for row in rows {
                let event = row?;
                bytes += event.data.len();
                events.push(event);
                if bytes >= crate::store::MAX_READ_BYTES {
                    break;
                }
            }
            Ok(events)
        })
        .await
    }

    /// The head the writer published after its last commit (before it
    /// answered the appends of that commit).
    async fn head(&self) -> Result<u64> {
        Ok(*self.inner.head.borrow())
    }

    async fn wait_beyond(&self, after: u64) {
        let mut head = self.inner.head.clone();
        let _ = head.wait_for(|seq| *seq > after).await;
    }
}

fn read_meta(c: &Connection) -> rusqlite::Result<(u64, u64)> {
    c.query_row(
        "SELECT checkpoint, generation FROM meta WHERE id = 0",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
    .map(Option::unwrap_or_default)
}

fn corrupt(what: String) -> impl FnOnce(codec::CodecError) -> StoreError {
    move |e| StoreError::Corrupt(format!("{what}: {e}"))
}

#[async_trait]
impl AggregateStore for EmbeddedStore {
    async fn load(&self) -> Result<StoredAggregates> {
        self.with_aggregates(move |c| {
            let (checkpoint, generation) = read_meta(c).map_err(sql_err)?;
            let max_generation: u64 = c
                .query_row(
                    "SELECT COALESCE(MAX(generation), 0) FROM summaries",
                    [],
                    |r| r.get(0),
                )
                .map_err(sql_err)?;
            let mut stmt = c
                .prepare("SELECT scope, state, field_limit FROM scopes")
                .map_err(sql_err)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                    ))
                })
                .map_err(sql_err)?;
            let mut scopes = BTreeMap::new();
            for row in rows {
                let (scope, state, limit) = row.map_err(sql_err)?;
                let state = codec::decode_scope(&state, &limit)
                    .map_err(corrupt(format!("scope {scope:?}")))?;
                scopes.insert(scope_of_column(scope), state);
            }
            Ok(StoredAggregates {
                checkpoint,
                generation,
                max_generation: max_generation.max(generation),
                scopes,
            })
        })
        .await
    }

    async fn load_summaries(
        &self,
        generation: u64,
        keys: &[SummaryKey],
    ) -> Result<Vec<(SummaryKey, Summary)>> {
        let keys = keys.to_vec();
        self.with_aggregates(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT summary FROM summaries \
                     WHERE generation = ?1 AND scope = ?2 AND tier = ?3 AND idx = ?4",
                )
                .map_err(sql_err)?;
            let mut out = Vec::new();
            for key in keys {
                let bytes: Option<Vec<u8>> = stmt
                    .query_row(
                        params![
                            generation,
                            scope_column(&key.scope),
                            tier_column(key.tier),
                            key.index
                        ],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(sql_err)?;
                if let Some(bytes) = bytes {
                    let summary = decode_summary(&bytes)
                        .map_err(|e| StoreError::Corrupt(format!("summary {key:?}: {e}")))?;
                    out.push((key, summary));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn load_ranges(
        &self,
        generation: u64,
        ranges: &[(Scope, Tier, Range<i64>)],
    ) -> Result<Vec<(SummaryKey, Summary)>> {
        let ranges = ranges.to_vec();
        self.with_aggregates(move |c| {
            let mut out = Vec::new();
            for (scope, tier, range) in ranges {
                for (index, summary) in read_range(c, generation, &scope, tier, range)? {
                    let key = SummaryKey {
                        scope: scope.clone(),
                        tier,
                        index,
                    };
                    out.push((key, summary));
                }
            }
            Ok(out)
        })
        .await
    }

    /// By the summaries' key (generation, scope, tier, idx): for each
    /// scope, from its oldest summary of `tier`, at most [`PRUNE_CHUNK`]
    /// indexes a call, so that one call stays short whatever the backlog.
    async fn prune(&self, generation: u64, tier: Tier, before: i64) -> Result<u64> {
        self.with_aggregates(move |c| {
            let oldest: Option<i64> = c
                .query_row(
                    "SELECT MIN(idx) FROM summaries WHERE generation = ?1 AND tier = ?2 \
                     AND scope IN (SELECT scope FROM scopes)",
                    params![generation, tier_column(tier)],
                    |r| r.get(0),
                )
                .map_err(sql_err)?;
            let Some(oldest) = oldest.filter(|o| *o < before) else {
                return Ok(0);
            };
            c.execute(
                "DELETE FROM summaries WHERE generation = ?1 AND tier = ?2 \
                 AND scope IN (SELECT scope FROM scopes) AND idx < ?3",
                params![
                    generation,
                    tier_column(tier),
                    before.min(oldest.saturating_add(PRUNE_CHUNK))
                ],
            )
            .map(|n| n as u64)
            .map_err(sql_err)
        })
        .await
    }

    async fn commit(&self, commit: AggregateCommit) -> Result<()> {
        let inner = Arc::clone(&self.inner);
        let commit = Arc::new(commit);
        let written = Arc::clone(&commit);
        self.with_aggregates(move |c| write_commit(c, &written))
            .await?;
        let mut cache = inner
            .views
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if commit.switch {
            *cache = Views::default();
        }
        for (scope, kind, doc) in &commit.views {
            cache
                .rows
                .insert((scope.clone(), *kind), Arc::from(doc.as_str()));
        }
        for (name, doc) in &commit.sources {
            cache.sources.insert(name.clone(), Arc::from(doc.as_str()));
        }
        Ok(())
    }
}

fn write_commit(c: &mut Connection, commit: &AggregateCommit) -> Result<()> {
    let tx = c.transaction().map_err(sql_err)?;
    let (stored, live) = read_meta(&tx).map_err(sql_err)?;
    if let Some(expected) = commit.expected_checkpoint {
        if expected != stored {
            return Err(StoreError::Conflict(
                format!("aggregate checkpoint is {stored}, expected {expected}").into(),
            ));
        }
        if commit.generation != live {
            return Err(StoreError::Conflict(
                format!(
                    "live generation is {live}, the batch folded into {}",
                    commit.generation
                )
                .into(),
            ));
        }
    }
    if commit.switch {
        tx.execute(
            "DELETE FROM summaries WHERE generation <> ?1",
            [commit.generation],
        )
        .map_err(sql_err)?;
        tx.execute_batch("DELETE FROM scopes; DELETE FROM views; DELETE FROM sources;")
            .map_err(sql_err)?;
    }
    {
        let mut put = tx
            .prepare_cached(
                "INSERT OR REPLACE INTO summaries (generation, scope, tier, idx, summary) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .map_err(sql_err)?;
        for (key, summary) in &commit.summaries {
            put.execute(params![
                commit.generation,
                scope_column(&key.scope),
                tier_column(key.tier),
                key.index,
                encode_summary(summary)
            ])
            .map_err(sql_err)?;
        }
        let mut put = tx
            .prepare_cached(
                "INSERT OR REPLACE INTO scopes (scope, state, field_limit) VALUES (?1, ?2, ?3)",
            )
            .map_err(sql_err)?;
        for (scope, state) in &commit.scopes {
            put.execute(params![
                scope_column(scope),
                codec::encode_scope(state),
                codec::encode_limit(&state.fields)
            ])
            .map_err(sql_err)?;
        }
        let mut put = tx
            .prepare_cached("INSERT OR REPLACE INTO views (scope, kind, doc) VALUES (?1, ?2, ?3)")
            .map_err(sql_err)?;
        // The v1 window kinds are derived from their stats rows at open
        // (`load_views`): four rows fewer per aggregate and render.
        for (scope, kind, doc) in commit.views.iter().filter(|v| v.1.stats_row().is_none()) {
            put.execute(params![scope_column(scope), kind.as_str(), doc])
                .map_err(sql_err)?;
        }
        let mut put = tx
            .prepare_cached("INSERT OR REPLACE INTO sources (name, doc) VALUES (?1, ?2)")
            .map_err(sql_err)?;
        for (name, doc) in &commit.sources {
            put.execute(params![name, doc]).map_err(sql_err)?;
        }
    }
    if let Some(checkpoint) = commit.checkpoint {
        let generation = if commit.switch {
            commit.generation
        } else {
            live
        };
        tx.execute(
            "INSERT OR REPLACE INTO meta (id, checkpoint, generation) VALUES (0, ?1, ?2)",
            params![checkpoint, generation],
        )
        .map_err(sql_err)?;
    }
    tx.commit().map_err(sql_err)
}

/// The stored summaries of `generation`, `scope` and `tier` with index in
/// `range`, in index order.
fn read_range(
    c: &Connection,
    generation: u64,
    scope: &Scope,
    tier: Tier,
    range: Range<i64>,
) -> Result<Vec<(i64, Summary)>> {
    let mut stmt = c
        .prepare_cached(
            "SELECT idx, summary FROM summaries WHERE generation = ?1 AND scope = ?2 \
             AND tier = ?3 AND idx >= ?4 AND idx < ?5 ORDER BY idx",
        )
        .map_err(sql_err)?;
    let rows = stmt
        .query_map(
            params![
                generation,
                scope_column(scope),
                tier_column(tier),
                range.start,
                range.end
            ],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)),
        )
        .map_err(sql_err)?;
    let mut out = Vec::new();
    for row in rows {
        let (index, bytes) = row.map_err(sql_err)?;
        let summary = decode_summary(&bytes)
            .map_err(|e| StoreError::Corrupt(format!("summary {scope:?} {tier:?} {index}: {e}")))?;
        out.push((index, summary));
    }
    Ok(out)
}

#[async_trait]
impl ViewStore for EmbeddedStore {
    /// One read transaction on a connection of its own (the worker's
    /// commits do not wait for it, nor it for them): the live generation,
    /// then its summaries in the range.
    async fn summaries(
        &self,
        scope: &Scope,
        tier: Tier,
        range: Range<i64>,
    ) -> Result<Vec<(i64, Summary)>> {
        let inner = Arc::clone(&self.inner);
        let scope = scope.clone();
        tokio::task::spawn_blocking(move || {
            // A free connection, else any (they are all equal).
            let mut conn = inner
                .summaries_readers
                .iter()
                .find_map(|c| c.try_lock().ok())
                .unwrap_or_else(|| lock(&inner.summaries_readers[0]));
            let tx = conn.transaction().map_err(sql_err)?;
            let generation: Option<u64> = tx
                .query_row("SELECT generation FROM meta WHERE id = 0", [], |r| r.get(0))
                .optional()
                .map_err(sql_err)?;
            let Some(generation) = generation else {
                return Ok(Vec::new());
            };
            read_range(&tx, generation, &scope, tier, range)
        })
        .await
        .map_err(StoreError::unavailable)?
    }

    async fn view(&self, scope: &Scope, kind: ExposeKind) -> Result<Option<Arc<str>>> {
        let cache = self
            .inner
            .views
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(cache.rows.get(&(scope.clone(), kind)).cloned())
    }

    async fn sources_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Arc<str>)>> {
        use std::ops::Bound;
        let cache = self
            .inner
            .views
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(cache
            .sources
            .range::<str, _>((from, Bound::Unbounded))
            .take(limit)
            .map(|(name, doc)| (name.clone(), Arc::clone(doc)))
            .collect())
    }
}

#[cfg(test)]
mod tests;
