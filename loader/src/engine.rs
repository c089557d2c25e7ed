//! The ingest engine: for each file, find its stream and cursor, read new records
//! on a blocking thread, and commit them batch by batch with the cursor, retrying
//! while PostgreSQL is unreachable.
//!
//! Several files are in flight at once (`files_in_flight`): each has its own reader thread
//! and commits on its own pooled connection, so parsing, the commits of one file and those
//! of another overlap. Files of the same stream (a day and its renamed or compressed copy)
//! never run at the same time: they are grouped and read one after the other, in order.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use store::ingest::{Batch, CursorPos, StreamRef};
use store::{PgPool, StoreError};
use tokio::sync::mpsc;

use crate::parse::hash_hex;
use crate::reader::{Compression, RecordReader, Step, detect_compression, first_line, open_at};
use crate::status::{Stats, exit};

/// Settings of one `bulk` or `delta` run.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub mode: String,
    pub sensor: String,
    pub batch_size: usize,
    pub dry_run: bool,
    /// How long to keep retrying while PostgreSQL is unreachable.
    pub max_wait: Duration,
    pub progress: bool,
    pub status_file: Option<PathBuf>,
    /// Testing aid: sleep this long after each committed batch (makes "kill it in the middle" reliable).
    pub pause_after_batch: Duration,
    /// How many files (of different streams) are read and committed at the same time.
    pub files_in_flight: usize,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            mode: "bulk".into(),
            sensor: "default".into(),
            batch_size: 2000,
            dry_run: false,
            max_wait: Duration::from_secs(600),
            progress: false,
            status_file: None,
            pause_after_batch: Duration::ZERO,
            files_in_flight: 2,
        }
    }
}

/// Why a run or a file stopped.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("PostgreSQL unreachable for more than {waited:?}: {last}")]
    DbUnavailable { waited: Duration, last: String },
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Expands a log directory into the Cowrie JSON files in it (`cowrie*.json*`),
/// oldest first (modification time, then name), so rotated days come before the live file.
pub fn expand_logdir(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("cowrie") && name.contains(".json")) || name.ends_with(".tmp") {
            continue;
        }
        let meta = entry.metadata()?;
        if meta.is_file() {
            files.push((meta.modified().ok(), name, entry.path()));
        }
    }
    files.sort();
    Ok(files.into_iter().map(|(_, _, p)| p).collect())
}

