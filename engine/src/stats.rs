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

    /// Fixed-size binary form used in rollup rows (51 bytes).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        fn num(out: &mut Vec<u8>, n: Num) {
            match n {
                Num::I(i) => {
                    out.push(1);
                    out.extend_from_slice(&i.to_le_bytes());
                }
                Num::F(f) => {
                    out.push(0);
                    out.extend_from_slice(&f.to_le_bytes());
                }
            }
        }
        out.extend_from_slice(&self.count.to_le_bytes());
        num(out, self.sum);
        num(out, self.min);
        num(out, self.max);
        out.extend_from_slice(&self.first_ts.to_le_bytes());
        num(out, self.first);
        out.extend_from_slice(&self.last_ts.to_le_bytes());
        num(out, self.last);
        out.extend_from_slice(&self.mean.to_le_bytes());
        out.extend_from_slice(&self.m2.to_le_bytes());
    }

    /// Inverse of [`Stats::encode_into`]; returns the rest of the input.
    pub fn decode(buf: &[u8]) -> Option<(Stats, &[u8])> {
        struct R<'a>(&'a [u8]);
        impl R<'_> {
            fn u64(&mut self) -> Option<u64> {
                let (a, b) = self.0.split_first_chunk::<8>()?;
                self.0 = b;
                Some(u64::from_le_bytes(*a))
            }
            fn num(&mut self) -> Option<Num> {
                let (&tag, rest) = self.0.split_first()?;
                self.0 = rest;
                let bits = self.u64()?;
                match tag {
                    0 => Some(Num::F(f64::from_bits(bits))),
                    1 => Some(Num::I(bits as i64)),
                    _ => None,
                }
            }
        }
        let mut r = R(buf);
        let s = Stats {
            count: r.u64()?,
            sum: r.num()?,
            min: r.num()?,
            max: r.num()?,
            first_ts: r.u64()? as i64,
            first: r.num()?,
            last_ts: r.u64()? as i64,
            last: r.num()?,
            mean: f64::from_bits(r.u64()?),
            m2: f64::from_bits(r.u64()?),
        };
        Some((s, r.0))
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
}
