//! Bucket records: JSON text in, flattened typed fields, compact binary on disk.
//!
//! A record is a JSON object with an optional `ts` (epoch ms). Nested objects are
//! flattened to dotted names (`{"gps":{"lat":1}}` → `gps.lat`), arrays are kept as JSON
//! text, nulls are absent fields. Fields named like one of the bucket's tags are the
//! record's tag values and pick its series.
//!
//! Disk encoding of a record's fields: `varint count`, then per field `varint field id`,
//! a type tag and its payload. Floats that are short decimals (21.5, 1013.25) are stored
//! as a scaled integer varint, which round-trips exactly and takes 2-3 bytes instead of 8.
//! Tags are persisted: append-only, covered by golden-bytes tests.

use crate::error::CommandError;
use crate::limits::{
    FIELD_NAME_BYTES_MAX, RECORDS_PER_COMMAND_MAX, RECORD_BYTES_MAX, RECORD_DEPTH_MAX,
    RECORD_FIELDS_MAX, TAG_VALUE_BYTES_MAX,
};
use crate::value::{Num, Value};
use serde_json::Value as Json;

/// One parsed record.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedRecord {
    pub ts: i64,
    /// Values of the bucket's tags, in the bucket's tag order ("" when absent).
    pub tags: Vec<String>,
    /// Flattened fields (never a tag, never `ts`).
    pub fields: Vec<(String, Value)>,
}

/// Parses one JSON object or an array of objects. Records without `ts` get `default_ts`.
pub fn parse_records(
    json: &str,
    tags: &[String],
    default_ts: i64,
) -> Result<Vec<ParsedRecord>, CommandError> {
    let doc: Json = serde_json::from_str(json)
        .map_err(|e| CommandError::Invalid(format!("records are not valid JSON: {e}")))?;
    let items = match doc {
        Json::Array(items) => items,
        obj @ Json::Object(_) => vec![obj],
        other => {
            return Err(CommandError::Invalid(format!(
                "expected a JSON object or an array of objects, got {}",
                json_kind(&other)
            )))
        }
    };
    if items.len() > RECORDS_PER_COMMAND_MAX {
        return Err(CommandError::TooLarge {
            what: format!("a write of {} records", items.len()),
            limit: RECORDS_PER_COMMAND_MAX as u64,
        });
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| parse_one(item, tags, default_ts).map_err(|e| at_record(i, e)))
        .collect()
}

fn at_record(i: usize, e: CommandError) -> CommandError {
    match e {
        CommandError::Invalid(m) => CommandError::Invalid(format!("record {i}: {m}")),
        CommandError::TooLarge { what, limit } => CommandError::TooLarge {
            what: format!("record {i}: {what}"),
            limit,
        },
        other => other,
    }
}

fn json_kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

fn parse_one(item: Json, tags: &[String], default_ts: i64) -> Result<ParsedRecord, CommandError> {
    let Json::Object(map) = item else {
        return Err(CommandError::Invalid(format!(
            "is {}, not a JSON object",
            json_kind(&item)
        )));
    };
    let mut rec = ParsedRecord {
        ts: default_ts,
        tags: vec![String::new(); tags.len()],
        fields: Vec::new(),
    };
    let mut bytes = 0usize;
    for (k, v) in map {
        if k == "ts" {
            rec.ts = parse_ts(&v)?;
        } else if let Some(pos) = tags.iter().position(|t| *t == k) {
            let s = match v {
                Json::String(s) => s,
                Json::Null => String::new(),
                Json::Number(n) => n.to_string(),
                Json::Bool(b) => b.to_string(),
                other => {
                    return Err(CommandError::Invalid(format!(
                        "tag `{k}` must be a string, got {}",
                        json_kind(&other)
                    )))
                }
            };
            if s.len() > TAG_VALUE_BYTES_MAX {
                return Err(CommandError::TooLarge {
                    what: format!("tag `{k}` value of {} bytes", s.len()),
                    limit: TAG_VALUE_BYTES_MAX as u64,
                });
            }
            rec.tags[pos] = s;
        } else {
            flatten(k, v, 1, &mut rec.fields, &mut bytes)?;
        }
    }
    if rec.fields.len() > RECORD_FIELDS_MAX {
        return Err(CommandError::TooLarge {
            what: format!("{} fields", rec.fields.len()),
            limit: RECORD_FIELDS_MAX as u64,
        });
    }
    if bytes > RECORD_BYTES_MAX {
        return Err(CommandError::TooLarge {
            what: format!("a record of {bytes} bytes"),
            limit: RECORD_BYTES_MAX as u64,
        });
    }
    Ok(rec)
}