/// Expands the arguments of `bulk`: files as given, directories like `--logdir`.
pub fn expand_paths(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            out.extend(expand_logdir(p)?);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Runs `f` until it succeeds, retrying with exponential backoff while the error is
/// "database unavailable", for at most `max_wait`.
async fn with_retry<T, F, Fut>(
    max_wait: Duration,
    retries: &mut u64,
    mut f: F,
) -> Result<T, EngineError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let started = Instant::now();
    let mut backoff = transport::Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_retryable() => {
                let waited = started.elapsed();
                if waited >= max_wait {
                    return Err(EngineError::DbUnavailable {
                        waited,
                        last: e.to_string(),
                    });
                }
                *retries += 1;
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, backoff = ?delay, "PostgreSQL unavailable, retrying");
                tokio::time::sleep(delay.min(max_wait.saturating_sub(waited))).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Checks the schema, applying migrations only to an empty database.
/// Returns an exit code on failure.
pub async fn ensure_schema(database_url: &str, max_wait: Duration) -> Result<(), (i32, String)> {
    let mut retries = 0;
    let pending = with_retry(max_wait, &mut retries, || {
        store::pending_migrations(database_url)
    })
    .await
    .map_err(|e| match e {
        EngineError::DbUnavailable { .. } => (exit::DB_UNAVAILABLE, e.to_string()),
        other => (exit::FAILURE, other.to_string()),
    })?;
    if pending.is_empty() {
        return Ok(());
    }
    if pending.len() == store::migrations_count() {
        // A fresh database: creating the schema cannot harm anything.
        store::run_migrations(database_url)
            .await
            .map_err(|e| (exit::FAILURE, e.to_string()))?;
        return Ok(());
    }
    Err((
        exit::SCHEMA_OUTDATED,
        format!(
            "database schema is older than this loader (pending: {}); run `cowrie-loader migrate`",
            pending.join(", ")
        ),
    ))
}

/// The ingest engine.
pub struct Engine {
    pool: Option<PgPool>,
    opts: IngestOptions,
    pub stats: Stats,
    bar: ProgressBar,
    ingest_id: String,
    /// Events read so far (the bar's message).
    events_seen: AtomicU64,
}

/// What the files in flight share while a run goes on (locked only between `await`s).
struct RunState {
    stats: Stats,
    code: i32,
    /// PostgreSQL stayed away: start no further file.
    stop: bool,
}

/// Groups the files by stream (`<sensor>:<hash of the first line>`), keeping the order of
/// first appearance, and each group's files in their given order. A file whose first line
/// cannot be read now is a group of its own (`ingest_file` will say why, or wait for it).
/// Locks a mutex whose holder cannot panic half-way (plain counter updates).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Adds the counters of one file's run to the run's.
fn add_counts(to: &mut Stats, f: &Stats) {
    to.files_processed += f.files_processed;
    to.files_unchanged += f.files_unchanged;
    to.files_waiting += f.files_waiting;
    to.events_read += f.events_read;
    to.events_inserted += f.events_inserted;
    to.duplicates += f.duplicates;
    to.dead_letters += f.dead_letters;
    to.dead_letters_inserted += f.dead_letters_inserted;
    to.blank_lines += f.blank_lines;
    to.sessions_touched += f.sessions_touched;
    to.files_rows_inserted += f.files_rows_inserted;
    to.truncations += f.truncations;
    to.batches += f.batches;
    to.db_retries += f.db_retries;
    to.incomplete_tails += f.incomplete_tails;
}

fn stream_groups(paths: &[PathBuf], sensor: &str) -> Vec<Vec<PathBuf>> {
    let mut groups: Vec<Vec<PathBuf>> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for path in paths {
        let key = detect_compression(path)
            .and_then(|c| first_line(path, c))
            .ok()
            .flatten()
            .map(|first| format!("{sensor}:{}", hash_hex(&first)));
        match key.and_then(|k| match index.get(&k) {
            Some(&i) => Some(i),
            None => {
                index.insert(k, groups.len());
                None
            }
        }) {
            Some(i) => groups[i].push(path.clone()),
            None => groups.push(vec![path.clone()]),
        }
    }
    groups
}

enum Msg {
    /// A batch, the blank lines and the already-stored events it skipped.
    Batch(Box<Batch>, u64, u64),
    Incomplete,
    Error(String),
}

impl Engine {
    /// `pool` may be `None` only for a dry run.
    pub fn new(pool: Option<PgPool>, opts: IngestOptions) -> Self {
        let stats = Stats {
            mode: opts.mode.clone(),
            ingest_id: uuid::Uuid::now_v7().to_string(),
            sensor: opts.sensor.clone(),
            dry_run: opts.dry_run,
            ..Stats::default()
        };
        let bar = if opts.progress {
            ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Engine {
            pool,
            opts,
            ingest_id: stats.ingest_id.clone(),
            stats,
            bar,
            events_seen: AtomicU64::new(0),
        }
    }

    /// Ingests every path (files of one stream in order, `files_in_flight` streams at a
    /// time); returns the exit code. Statistics are in `self.stats`.
    pub async fn run(&mut self, paths: &[PathBuf]) -> i32 {
        let started = Instant::now();
        let total: u64 = paths
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        self.bar.set_length(total);
        let groups = if self.opts.files_in_flight > 1 {
            stream_groups(paths, &self.opts.sensor)
        } else {
            paths.iter().map(|p| vec![p.clone()]).collect()
        };
        let state = Mutex::new(RunState {
            stats: std::mem::take(&mut self.stats),
            code: exit::OK,
            stop: false,
        });
        let queue = Mutex::new(groups.into_iter());
        let this = &*self;
        let worker = || async {
            loop {
                let Some(group) = lock(&queue).next() else {
                    return;
                };
                for path in group {
                    if lock(&state).stop {
                        return;
                    }
                    this.run_one(&path, &state, started).await;
                }
            }
        };
        futures_util::future::join_all((0..self.opts.files_in_flight.max(1)).map(|_| worker()))
            .await;
        let RunState {
            mut stats, code, ..
        } = state.into_inner().unwrap_or_else(|e| e.into_inner());
        self.bar.finish_and_clear();
        stats.exit_code = code;
        self.write_status(&mut stats, started);
        self.stats = stats;
        code
    }

    /// Ingests one file and adds what it did to the run's state.
    async fn run_one(&self, path: &Path, state: &Mutex<RunState>, started: Instant) {
        let file_len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let read = Arc::new(AtomicU64::new(0));
        let shown = AtomicU64::new(0);
        let mut fs = Stats::default();
        let result = self.ingest_file(path, &mut fs, &read, &shown).await;
        let mut st = lock(state);
        let st = &mut *st;
        st.stats.files_seen += 1;
        add_counts(&mut st.stats, &fs);
        match result {
            Ok(()) => {}
            Err(EngineError::DbUnavailable { waited, last }) => {
                st.stats
                    .errors
                    .push(format!("PostgreSQL unreachable for {waited:?}: {last}"));
                st.code = exit::DB_UNAVAILABLE;
                st.stop = true;
            }
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "file failed");
                st.stats.files_failed += 1;
                st.stats.errors.push(e.to_string());
                if st.code != exit::DB_UNAVAILABLE {
                    st.code = exit::PARTIAL;
                }
            }
        }
        // Keep the bar honest for skipped parts of files.
        let read = read.load(Ordering::Relaxed);
        st.stats.bytes_read += read;
        self.bar.inc(
            file_len
                .max(read)
                .saturating_sub(shown.load(Ordering::Relaxed)),
        );
        st.stats.exit_code = st.code;
        self.write_status(&mut st.stats, started);
    }

    fn write_status(&self, stats: &mut Stats, started: Instant) {
        let secs = started.elapsed().as_secs_f64();
        stats.duration_seconds = (secs * 1000.0).round() / 1000.0;
        stats.events_per_second = if secs > 0.0 {
            (stats.events_read as f64 / secs).round()
        } else {
            0.0
        };
        if let Some(p) = &self.opts.status_file
            && let Err(e) = stats.write_file(p)
        {
            tracing::warn!(path = %p.display(), error = %e, "cannot write status file");
        }
    }

    async fn ingest_file(
        &self,
        path: &Path,
        stats: &mut Stats,
        read: &Arc<AtomicU64>,
        shown: &AtomicU64,
    ) -> Result<(), EngineError> {
        let file_err = |m: String| EngineError::File {
            path: path.display().to_string(),
            message: m,
        };
        let meta = std::fs::metadata(path).map_err(|e| file_err(e.to_string()))?;
        let compression = detect_compression(path).map_err(|e| file_err(e.to_string()))?;
        let Some(first) = first_line(path, compression).map_err(|e| file_err(e.to_string()))?
        else {
            // Empty, or the first line is still being written: nothing to do yet.
            stats.files_waiting += 1;
            return Ok(());
        };
        let first_hash = hash_hex(&first);
        let inode = {
            use std::os::unix::fs::MetadataExt;
            format!("{}:{}", meta.dev(), meta.ino())
        };
        let mut stream = StreamRef {
            stream_id: format!("{}:{}", self.opts.sensor, first_hash),
            first_line_hash: first_hash,
            generation: 0,
            source: path.display().to_string(),
            inode: Some(inode),
            sensor: self.opts.sensor.clone(),
        };
        let (mut offset, mut line) = (0u64, 0u64);
        if let Some(pool) = self.pool.clone().filter(|_| !self.opts.dry_run) {
            let sid = stream.stream_id.clone();
            let cursor = with_retry(self.opts.max_wait, &mut stats.db_retries, || {
                let pool = pool.clone();
                let sid = sid.clone();
                async move {
                    let mut c = pool.get_owned().await?;
                    store::ingest::load_cursor(&mut c, &sid).await
                }
            })
            .await?;
            if let Some(c) = cursor {
                stream.generation = c.generation;
                // `finished` means "this very compressed file was read to its end";
                // a plain file of the same stream may still have grown.
                if c.finished && compression.is_compressed() && c.inode == stream.inode {
                    stats.files_unchanged += 1;
                    return Ok(());
                }
                offset = c.last_offset as u64;
                line = c.last_line as u64;
                if !compression.is_compressed() && meta.len() < offset {
                    // Truncated below what we read. Offsets no longer line up with what
                    // is stored, so the file is read again from its start under a new
                    // generation, and events already stored are recognised by content.
                    tracing::warn!(path = %path.display(), size = meta.len(), cursor = offset, "file truncated");
                    stats.truncations += 1;
                    stream.generation += 1;
                    offset = 0;
                    line = 0;
                    let pos = CursorPos {
                        offset: 0,
                        line: 0,
                        finished: false,
                    };
                    let (st, id) = (&stream, self.ingest_id.clone());
                    with_retry(self.opts.max_wait, &mut stats.db_retries, || {
                        let pool = pool.clone();
                        let id = id.clone();
                        async move {
                            let mut c = pool.get_owned().await?;
                            store::ingest::save_cursor(&mut c, st, pos, &id).await
                        }
                    })
                    .await?;
                }
                if !compression.is_compressed() && meta.len() == offset {
                    stats.files_unchanged += 1;
                    return Ok(());
                }
            }
        }
        let mut known = None;
        if stream.generation > 0
            && let Some(pool) = self.pool.clone().filter(|_| !self.opts.dry_run)
        {
            let sid = stream.stream_id.clone();
            known = Some(
                with_retry(self.opts.max_wait, &mut stats.db_retries, || {
                    let pool = pool.clone();
                    let sid = sid.clone();
                    async move {
                        let mut c = pool.get_owned().await?;
                        store::ingest::stream_payload_hashes(&mut c, &sid).await
                    }
                })
                .await?,
            );
        }
        stats.files_processed += 1;

        let (tx, mut rx) = mpsc::channel::<Msg>(2);
        let reader_path = path.to_path_buf();
        let counter = read.clone();
        let sensor = self.opts.sensor.clone();
        let batch_size = self.opts.batch_size.max(1);
        let stream_for_reader = stream.clone();
        let ingest_id = self.ingest_id.clone();
        let reader = tokio::task::spawn_blocking(move || {
            read_batches(
                &reader_path,
                compression,
                offset,
                line,
                counter,
                &sensor,
                batch_size,
                stream_for_reader,
                ingest_id,
                known,
                tx,
            )
        });

        let mut result = Ok(());
        while let Some(msg) = rx.recv().await {
            match msg {
                Msg::Batch(batch, blanks, skipped) => {
                    stats.events_read += batch.events.len() as u64 + skipped;
                    stats.duplicates += skipped;
                    stats.dead_letters += batch.dead_letters.len() as u64;
                    stats.blank_lines += blanks;
                    stats.batches += 1;
                    if let Some(pool) = self.pool.clone().filter(|_| !self.opts.dry_run) {
                        let b = &batch;
                        let outcome = with_retry(self.opts.max_wait, &mut stats.db_retries, || {
                            let pool = pool.clone();
                            async move {
                                let mut c = pool.get_owned().await?;
                                store::ingest::commit_batch(&mut c, b).await
                            }
                        })
                        .await;
                        match outcome {
                            Ok(o) => {
                                stats.events_inserted += o.inserted;
                                stats.duplicates += o.duplicates;
                                stats.dead_letters_inserted += o.dead_letters_inserted;
                                stats.sessions_touched += o.sessions_touched;
                                stats.files_rows_inserted += o.files_inserted;
                            }
                            Err(e) => {
                                result = Err(e);
                                break;
                            }
                        }
                    }
                    if !self.opts.pause_after_batch.is_zero() {
                        tokio::time::sleep(self.opts.pause_after_batch).await;
                    }
                    let now = read.load(Ordering::Relaxed);
                    self.bar
                        .inc(now.saturating_sub(shown.swap(now, Ordering::Relaxed)));
                    let seen = self
                        .events_seen
                        .fetch_add(batch.events.len() as u64, Ordering::Relaxed);
                    self.bar
                        .set_message(format!("{} events", seen + batch.events.len() as u64));
                }
                Msg::Incomplete => stats.incomplete_tails += 1,
                Msg::Error(m) => {
                    result = Err(file_err(m));
                }
            }
        }
        drop(rx);
        let _ = reader.await;
        result
    }
}

