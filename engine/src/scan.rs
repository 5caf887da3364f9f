//! Raw row scans of one bucket: the contract between storage and the SQL layer.
//!
//! Storage order is series, then timestamp; a scan walks the selected series in id order
//! and each one's time range as one contiguous RocksDB range.

use crate::aggregate::FieldRef;
use crate::error::QueryError;
use crate::value::Value;

/// The columns a bucket exposes: its tags (strings) and its registered fields.
#[derive(Clone, Debug, PartialEq)]
pub struct BucketColumns {
    pub tags: Vec<String>,
    pub fields: Vec<FieldRef>,
}

/// What to scan: an inclusive time range, tag filters, and a field projection.
#[derive(Clone, Debug, PartialEq)]
pub struct ScanRequest {
    /// Inclusive bounds in epoch ms.
    pub min_ts: i64,
    pub max_ts: i64,
    /// A series matches when for every entry its tag value is one of the listed values.
    pub tags: Vec<(String, Vec<String>)>,
    /// Field names to return (`ScanRow::values` order); `None` is every field.
    pub fields: Option<Vec<String>>,
    /// (index, count): this scan reads only the series with `id % count == index`, so
    /// `count` scans of the same request cover the bucket once, in parallel.
    pub part: (usize, usize),
}

impl Default for ScanRequest {
    fn default() -> Self {
        ScanRequest {
            min_ts: i64::MIN,
            max_ts: i64::MAX,
            tags: Vec::new(),
            fields: None,
            part: (0, 1),
        }
    }
}

/// One record as a scan returns it.
#[derive(Debug)]
pub struct ScanRow<'a> {
    pub ts: i64,
    /// Tag values in [`BucketColumns::tags`] order ("" when absent).
    pub tags: &'a [String],
    /// Field values in the requested order; `None` where the record lacks the field.
    pub values: &'a [Option<Value>],
}

/// Read access to one bucket at one consistent point in time.
pub trait BucketData: Send + Sync {
    /// The bucket's tag and field columns.
    fn columns(&self) -> &BucketColumns;

    /// Calls `f` for each matching record in (series, ts) order until it returns false.
    fn scan(
        &self,
        req: &ScanRequest,
        f: &mut dyn FnMut(&ScanRow<'_>) -> bool,
    ) -> Result<(), QueryError>;
}