fn parse_ts(v: &Json) -> Result<i64, CommandError> {
    let bad = || {
        CommandError::Invalid(format!(
            "`ts` must be an integer in epoch milliseconds, got {v}"
        ))
    };
    match v {
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(i)
            } else {
                let f = n.as_f64().ok_or_else(bad)?;
                if f.fract() == 0.0 && f.abs() < 9.0e15 {
                    Ok(f as i64)
                } else {
                    Err(bad())
                }
            }
        }
        _ => Err(bad()),
    }
}

fn flatten(
    name: String,
    v: Json,
    depth: usize,
    out: &mut Vec<(String, Value)>,
    bytes: &mut usize,
) -> Result<(), CommandError> {
    if name.is_empty() {
        return Err(CommandError::Invalid("a field has an empty name".into()));
    }
    if name.len() > FIELD_NAME_BYTES_MAX {
        return Err(CommandError::TooLarge {
            what: format!(
                "field name `{}…` of {} bytes",
                &name[..name.floor_char_boundary(24)],
                name.len()
            ),
            limit: FIELD_NAME_BYTES_MAX as u64,
        });
    }
    if out.len() > RECORD_FIELDS_MAX {
        return Err(CommandError::TooLarge {
            what: "fields".into(),
            limit: RECORD_FIELDS_MAX as u64,
        });
    }
    let value = match v {
        Json::Null => return Ok(()),
        Json::Bool(b) => Value::Bool(b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::Str(s),
        Json::Array(a) => Value::Json(Json::Array(a).to_string()),
        Json::Object(map) => {
            if depth >= RECORD_DEPTH_MAX {
                return Err(CommandError::TooLarge {
                    what: format!("nesting depth at field `{name}`"),
                    limit: RECORD_DEPTH_MAX as u64,
                });
            }
            for (k, v) in map {
                flatten(format!("{name}.{k}"), v, depth + 1, out, bytes)?;
            }
            return Ok(());
        }
    };
    *bytes += name.len()
        + match &value {
            Value::Str(s) | Value::Json(s) => s.len() + 2,
            _ => 9,
        };
    if out.iter().any(|(n, _)| *n == name) {
        return Err(CommandError::Invalid(format!(
            "field `{name}` appears twice"
        )));
    }
    out.push((name, value));
    Ok(())
}

// ---- binary encoding ----

const T_F64: u8 = 0;
const T_INT: u8 = 1;
const T_FALSE: u8 = 2;
const T_TRUE: u8 = 3;
const T_STR: u8 = 4;
const T_JSON: u8 = 5;
/// `T_DEC0 + k`: a float stored as zigzag varint `m` with value `m / 10^k`, k in 0..=4.
const T_DEC0: u8 = 6;
const DEC_MAX: u8 = 4;
const POW10: [f64; 5] = [1.0, 10.0, 100.0, 1000.0, 10000.0];

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(i: i64) -> u64 {
    ((i << 1) ^ (i >> 63)) as u64
}

fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

/// Encodes a float as a short decimal when that round-trips bit for bit.
fn put_float(out: &mut Vec<u8>, f: f64) {
    for k in 0..=DEC_MAX {
        let m = (f * POW10[k as usize]).round();
        if m.abs() >= 9.0e15 {
            break;
        }
        // Check with exactly what the decoder computes (this also keeps -0.0 as f64).
        let m = m as i64;
        if ((m as f64) / POW10[k as usize]).to_bits() == f.to_bits() {
            out.push(T_DEC0 + k);
            put_varint(out, zigzag(m));
            return;
        }
    }
    out.push(T_F64);
    out.extend_from_slice(&f.to_le_bytes());
}

/// Appends a number: an integer as a zigzag varint, a float as in records (a short
/// decimal when that round-trips, else 8 bytes). Used by rollup rows.
pub(crate) fn put_num(out: &mut Vec<u8>, n: Num) {
    match n {
        Num::I(i) => {
            out.push(T_INT);
            put_varint(out, zigzag(i));
        }
        Num::F(f) => put_float(out, f),
    }
}

/// Appends a varint (used by rollup rows).
pub(crate) fn put_uvarint(out: &mut Vec<u8>, v: u64) {
    put_varint(out, v)
}

/// Appends a signed varint (zigzag; used by rollup rows).
pub(crate) fn put_ivarint(out: &mut Vec<u8>, v: i64) {
    put_varint(out, zigzag(v))
}

/// Reads a varint written by [`put_uvarint`], advancing `buf`.
pub(crate) fn get_uvarint(buf: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        v |= ((b & 0x7f) as u64) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

/// Reads a signed varint written by [`put_ivarint`].
pub(crate) fn get_ivarint(buf: &mut &[u8]) -> Option<i64> {
    get_uvarint(buf).map(unzigzag)
}

/// Reads a number written by [`put_num`].
pub(crate) fn get_num(buf: &mut &[u8]) -> Option<Num> {
    let (&tag, rest) = buf.split_first()?;
    *buf = rest;
    match tag {
        T_INT => get_ivarint(buf).map(Num::I),
        T_F64 => {
            let (b, rest) = buf.split_first_chunk::<8>()?;
            *buf = rest;
            Some(Num::F(f64::from_le_bytes(*b)))
        }
        t if (T_DEC0..=T_DEC0 + DEC_MAX).contains(&t) => {
            let m = get_ivarint(buf)?;
            Some(Num::F(m as f64 / POW10[(t - T_DEC0) as usize]))
        }
        _ => None,
    }
}

/// Appends the encoding of `fields` (field id, value) to `out`.
pub fn encode_fields(fields: &[(u16, &Value)], out: &mut Vec<u8>) {
    put_varint(out, fields.len() as u64);
    for (id, v) in fields {
        put_varint(out, *id as u64);
        match v {
            Value::Float(f) => put_float(out, *f),
            Value::Int(i) => {
                out.push(T_INT);
                put_varint(out, zigzag(*i));
            }
            Value::Bool(false) => out.push(T_FALSE),
            Value::Bool(true) => out.push(T_TRUE),
            Value::Str(s) | Value::Json(s) => {
                out.push(if matches!(v, Value::Str(_)) {
                    T_STR
                } else {
                    T_JSON
                });
                put_varint(out, s.len() as u64);
                out.extend_from_slice(s.as_bytes());
            }
        }
    }
}

/// Streaming decoder over an encoded record.
pub struct FieldDecoder<'a> {
    buf: &'a [u8],
    left: u64,
}

impl<'a> FieldDecoder<'a> {
    /// Starts decoding; `None` when the header is corrupt.
    pub fn new(buf: &'a [u8]) -> Option<FieldDecoder<'a>> {
        let mut d = FieldDecoder { buf, left: 0 };
        d.left = d.varint()?;
        Some(d)
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.buf.split_first()?;
            self.buf = rest;
            v |= ((b & 0x7f) as u64) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Some(a)
    }

    /// Next field: its id and value when `want(id)`, else its id and `None` (payload skipped).
    /// Returns `Err(())` on corrupt input.
    #[allow(clippy::result_unit_err, clippy::type_complexity)]
    pub fn next_with(
        &mut self,
        want: impl Fn(u16) -> bool,
    ) -> Result<Option<(u16, Option<Value>)>, ()> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        let id = self.varint().ok_or(())? as u16;
        let wanted = want(id);
        let (&tag, rest) = self.buf.split_first().ok_or(())?;
        self.buf = rest;
        let v = match tag {
            T_F64 => {
                let b = self.take(8).ok_or(())?;
                Value::Float(f64::from_le_bytes(b.try_into().map_err(|_| ())?))
            }
            T_INT => Value::Int(unzigzag(self.varint().ok_or(())?)),
            T_FALSE => Value::Bool(false),
            T_TRUE => Value::Bool(true),
            T_STR | T_JSON => {
                let n = self.varint().ok_or(())? as usize;
                let b = self.take(n).ok_or(())?;
                if !wanted {
                    return Ok(Some((id, None)));
                }
                let s = std::str::from_utf8(b).map_err(|_| ())?.to_string();
                if tag == T_STR {
                    Value::Str(s)
                } else {
                    Value::Json(s)
                }
            }
            t if (T_DEC0..=T_DEC0 + DEC_MAX).contains(&t) => {
                let m = unzigzag(self.varint().ok_or(())?);
                Value::Float(m as f64 / POW10[(t - T_DEC0) as usize])
            }
            _ => return Err(()),
        };
        Ok(Some((id, wanted.then_some(v))))
    }
}

/// Decodes every field of a record.
pub fn decode_all(buf: &[u8]) -> Option<Vec<(u16, Value)>> {
    let mut d = FieldDecoder::new(buf)?;
    let mut out = Vec::new();
    while let Some((id, v)) = d.next_with(|_| true).ok()? {
        out.push((id, v?));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags() -> Vec<String> {
        vec!["device".into()]
    }

    #[test]
    fn flattens_and_types() {
        let r = parse_records(
            r#"{"ts":5,"device":"d1","t":21.5,"n":3,"gps":{"lat":1.5,"lon":{"x":true}},"a":[1,2],"z":null,"s":"hi"}"#,
            &tags(),
            99,
        )
        .unwrap();
        assert_eq!(r.len(), 1);
        let r = &r[0];
        assert_eq!(r.ts, 5);
        assert_eq!(r.tags, vec!["d1".to_string()]);
        let get = |n: &str| {
            r.fields
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("t"), Some(Value::Float(21.5)));
        assert_eq!(get("n"), Some(Value::Int(3)));
        assert_eq!(get("gps.lat"), Some(Value::Float(1.5)));
        assert_eq!(get("gps.lon.x"), Some(Value::Bool(true)));
        assert_eq!(get("a"), Some(Value::Json("[1,2]".into())));
        assert_eq!(get("z"), None);
        assert_eq!(get("s"), Some(Value::Str("hi".into())));
    }

    #[test]
    fn default_ts_and_arrays() {
        let r = parse_records(r#"[{"v":1},{"v":2,"ts":7}]"#, &[], 42).unwrap();
        assert_eq!(r[0].ts, 42);
        assert_eq!(r[1].ts, 7);
    }

    #[test]
    fn bad_input_is_named() {
        let e = parse_records("{", &[], 0).unwrap_err();
        assert!(e.to_string().contains("not valid JSON"), "{e}");
        let e = parse_records("[1]", &[], 0).unwrap_err();
        assert!(e.to_string().contains("record 0"), "{e}");
        let e = parse_records(r#"{"ts":"yesterday"}"#, &[], 0).unwrap_err();
        assert!(e.to_string().contains("`ts`"), "{e}");
        let many: String = format!(
            "{{{}}}",
            (0..RECORD_FIELDS_MAX + 1)
                .map(|i| format!("\"f{i}\":1"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let e = parse_records(&many, &[], 0).unwrap_err();
        assert!(matches!(e, CommandError::TooLarge { .. }), "{e}");
        let e = parse_records(r#"{"device":{"x":1}}"#, &tags(), 0).unwrap_err();
        assert!(e.to_string().contains("tag `device`"), "{e}");
    }

    #[test]
    fn encoding_roundtrips_every_type() {
        let vals = [
            Value::Float(21.5),
            Value::Float(1013.25),
            Value::Float(-0.0),
            Value::Float(0.1 + 0.2),
            Value::Float(1e300),
            Value::Float(-7.0),
            Value::Int(i64::MIN),
            Value::Int(42),
            Value::Bool(true),
            Value::Bool(false),
            Value::Str("héllo".into()),
            Value::Json("[1,2]".into()),
        ];
        let fields: Vec<(u16, &Value)> = vals
            .iter()
            .enumerate()
            .map(|(i, v)| (i as u16 * 300, v))
            .collect();
        let mut buf = Vec::new();
        encode_fields(&fields, &mut buf);
        let back = decode_all(&buf).unwrap();
        assert_eq!(back.len(), vals.len());
        for ((id, v), (i, orig)) in back.iter().zip(vals.iter().enumerate()) {
            assert_eq!(*id, i as u16 * 300);
            match (v, orig) {
                (Value::Float(a), Value::Float(b)) => assert_eq!(a.to_bits(), b.to_bits()),
                _ => assert_eq!(v, orig),
            }
        }
    }

    /// Golden bytes: the persisted encoding must not change silently.
    #[test]
    fn encoding_golden_bytes() {
        let a = Value::Float(21.5);
        let b = Value::Int(-3);
        let c = Value::Str("x".into());
        let d = Value::Float(0.1 + 0.2);
        let mut buf = Vec::new();
        encode_fields(&[(0, &a), (1, &b), (2, &c), (3, &d)], &mut buf);
        assert_eq!(
            buf,
            [
                4, 0, 7, 174, 3, 1, 1, 5, 2, 4, 1, b'x', 3, 0, 0x34, 0x33, 0x33, 0x33, 0x33, 0x33,
                0xd3, 0x3f
            ]
        );
    }

    #[test]
    fn corrupt_input_is_an_error_not_a_panic() {
        assert!(decode_all(&[3, 0]).is_none());
        assert!(decode_all(&[1, 0, 99]).is_none());
        assert!(decode_all(&[1, 0, T_STR, 10, b'a']).is_none());
    }
}
