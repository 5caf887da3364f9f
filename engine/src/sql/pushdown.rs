//! Filter pushdown: what a `WHERE` clause tells a bucket scan.
//!
//! DataFusion hands a table provider its filters as [`Expr`]s after type coercion and
//! constant folding. We read from them an over-approximation of the rows they keep — a
//! time range and, per tag, a set of allowed values — and put that into the
//! [`ScanRequest`](crate::scan::ScanRequest), where storage turns it into RocksDB range
//! bounds and series selection.
//!
//! Every pushed filter is reported `Inexact`, so DataFusion still evaluates it on the
//! rows we return. The bounds therefore only have to be *conservative*: they may keep
//! rows the filter drops, never drop a row it keeps. Whatever we do not understand is
//! simply "no constraint" ([`ScanBounds::all`]), which keeps the translation small
//! and safe: a new DataFusion rewrite can make pushdown weaker, never results wrong.
//!
//! Bounds form a lattice: `AND` intersects ([`ScanBounds::and`]), `OR` takes the hull
//! ([`ScanBounds::or`]), which is how nested conditions are handled.

use std::collections::{BTreeMap, BTreeSet};

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::expr::InList;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator};

/// Name of the time column every bucket table has.
pub const TS_COLUMN: &str = "ts";

/// What the filters allow: an inclusive ms range and, per constrained tag, its values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanBounds {
    /// Inclusive bounds in epoch ms; `min_ts > max_ts` means no row can match.
    pub min_ts: i64,
    pub max_ts: i64,
    /// Tag name → values it may take. Absent tags are unconstrained; an empty set means
    /// no row can match.
    pub tags: BTreeMap<String, BTreeSet<String>>,
}

impl ScanBounds {
    /// No constraint at all: every row may match.
    pub fn all() -> ScanBounds {
        ScanBounds {
            min_ts: i64::MIN,
            max_ts: i64::MAX,
            tags: BTreeMap::new(),
        }
    }

    /// Only a time range.
    fn ts_range(min_ts: i64, max_ts: i64) -> ScanBounds {
        ScanBounds {
            min_ts,
            max_ts,
            ..ScanBounds::all()
        }
    }

    /// Only a set of values for one tag.
    fn tag_values(tag: &str, values: BTreeSet<String>) -> ScanBounds {
        let mut bounds = ScanBounds::all();
        bounds.tags.insert(tag.to_string(), values);
        bounds
    }

    /// True when the bounds say nothing (the filter could not be translated).
    pub fn is_unconstrained(&self) -> bool {
        self.min_ts == i64::MIN && self.max_ts == i64::MAX && self.tags.is_empty()
    }

    /// True when no row can satisfy the bounds, so the scan can be skipped.
    pub fn is_empty(&self) -> bool {
        self.min_ts > self.max_ts || self.tags.values().any(BTreeSet::is_empty)
    }

    /// Rows allowed by both: intersection of ranges and of each tag's values.
    pub fn and(mut self, other: ScanBounds) -> ScanBounds {
        self.min_ts = self.min_ts.max(other.min_ts);
        self.max_ts = self.max_ts.min(other.max_ts);
        for (tag, values) in other.tags {
            match self.tags.get_mut(&tag) {
                Some(mine) => mine.retain(|v| values.contains(v)),
                None => {
                    self.tags.insert(tag, values);
                }
            }
        }
        self
    }

    /// Rows allowed by either: the hull of the ranges; a tag stays constrained only when
    /// both sides constrain it (to the union of their values).
    pub fn or(mut self, other: ScanBounds) -> ScanBounds {
        if self.is_empty() {
            return other;
        }
        if other.is_empty() {
            return self;
        }
        self.min_ts = self.min_ts.min(other.min_ts);
        self.max_ts = self.max_ts.max(other.max_ts);
        let mut tags = BTreeMap::new();
        for (tag, mut values) in self.tags {
            if let Some(theirs) = other.tags.get(&tag) {
                values.extend(theirs.iter().cloned());
                tags.insert(tag, values);
            }
        }
        self.tags = tags;
        self
    }
}

