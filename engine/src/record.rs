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
use std::borrow::Cow;

/// Records of one write, parsed: per record its timestamp, tag values and flattened
/// fields, kept in three flat vectors (no allocation per record). Names and string tag
/// values borrow from the JSON text when it has no escapes.
#[derive(Debug, Default)]
pub struct ParsedRecords<'a> {
    ntags: usize,
    /// (ts, end of the record's fields in `fields`).
    heads: Vec<(i64, u32)>,
    /// `ntags` values per record, in the bucket's tag order ("" when absent).
    tags: Vec<Cow<'a, str>>,
    /// Flattened fields (never a tag, never `ts`), each record's in key order.
    fields: Vec<(Cow<'a, str>, Value)>,
}

/// One record of a [`ParsedRecords`].
#[derive(Clone, Copy, Debug)]
pub struct ParsedRecord<'p, 'a> {
    pub ts: i64,
    pub tags: &'p [Cow<'a, str>],
    pub fields: &'p [(Cow<'a, str>, Value)],
    /// Index of the record's first field in [`ParsedRecords::all_fields`].
    pub first_field: usize,
}

impl<'a> ParsedRecords<'a> {
    pub fn len(&self) -> usize {
        self.heads.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heads.is_empty()
    }

    pub fn get(&self, i: usize) -> ParsedRecord<'_, 'a> {
        let (ts, end) = self.heads[i];
        let start = if i == 0 { 0 } else { self.heads[i - 1].1 } as usize;
        ParsedRecord {
            ts,
            tags: &self.tags[i * self.ntags..(i + 1) * self.ntags],
            fields: &self.fields[start..end as usize],
            first_field: start,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = ParsedRecord<'_, 'a>> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }

    /// Every record's fields, one after the other.
    pub fn all_fields(&self) -> &[(Cow<'a, str>, Value)] {
        &self.fields
    }
}

/// Parses one JSON object or an array of objects. Records without `ts` get `default_ts`.
///
/// The JSON is read once, straight into the records (no `serde_json::Value` tree). The
/// outcome equals that of parsing into `serde_json::Value` first: keys in byte order
/// (its map is a BTreeMap), the last of duplicate keys wins, numbers parsed by
/// serde_json, and when the text is both malformed and semantically wrong the syntax
/// error is the one reported.
pub fn parse_records<'a>(
    json: &'a str,
    tags: &[String],
    default_ts: i64,
) -> Result<ParsedRecords<'a>, CommandError> {
    let mut out = ParsedRecords {
        ntags: tags.len(),
        ..Default::default()
    };
    let mut ctx = Ctx {
        tags,
        default_ts,
        out: &mut out,
        scratch: Vec::new(),
        count: 0,
        first_err: None,
    };
    let mut de = serde_json::Deserializer::from_str(json);
    let top = serde::de::DeserializeSeed::deserialize(TopSeed(&mut ctx), &mut de)
        .and_then(|top| de.end().map(|()| top))
        .map_err(|e| CommandError::Invalid(format!("records are not valid JSON: {e}")))?;
    if let Top::Other(kind) = top {
        return Err(CommandError::Invalid(format!(
            "expected a JSON object or an array of objects, got {kind}"
        )));
    }
    if ctx.count > RECORDS_PER_COMMAND_MAX {
        return Err(CommandError::TooLarge {
            what: format!("a write of {} records", ctx.count),
            limit: RECORDS_PER_COMMAND_MAX as u64,
        });
    }
    if let Some(e) = ctx.first_err {
        return Err(e);
    }
    Ok(out)
}

/// A JSON value as the parser keeps it: strings borrowed where possible, arrays and
/// numbers as serde_json's own types (their text and semantics stay serde_json's).
enum J<'a> {
    Null,
    Bool(bool),
    Num(serde_json::Number),
    Str(Cow<'a, str>),
    Arr(Vec<Json>),
    Obj(Vec<(Cow<'a, str>, J<'a>)>),
}

