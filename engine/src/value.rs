//! Typed field values as they are stored and returned.
//!
//! A bucket record arrives as JSON; each leaf becomes a [`Value`]. Numbers keep the
//! integer/float distinction JSON text gives them (InfluxDB's field types), because
//! aggregates of integer fields are exact 64-bit integers (see SEMANTICS.md).

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// The type a field has in one bucket's field registry. Persisted: append only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum FieldType {
    Float = 0,
    Int = 1,
    Bool = 2,
    Str = 3,
    /// An array, kept as its JSON text (arrays are not flattened).
    Json = 4,
}

impl FieldType {
    /// Decodes the persisted tag.
    pub fn from_u8(tag: u8) -> Option<FieldType> {
        Some(match tag {
            0 => FieldType::Float,
            1 => FieldType::Int,
            2 => FieldType::Bool,
            3 => FieldType::Str,
            4 => FieldType::Json,
            _ => return None,
        })
    }

    /// Numeric fields get rollups and numeric aggregates.
    pub fn is_numeric(self) -> bool {
        matches!(self, FieldType::Float | FieldType::Int)
    }

    /// Name used in error messages and schemas.
    pub fn name(self) -> &'static str {
        match self {
            FieldType::Float => "float",
            FieldType::Int => "integer",
            FieldType::Bool => "boolean",
            FieldType::Str => "string",
            FieldType::Json => "json",
        }
    }
}

/// One field value of one record.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Float(f64),
    Int(i64),
    Bool(bool),
    Str(String),
    /// JSON text of an array.
    Json(String),
}

impl Value {
    /// The numeric view of the value, if it has one.
    pub fn as_num(&self) -> Option<Num> {
        match self {
            Value::Float(f) => Some(Num::F(*f)),
            Value::Int(i) => Some(Num::I(*i)),
            _ => None,
        }
    }

    /// The type this value would give a new field.
    pub fn field_type(&self) -> FieldType {
        match self {
            Value::Float(_) => FieldType::Float,
            Value::Int(_) => FieldType::Int,
            Value::Bool(_) => FieldType::Bool,
            Value::Str(_) => FieldType::Str,
            Value::Json(_) => FieldType::Json,
        }
    }

    /// JSON rendering; NaN and infinities (never stored, but produced by aggregates) are null.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Str(s) => serde_json::Value::String(s.clone()),
            Value::Json(s) => serde_json::from_str(s).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// Sum that stays an exact (wrapping, as InfluxDB's) integer while both sides are integers.
impl std::ops::Add for Num {
    type Output = Num;
    fn add(self, other: Num) -> Num {
        match (self, other) {
            (Num::I(a), Num::I(b)) => Num::I(a.wrapping_add(b)),
            (a, b) => Num::F(a.as_f64() + b.as_f64()),
        }
    }
}

/// Difference with the same typing rule as addition.
impl std::ops::Sub for Num {
    type Output = Num;
    fn sub(self, other: Num) -> Num {
        match (self, other) {
            (Num::I(a), Num::I(b)) => Num::I(a.wrapping_sub(b)),
            (a, b) => Num::F(a.as_f64() - b.as_f64()),
        }
    }
}

impl From<Num> for Value {
    fn from(n: Num) -> Value {
        match n {
            Num::I(i) => Value::Int(i),
            Num::F(f) => Value::Float(f),
        }
    }
}

/// A number that remembers whether it is an integer, so integer sums stay exact.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Num {
    I(i64),
    F(f64),
}

impl Num {
    /// The value as a float (integers past 2^53 round).
    pub fn as_f64(self) -> f64 {
        match self {
            Num::I(i) => i as f64,
            Num::F(f) => f,
        }
    }

    /// Total order: integers compare exactly, mixed pairs as floats, NaN last.
    pub fn cmp_total(self, other: Num) -> Ordering {
        match (self, other) {
            (Num::I(a), Num::I(b)) => a.cmp(&b),
            (a, b) => a.as_f64().total_cmp(&b.as_f64()),
        }
    }

    /// The same number as a float when the field it belongs to is a float field.
    pub fn to_type(self, ty: FieldType) -> Num {
        match (self, ty) {
            (Num::I(i), FieldType::Float) => Num::F(i as f64),
            (n, _) => n,
        }
    }
}