/// Bounds implied by one filter expression over a table with these tag columns.
pub fn bounds_of(expr: &Expr, tag_names: &[String]) -> ScanBounds {
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
            Operator::And => bounds_of(left, tag_names).and(bounds_of(right, tag_names)),
            Operator::Or => bounds_of(left, tag_names).or(bounds_of(right, tag_names)),
            _ => comparison(left, *op, right, tag_names),
        },
        Expr::Between(Between {
            expr,
            negated: false,
            low,
            high,
        }) => comparison(expr, Operator::GtEq, low, tag_names).and(comparison(
            expr,
            Operator::LtEq,
            high,
            tag_names,
        )),
        Expr::InList(InList {
            expr,
            list,
            negated: false,
        }) => list
            .iter()
            .map(|item| comparison(expr, Operator::Eq, item, tag_names))
            // The empty bounds are the identity of `or`; an untranslatable item makes the
            // whole list unconstrained, which `or` with `all()` yields.
            .fold(ScanBounds::ts_range(i64::MAX, i64::MIN), ScanBounds::or),
        _ => ScanBounds::all(),
    }
}

/// A column reference we can push: the time column (possibly cast) or a tag column.
enum ColumnRef<'a> {
    /// `ts`, either as is or cast to another timestamp unit (values compare as instants).
    Ts,
    /// `CAST(ts AS BIGINT)`: compares as epoch ms.
    TsAsInt,
    Tag(&'a str),
}

fn column_ref<'a>(expr: &'a Expr, tag_names: &[String]) -> Option<ColumnRef<'a>> {
    match expr {
        Expr::Column(col) if col.name == TS_COLUMN => Some(ColumnRef::Ts),
        Expr::Column(col) if tag_names.contains(&col.name) => {
            Some(ColumnRef::Tag(col.name.as_str()))
        }
        Expr::Cast(cast) => cast_ref(&cast.expr, cast.field.data_type(), tag_names),
        Expr::TryCast(cast) => cast_ref(&cast.expr, cast.field.data_type(), tag_names),
        _ => None,
    }
}

/// Casts that keep the order of the time column or the identity of a tag's text.
fn cast_ref<'a>(inner: &'a Expr, to: &DataType, tag_names: &[String]) -> Option<ColumnRef<'a>> {
    match (column_ref(inner, tag_names)?, to) {
        (ColumnRef::Ts, DataType::Timestamp(_, _)) => Some(ColumnRef::Ts),
        (ColumnRef::Ts, DataType::Int64) => Some(ColumnRef::TsAsInt),
        (ColumnRef::Tag(t), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) => {
            Some(ColumnRef::Tag(t))
        }
        _ => None,
    }
}

/// Bounds of `left op right` where one side is a pushable column and the other a literal.
fn comparison(left: &Expr, op: Operator, right: &Expr, tag_names: &[String]) -> ScanBounds {
    let (column, op, literal) = match (column_ref(left, tag_names), literal(right)) {
        (Some(c), Some(l)) => (c, op, l),
        _ => match (column_ref(right, tag_names), literal(left), op.swap()) {
            (Some(c), Some(l), Some(swapped)) => (c, swapped, l),
            _ => return ScanBounds::all(),
        },
    };
    match column {
        ColumnRef::Tag(tag) => tag_comparison(tag, op, literal),
        ColumnRef::Ts => match timestamp_literal_ms(literal) {
            Some(LiteralMs::Null) => ScanBounds::ts_range(i64::MAX, i64::MIN),
            Some(LiteralMs::Range { lo, hi, exact }) => ts_comparison(op, lo, hi, exact),
            None => ScanBounds::all(),
        },
        ColumnRef::TsAsInt => match literal {
            ScalarValue::Int64(Some(v)) => ts_comparison(op, *v, *v, true),
            ScalarValue::Int64(None) => ScanBounds::ts_range(i64::MAX, i64::MIN),
            _ => ScanBounds::all(),
        },
    }
}

fn literal(expr: &Expr) -> Option<&ScalarValue> {
    match expr {
        Expr::Literal(value, _) => Some(value),
        _ => None,
    }
}

