//! Encoding SQL results for HTTP clients: JSON, CSV and Arrow IPC.
//!
//! JSON and CSV are for people and dashboards, so they follow Thinger's conventions:
//! **timestamps of any unit are written as integer epoch milliseconds** (what Thinger
//! clients send and expect in `ts`), not as formatted strings. Other values:
//!
//! - JSON: an array of row objects, one key per column, `null` for SQL NULL (keys are
//!   always present), NaN and ±infinity as `null` (JSON has no spelling for them),
//!   64-bit integers as exact JSON numbers, nested values as JSON arrays/objects.
//! - CSV: a header row, then one line per row, fields quoted per RFC 4180 when they
//!   contain a comma, quote or line break; NULL is the empty field; lines end in `\n`;
//!   nested values are written as their display text.
//! - Arrow IPC (stream format): the batches unchanged, types and all, for clients that
//!   want typed columns.
//!
//! Column names are written as DataFusion names them; a query selecting two columns
//! with the same name gives a JSON object with a repeated key, so alias them.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringBuilder};
use datafusion::arrow::datatypes::{
    DataType, Field, Int64Type, Schema, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::error::QueryError;

/// JSON array of row objects (see the module docs for value rules).
pub fn batches_to_json(batches: &[RecordBatch]) -> Result<String, QueryError> {
    use datafusion::arrow::json::writer::{JsonArray, WriterBuilder};
    let mut writer = WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, JsonArray>(Vec::new());
    for batch in batches {
        writer
            .write(&normalize(batch, false)?)
            .map_err(encode_error("JSON"))?;
    }
    writer.finish().map_err(encode_error("JSON"))?;
    utf8(writer.into_inner(), "JSON")
}

/// CSV with a header row (see the module docs for value rules). The header comes from
/// the first batch; with no batches at all the output is empty.
pub fn batches_to_csv(batches: &[RecordBatch]) -> Result<String, QueryError> {
    use datafusion::arrow::csv::WriterBuilder;
    let mut writer = WriterBuilder::new().with_header(true).build(Vec::new());
    for batch in batches {
        writer
            .write(&normalize(batch, true)?)
            .map_err(encode_error("CSV"))?;
    }
    utf8(writer.into_inner(), "CSV")
}

/// Arrow IPC stream (schema message, then one message per batch). With no batches the
/// stream carries an empty schema.
pub fn batches_to_arrow_ipc(batches: &[RecordBatch]) -> Result<Vec<u8>, QueryError> {
    use datafusion::arrow::ipc::writer::StreamWriter;
    let schema = batches
        .first()
        .map(RecordBatch::schema)
        .unwrap_or_else(|| Arc::new(Schema::empty()));
    let mut writer =
        StreamWriter::try_new(Vec::new(), &schema).map_err(encode_error("Arrow IPC"))?;
    for batch in batches {
        writer.write(batch).map_err(encode_error("Arrow IPC"))?;
    }
    writer.into_inner().map_err(encode_error("Arrow IPC"))
}

fn encode_error(format: &'static str) -> impl Fn(ArrowError) -> QueryError {
    move |e| QueryError::Sql(format!("cannot encode the result as {format}: {e}"))
}

fn utf8(bytes: Vec<u8>, format: &str) -> Result<String, QueryError> {
    String::from_utf8(bytes)
        .map_err(|e| QueryError::Sql(format!("{format} output is not UTF-8: {e}")))
}

/// Rewrites the columns text formats spell differently: timestamps become Int64 epoch
/// ms; with `flatten_nested`, lists/structs/maps become their display text (CSV has no
/// nesting).
fn normalize(batch: &RecordBatch, flatten_nested: bool) -> Result<RecordBatch, QueryError> {
    let schema = batch.schema();
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        let (data_type, array) = match field.data_type() {
            DataType::Timestamp(unit, _) => (DataType::Int64, timestamp_to_ms(column, *unit)),
            t if flatten_nested && t.is_nested() => (DataType::Utf8, display_strings(column)?),
            t => (t.clone(), Arc::clone(column)),
        };
        fields.push(Field::new(field.name(), data_type, field.is_nullable()));
        columns.push(array);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(encode_error("text"))
}

/// Epoch ms of each timestamp, rounding sub-ms units down (toward the past), so a
/// value always falls in the millisecond that contains it. Seconds past ±292 million
/// years saturate.
fn timestamp_to_ms(column: &ArrayRef, unit: TimeUnit) -> ArrayRef {
    let ms: Int64Array = match unit {
        TimeUnit::Second => column
            .as_primitive::<TimestampSecondType>()
            .unary::<_, Int64Type>(|v| v.saturating_mul(1000)),
        TimeUnit::Millisecond => column
            .as_primitive::<TimestampMillisecondType>()
            .unary::<_, Int64Type>(|v| v),
        TimeUnit::Microsecond => column
            .as_primitive::<TimestampMicrosecondType>()
            .unary::<_, Int64Type>(|v| v.div_euclid(1000)),
        TimeUnit::Nanosecond => column
            .as_primitive::<TimestampNanosecondType>()
            .unary::<_, Int64Type>(|v| v.div_euclid(1_000_000)),
    };
    Arc::new(ms)
}

/// The display text of each value (NULL stays NULL).
fn display_strings(column: &ArrayRef) -> Result<ArrayRef, QueryError> {
    let formatter = ArrayFormatter::try_new(column.as_ref(), &FormatOptions::default())
        .map_err(encode_error("text"))?;
    let mut out = StringBuilder::with_capacity(column.len(), column.len() * 8);
    let mut text = String::new();
    for i in 0..column.len() {
        if column.is_null(i) {
            out.append_null();
        } else {
            text.clear();
            formatter
                .value(i)
                .write(&mut text)
                .map_err(encode_error("text"))?;
            out.append_value(&text);
        }
    }
    Ok(Arc::new(out.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{
        BooleanArray, Float64Array, ListArray, StringArray, TimestampMillisecondArray,
        TimestampNanosecondArray,
    };
    use datafusion::arrow::ipc::reader::StreamReader;
    use serde_json::json;

    const BIG: i64 = 1 << 60;

    fn sample() -> RecordBatch {
        let columns: Vec<(&str, ArrayRef)> = vec![
            (
                "ts",
                Arc::new(
                    TimestampMillisecondArray::from(vec![1_700_000_000_123, -5, 0])
                        .with_timezone("UTC"),
                ),
            ),
            (
                "f",
                Arc::new(Float64Array::from(vec![Some(1.5), Some(f64::NAN), None])),
            ),
            (
                "i",
                Arc::new(Int64Array::from(vec![Some(BIG), None, Some(-1)])),
            ),
            (
                "b",
                Arc::new(BooleanArray::from(vec![Some(true), Some(false), None])),
            ),
            (
                "s",
                Arc::new(StringArray::from(vec!["a,b", "say \"hi\"", "line1\nline2"])),
            ),
            (
                "t_ns",
                Arc::new(TimestampNanosecondArray::from(vec![
                    Some(1_500_000),
                    Some(-1),
                    None,
                ])),
            ),
        ];
        RecordBatch::try_from_iter(columns).expect("sample batch")
    }

    #[test]
    fn json_rows_with_ms_timestamps_and_nulls() {
        let text = batches_to_json(&[sample()]).expect("json");
        // 2^60 must survive exactly (no detour through f64).
        assert!(text.contains("1152921504606846976"), "{text}");
        let parsed: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(
            parsed,
            json!([
                {"ts": 1_700_000_000_123i64, "f": 1.5, "i": BIG, "b": true, "s": "a,b", "t_ns": 1},
                {"ts": -5, "f": null, "i": null, "b": false, "s": "say \"hi\"", "t_ns": -1},
                {"ts": 0, "f": null, "i": -1, "b": null, "s": "line1\nline2", "t_ns": null},
            ])
        );
        assert_eq!(batches_to_json(&[]).expect("json"), "[]");
    }

    #[test]
    fn csv_quotes_per_rfc_4180() {
        let text = batches_to_csv(&[sample(), sample().slice(0, 1)]).expect("csv");
        assert_eq!(
            text,
            "ts,f,i,b,s,t_ns\n\
             1700000000123,1.5,1152921504606846976,true,\"a,b\",1\n\
             -5,NaN,,false,\"say \"\"hi\"\"\",-1\n\
             0,,-1,,\"line1\nline2\",\n\
             1700000000123,1.5,1152921504606846976,true,\"a,b\",1\n"
        );
        assert_eq!(batches_to_csv(&[]).expect("csv"), "");
    }

    #[test]
    fn nested_values() {
        let list = ListArray::from_iter_primitive::<Int64Type, _, _>(vec![
            Some(vec![Some(1), Some(2)]),
            None,
        ]);
        let batch =
            RecordBatch::try_from_iter(vec![("l", Arc::new(list) as ArrayRef)]).expect("batch");
        assert_eq!(
            batches_to_csv(std::slice::from_ref(&batch)).expect("csv"),
            "l\n\"[1, 2]\"\n\"\"\n"
        );
        let parsed: serde_json::Value =
            serde_json::from_str(&batches_to_json(&[batch]).expect("json")).expect("valid");
        assert_eq!(parsed, json!([{"l": [1, 2]}, {"l": null}]));
    }

    #[test]
    fn arrow_ipc_round_trips_types() {
        let batch = sample();
        let bytes = batches_to_arrow_ipc(&[batch.clone(), batch.slice(1, 2)]).expect("ipc");
        let reader = StreamReader::try_new(std::io::Cursor::new(bytes), None).expect("reader");
        let read: Vec<RecordBatch> = reader.collect::<Result<_, _>>().expect("batches");
        assert_eq!(read, vec![batch.clone(), batch.slice(1, 2)]);
        assert_eq!(
            read[0].schema().field(0).data_type(),
            batch.schema().field(0).data_type()
        );

        let empty = batches_to_arrow_ipc(&[]).expect("ipc");
        let reader = StreamReader::try_new(std::io::Cursor::new(empty), None).expect("reader");
        assert_eq!(reader.schema().fields().len(), 0);
    }
}
