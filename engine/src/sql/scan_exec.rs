//! The physical scan of one bucket: a streaming DataFusion [`ExecutionPlan`] leaf.
//!
//! [`BucketData::scan`] is synchronous (a RocksDB iterator walk) and pushes rows into a
//! callback. DataFusion pulls batches from an async stream. The bridge:
//!
//! - on the stream's first poll, the scan starts on `tokio::task::spawn_blocking` so it
//!   never blocks the async workers;
//! - the callback appends rows to a [`BatchBuilder`] and, every `batch_rows` rows, sends
//!   the batch through a bounded channel ([`SCAN_CHANNEL_BATCHES`]). When the consumer is
//!   slower, `blocking_send` waits: memory in flight stays at a few batches however large
//!   the bucket is;
//! - when the stream is dropped (LIMIT satisfied, query cancelled or timed out) the
//!   channel closes and the callback returns `false`, which stops the storage walk.
//!
//! Nothing non-`Send` is held across an await: the async side only polls the receiver.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::task::Poll;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{internal_err, DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning,
    PlanProperties, ReplaceChildrenOptions,
};
use tokio::sync::mpsc;

use super::batch::{BatchBuilder, OutputColumn};
use crate::scan::{BucketData, ScanRequest, ScanRow};

/// Batches buffered between the scanning thread and the query: enough to overlap
/// decoding with processing, small enough that a stalled consumer pins little memory.
pub const SCAN_CHANNEL_BATCHES: usize = 2;

/// Upper bound on rows per batch whatever the session's `batch_size` says: a batch is
/// what one scan holds in flight per channel slot.
pub const SCAN_BATCH_ROWS_MAX: usize = 8192;

/// Scans one bucket into streams of record batches, one per partition (each over its
/// share of the series, see [`ScanRequest::part`]).
pub struct BucketScanExec {
    data: Arc<dyn BucketData>,
    request: ScanRequest,
    /// In output-schema order: where each column comes from.
    columns: Arc<[OutputColumn]>,
    /// When the pushed-down filters can match nothing, the scan is skipped entirely.
    matches_nothing: bool,
    /// Stop after this many rows (pushed down `LIMIT` without filters).
    limit: Option<usize>,
    properties: Arc<PlanProperties>,
}

impl BucketScanExec {
    pub fn new(
        data: Arc<dyn BucketData>,
        request: ScanRequest,
        schema: SchemaRef,
        columns: Vec<OutputColumn>,
        matches_nothing: bool,
        limit: Option<usize>,
        partitions: usize,
    ) -> BucketScanExec {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(partitions.max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        BucketScanExec {
            data,
            request,
            columns: columns.into(),
            matches_nothing,
            limit,
            properties: Arc::new(properties),
        }
    }

    /// The request handed to storage (for EXPLAIN and tests).
    pub fn request(&self) -> &ScanRequest {
        &self.request
    }
}

impl fmt::Debug for BucketScanExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BucketScanExec")
            .field("request", &self.request)
            .field("columns", &self.columns)
            .field("matches_nothing", &self.matches_nothing)
            .field("limit", &self.limit)
            .finish()
    }
}

impl DisplayAs for BucketScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.request;
        write!(f, "BucketScanExec: ts=[{}, {}]", r.min_ts, r.max_ts)?;
        if !r.tags.is_empty() {
            write!(f, ", tags={:?}", r.tags)?;
        }
        if let Some(fields) = &r.fields {
            write!(f, ", fields={fields:?}")?;
        }
        if let Some(limit) = self.limit {
            write!(f, ", limit={limit}")?;
        }
        if self.matches_nothing {
            write!(f, ", matches_nothing")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for BucketScanExec {
    fn name(&self) -> &str {
        "BucketScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            internal_err!("BucketScanExec is a leaf and takes no children")
        }
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let partitions = self.properties.partitioning.partition_count();
        if partition >= partitions {
            return internal_err!(
                "BucketScanExec has {partitions} partitions, asked for {partition}"
            );
        }
        let mut request = self.request.clone();
        request.part = (partition, partitions);
        let schema = self.schema();
        let batch_rows = context
            .session_config()
            .batch_size()
            .clamp(1, SCAN_BATCH_ROWS_MAX);
        let mut job = (!self.matches_nothing && self.limit != Some(0)).then(|| ScanJob {
            data: Arc::clone(&self.data),
            request,
            builder: BatchBuilder::new(Arc::clone(&schema), &self.columns),
            batch_rows,
            limit: self.limit.unwrap_or(usize::MAX),
        });
        let mut receiver: Option<mpsc::Receiver<Result<RecordBatch>>> = None;
        // Started lazily: `execute` only plans the stream, work begins when it is polled.
        let stream = futures::stream::poll_fn(move |cx| {
            if let Some(job) = job.take() {
                match tokio::runtime::Handle::try_current() {
                    Ok(runtime) => {
                        let (tx, rx) = mpsc::channel(SCAN_CHANNEL_BATCHES);
                        runtime.spawn_blocking(move || job.run(tx));
                        receiver = Some(rx);
                    }
                    Err(e) => {
                        return Poll::Ready(Some(Err(DataFusionError::Execution(format!(
                            "bucket scan needs a tokio runtime: {e}"
                        )))));
                    }
                }
            }
            match receiver.as_mut() {
                Some(rx) => rx.poll_recv(cx),
                None => Poll::Ready(None),
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// One scan running on a blocking thread, feeding the channel.
struct ScanJob {
    data: Arc<dyn BucketData>,
    request: ScanRequest,
    builder: BatchBuilder,
    batch_rows: usize,
    limit: usize,
}

impl ScanJob {
    /// Runs the scan to completion or until the receiver goes away. Errors, including a
    /// panic in storage code, are delivered to the query instead of silently ending the
    /// stream early (which would look like a complete, shorter result).
    fn run(mut self, tx: mpsc::Sender<Result<RecordBatch>>) {
        let outcome = catch_unwind(AssertUnwindSafe(|| self.scan(&tx)));
        let error = match outcome {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e,
            Err(_) => DataFusionError::Execution("bucket scan panicked".to_string()),
        };
        // The receiver may be gone already; then nobody needs the error.
        let _ = tx.blocking_send(Err(error));
    }

    fn scan(&mut self, tx: &mpsc::Sender<Result<RecordBatch>>) -> Result<()> {
        let mut emitted = 0usize;
        let mut failure: Option<DataFusionError> = None;
        let ScanJob {
            data,
            request,
            builder,
            batch_rows,
            limit,
        } = self;
        data.scan(request, &mut |row: &ScanRow<'_>| {
            // Checked per row so a cancelled query stops within one row, not one batch.
            if tx.is_closed() {
                return false;
            }
            builder.append(row);
            emitted += 1;
            let at_limit = emitted >= *limit;
            if builder.len() >= *batch_rows || at_limit {
                let sent = builder
                    .finish()
                    .map_err(DataFusionError::from)
                    .and_then(|batch| {
                        tx.blocking_send(Ok(batch))
                            .map_err(|_| DataFusionError::Execution("receiver gone".into()))
                    });
                if let Err(e) = sent {
                    // A closed channel is a normal stop; anything else is reported.
                    if !tx.is_closed() {
                        failure = Some(e);
                    }
                    return false;
                }
            }
            !at_limit
        })
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
        if let Some(e) = failure {
            return Err(e);
        }
        if !builder.is_empty() && !tx.is_closed() {
            let batch = builder.finish()?;
            // Ignored: a receiver dropped meanwhile does not need the tail.
            let _ = tx.blocking_send(Ok(batch));
        }
        Ok(())
    }
}
