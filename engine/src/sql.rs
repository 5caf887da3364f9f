//! SQL over buckets with DataFusion.
//!
//! The engine hands [`run_sql`] one user's readable buckets, each as a [`BucketData`]
//! taken from one consistent RocksDB snapshot, and the SQL text. Each query gets a fresh
//! DataFusion session in which every bucket is a table ([`BucketTable`]) named by its
//! bucket id; nothing is shared between queries, so one user's query can neither see
//! another's tables nor change session state for later queries.
//!
//! Bounds, because SQL lets a caller ask for arbitrary work:
//! - time: the whole query (planning, execution, collecting) runs under
//!   [`SqlOptions::timeout_ms`]; on expiry the plan is dropped, which closes the scan
//!   channels and stops the storage walks ([`QueryError::Timeout`]);
//! - memory: operators that buffer (sort, aggregate, join) draw from a pool of
//!   [`SqlOptions::memory_bytes`] and there is no disk to spill to, so exceeding it
//!   fails the query ([`QueryError::ResourcesExhausted`]); scans stream with a few
//!   batches in flight;
//! - result: at most [`SqlOptions::max_rows`] rows and `memory_bytes` bytes are
//!   collected ([`QueryError::TooLarge`]);
//! - statements: read-only queries only (`SELECT`, `WITH`, `VALUES`, `EXPLAIN`,
//!   `DESCRIBE`); DDL, DML, `COPY` and `SET`-like statements are rejected before they
//!   run.
//!
//! Submodules: `table_provider` (schema, pushdown), `pushdown` (filters → scan bounds),
//! `scan_exec` (the streaming scan), `batch` (rows → Arrow), `output` (JSON/CSV/IPC).

mod batch;
mod output;
mod pushdown;
mod scan_exec;
mod table_provider;

#[cfg(test)]
mod test_data;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::common::{DataFusionError, TableReference};
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use futures::StreamExt;

use crate::error::QueryError;
use crate::limits::{SQL_MEMORY_BYTES_DEFAULT, SQL_TIMEOUT_MS_DEFAULT};
use crate::scan::BucketData;

pub use batch::{ts_data_type, TS_TIMEZONE};
pub use output::{batches_to_arrow_ipc, batches_to_csv, batches_to_json};
pub use pushdown::TS_COLUMN;
pub use scan_exec::{BucketScanExec, SCAN_BATCH_ROWS_MAX, SCAN_CHANNEL_BATCHES};
pub use table_provider::BucketTable;

/// Default bound on result rows: a million rows of JSON is already tens of MB over
/// HTTP; dashboards aggregate, exports should page by time.
pub const SQL_RESULT_ROWS_DEFAULT: usize = 1_000_000;

/// Default DataFusion partitions: three nodes share two cores, so one query uses one
/// core and never fans out into repartitioning.
pub const SQL_TARGET_PARTITIONS_DEFAULT: usize = 1;

/// Per-query bounds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqlOptions {
    /// Wall-clock limit of the whole query.
    pub timeout_ms: u64,
    /// Memory pool of buffering operators; also bounds the collected result's bytes.
    pub memory_bytes: usize,
    /// DataFusion's `target_partitions` (parallelism); 0 is treated as 1.
    pub target_partitions: usize,
    /// Result rows beyond which the query fails with [`QueryError::TooLarge`].
    pub max_rows: usize,
}

impl Default for SqlOptions {
    fn default() -> Self {
        SqlOptions {
            timeout_ms: SQL_TIMEOUT_MS_DEFAULT,
            memory_bytes: SQL_MEMORY_BYTES_DEFAULT,
            target_partitions: SQL_TARGET_PARTITIONS_DEFAULT,
            max_rows: SQL_RESULT_ROWS_DEFAULT,
        }
    }
}

/// Runs one read-only SQL query over `tables` (table name → bucket data).
///
/// The result always holds at least one batch, possibly empty, so that callers (the
/// CSV header, the IPC schema) know the result's columns even when no row matched.
pub async fn run_sql(
    tables: Vec<(String, Arc<dyn BucketData>)>,
    sql: &str,
    opts: &SqlOptions,
) -> Result<Vec<RecordBatch>, QueryError> {
    let limit = Duration::from_millis(opts.timeout_ms);
    match tokio::time::timeout(limit, run_untimed(tables, sql, opts)).await {
        Ok(result) => result,
        Err(_elapsed) => Err(QueryError::Timeout(opts.timeout_ms)),
    }
}

