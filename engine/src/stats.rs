//! Mergeable summary statistics of one numeric field over a set of points.
//!
//! Rollup rows store a [`Stats`] per field and window; aggregated reads merge rollups
//! and raw points with the same type, so both paths give the same answer. Variance uses
//! Welford's update for single points and Chan's parallel formula to merge two parts,
//! which stays accurate where a raw sum of squares would cancel catastrophically.

use crate::value::{FieldType, Num};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// count, sum, min, max, first, last, mean and M2 (sum of squared deviations).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub count: u64,
    /// Exact for integer fields (wrapping i64, as InfluxDB), float otherwise.
    pub sum: Num,
    pub min: Num,
    pub max: Num,
    pub first_ts: i64,
    pub first: Num,
    pub last_ts: i64,
    pub last: Num,
    /// Running mean (float) for Chan's merge of `m2`.
    pub mean: f64,
    /// Sum of squared deviations from the mean.
    pub m2: f64,
}

impl Stats {
    /// Statistics of one point.
    pub fn single(ts: i64, v: Num) -> Stats {
        Stats {
            count: 1,
            sum: v,
            min: v,
            max: v,
            first_ts: ts,
            first: v,
            last_ts: ts,
            last: v,
            mean: v.as_f64(),
            m2: 0.0,
        }
    }

    /// Adds one point (Welford's update).
    pub fn push(&mut self, ts: i64, v: Num) {
        self.merge(&Stats::single(ts, v));
    }