/// `tag = 'v'` pins the tag; `tag = NULL` matches nothing. Other operators say nothing.
fn tag_comparison(tag: &str, op: Operator, literal: &ScalarValue) -> ScanBounds {
    if op != Operator::Eq {
        return ScanBounds::all();
    }
    match literal {
        ScalarValue::Utf8(v) | ScalarValue::LargeUtf8(v) | ScalarValue::Utf8View(v) => {
            ScanBounds::tag_values(tag, v.iter().cloned().collect())
        }
        _ => ScanBounds::all(),
    }
}

/// A timestamp literal as the ms values it can equal.
enum LiteralMs {
    Null,
    /// Every ms instant whose value in the literal's unit can equal the literal lies in
    /// `lo..=hi`; `exact` when that is the single instant `lo == hi`.
    Range {
        lo: i64,
        hi: i64,
        exact: bool,
    },
}

/// Converts a timestamp literal of any unit into ms bounds.
///
/// Seconds: the column cast to seconds truncates (toward zero), so a value `v` is equal
/// for ms instants within 999 ms either side of `v * 1000`. Micro- and nanoseconds: the
/// column cast is exact, so the instant lies between the floor and ceiling in ms.
fn timestamp_literal_ms(literal: &ScalarValue) -> Option<LiteralMs> {
    let (value, unit) = match literal {
        ScalarValue::TimestampSecond(v, _) => (*v, TimeUnit::Second),
        ScalarValue::TimestampMillisecond(v, _) => (*v, TimeUnit::Millisecond),
        ScalarValue::TimestampMicrosecond(v, _) => (*v, TimeUnit::Microsecond),
        ScalarValue::TimestampNanosecond(v, _) => (*v, TimeUnit::Nanosecond),
        _ => return None,
    };
    let Some(v) = value else {
        return Some(LiteralMs::Null);
    };
    let range = match unit {
        TimeUnit::Second => {
            let ms = v.checked_mul(1000)?;
            LiteralMs::Range {
                lo: ms.saturating_sub(999),
                hi: ms.saturating_add(999),
                exact: false,
            }
        }
        TimeUnit::Millisecond => LiteralMs::Range {
            lo: v,
            hi: v,
            exact: true,
        },
        TimeUnit::Microsecond => floor_ceil(v, 1000),
        TimeUnit::Nanosecond => floor_ceil(v, 1_000_000),
    };
    Some(range)
}

fn floor_ceil(v: i64, per_ms: i64) -> LiteralMs {
    let lo = v.div_euclid(per_ms);
    let hi = if v.rem_euclid(per_ms) == 0 {
        lo
    } else {
        lo + 1
    };
    LiteralMs::Range {
        lo,
        hi,
        exact: false,
    }
}

