//! One window's aggregate from its statistics or its values (SEMANTICS.md, "Aggregates"
//! and "Result types").

use crate::query::AggType;
use crate::stats::Stats;
use crate::value::{FieldType, Num, Value};

/// A window result: an integer or a float. A float may be NaN (single-point stddev),
/// which transforms still see as a value and the output shows as null.
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

    pub fn num(self) -> Num {
        match self {
            Out::I(i) => Num::I(i),
            Out::F(f) => Num::F(f),
        }
    }

    /// The output value; NaN (and the infinities a float sum can overflow to, which JSON
    /// cannot carry) are null.
    pub fn to_value(self) -> Option<Value> {
        match self {
            Out::I(i) => Some(Value::Int(i)),
            Out::F(f) if f.is_finite() => Some(Value::Float(f)),
            Out::F(_) => None,
        }
    }
}

/// A mergeable aggregate of one window from its statistics; `None` when it has no point.
/// `ty` is the field's type: integer fields keep integer results where the result type
/// table says "type of field".
pub fn from_stats(agg: AggType, ty: FieldType, s: &Stats) -> Option<Out> {
    if s.count == 0 {
        return None;
    }
    let typed = |n: Num| Out::from_num(n.to_type(ty));
    Some(match agg {
        AggType::Count => Out::I(i64::try_from(s.count).unwrap_or(i64::MAX)),
        AggType::Sum => typed(s.sum),
        AggType::Mean => Out::F(s.mean_value()),
        AggType::Stddev => Out::F(s.stddev()),
        AggType::Min => typed(s.min),
        AggType::Max => typed(s.max),
        AggType::Spread => typed(s.spread()),
        AggType::First => typed(s.first),
        AggType::Last => typed(s.last),
        // Not mergeable: answered from values by `median` and `mode`.
        AggType::Median | AggType::Mode => return None,
    })
}

/// Median of values sorted ascending (non-empty): the middle one, or `lo + (hi - lo) / 2`
/// of the two middle ones, always a float. Integer fields subtract exactly first, as
/// InfluxDB does.
pub fn median(sorted: &[Num]) -> Option<Out> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    if n % 2 == 1 {
        return Some(Out::F(sorted[n / 2].as_f64()));
    }
    let (lo, hi) = (sorted[n / 2 - 1], sorted[n / 2]);
    Some(Out::F(lo.as_f64() + (hi - lo).as_f64() / 2.0))
}