async fn run_untimed(
    tables: Vec<(String, Arc<dyn BucketData>)>,
    sql: &str,
    opts: &SqlOptions,
) -> Result<Vec<RecordBatch>, QueryError> {
    let ctx = session(opts)?;
    for (name, data) in tables {
        let table = Arc::new(BucketTable::try_new(data)?);
        // `bare`: the name is taken literally (no dot splitting, no case folding).
        let replaced = ctx
            .register_table(TableReference::bare(name.as_str()), table)
            .map_err(map_error)?;
        if replaced.is_some() {
            return Err(QueryError::Sql(format!("table `{name}` was given twice")));
        }
    }

    let plan = ctx
        .state()
        .create_logical_plan(sql)
        .await
        .map_err(map_error)?;
    read_only().verify_plan(&plan).map_err(|e| {
        QueryError::Sql(format!(
            "only read-only queries are allowed: {}",
            message(&e)
        ))
    })?;
    let frame = ctx.execute_logical_plan(plan).await.map_err(map_error)?;
    let mut stream = frame.execute_stream().await.map_err(map_error)?;

    let mut batches = Vec::new();
    let (mut rows, mut bytes) = (0usize, 0usize);
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(map_error)?;
        rows += batch.num_rows();
        if rows > opts.max_rows {
            return Err(QueryError::TooLarge(format!(
                "result has more than {} rows; aggregate or narrow the time range",
                opts.max_rows
            )));
        }
        // Slices of shared buffers count whole: an over-estimate, never an under one.
        bytes = bytes.saturating_add(batch.get_array_memory_size());
        if bytes > opts.memory_bytes {
            return Err(QueryError::TooLarge(format!(
                "result exceeds {} bytes; aggregate or narrow the time range",
                opts.memory_bytes
            )));
        }
        if batch.num_rows() > 0 {
            batches.push(batch);
        }
    }
    if batches.is_empty() {
        batches.push(RecordBatch::new_empty(stream.schema()));
    }
    Ok(batches)
}

/// A fresh session: memory-limited pool without spilling, bounded parallelism.
fn session(opts: &SqlOptions) -> Result<SessionContext, QueryError> {
    let runtime = RuntimeEnvBuilder::new()
        // Greedy pool (tracking the top consumers for the error message): a query is
        // one user's, so there is nothing to share fairly between.
        .with_memory_limit(opts.memory_bytes, 1.0)
        .with_disk_manager_builder(
            DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
        )
        .build_arc()
        .map_err(map_error)?;
    let config = SessionConfig::new()
        .with_target_partitions(opts.target_partitions.max(1))
        .with_batch_size(SCAN_BATCH_ROWS_MAX)
        .with_information_schema(false);
    Ok(SessionContext::new_with_config_rt(config, runtime))
}

/// What read-only means: no DDL (CREATE/DROP), no DML (INSERT/UPDATE/DELETE/COPY), no
/// session statements (SET, PREPARE, transactions).
fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// DataFusion error → query error. Memory exhaustion is recognised however deeply it is
/// wrapped; an error raised by storage during a scan is handed back as it was (when
/// DataFusion has not shared it between tasks); everything else is a SQL error with
/// DataFusion's message, which names the unknown table, column or function.
fn map_error(e: DataFusionError) -> QueryError {
    if let DataFusionError::ResourcesExhausted(msg) = e.find_root() {
        return QueryError::ResourcesExhausted(msg.clone());
    }
    match take_query_error(e) {
        Ok(q) => q,
        Err(e) => QueryError::Sql(message(&e)),
    }
}

fn message(e: &DataFusionError) -> String {
    e.strip_backtrace()
}

/// Unwraps a [`QueryError`] that a scan raised, when the chain owns it.
fn take_query_error(e: DataFusionError) -> Result<QueryError, DataFusionError> {
    match e {
        DataFusionError::External(boxed) => match boxed.downcast::<QueryError>() {
            Ok(q) => Ok(*q),
            Err(other) => match other.downcast::<DataFusionError>() {
                Ok(inner) => take_query_error(*inner),
                Err(other) => Err(DataFusionError::External(other)),
            },
        },
        DataFusionError::Context(context, inner) => {
            take_query_error(*inner).map_err(|e| DataFusionError::Context(context, Box::new(e)))
        }
        DataFusionError::Shared(shared) => match Arc::try_unwrap(shared) {
            Ok(inner) => take_query_error(inner),
            Err(shared) => Err(DataFusionError::Shared(shared)),
        },
        other => Err(other),
    }
}
