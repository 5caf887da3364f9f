//! An in-memory [`BucketData`] for tests: honours [`ScanRequest`] exactly (inclusive
//! time range, tag filters, field projection) and records what it was asked and how
//! far each scan got, so tests can assert that pushdown and early stops happened.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::aggregate::FieldRef;
use crate::error::{EngineError, QueryError};
use crate::scan::{BucketColumns, BucketData, ScanRequest, ScanRow};
use crate::value::{FieldType, Value};

/// One stored record: tag values in the bucket's tag order, values in field order.
#[derive(Clone, Debug)]
pub struct MemRow {
    pub ts: i64,
    pub tags: Vec<String>,
    pub values: Vec<Option<Value>>,
}

enum Rows {
    Stored(Vec<MemRow>),
    /// `series` series of `per_series` rows, generated while scanning (never stored):
    /// tag `device` = `d{s}`, `ts` = `j * 1000`, fields `value` (float, the row number)
    /// and `n` (int, the row number).
    Generated {
        series: usize,
        per_series: usize,
    },
}

pub struct MemBucket {
    columns: BucketColumns,
    rows: Rows,
    /// Sleep before each delivered row (a slow disk).
    row_delay: Option<Duration>,
    /// Fail every scan with a storage error.
    fail: bool,
    pub requests: Mutex<Vec<ScanRequest>>,
    /// Rows handed to callbacks, over all scans.
    pub delivered: AtomicUsize,
    /// Scans that have returned.
    pub finished: AtomicUsize,
}

fn field(name: &str, ty: FieldType) -> FieldRef {
    FieldRef {
        name: name.to_string(),
        ty,
    }
}

impl MemBucket {
    pub fn new(tags: &[&str], fields: &[(&str, FieldType)], mut rows: Vec<MemRow>) -> MemBucket {
        // Storage order: series (tag values), then time.
        rows.sort_by(|a, b| a.tags.cmp(&b.tags).then(a.ts.cmp(&b.ts)));
        MemBucket::with_rows(
            BucketColumns {
                tags: tags.iter().map(|t| t.to_string()).collect(),
                fields: fields.iter().map(|(n, ty)| field(n, *ty)).collect(),
            },
            Rows::Stored(rows),
        )
    }

    /// A large bucket generated lazily (see [`Rows::Generated`]).
    pub fn generated(series: usize, per_series: usize) -> MemBucket {
        MemBucket::with_rows(
            BucketColumns {
                tags: vec!["device".to_string()],
                fields: vec![field("value", FieldType::Float), field("n", FieldType::Int)],
            },
            Rows::Generated { series, per_series },
        )
    }

    fn with_rows(columns: BucketColumns, rows: Rows) -> MemBucket {
        MemBucket {
            columns,
            rows,
            row_delay: None,
            fail: false,
            requests: Mutex::new(Vec::new()),
            delivered: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
        }
    }

    pub fn with_row_delay(mut self, delay: Duration) -> MemBucket {
        self.row_delay = Some(delay);
        self
    }

    pub fn failing(mut self) -> MemBucket {
        self.fail = true;
        self
    }

    pub fn into_arc(self) -> Arc<MemBucket> {
        Arc::new(self)
    }

    pub fn last_request(&self) -> Option<ScanRequest> {
        self.requests.lock().last().cloned()
    }