impl J<'_> {
    fn kind(&self) -> &'static str {
        match self {
            J::Null => "null",
            J::Bool(_) => "a boolean",
            J::Num(_) => "a number",
            J::Str(_) => "a string",
            J::Arr(_) => "an array",
            J::Obj(_) => "an object",
        }
    }

    /// The same value as serde_json's (error messages print it).
    fn to_json(&self) -> Json {
        match self {
            J::Null => Json::Null,
            J::Bool(b) => Json::Bool(*b),
            J::Num(n) => Json::Number(n.clone()),
            J::Str(s) => Json::String(s.to_string()),
            J::Arr(a) => Json::Array(a.clone()),
            J::Obj(m) => Json::Object(
                m.iter()
                    .map(|(k, v)| (k.to_string(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

/// Sorts an object's entries by key and keeps the last of equal keys (a BTreeMap's
/// outcome of inserting them in order).
fn sort_entries<T>(entries: &mut Vec<(Cow<'_, str>, T)>) {
    entries.sort_by(|a, b| a.0.cmp(&b.0)); // stable: equal keys stay in input order
    let mut i = 0;
    while i + 1 < entries.len() {
        if entries[i].0 == entries[i + 1].0 {
            entries.remove(i);
        } else {
            i += 1;
        }
    }
}

struct Ctx<'c, 'a> {
    tags: &'c [String],
    default_ts: i64,
    out: &'c mut ParsedRecords<'a>,
    /// A record's top-level entries, reused across records.
    scratch: Vec<(Cow<'a, str>, J<'a>)>,
    /// Records seen (all of them, also past the limit).
    count: usize,
    /// The first semantic error; reported only if the whole text parses.
    first_err: Option<CommandError>,
}

impl<'a> Ctx<'_, 'a> {
    /// Turns the sorted entries in `scratch` into a record, or notes the first error.
    fn finish_record(&mut self) {
        let i = self.count;
        self.count += 1;
        if self.first_err.is_some() || self.count > RECORDS_PER_COMMAND_MAX {
            self.scratch.clear();
            return;
        }
        let mut entries = std::mem::take(&mut self.scratch);
        sort_entries(&mut entries);
        let fields_before = self.out.fields.len();
        let tags_before = self.out.tags.len();
        if let Err(e) = self.record_from(&mut entries) {
            self.out.fields.truncate(fields_before);
            self.out.tags.truncate(tags_before);
            self.first_err = Some(at_record(i, e));
        }
        entries.clear();
        self.scratch = entries;
    }

    fn record_from(
        &mut self,
        entries: &mut Vec<(Cow<'a, str>, J<'a>)>,
    ) -> Result<(), CommandError> {
        let mut ts = self.default_ts;
        let tag_base = self.out.tags.len();
        let field_base = self.out.fields.len();
        self.out
            .tags
            .extend(std::iter::repeat_n(Cow::Borrowed(""), self.tags.len()));
        let mut bytes = 0usize;
        for (k, v) in entries.drain(..) {
            if k == "ts" {
                ts = parse_ts(&v)?;
            } else if let Some(pos) = self.tags.iter().position(|t| *t == *k) {
                let s: Cow<'a, str> = match v {
                    J::Str(s) => s,
                    J::Null => Cow::Borrowed(""),
                    J::Num(n) => Cow::Owned(n.to_string()),
                    J::Bool(b) => Cow::Owned(b.to_string()),
                    other => {
                        return Err(CommandError::Invalid(format!(
                            "tag `{k}` must be a string, got {}",
                            other.kind()
                        )))
                    }
                };
                if s.len() > TAG_VALUE_BYTES_MAX {
                    return Err(CommandError::TooLarge {
                        what: format!("tag `{k}` value of {} bytes", s.len()),
                        limit: TAG_VALUE_BYTES_MAX as u64,
                    });
                }
                self.out.tags[tag_base + pos] = s;
            } else {
                flatten(k, v, 1, &mut self.out.fields, field_base, &mut bytes)?;
            }
        }
        let n = self.out.fields.len() - field_base;
        if n > RECORD_FIELDS_MAX {
            return Err(CommandError::TooLarge {
                what: format!("{n} fields"),
                limit: RECORD_FIELDS_MAX as u64,
            });
        }
        if bytes > RECORD_BYTES_MAX {
            return Err(CommandError::TooLarge {
                what: format!("a record of {bytes} bytes"),
                limit: RECORD_BYTES_MAX as u64,
            });
        }
        self.out.heads.push((ts, self.out.fields.len() as u32));
        Ok(())
    }
}

enum Top {
    Records,
    Other(&'static str),
}

struct TopSeed<'x, 'c, 'a>(&'x mut Ctx<'c, 'a>);

impl<'de, 'x, 'c> serde::de::DeserializeSeed<'de> for TopSeed<'x, 'c, 'de> {
    type Value = Top;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Top, D::Error> {
        d.deserialize_any(self)
    }
}

macro_rules! other_kinds {
    ($out:expr) => {
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($out(self, "a boolean"))
        }
        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($out(self, "a number"))
        }
        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($out(self, "a number"))
        }
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($out(self, "a number"))
        }
        fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok($out(self, "a string"))
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok($out(self, "null"))
        }
    };
}