    /// Merges another part into this one (Chan et al.'s parallel variance).
    pub fn merge(&mut self, o: &Stats) {
        if o.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *o;
            return;
        }
        let n_a = self.count as f64;
        let n_b = o.count as f64;
        let n = n_a + n_b;
        let delta = o.mean - self.mean;
        self.mean += delta * n_b / n;
        self.m2 += o.m2 + delta * delta * n_a * n_b / n;
        self.count += o.count;
        self.sum = self.sum + o.sum;
        if o.min.cmp_total(self.min) == Ordering::Less {
            self.min = o.min;
        }
        if o.max.cmp_total(self.max) == Ordering::Greater {
            self.max = o.max;
        }
        // Ties on the timestamp (points of different series): the larger value wins,
        // for first and for last (InfluxDB's selector rule, see SEMANTICS.md).
        if o.first_ts < self.first_ts
            || (o.first_ts == self.first_ts && o.first.cmp_total(self.first) == Ordering::Greater)
        {
            self.first_ts = o.first_ts;
            self.first = o.first;
        }
        if o.last_ts > self.last_ts
            || (o.last_ts == self.last_ts && o.last.cmp_total(self.last) == Ordering::Greater)
        {
            self.last_ts = o.last_ts;
            self.last = o.last;
        }
    }

    /// Mean as sum / count, so integer fields sum exactly first (SEMANTICS.md).
    pub fn mean_value(&self) -> f64 {
        match self.sum {
            Num::I(s) => s as f64 / self.count as f64,
            Num::F(s) => s / self.count as f64,
        }
    }

    /// Sample standard deviation; NaN for a single point.
    pub fn stddev(&self) -> f64 {
        if self.count < 2 {
            return f64::NAN;
        }
        (self.m2 / (self.count as f64 - 1.0)).max(0.0).sqrt()
    }

    /// max − min in the field's type.
    pub fn spread(&self) -> Num {
        self.max - self.min
    }

    /// The same statistics with every number in the field's current type (an integer
    /// field promoted to float reads its old integer rollups as floats).
    pub fn to_type(&self, ty: FieldType) -> Stats {
        Stats {
            sum: self.sum.to_type(ty),
            min: self.min.to_type(ty),
            max: self.max.to_type(ty),
            first: self.first.to_type(ty),
            last: self.last.to_type(ty),
            ..*self
        }
    }

    /// Binary form used in rollup rows: varint count; sum, min, max, first and last as
    /// compact numbers (integers as varints, floats as short decimals when exact);
    /// first_ts as a varint and last_ts as its distance from first_ts; mean and M2 as
    /// floats the same way. About 40 bytes for a typical sensor field (85 when fixed).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        use crate::record::{put_ivarint, put_num, put_uvarint};
        put_uvarint(out, self.count);
        put_num(out, self.sum);
        put_num(out, self.min);
        put_num(out, self.max);
        put_ivarint(out, self.first_ts);
        put_num(out, self.first);
        put_ivarint(out, self.last_ts.wrapping_sub(self.first_ts));
        put_num(out, self.last);
        put_num(out, Num::F(self.mean));
        put_num(out, Num::F(self.m2));
    }

    /// Inverse of [`Stats::encode_into`]; returns the rest of the input.
    pub fn decode(mut buf: &[u8]) -> Option<(Stats, &[u8])> {
        use crate::record::{get_ivarint, get_num, get_uvarint};
        let b = &mut buf;
        let float = |b: &mut &[u8]| match get_num(b)? {
            Num::F(f) => Some(f),
            Num::I(_) => None,
        };
        let count = get_uvarint(b)?;
        let sum = get_num(b)?;
        let min = get_num(b)?;
        let max = get_num(b)?;
        let first_ts = get_ivarint(b)?;
        let first = get_num(b)?;
        let last_ts = first_ts.wrapping_add(get_ivarint(b)?);
        let last = get_num(b)?;
        let mean = float(b)?;
        let m2 = float(b)?;
        let s = Stats {
            count,
            sum,
            min,
            max,
            first_ts,
            first,
            last_ts,
            last,
            mean,
            m2,
        };
        Some((s, buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_stddev(xs: &[f64]) -> f64 {
        let m = xs.iter().sum::<f64>() / xs.len() as f64;
        (xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (xs.len() as f64 - 1.0)).sqrt()
    }

    #[test]
    fn merge_matches_sequential_push() {
        let xs: Vec<f64> = (0..100)
            .map(|i| ((i * 37) % 17) as f64 * 1.5 - 3.0)
            .collect();
        let mut seq = Stats::single(0, Num::F(xs[0]));
        for (i, x) in xs.iter().enumerate().skip(1) {
            seq.push(i as i64, Num::F(*x));
        }
        let mut a = Stats::single(0, Num::F(xs[0]));
        for (i, x) in xs.iter().enumerate().take(40).skip(1) {
            a.push(i as i64, Num::F(*x));
        }
        let mut b = Stats::single(40, Num::F(xs[40]));
        for (i, x) in xs.iter().enumerate().skip(41) {
            b.push(i as i64, Num::F(*x));
        }
        b.merge(&a); // merge order must not matter for first/last
        assert_eq!(b.count, 100);
        assert_eq!(b.first_ts, 0);
        assert_eq!(b.last_ts, 99);
        assert!((b.stddev() - naive_stddev(&xs)).abs() < 1e-12);
        assert!((seq.stddev() - naive_stddev(&xs)).abs() < 1e-12);
    }

    #[test]
    fn integer_sum_is_exact_past_2_pow_53() {
        let mut s = Stats::single(0, Num::I(1 << 53));
        s.push(1, Num::I(1));
        assert_eq!(s.sum, Num::I((1 << 53) + 1));
    }

    #[test]
    fn first_last_tie_takes_larger_value() {
        let mut s = Stats::single(5, Num::F(1.0));
        s.merge(&Stats::single(5, Num::F(2.0)));
        assert_eq!(s.first, Num::F(2.0));
        assert_eq!(s.last, Num::F(2.0));
    }

    #[test]
    fn encode_roundtrip() {
        let mut s = Stats::single(7, Num::I(-3));
        s.push(9, Num::F(2.5));
        let mut buf = Vec::new();
        s.encode_into(&mut buf);
        let (d, rest) = Stats::decode(&buf).unwrap();
        assert!(rest.is_empty());
        assert_eq!(d, s);
    }

    #[test]
    fn encode_roundtrips_awkward_numbers_bit_for_bit() {
        let cases = [
            Stats::single(i64::MIN, Num::F(-0.0)),
            Stats::single(i64::MAX, Num::F(f64::NAN)),
            Stats::single(0, Num::F(f64::INFINITY)),
            Stats::single(-5, Num::I(i64::MIN)),
            Stats::single(1_700_000_000_000, Num::F(0.1 + 0.2)),
            {
                let mut s = Stats::single(1_700_000_000_000, Num::F(1013.25));
                s.push(1_700_000_010_000, Num::F(21.5));
                s.push(1_699_999_990_000, Num::F(1e300));
                s
            },
        ];
        for s in cases {
            let mut buf = Vec::new();
            s.encode_into(&mut buf);
            buf.push(0xAA);
            let (d, rest) = Stats::decode(&buf).unwrap();
            assert_eq!(rest, &[0xAA]);
            let bits = |s: &Stats| {
                let n = |n: Num| match n {
                    Num::I(i) => (1u8, i as u64),
                    Num::F(f) => (0u8, f.to_bits()),
                };
                (
                    s.count,
                    n(s.sum),
                    n(s.min),
                    n(s.max),
                    s.first_ts,
                    n(s.first),
                    s.last_ts,
                    n(s.last),
                    s.mean.to_bits(),
                    s.m2.to_bits(),
                )
            };
            assert_eq!(bits(&d), bits(&s));
            assert!(
                Stats::decode(&buf[..buf.len() - 2]).is_none(),
                "truncated input decodes"
            );
        }
    }
}