/// `ts op literal` where the literal covers the ms instants `lo..=hi`.
fn ts_comparison(op: Operator, lo: i64, hi: i64, exact: bool) -> ScanBounds {
    match op {
        Operator::Eq => ScanBounds::ts_range(lo, hi),
        Operator::GtEq => ScanBounds::ts_range(lo, i64::MAX),
        Operator::LtEq => ScanBounds::ts_range(i64::MIN, hi),
        // Strict comparisons tighten by one ms only when the literal is an exact instant;
        // `checked_*` keeps `ts > i64::MAX` from wrapping (it matches nothing).
        Operator::Gt if exact => match lo.checked_add(1) {
            Some(min) => ScanBounds::ts_range(min, i64::MAX),
            None => ScanBounds::ts_range(i64::MAX, i64::MIN),
        },
        Operator::Lt if exact => match hi.checked_sub(1) {
            Some(max) => ScanBounds::ts_range(i64::MIN, max),
            None => ScanBounds::ts_range(i64::MAX, i64::MIN),
        },
        Operator::Gt => ScanBounds::ts_range(lo, i64::MAX),
        Operator::Lt => ScanBounds::ts_range(i64::MIN, hi),
        _ => ScanBounds::all(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{col, lit};

    fn tags() -> Vec<String> {
        vec!["device".to_string(), "site".to_string()]
    }

    fn ts_ms(v: i64) -> Expr {
        lit(ScalarValue::TimestampMillisecond(
            Some(v),
            Some("UTC".into()),
        ))
    }

    fn set(values: &[&str]) -> BTreeSet<String> {
        values.iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn ts_comparisons_give_inclusive_ranges() {
        let b = bounds_of(
            &col("ts").gt_eq(ts_ms(10)).and(col("ts").lt(ts_ms(20))),
            &tags(),
        );
        assert_eq!((b.min_ts, b.max_ts), (10, 19));
        let b = bounds_of(&ts_ms(10).lt(col("ts")), &tags());
        assert_eq!((b.min_ts, b.max_ts), (11, i64::MAX));
        let b = bounds_of(&col("ts").between(ts_ms(5), ts_ms(7)), &tags());
        assert_eq!((b.min_ts, b.max_ts), (5, 7));
        let b = bounds_of(&col("ts").eq(ts_ms(5)), &tags());
        assert_eq!((b.min_ts, b.max_ts), (5, 5));
    }

    #[test]
    fn other_units_round_outward() {
        let ns = lit(ScalarValue::TimestampNanosecond(Some(1_500_000), None));
        let b = bounds_of(&col("ts").gt(ns.clone()), &tags());
        assert_eq!(b.min_ts, 1);
        let b = bounds_of(&col("ts").lt_eq(ns), &tags());
        assert_eq!(b.max_ts, 2);
        let s = lit(ScalarValue::TimestampSecond(Some(2), None));
        let b = bounds_of(&col("ts").lt_eq(s), &tags());
        assert_eq!(b.max_ts, 2999);
    }

    #[test]
    fn int_cast_compares_as_ms() {
        let cast = Expr::Cast(datafusion::logical_expr::Cast::new(
            Box::new(col("ts")),
            DataType::Int64,
        ));
        let b = bounds_of(&cast.gt_eq(lit(100i64)), &tags());
        assert_eq!((b.min_ts, b.max_ts), (100, i64::MAX));
    }

    #[test]
    fn tag_equality_and_in_lists() {
        let b = bounds_of(&col("device").eq(lit("a")), &tags());
        assert_eq!(b.tags.get("device"), Some(&set(&["a"])));
        let b = bounds_of(
            &col("device").in_list(vec![lit("a"), lit("b")], false),
            &tags(),
        );
        assert_eq!(b.tags.get("device"), Some(&set(&["a", "b"])));
        let b = bounds_of(
            &col("device").eq(lit("a")).or(col("device").eq(lit("c"))),
            &tags(),
        );
        assert_eq!(b.tags.get("device"), Some(&set(&["a", "c"])));
        let b = bounds_of(
            &col("device").eq(lit("a")).and(col("device").eq(lit("c"))),
            &tags(),
        );
        assert!(b.is_empty());
    }

    #[test]
    fn untranslatable_filters_are_unconstrained() {
        assert!(
            bounds_of(&col("device").in_list(vec![lit("a")], true), &tags()).is_unconstrained()
        );
        assert!(bounds_of(&col("temp").gt(lit(3.0)), &tags()).is_unconstrained());
        assert!(bounds_of(&col("device").not_eq(lit("a")), &tags()).is_unconstrained());
        // An OR with an untranslatable side constrains nothing.
        let e = col("device").eq(lit("a")).or(col("temp").gt(lit(3.0)));
        assert!(bounds_of(&e, &tags()).is_unconstrained());
        // An IN list with an untranslatable item constrains nothing.
        let e = col("device").in_list(vec![lit("a"), col("site")], false);
        assert!(bounds_of(&e, &tags()).is_unconstrained());
    }

    #[test]
    fn or_of_ranges_is_the_hull_and_keeps_common_tags() {
        let left = col("ts").lt_eq(ts_ms(5)).and(col("site").eq(lit("x")));
        let right = col("ts").gt_eq(ts_ms(100)).and(col("site").eq(lit("y")));
        let b = bounds_of(&left.or(right), &tags());
        assert_eq!((b.min_ts, b.max_ts), (i64::MIN, i64::MAX));
        assert_eq!(b.tags.get("site"), Some(&set(&["x", "y"])));
    }
}