impl<'de, 'x, 'c> serde::de::Visitor<'de> for TopSeed<'x, 'c, 'de> {
    type Value = Top;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object or an array of objects")
    }

    other_kinds!(|_s, kind| Top::Other(kind));

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Top, A::Error> {
        collect_entries(map, &mut self.0.scratch)?;
        self.0.finish_record();
        Ok(Top::Records)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Top, A::Error> {
        while seq.next_element_seed(RecordSeed(&mut *self.0))?.is_some() {}
        Ok(Top::Records)
    }
}

/// One element of the top-level array.
struct RecordSeed<'x, 'c, 'a>(&'x mut Ctx<'c, 'a>);

impl<'de, 'x, 'c> serde::de::DeserializeSeed<'de> for RecordSeed<'x, 'c, 'de> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

/// Notes "record i is not an object" (once the syntax is known good, it is reported).
fn not_object(s: RecordSeed<'_, '_, '_>, kind: &'static str) {
    let ctx = s.0;
    let i = ctx.count;
    ctx.count += 1;
    if ctx.first_err.is_none() {
        ctx.first_err = Some(at_record(
            i,
            CommandError::Invalid(format!("is {kind}, not a JSON object")),
        ));
    }
}

impl<'de, 'x, 'c> serde::de::Visitor<'de> for RecordSeed<'x, 'c, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    other_kinds!(not_object);

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        collect_entries(map, &mut self.0.scratch)?;
        self.0.finish_record();
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        not_object(self, "an array");
        Ok(())
    }
}

fn collect_entries<'de, A: serde::de::MapAccess<'de>>(
    mut map: A,
    out: &mut Vec<(Cow<'de, str>, J<'de>)>,
) -> Result<(), A::Error> {
    out.clear();
    while let Some(k) = map.next_key_seed(KeySeed)? {
        let v = map.next_value_seed(JSeed)?;
        out.push((k, v));
    }
    Ok(())
}

/// An object key, borrowed from the text when it has no escapes.
struct KeySeed;

impl<'de> serde::de::DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string()))
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// Any JSON value, as a [`J`].
struct JSeed;

