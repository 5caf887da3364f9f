//! Transforms over one group's window series for one field (SEMANTICS.md, "Transforms").
//!
//! The input holds one entry per window in time order; `None` is a null window (empty
//! under fill=null) and is skipped. NaN (single-point stddev) is a value: its own output
//! is NaN (shown as null) and it poisons every later cumulative sum.

use super::reduce::Out;
use crate::query::Transform;

/// One window of the series a transform reads: its index, its label, its value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    pub window: usize,
    pub label: i64,
    pub value: Option<Out>,
}

/// Applies `t`; the output holds (window index, value) for the windows that have one.
pub fn apply(t: Transform, series: &[Point]) -> Vec<(usize, Out)> {
    let pts: Vec<(usize, i64, Out)> = series
        .iter()
        .filter_map(|p| p.value.map(|v| (p.window, p.label, v)))
        .collect();
    let pairs = || pts.windows(2).map(|p| (p[0], p[1]));
    match t {
        Transform::Abs => map(&pts, |i| i.wrapping_abs(), f64::abs),
        Transform::Ceil => map(&pts, |i| i, f64::ceil),
        Transform::Floor => map(&pts, |i| i, f64::floor),
        // f64::round rounds half away from zero (2.5 → 3, -2.5 → -3), as InfluxDB does.
        Transform::Round => map(&pts, |i| i, f64::round),
        Transform::CumulativeSum => {
            let mut acc: Option<Out> = None;
            pts.iter()
                .map(|&(w, _, v)| {
                    let next = match acc {
                        None => v,
                        Some(a) => Out::from_num(a.num() + v.num()),
                    };
                    acc = Some(next);
                    (w, next)
                })
                .collect()
        }
        Transform::Difference | Transform::NonNegativeDifference => pairs()
            .filter_map(|((_, _, prev), (w, _, cur))| {
                let d = Out::from_num(cur.num() - prev.num());
                // NaN is not negative: a NaN difference is kept (and shown as null).
                let negative = match d {
                    Out::I(i) => i < 0,
                    Out::F(f) => f < 0.0,
                };
                (t == Transform::Difference || !negative).then_some((w, d))
            })
            .collect(),
        Transform::Derivative | Transform::NonNegativeDerivative => pairs()
            .filter_map(|((_, prev_ts, prev), (w, ts, cur))| {
                // Integer aggregates subtract exactly, then divide as floats.
                let dv = (cur.num() - prev.num()).as_f64();
                let dt_s = (ts - prev_ts) as f64 / 1000.0;
                (t == Transform::Derivative || dv >= 0.0 || dv.is_nan())
                    .then_some((w, Out::F(dv / dt_s)))
            })
            .collect(),
        Transform::Elapsed => pairs()
            .map(|((_, prev_ts, _), (w, ts, _))| (w, Out::I(ts - prev_ts)))
            .collect(),
    }
}

/// Applies a value-wise function: integers by `int`, floats by `float`.
fn map(pts: &[(usize, i64, Out)], int: fn(i64) -> i64, float: fn(f64) -> f64) -> Vec<(usize, Out)> {
    pts.iter()
        .map(|&(w, _, v)| {
            let out = match v {
                Out::I(i) => Out::I(int(i)),
                Out::F(f) => Out::F(float(f)),
            };
            (w, out)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(vals: &[(i64, Option<Out>)]) -> Vec<Point> {
        vals.iter()
            .enumerate()
            .map(|(i, (label, value))| Point {
                window: i,
                label: *label,
                value: *value,
            })
            .collect()
    }

    fn values(out: &[(usize, Out)]) -> Vec<Out> {
        out.iter().map(|(_, v)| *v).collect()
    }

    #[test]
    fn round_half_away_from_zero_keeps_type() {
        let s = series(&[
            (0, Some(Out::F(2.5))),
            (1, Some(Out::F(-2.5))),
            (2, Some(Out::F(-0.5))),
            (3, Some(Out::F(0.49))),
            (4, Some(Out::I(7))),
        ]);
        let r = values(&apply(Transform::Round, &s));
        assert_eq!(
            r,
            vec![
                Out::F(3.0),
                Out::F(-3.0),
                Out::F(-1.0),
                Out::F(0.0),
                Out::I(7)
            ]
        );
        let c = values(&apply(Transform::Ceil, &s));
        assert_eq!(c[1], Out::F(-2.0));
        let f = values(&apply(Transform::Floor, &s));
        assert_eq!(f[0], Out::F(2.0));
        assert_eq!(
            values(&apply(Transform::Abs, &series(&[(0, Some(Out::I(-3)))]))),
            vec![Out::I(3)]
        );
    }

    #[test]
    fn nulls_are_skipped_and_nan_propagates_in_cumulative_sum() {
        let s = series(&[
            (0, Some(Out::F(1.0))),
            (1, None),
            (2, Some(Out::F(f64::NAN))),
            (3, Some(Out::F(2.0))),
        ]);
        let r = apply(Transform::CumulativeSum, &s);
        assert_eq!(r.iter().map(|x| x.0).collect::<Vec<_>>(), vec![0, 2, 3]);
        assert_eq!(r[0].1, Out::F(1.0));
        assert!(r[1].1.to_value().is_none() && r[2].1.to_value().is_none());
        let d = apply(Transform::Difference, &s);
        assert_eq!(d.len(), 2);
        assert!(
            d.iter().all(|(_, v)| v.to_value().is_none()),
            "NaN makes its own outputs null"
        );
    }

    #[test]
    fn differences_span_null_windows() {
        let s = series(&[
            (0, Some(Out::I(5))),
            (10, None),
            (20, Some(Out::I(3))),
            (30, Some(Out::I(3))),
        ]);
        assert_eq!(
            apply(Transform::Difference, &s),
            vec![(2, Out::I(-2)), (3, Out::I(0))]
        );
        assert_eq!(
            apply(Transform::NonNegativeDifference, &s),
            vec![(3, Out::I(0))]
        );
        assert_eq!(
            apply(Transform::Elapsed, &s),
            vec![(2, Out::I(20)), (3, Out::I(10))]
        );
        assert_eq!(
            apply(Transform::CumulativeSum, &s),
            vec![(0, Out::I(5)), (2, Out::I(8)), (3, Out::I(11))]
        );
    }

    #[test]
    fn derivative_is_per_second_over_the_real_gap() {
        let h = 3_600_000;
        let s = series(&[
            (0, Some(Out::F(1.0))),
            (23 * h, Some(Out::F(24.0))),
            (48 * h, Some(Out::F(-1.0))),
        ]);
        let d = apply(Transform::Derivative, &s);
        assert_eq!(
            d,
            vec![
                (1, Out::F(23.0 / (23.0 * 3600.0))),
                (2, Out::F(-25.0 / (25.0 * 3600.0)))
            ]
        );
        let nn = apply(Transform::NonNegativeDerivative, &s);
        assert_eq!(nn, vec![(1, Out::F(23.0 / 82_800.0))]);
        let ints = series(&[(0, Some(Out::I(10))), (2_000, Some(Out::I(13)))]);
        assert_eq!(apply(Transform::Derivative, &ints), vec![(1, Out::F(1.5))]);
        assert!(apply(Transform::Derivative, &series(&[(0, Some(Out::F(1.0)))])).is_empty());
    }
}