/// Reads records from `offset` and sends them in batches; runs on a blocking thread.
#[allow(clippy::too_many_arguments)]
fn read_batches(
    path: &Path,
    compression: Compression,
    offset: u64,
    line: u64,
    counter: Arc<AtomicU64>,
    sensor: &str,
    batch_size: usize,
    stream: StreamRef,
    ingest_id: String,
    known: Option<HashSet<String>>,
    tx: mpsc::Sender<Msg>,
) {
    let inner = match open_at(path, compression, offset, counter) {
        Ok(r) => r,
        // A compressed copy shorter than what the stream's cursor covers holds nothing new.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && compression.is_compressed() => {
            return;
        }
        Err(e) => {
            let _ = tx.blocking_send(Msg::Error(e.to_string()));
            return;
        }
    };
    let mut rr = RecordReader::new(inner, offset, line, !compression.is_compressed(), sensor);
    let new_batch = || Batch {
        ingest_id: ingest_id.clone(),
        stream: stream.clone(),
        events: Vec::with_capacity(batch_size),
        dead_letters: Vec::new(),
        cursor: CursorPos {
            offset: 0,
            line: 0,
            finished: false,
        },
    };
    let mut batch = new_batch();
    let mut blanks = 0u64;
    let mut skipped = 0u64;
    let mut last_sent = (offset, line);
    loop {
        let step = match rr.next_step() {
            Ok(s) => s,
            Err(e) => {
                // Send what we have, then the error.
                if !batch.events.is_empty() || !batch.dead_letters.is_empty() {
                    batch.cursor = CursorPos {
                        offset: rr.offset as i64,
                        line: rr.line as i64,
                        finished: false,
                    };
                    let _ = tx.blocking_send(Msg::Batch(Box::new(batch), blanks, skipped));
                }
                let _ = tx.blocking_send(Msg::Error(format!("read error: {e}")));
                return;
            }
        };
        let (stop, finished) = match step {
            Step::Event(ev) => {
                if known.as_ref().is_some_and(|k| k.contains(&ev.payload_hash)) {
                    skipped += 1;
                } else {
                    batch.events.push(*ev);
                }
                (false, false)
            }
            Step::Dead(d) => {
                batch.dead_letters.push(d);
                (false, false)
            }
            Step::Blank => {
                blanks += 1;
                (false, false)
            }
            Step::Incomplete => {
                let _ = tx.blocking_send(Msg::Incomplete);
                (true, false)
            }
            Step::Eof => (true, compression.is_compressed()),
        };
        let full = batch.events.len() + batch.dead_letters.len() >= batch_size;
        let moved = (rr.offset, rr.line) != last_sent;
        if full || (stop && (moved || finished)) {
            batch.cursor = CursorPos {
                offset: rr.offset as i64,
                line: rr.line as i64,
                finished,
            };
            last_sent = (rr.offset, rr.line);
            let b = std::mem::replace(&mut batch, new_batch());
            if tx
                .blocking_send(Msg::Batch(Box::new(b), blanks, skipped))
                .is_err()
            {
                return;
            }
            blanks = 0;
            skipped = 0;
        }
        if stop {
            return;
        }
    }
}