impl<'de> serde::de::DeserializeSeed<'de> for JSeed {
    type Value = J<'de>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<J<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for JSeed {
    type Value = J<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(J::Bool(v))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(J::Num(v.into()))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(J::Num(v.into()))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
        // serde_json's own Value maps a non-finite float to null.
        Ok(serde_json::Number::from_f64(v).map_or(J::Null, J::Num))
    }
    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(J::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(J::Str(Cow::Owned(v.to_string())))
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(J::Str(Cow::Owned(v)))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(J::Null)
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(J::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut v = Vec::new();
        while let Some(x) = seq.next_element::<Json>()? {
            v.push(x);
        }
        Ok(J::Arr(v))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::new();
        collect_entries(map, &mut entries)?;
        Ok(J::Obj(entries))
    }
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

fn parse_ts(v: &J<'_>) -> Result<i64, CommandError> {
    let bad = || {
        CommandError::Invalid(format!(
            "`ts` must be an integer in epoch milliseconds, got {}",
            v.to_json()
        ))
    };
    match v {
        J::Num(n) => {
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

/// Appends the leaves of `v` under `name` to `out` (whose current record starts at
/// `base`).
fn flatten<'a>(
    name: Cow<'a, str>,
    v: J<'a>,
    depth: usize,
    out: &mut Vec<(Cow<'a, str>, Value)>,
    base: usize,
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
    if out.len() - base > RECORD_FIELDS_MAX {
        return Err(CommandError::TooLarge {
            what: "fields".into(),
            limit: RECORD_FIELDS_MAX as u64,
        });
    }
    let value = match v {
        J::Null => return Ok(()),
        J::Bool(b) => Value::Bool(b),
        J::Num(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        J::Str(s) => Value::Str(s.into_owned()),
        J::Arr(a) => Value::Json(Json::Array(a).to_string()),
        J::Obj(mut entries) => {
            if depth >= RECORD_DEPTH_MAX {
                return Err(CommandError::TooLarge {
                    what: format!("nesting depth at field `{name}`"),
                    limit: RECORD_DEPTH_MAX as u64,
                });
            }
            sort_entries(&mut entries);
            for (k, v) in entries {
                flatten(
                    Cow::Owned(format!("{name}.{k}")),
                    v,
                    depth + 1,
                    out,
                    base,
                    bytes,
                )?;
            }
            return Ok(());
        }
    };
    *bytes += name.len()
        + match &value {
            Value::Str(s) | Value::Json(s) => s.len() + 2,
            _ => 9,
        };
    if out[base..].iter().any(|(n, _)| *n == name) {
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
    put_count(out, fields.len());
    for (id, v) in fields {
        put_field(out, *id, v, false);
    }
}

/// Starts an encoded record of `n` fields (each then added with [`put_field`]).
pub fn put_count(out: &mut Vec<u8>, n: usize) {
    put_varint(out, n as u64);
}

/// Appends one field; an integer into a float field (`float_field`) is stored as a float.
pub fn put_field(out: &mut Vec<u8>, id: u16, v: &Value, float_field: bool) {
    put_varint(out, id as u64);
    match v {
        Value::Float(f) => put_float(out, *f),
        Value::Int(i) if float_field => put_float(out, *i as f64),
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
        let r = r.get(0);
        assert_eq!(r.ts, 5);
        assert_eq!(r.tags, ["d1"]);
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
        assert_eq!(r.get(0).ts, 42);
        assert_eq!(r.get(1).ts, 7);
    }

    /// The streaming parser gives what parsing into `serde_json::Value` first gave: keys
    /// in byte order, nested objects flattened in place, the last duplicate key winning.
    #[test]
    fn key_order_and_duplicates_match_a_json_map() {
        let r = parse_records(
            r#"{"z":1,"b":{"y":2,"a":3},"a":"x","b.c":4,"dup":1,"dup":2.5,"ts":1,"ts":9}"#,
            &[],
            0,
        )
        .unwrap();
        let r = r.get(0);
        assert_eq!(r.ts, 9);
        let names: Vec<&str> = r.fields.iter().map(|(n, _)| n.as_ref()).collect();
        assert_eq!(names, ["a", "b.a", "b.y", "b.c", "dup", "z"]);
        assert_eq!(r.fields[4].1, Value::Float(2.5));
        // Escaped keys and values are decoded (owned, not borrowed).
        let r = parse_records(r#"{"device":"d\u00e9","t\n":1}"#, &tags(), 0).unwrap();
        assert_eq!(r.get(0).tags, ["dé"]);
        assert_eq!(r.get(0).fields[0].0, "t\n");
    }

    #[test]
    fn syntax_errors_win_over_record_errors() {
        // Record 0 is not an object, but the text is not JSON at all: that is the error.
        let e = parse_records(r#"[1, {"a":}]"#, &[], 0).unwrap_err();
        assert!(e.to_string().contains("not valid JSON"), "{e}");
        let e = parse_records(r#"[{"a":1}, 1, "x"]"#, &[], 0).unwrap_err();
        assert!(e.to_string().contains("record 1: is a number"), "{e}");
        let e = parse_records(r#"[{"a":1}, [2]]"#, &[], 0).unwrap_err();
        assert!(e.to_string().contains("record 1: is an array"), "{e}");
        let e = parse_records("7", &[], 0).unwrap_err();
        assert!(e.to_string().contains("got a number"), "{e}");
        let e = parse_records(r#"{"ts":1.5}"#, &[], 0).unwrap_err();
        assert!(e.to_string().contains("record 0: `ts`"), "{e}");
        let e = parse_records(r#"{"a":1,"a.b":1,"a":{"b":2}}"#, &[], 0).unwrap_err();
        assert!(e.to_string().contains("`a.b` appears twice"), "{e}");
        let too_many = format!("[{}]", vec!["{}"; RECORDS_PER_COMMAND_MAX + 1].join(","));
        let e = parse_records(&too_many, &[], 0).unwrap_err();
        assert!(matches!(e, CommandError::TooLarge { .. }), "{e}");
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
