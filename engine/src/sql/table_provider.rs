//! [`BucketTable`]: one bucket as a DataFusion table.
//!
//! Schema: `ts` (UTC ms timestamp, never null), then one nullable `Utf8` column per tag in
//! the bucket's tag order, then one nullable column per registered field with its Arrow
//! type (see [`field_data_type`]). Names are exactly the bucket's tag and field names,
//! so SQL must double-quote names that are not lowercase identifiers (`"gps.lat"`,
//! `"Temp"`).
//!
//! Pushdown: the projection becomes [`ScanRequest::fields`] (unused fields are never
//! decoded); time and tag filters become the request's range and tag sets (see
//! [`pushdown`](super::pushdown)), reported `Inexact` so DataFusion re-checks them; a
//! `LIMIT` that DataFusion passes down (only when no filter is left above the scan)
//! stops the scan after that many rows.

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{plan_err, Result};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;

use super::batch::{field_data_type, ts_data_type, OutputColumn};
use super::pushdown::{bounds_of, ScanBounds, TS_COLUMN};
use super::scan_exec::BucketScanExec;
use crate::error::QueryError;
use crate::scan::{BucketColumns, BucketData, ScanRequest};

/// A bucket exposed to SQL. Cheap to build: it holds the bucket's data handle and schema.
pub struct BucketTable {
    data: Arc<dyn BucketData>,
    /// Copied from `data.columns()` once, so schema and scans agree.
    columns: BucketColumns,
    schema: SchemaRef,
}

impl BucketTable {
    /// Builds the table; fails when two columns would share a name (a tag named `ts`, or
    /// a field named like a tag), which SQL could not tell apart.
    pub fn try_new(data: Arc<dyn BucketData>) -> Result<BucketTable, QueryError> {
        let columns = data.columns().clone();
        let mut fields = Vec::with_capacity(1 + columns.tags.len() + columns.fields.len());
        fields.push(Field::new(TS_COLUMN, ts_data_type(), false));
        fields.extend(
            columns
                .tags
                .iter()
                .map(|t| Field::new(t, DataType::Utf8, true)),
        );
        fields.extend(
            columns
                .fields
                .iter()
                .map(|f| Field::new(&f.name, field_data_type(f.ty), true)),
        );
        let mut seen = HashSet::with_capacity(fields.len());
        if let Some(dup) = fields.iter().find(|f| !seen.insert(f.name().as_str())) {
            return Err(QueryError::Sql(format!(
                "bucket has two columns named `{}`; it cannot be queried with SQL",
                dup.name()
            )));
        }
        Ok(BucketTable {
            data,
            columns,
            schema: Arc::new(Schema::new(fields)),
        })
    }

    /// Where schema column `index` comes from, and the field list of the request.
    fn plan_columns(&self, projection: &[usize]) -> Result<(Vec<OutputColumn>, Vec<String>)> {
        let tag_count = self.columns.tags.len();
        let mut fields = Vec::new();
        let mut out = Vec::with_capacity(projection.len());
        for &index in projection {
            let column = if index == 0 {
                OutputColumn::Ts
            } else if index <= tag_count {
                OutputColumn::Tag(index - 1)
            } else if let Some(field) = self.columns.fields.get(index - 1 - tag_count) {
                fields.push(field.name.clone());
                OutputColumn::Field {
                    pos: fields.len() - 1,
                    ty: field.ty,
                }
            } else {
                return plan_err!("projection index {index} is outside the bucket's schema");
            };
            out.push(column);
        }
        Ok((out, fields))
    }

    /// The physical scan for this projection, these filters and this limit.
    fn plan_scan(
        &self,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
        partitions: usize,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let all: Vec<usize>;
        let projection = match projection {
            Some(p) => p.as_slice(),
            None => {
                all = (0..self.schema.fields().len()).collect();
                &all
            }
        };
        let schema = Arc::new(self.schema.project(projection)?);
        let (columns, fields) = self.plan_columns(projection)?;
        let bounds = filters
            .iter()
            .map(|f| bounds_of(f, &self.columns.tags))
            .fold(ScanBounds::all(), ScanBounds::and);
        let matches_nothing = bounds.is_empty();
        let request = ScanRequest {
            min_ts: bounds.min_ts,
            max_ts: bounds.max_ts,
            // In the bucket's tag order, so equal queries give equal requests.
            tags: self
                .columns
                .tags
                .iter()
                .filter_map(|t| {
                    let values = bounds.tags.get(t)?;
                    Some((t.clone(), values.iter().cloned().collect()))
                })
                .collect(),
            fields: Some(fields),
            part: (0, 1),
        };
        Ok(Arc::new(BucketScanExec::new(
            Arc::clone(&self.data),
            request,
            schema,
            columns,
            matches_nothing,
            limit,
            partitions,
        )))
    }
}

impl fmt::Debug for BucketTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BucketTable")
            .field("columns", &self.columns)
            .finish()
    }
}

/// The trait is declared with `#[async_trait]`; `scan` is written out in the form that
/// macro expands to (a boxed `Send` future) because planning a scan does no async work
/// and this crate does not depend on `async-trait`.
type BoxedPlanFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Arc<dyn ExecutionPlan>>> + Send + 'a>>;

impl TableProvider for BucketTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn scan<'life0, 'life1, 'life2, 'life3, 'async_trait>(
        &'life0 self,
        state: &'life1 dyn Session,
        projection: Option<&'life2 Vec<usize>>,
        filters: &'life3 [Expr],
        limit: Option<usize>,
    ) -> BoxedPlanFuture<'async_trait>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        'life3: 'async_trait,
        Self: 'async_trait,
    {
        // One scan partition per target partition, each over its share of the series.
        let partitions = state.config().target_partitions().max(1);
        let plan = self.plan_scan(projection, filters, limit, partitions);
        Box::pin(std::future::ready(plan))
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                if bounds_of(f, &self.columns.tags).is_unconstrained() {
                    TableProviderFilterPushDown::Unsupported
                } else {
                    TableProviderFilterPushDown::Inexact
                }
            })
            .collect())
    }
}
