//! Transforms over one group's window series for one field (SEMANTICS.md, "Transforms").
//! Null windows (fill=null) are skipped; NaN (single-point stddev) is a value whose
//! output is null.

use crate::query::Transform;
use crate::value::{Num, Value};

/// A window result: an integer or a float (possibly NaN).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Out {
    I(i64),
    F(f64),
}

impl Out {
    pub fn from_num(n: Num) -> Out {
        match n {
            Num::I(i) => Out::I(i),
            Num::F(f) => Out::F(f),
        }
    }

    fn num(self) -> Num {
        match self {
            Out::I(i) => Num::I(i),
            Out::F(f) => Num::F(f),
        }
    }

    fn f64(self) -> f64 {
        self.num().as_f64()
    }

    /// The JSON-facing value; NaN is null.
    pub fn to_value(self) -> Option<Value> {
        match self {
            Out::I(i) => Some(Value::Int(i)),
            Out::F(f) if f.is_nan() => None,
            Out::F(f) => Some(Value::Float(f)),
        }
    }
}

/// Applies `t` to a series of (label, value); `None` values are nulls and are skipped.
pub fn apply_transform(t: Transform, series: &[(i64, Option<Out>)]) -> Vec<(i64, Option<Out>)> {
    let pts: Vec<(i64, Out)> = series
        .iter()
        .filter_map(|(ts, v)| v.map(|v| (*ts, v)))
        .collect();
    let map = |f: fn(f64) -> f64| -> Vec<(i64, Option<Out>)> {
        pts.iter()
            .map(|(ts, v)| {
                (
                    *ts,
                    Some(match v {
                        Out::I(i) => Out::I(if t == Transform::Abs {
                            i.wrapping_abs()
                        } else {
                            *i
                        }),
                        Out::F(x) => Out::F(f(*x)),
                    }),
                )
            })
            .collect()
    };
    match t {
        Transform::Abs => map(f64::abs),
        Transform::Ceil => map(f64::ceil),
        Transform::Floor => map(f64::floor),
        // f64::round rounds half away from zero, as InfluxDB.
        Transform::Round => map(f64::round),
        Transform::CumulativeSum => {
            let mut acc: Option<Num> = None;
            pts.iter()
                .map(|(ts, v)| {
                    let next = match acc {
                        None => v.num(),
                        Some(a) => a + v.num(),
                    };
                    acc = Some(next);
                    (*ts, Some(Out::from_num(next)))
                })
                .collect()
        }
        Transform::Difference | Transform::NonNegativeDifference => pts
            .windows(2)
            .filter_map(|p| {
                let d = Out::from_num(p[1].1.num() - p[0].1.num());
                let negative = d.f64() < 0.0;
                (t == Transform::Difference || !negative).then_some((p[1].0, Some(d)))
            })
            .collect(),
        Transform::Derivative | Transform::NonNegativeDerivative => pts
            .windows(2)
            .filter_map(|p| {
                let dv = p[1].1.f64() - p[0].1.f64();
                let dt_s = (p[1].0 - p[0].0) as f64 / 1000.0;
                (t == Transform::Derivative || dv >= 0.0 || dv.is_nan())
                    .then_some((p[1].0, Some(Out::F(dv / dt_s))))
            })
            .collect(),
        Transform::Elapsed => pts
            .windows(2)
            .map(|p| (p[1].0, Some(Out::I(p[1].0 - p[0].0))))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_half_away_from_zero() {
        let s = [
            (0, Some(Out::F(2.5))),
            (1, Some(Out::F(-2.5))),
            (2, Some(Out::F(-0.5))),
        ];
        let r = apply_transform(Transform::Round, &s);
        assert_eq!(
            r.iter().map(|x| x.1.unwrap()).collect::<Vec<_>>(),
            vec![Out::F(3.0), Out::F(-3.0), Out::F(-1.0)]
        );
    }

    #[test]
    fn nulls_skipped_nan_propagates() {
        let s = [
            (0, Some(Out::F(1.0))),
            (1, None),
            (2, Some(Out::F(f64::NAN))),
            (3, Some(Out::F(2.0))),
        ];
        let r = apply_transform(Transform::CumulativeSum, &s);
        assert_eq!(r.len(), 3);
        assert!(r[2].1.unwrap().to_value().is_none());
        let d = apply_transform(
            Transform::Difference,
            &[(0, Some(Out::I(5))), (10, None), (20, Some(Out::I(3)))],
        );
        assert_eq!(d, vec![(20, Some(Out::I(-2)))]);
        let nn = apply_transform(
            Transform::NonNegativeDifference,
            &[(0, Some(Out::I(5))), (20, Some(Out::I(3)))],
        );
        assert!(nn.is_empty());
    }
}
