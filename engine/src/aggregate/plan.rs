//! Which source answers each part of each window: rollup rows or raw points.
//!
//! Rollups are fixed UTC windows (15 min, 1 h, 1 d) of mergeable [`Stats`]. A window's
//! range `[a, b)` is split greedily: the coarsest level whose grid fits inside it reads
//! the aligned middle `[ceil(a), floor(b))`, and the ragged edges are split the same way
//! with the finer levels, down to raw points for what no grid covers. A Madrid month
//! (23:00Z or 22:00Z to 22:00Z) thus reads 1 d rows for its middle, a few 1 h rows at
//! each end and no raw point; a Kathmandu hour (hh:15) reads four 15 min rows.
//!
//! The pieces of all windows are kept per source in ascending order, so each series is
//! read with few range calls ([`runs`]) and every row or point is placed by a cursor
//! ([`Locator`]) instead of one call per window.
//!
//! [`Stats`]: crate::stats::Stats

use super::windows::Span;
use super::RollupLevel;

/// One piece of one window's range, read from one source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Segment {
    pub from: i64,
    pub to: i64,
    /// Index of the window in the read's spans.
    pub window: u32,
}

/// The pieces of every window, per source; each list is ascending and disjoint.
#[derive(Debug, Default)]
pub(super) struct Plan {
    pub raw: Vec<Segment>,
    /// Indexed like [`RollupLevel::ALL`]; bounds lie on the level's grid.
    pub rollups: [Vec<Segment>; 3],
    /// The range calls that read `raw`, per series.
    pub raw_calls: Vec<(i64, i64)>,
    /// The range calls that read `rollups`, per series and level.
    pub rollup_calls: [Vec<(i64, i64)>; 3],
}

/// Rollup rows a read may skip over to join two segments of one level into one range
/// call. A read reuses one iterator, so another call costs one seek, about what
/// reading and decoding two unneeded rows costs (64 made a 1 h read over a day scan
/// every 15 min row in between).
const ROLLUP_GAP_ROWS_MAX: i64 = 2;

impl Plan {
    /// Splits every span; with `use_rollups` false everything is read raw.
    pub fn new(spans: &[Span], use_rollups: bool) -> Plan {
        let mut plan = Plan::default();
        let levels = if use_rollups {
            RollupLevel::ALL.len()
        } else {
            0
        };
        for (i, s) in spans.iter().enumerate() {
            plan.split(s.from, s.to, i as u32, levels);
        }
        // Adjacent raw edges (the end of one window, the start of the next) share a
        // call; rollup segments a few rows apart do too.
        plan.raw_calls = runs(&plan.raw, 0);
        for (li, level) in RollupLevel::ALL.into_iter().enumerate() {
            plan.rollup_calls[li] = runs(&plan.rollups[li], ROLLUP_GAP_ROWS_MAX * level.len_ms());
        }
        plan
    }

    /// Splits `[a, b)` over the first `levels` levels (finest first in
    /// [`RollupLevel::ALL`]), coarsest that fits first.
    fn split(&mut self, a: i64, b: i64, window: u32, levels: usize) {
        if a >= b {
            return;
        }
        for li in (0..levels).rev() {
            let len = i128::from(RollupLevel::ALL[li].len_ms());
            let ceil_a = (i128::from(a) + len - 1).div_euclid(len) * len;
            let floor_b = i128::from(b).div_euclid(len) * len;
            if ceil_a < floor_b {
                // a <= ceil_a < floor_b <= b, so both fit in i64.
                let (mid_from, mid_to) = (ceil_a as i64, floor_b as i64);
                self.split(a, mid_from, window, li);
                self.rollups[li].push(Segment {
                    from: mid_from,
                    to: mid_to,
                    window,
                });
                self.split(mid_to, b, window, li);
                return;
            }
        }
        self.raw.push(Segment {
            from: a,
            to: b,
            window,
        });
    }
}

/// The range calls that read `segs`: segments at most `max_gap_ms` apart share a call.
fn runs(segs: &[Segment], max_gap_ms: i64) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = Vec::new();
    for s in segs {
        match out.last_mut() {
            Some(last) if s.from.saturating_sub(last.1) <= max_gap_ms => last.1 = s.to,
            _ => out.push((s.from, s.to)),
        }
    }
    out
}

/// Finds the segment holding an instant; instants usually come in ascending order, so it
/// remembers where the last one was.
pub(super) struct Locator<'a> {
    segs: &'a [Segment],
    at: usize,
}

