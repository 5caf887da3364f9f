//! Building Arrow record batches from scan rows.
//!
//! Storage hands rows one at a time through [`BucketData::scan`]'s callback; a
//! [`BatchBuilder`] appends each to per-column Arrow builders and cuts a batch when the
//! caller asks. Only the projected columns have builders, so unused tags and fields cost
//! nothing here (and unused fields are not even decoded: they are left out of the
//! request).
//!
//! [`BucketData::scan`]: crate::scan::BucketData::scan

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch, RecordBatchOptions,
    StringBuilder, TimestampMillisecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::arrow::error::ArrowError;

use crate::scan::ScanRow;
use crate::value::{FieldType, Value};

/// Timezone of the `ts` column: stored timestamps are UTC epoch ms.
pub const TS_TIMEZONE: &str = "UTC";

/// Arrow type of the `ts` column.
pub fn ts_data_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some(TS_TIMEZONE.into()))
}

/// Arrow type of a field column.
pub fn field_data_type(ty: FieldType) -> DataType {
    match ty {
        FieldType::Float => DataType::Float64,
        FieldType::Int => DataType::Int64,
        FieldType::Bool => DataType::Boolean,
        // JSON arrays are exposed as their text: SQL users can still filter and print them.
        FieldType::Str | FieldType::Json => DataType::Utf8,
    }
}

/// Where one output column's values come from in a [`ScanRow`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputColumn {
    Ts,
    /// Index into [`ScanRow::tags`] (the bucket's tag order).
    Tag(usize),
    /// Index into [`ScanRow::values`] (the request's field order) and the field's type.
    Field {
        pos: usize,
        ty: FieldType,
    },
}

enum ColumnBuilder {
    Ts(TimestampMillisecondBuilder),
    Tag(usize, StringBuilder),
    Float(usize, Float64Builder),
    Int(usize, Int64Builder),
    Bool(usize, BooleanBuilder),
    Str(usize, StringBuilder),
}

impl ColumnBuilder {
    fn new(column: OutputColumn) -> ColumnBuilder {
        match column {
            OutputColumn::Ts => {
                ColumnBuilder::Ts(TimestampMillisecondBuilder::new().with_timezone(TS_TIMEZONE))
            }
            OutputColumn::Tag(i) => ColumnBuilder::Tag(i, StringBuilder::new()),
            OutputColumn::Field { pos, ty } => match ty {
                FieldType::Float => ColumnBuilder::Float(pos, Float64Builder::new()),
                FieldType::Int => ColumnBuilder::Int(pos, Int64Builder::new()),
                FieldType::Bool => ColumnBuilder::Bool(pos, BooleanBuilder::new()),
                FieldType::Str | FieldType::Json => ColumnBuilder::Str(pos, StringBuilder::new()),
            },
        }
    }

    /// Appends this column's value of `row`.
    ///
    /// A tag storage reports as "" (absent) is NULL: SQL's way to say "no value", so
    /// `WHERE site IS NULL` finds untagged series. A value whose type differs from the
    /// field's registered type is converted when lossless (integer into a float field,
    /// as aggregates do) and NULL otherwise, rather than failing the whole query.
    fn append(&mut self, row: &ScanRow<'_>) {
        let value = |pos: usize| row.values.get(pos).and_then(Option::as_ref);
        match self {
            ColumnBuilder::Ts(b) => b.append_value(row.ts),
            ColumnBuilder::Tag(i, b) => match row.tags.get(*i) {
                Some(tag) if !tag.is_empty() => b.append_value(tag),
                _ => b.append_null(),
            },
            ColumnBuilder::Float(pos, b) => b.append_option(match value(*pos) {
                Some(Value::Float(f)) => Some(*f),
                Some(Value::Int(i)) => Some(*i as f64),
                _ => None,
            }),
            ColumnBuilder::Int(pos, b) => b.append_option(match value(*pos) {
                Some(Value::Int(i)) => Some(*i),
                _ => None,
            }),
            ColumnBuilder::Bool(pos, b) => b.append_option(match value(*pos) {
                Some(Value::Bool(v)) => Some(*v),
                _ => None,
            }),
            ColumnBuilder::Str(pos, b) => match value(*pos) {
                Some(Value::Str(s) | Value::Json(s)) => b.append_value(s),
                _ => b.append_null(),
            },
        }
    }