/// Mode of `(ts, value)` pairs sorted by value, then ts (non-empty), with InfluxDB's tie
/// rule (SEMANTICS.md, "Mode ties"): going through the distinct values from smallest to
/// largest, a value replaces the pick when it occurs more often, or equally often (at
/// least twice) with its earliest occurrence not later than the pick's latest one.
/// Occurrences compare by timestamp, so equal timestamps on different series count as
/// "not later".
pub fn mode(sorted: &[(i64, Num)]) -> Option<Num> {
    /// One distinct value: how often, first and last timestamp.
    struct Run {
        value: Num,
        count: usize,
        first_ts: i64,
        last_ts: i64,
    }
    let mut pick: Option<Run> = None;
    let mut i = 0;
    while i < sorted.len() {
        let (first_ts, value) = sorted[i];
        let mut j = i + 1;
        while j < sorted.len() && sorted[j].1.cmp_total(value).is_eq() {
            j += 1;
        }
        let run = Run {
            value,
            count: j - i,
            first_ts,
            last_ts: sorted[j - 1].0,
        };
        let replace = match &pick {
            None => true,
            Some(p) => {
                run.count > p.count
                    || (run.count == p.count && run.count >= 2 && run.first_ts <= p.last_ts)
            }
        };
        if replace {
            pick = Some(run);
        }
        i = j;
    }
    pick.map(|p| p.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sorts `(ts, value)` pairs by value, then ts, as [`mode`] needs them.
    fn sort_by_value(values: &mut [(i64, Num)]) {
        values.sort_unstable_by(|a, b| a.1.cmp_total(b.1).then(a.0.cmp(&b.0)));
    }

    /// Mode of values given in time order (one per ms).
    fn mode_of(xs: &[i64]) -> i64 {
        let mut v: Vec<(i64, Num)> = xs
            .iter()
            .enumerate()
            .map(|(i, x)| (i as i64, Num::I(*x)))
            .collect();
        sort_by_value(&mut v);
        match mode(&v) {
            Some(Num::I(i)) => i,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn mode_tie_rule_examples() {
        assert_eq!(mode_of(&[3, 1, 3, 1, 2]), 3);
        assert_eq!(mode_of(&[2, 2, 5, 5]), 2);
        assert_eq!(mode_of(&[2, 5, 5, 2]), 5);
        assert_eq!(mode_of(&[9, 4, 7]), 4, "all distinct: the smallest");
        assert_eq!(mode_of(&[7]), 7);
        assert_eq!(
            mode_of(&[1, 5, 5, 5, 1, 1, 2]),
            5,
            "3 vs 3: 5 starts before 1 ends"
        );
        assert_eq!(mode_of(&[5, 5, 1, 1, 9, 9, 9]), 9, "more often always wins");
    }

    #[test]
    fn mode_equal_timestamps_count_as_not_later() {
        // value 2 at ts 0 and 10; value 5 at ts 10 (another series) and 20.
        let mut v = vec![
            (0, Num::F(2.0)),
            (10, Num::F(2.0)),
            (10, Num::F(5.0)),
            (20, Num::F(5.0)),
        ];
        sort_by_value(&mut v);
        assert_eq!(mode(&v), Some(Num::F(5.0)));
    }

    #[test]
    fn median_odd_even_and_integer_exactness() {
        let f = |xs: &[f64]| xs.iter().map(|x| Num::F(*x)).collect::<Vec<_>>();
        assert_eq!(median(&f(&[1.0, 2.0, 3.0])), Some(Out::F(2.0)));
        assert_eq!(median(&f(&[1.0, 2.0, 3.0, 4.0])), Some(Out::F(2.5)));
        assert_eq!(median(&[Num::I(3), Num::I(4)]), Some(Out::F(3.5)));
        let big = (1i64 << 60) + 1;
        assert_eq!(
            median(&[Num::I(big), Num::I(big + 2)]),
            Some(Out::F(big as f64 + 1.0))
        );
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn result_types_follow_the_field() {
        let mut s = Stats::single(1, Num::I(4));
        s.push(2, Num::I(7));
        assert_eq!(
            from_stats(AggType::Count, FieldType::Int, &s),
            Some(Out::I(2))
        );
        assert_eq!(
            from_stats(AggType::Sum, FieldType::Int, &s),
            Some(Out::I(11))
        );
        assert_eq!(
            from_stats(AggType::Mean, FieldType::Int, &s),
            Some(Out::F(5.5))
        );
        assert_eq!(
            from_stats(AggType::Spread, FieldType::Int, &s),
            Some(Out::I(3))
        );
        assert_eq!(
            from_stats(AggType::Min, FieldType::Int, &s),
            Some(Out::I(4))
        );
        assert_eq!(
            from_stats(AggType::Last, FieldType::Int, &s),
            Some(Out::I(7))
        );
        let one = Stats::single(1, Num::F(2.0));
        assert!(
            matches!(from_stats(AggType::Stddev, FieldType::Float, &one), Some(Out::F(x)) if x.is_nan())
        );
        assert_eq!(
            from_stats(AggType::Spread, FieldType::Float, &one),
            Some(Out::F(0.0))
        );
        assert_eq!(Out::F(f64::NAN).to_value(), None);
        assert_eq!(Out::F(3.0).to_value(), Some(Value::Float(3.0)));
    }
}