impl<'a> Locator<'a> {
    pub fn new(segs: &'a [Segment]) -> Locator<'a> {
        Locator { segs, at: 0 }
    }

    /// The window of the segment holding `t`, if any.
    pub fn window_of(&mut self, t: i64) -> Option<u32> {
        let segs = self.segs;
        let holds = |i: usize| segs.get(i).is_some_and(|s| s.from <= t && t < s.to);
        if !holds(self.at) {
            if holds(self.at + 1) {
                self.at += 1;
            } else {
                self.at = segs.partition_point(|s| s.to <= t);
            }
        }
        holds(self.at).then(|| segs[self.at].window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M15: i64 = 15 * 60_000;
    const H: i64 = 3_600_000;
    const D: i64 = 86_400_000;

    fn seg(from: i64, to: i64, window: u32) -> Segment {
        Segment { from, to, window }
    }

    fn one(from: i64, to: i64) -> Plan {
        Plan::new(
            &[Span {
                label: from,
                from,
                to,
            }],
            true,
        )
    }

    #[test]
    fn aligned_days_read_day_rows_only() {
        let p = one(10 * D, 12 * D);
        assert_eq!(p.rollups[2], vec![seg(10 * D, 12 * D, 0)]);
        assert!(p.raw.is_empty() && p.rollups[0].is_empty() && p.rollups[1].is_empty());
    }

    #[test]
    fn madrid_day_reads_hour_rows() {
        let p = one(10 * D - 2 * H, 11 * D - 2 * H);
        assert_eq!(p.rollups[1], vec![seg(10 * D - 2 * H, 11 * D - 2 * H, 0)]);
        assert!(p.raw.is_empty());
        // A Madrid month: day rows in the middle, hour rows at the ends.
        let p = one(10 * D - H, 40 * D - 2 * H);
        assert_eq!(p.rollups[2], vec![seg(10 * D, 39 * D, 0)]);
        assert_eq!(
            p.rollups[1],
            vec![seg(10 * D - H, 10 * D, 0), seg(39 * D, 40 * D - 2 * H, 0)]
        );
    }

    #[test]
    fn ragged_edges_step_down_the_levels() {
        let a = 10 * D + 10 * H + 7 * 60_000; // 10:07
        let b = 12 * D + 3 * H + 20 * 60_000; // 03:20 two days later
        let p = one(a, b);
        assert_eq!(
            p.raw,
            vec![
                seg(a, 10 * D + 10 * H + M15, 0),
                seg(12 * D + 3 * H + M15, b, 0)
            ]
        );
        assert_eq!(
            p.rollups[0],
            vec![
                seg(10 * D + 10 * H + M15, 10 * D + 11 * H, 0),
                seg(12 * D + 3 * H, 12 * D + 3 * H + M15, 0)
            ]
        );
        assert_eq!(
            p.rollups[1],
            vec![
                seg(10 * D + 11 * H, 11 * D, 0),
                seg(12 * D, 12 * D + 3 * H, 0)
            ]
        );
        assert_eq!(p.rollups[2], vec![seg(11 * D, 12 * D, 0)]);
    }

    #[test]
    fn kathmandu_hours_read_quarter_hours() {
        let spans: Vec<Span> = (0..3)
            .map(|i| Span {
                label: 0,
                from: i * H + M15,
                to: (i + 1) * H + M15,
            })
            .collect();
        let p = Plan::new(&spans, true);
        assert!(p.raw.is_empty() && p.rollups[1].is_empty() && p.rollups[2].is_empty());
        assert_eq!(
            p.rollups[0],
            vec![
                seg(M15, H + M15, 0),
                seg(H + M15, 2 * H + M15, 1),
                seg(2 * H + M15, 3 * H + M15, 2)
            ]
        );
        assert_eq!(p.rollup_calls[0], vec![(M15, 3 * H + M15)]);
    }

    #[test]
    fn short_windows_and_raw_only_read_raw() {
        let p = one(1_000, 11_000);
        assert_eq!(p.raw, vec![seg(1_000, 11_000, 0)]);
        let p = Plan::new(
            &[Span {
                label: 0,
                from: 0,
                to: 2 * D,
            }],
            false,
        );
        assert_eq!(p.raw, vec![seg(0, 2 * D, 0)]);
    }

    #[test]
    fn runs_join_close_segments() {
        let segs = [
            seg(0, 10, 0),
            seg(10, 20, 1),
            seg(25, 30, 2),
            seg(100, 110, 3),
        ];
        assert_eq!(runs(&segs, 0), vec![(0, 20), (25, 30), (100, 110)]);
        assert_eq!(runs(&segs, 5), vec![(0, 30), (100, 110)]);
    }

    #[test]
    fn locator_finds_segments_in_any_order() {
        let segs = [seg(0, 10, 0), seg(10, 20, 1), seg(30, 40, 2)];
        let mut l = Locator::new(&segs);
        assert_eq!(l.window_of(0), Some(0));
        assert_eq!(l.window_of(15), Some(1));
        assert_eq!(l.window_of(25), None);
        assert_eq!(l.window_of(39), Some(2));
        assert_eq!(l.window_of(40), None);
        assert_eq!(l.window_of(5), Some(0));
        assert_eq!(l.window_of(-1), None);
    }
}