    /// Waits (bounded) until `scans` scans have returned; false on time-out.
    pub fn wait_finished(&self, scans: usize) -> bool {
        for _ in 0..500 {
            if self.finished.load(Ordering::SeqCst) >= scans {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    fn matches(&self, req: &ScanRequest, ts: i64, tags: &[String]) -> bool {
        ts >= req.min_ts
            && ts <= req.max_ts
            && req.tags.iter().all(|(name, allowed)| {
                let value = self
                    .columns
                    .tags
                    .iter()
                    .position(|t| t == name)
                    .and_then(|i| tags.get(i))
                    .map(String::as_str)
                    .unwrap_or("");
                allowed.iter().any(|a| a == value)
            })
    }

    /// Field indices in request order (`None` for names the bucket lacks).
    fn projection(&self, req: &ScanRequest) -> Vec<Option<usize>> {
        match &req.fields {
            None => (0..self.columns.fields.len()).map(Some).collect(),
            Some(names) => names
                .iter()
                .map(|n| self.columns.fields.iter().position(|f| f.name == *n))
                .collect(),
        }
    }

    /// Delivers one row; false when the callback asked to stop.
    fn deliver(
        &self,
        f: &mut dyn FnMut(&ScanRow<'_>) -> bool,
        ts: i64,
        tags: &[String],
        values: &[Option<Value>],
    ) -> bool {
        if let Some(delay) = self.row_delay {
            std::thread::sleep(delay);
        }
        self.delivered.fetch_add(1, Ordering::SeqCst);
        f(&ScanRow { ts, tags, values })
    }

    fn scan_rows(&self, req: &ScanRequest, f: &mut dyn FnMut(&ScanRow<'_>) -> bool) {
        let projection = self.projection(req);
        match &self.rows {
            Rows::Stored(rows) => {
                for row in rows.iter().filter(|r| self.matches(req, r.ts, &r.tags)) {
                    let values: Vec<Option<Value>> = projection
                        .iter()
                        .map(|i| i.and_then(|i| row.values.get(i).cloned().flatten()))
                        .collect();
                    if !self.deliver(f, row.ts, &row.tags, &values) {
                        return;
                    }
                }
            }
            Rows::Generated { series, per_series } => {
                for s in 0..*series {
                    let tags = [format!("d{s}")];
                    for j in 0..*per_series {
                        let ts = j as i64 * 1000;
                        if !self.matches(req, ts, &tags) {
                            continue;
                        }
                        let row = (s * per_series + j) as i64;
                        let values: Vec<Option<Value>> = projection
                            .iter()
                            .map(|i| match i {
                                Some(0) => Some(Value::Float(row as f64)),
                                Some(1) => Some(Value::Int(row)),
                                _ => None,
                            })
                            .collect();
                        if !self.deliver(f, ts, &tags, &values) {
                            return;
                        }
                    }
                }
            }
        }
    }
}

impl BucketData for MemBucket {
    fn columns(&self) -> &BucketColumns {
        &self.columns
    }

    fn scan(
        &self,
        req: &ScanRequest,
        f: &mut dyn FnMut(&ScanRow<'_>) -> bool,
    ) -> Result<(), QueryError> {
        self.requests.lock().push(req.clone());
        let result = if self.fail {
            Err(QueryError::Engine(EngineError::Corrupt(
                "test block".into(),
            )))
        } else {
            self.scan_rows(req, f);
            Ok(())
        };
        self.finished.fetch_add(1, Ordering::SeqCst);
        result
    }
}

/// A small weather bucket: tags `device`, `site`; fields `temp` (float), `hum` (int),
/// `ok` (bool), `note` (string).
pub fn weather() -> Arc<MemBucket> {
    let row = |ts: i64, device: &str, site: &str, temp: Option<f64>, hum: i64| MemRow {
        ts,
        tags: vec![device.to_string(), site.to_string()],
        values: vec![
            temp.map(Value::Float),
            Some(Value::Int(hum)),
            Some(Value::Bool(hum % 2 == 0)),
            Some(Value::Str(format!("{device}@{ts}"))),
        ],
    };
    MemBucket::new(
        &["device", "site"],
        &[
            ("temp", FieldType::Float),
            ("hum", FieldType::Int),
            ("ok", FieldType::Bool),
            ("note", FieldType::Str),
        ],
        vec![
            row(1000, "a", "x", Some(20.0), 40),
            row(2000, "a", "x", Some(21.0), 41),
            row(3000, "a", "x", None, 42),
            row(4000, "a", "x", Some(23.0), 43),
            row(5000, "a", "x", Some(24.0), 44),
            row(1000, "b", "y", Some(10.0), 50),
            row(2500, "b", "y", Some(12.0), 51),
            row(4000, "b", "y", Some(14.0), 52),
            row(61_000, "c", "", Some(30.0), 60),
        ],
    )
    .into_arc()
}