    /// The built array; the builder is left empty for the next batch.
    fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnBuilder::Ts(b) => Arc::new(b.finish()),
            ColumnBuilder::Tag(_, b) | ColumnBuilder::Str(_, b) => Arc::new(b.finish()),
            ColumnBuilder::Float(_, b) => Arc::new(b.finish()),
            ColumnBuilder::Int(_, b) => Arc::new(b.finish()),
            ColumnBuilder::Bool(_, b) => Arc::new(b.finish()),
        }
    }
}

/// Accumulates rows of one projected schema into record batches.
pub struct BatchBuilder {
    schema: SchemaRef,
    columns: Vec<ColumnBuilder>,
    rows: usize,
}

impl BatchBuilder {
    /// `columns` lists, in `schema` order, where each column's values come from.
    pub fn new(schema: SchemaRef, columns: &[OutputColumn]) -> BatchBuilder {
        BatchBuilder {
            schema,
            columns: columns.iter().copied().map(ColumnBuilder::new).collect(),
            rows: 0,
        }
    }

    /// Rows appended since the last [`BatchBuilder::finish`].
    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    pub fn append(&mut self, row: &ScanRow<'_>) {
        for column in &mut self.columns {
            column.append(row);
        }
        self.rows += 1;
    }

    /// Cuts the rows appended so far into a batch and starts the next one.
    ///
    /// The row count is explicit so that a projection without columns (`SELECT
    /// count(*)`) still reports how many rows matched.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let arrays = self.columns.iter_mut().map(ColumnBuilder::finish).collect();
        let options = RecordBatchOptions::new().with_row_count(Some(self.rows));
        self.rows = 0;
        RecordBatch::try_new_with_options(Arc::clone(&self.schema), arrays, &options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{Field, Float64Type, Int64Type, Schema};

    #[test]
    fn builds_typed_columns_with_nulls() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("ts", ts_data_type(), false),
            Field::new("device", DataType::Utf8, true),
            Field::new("t", DataType::Float64, true),
            Field::new("n", DataType::Int64, true),
        ]));
        let columns = [
            OutputColumn::Ts,
            OutputColumn::Tag(0),
            OutputColumn::Field {
                pos: 1,
                ty: FieldType::Float,
            },
            OutputColumn::Field {
                pos: 0,
                ty: FieldType::Int,
            },
        ];
        let mut builder = BatchBuilder::new(schema, &columns);
        let tags = ["d1".to_string()];
        let values = [Some(Value::Int(7)), Some(Value::Int(2))];
        builder.append(&ScanRow {
            ts: 5,
            tags: &tags,
            values: &values,
        });
        let no_tags = [String::new()];
        let missing = [Some(Value::Str("x".into())), None];
        builder.append(&ScanRow {
            ts: 6,
            tags: &no_tags,
            values: &missing,
        });
        assert_eq!(builder.len(), 2);

        let batch = builder.finish().expect("batch");
        assert!(builder.is_empty());
        assert_eq!(batch.num_rows(), 2);
        let device = batch.column(1).as_string::<i32>();
        assert_eq!(device.value(0), "d1");
        assert!(device.is_null(1));
        let t = batch.column(2).as_primitive::<Float64Type>();
        assert_eq!(t.value(0), 2.0);
        assert!(t.is_null(1));
        let n = batch.column(3).as_primitive::<Int64Type>();
        assert_eq!(n.value(0), 7);
        // A string where an integer is registered is NULL, not an error.
        assert!(n.is_null(1));
    }

    #[test]
    fn empty_projection_keeps_the_row_count() {
        let mut builder = BatchBuilder::new(Arc::new(Schema::empty()), &[]);
        builder.append(&ScanRow {
            ts: 1,
            tags: &[],
            values: &[],
        });
        builder.append(&ScanRow {
            ts: 2,
            tags: &[],
            values: &[],
        });
        assert_eq!(builder.finish().expect("batch").num_rows(), 2);
    }
}
