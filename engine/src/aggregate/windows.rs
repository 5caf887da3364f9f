//! Window boundaries (SEMANTICS.md, "Fixed windows" and "Calendar windows").
//!
//! Fixed windows follow InfluxDB 1.x's `Window()`: the point's local wall time is
//! truncated to the window length, then the zone offset is looked up again at the
//! truncated instant and the start moves by the difference when that difference is
//! smaller than the window. So a `1d` window in Madrid is 23 h or 25 h around a DST
//! switch while a `1h` window never moves.
//!
//! A read needs more than one label: it needs the contiguous ranges that share a label,
//! so that rollup rows (fixed UTC windows) can be matched to whole windows. The label
//! of a point only changes where the local wall clock crosses a multiple of the window
//! length or where the zone's offset changes, so [`Windows::spans`] walks those
//! "pieces" and merges neighbours with the same label. A point belongs to the span that
//! holds its instant, which is the span labelled with InfluxDB's start for that point.

use crate::error::QueryError;
use crate::limits::AGG_WINDOWS_MAX;
use crate::query::Window;
use chrono::{
    DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeDelta, TimeZone,
};
use chrono_tz::Tz;

const DAY_MS: i64 = 86_400_000;

/// Samples taken inside one window piece when looking for a zone offset change.
/// Offsets change at most a few times a year, so sampling a piece at least daily (and
/// at most this many times for pieces longer than that) finds every change.
const OFFSET_SAMPLES_MAX: i64 = 512;

/// One window of a read: its label and the part of the read range it covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// The window's label: its start in epoch ms (may be before `from`).
    pub label: i64,
    /// Covered range `[from, to)`, clipped to the read range.
    pub from: i64,
    pub to: i64,
}

/// Window arithmetic for one read: a window kind and the zone it is aligned in.
#[derive(Clone, Copy, Debug)]
pub struct Windows {
    window: Window,
    tz: Option<Tz>,
}

impl Windows {
    /// `tz = None` aligns in UTC.
    pub fn new(window: Window, tz: Option<Tz>) -> Windows {
        Windows { window, tz }
    }

    /// Label (start, epoch ms) of the window holding `t`.
    pub fn start(&self, t: i64) -> i64 {
        match self.window {
            Window::Fixed(len_ms) => self.fixed_start(t, len_ms),
            Window::Months(n) => self.calendar_window(t, n).1,
        }
    }

    /// Where a transform that reads one window back starts reading (SEMANTICS.md, "One
    /// window back"): `min_ts - d` for fixed windows (24 h for `1d` whatever the zone);
    /// for calendar windows `min_ts` moved back 1/3/6/12 months on the local clock, the
    /// day clamped to the month's length (03-31 becomes 02-29).
    pub fn one_back(&self, min_ts: i64) -> i64 {
        match self.window {
            Window::Fixed(len_ms) => min_ts.saturating_sub(len_ms),
            Window::Months(n) => {
                let local = self.local_naive(min_ts);
                let month = month_index(&local) - i64::from(n);
                let (y, m) = (month.div_euclid(12), month.rem_euclid(12) as u32 + 1);
                let date = i32::try_from(y).ok().and_then(|y| {
                    let day = local.day().min(days_in_month(y, m)?);
                    NaiveDate::from_ymd_opt(y, m, day)
                });
                match date {
                    Some(d) => self.local_to_instant(d.and_time(local.time())),
                    // Before the first representable date: nothing is stored there.
                    None => min_ts.saturating_sub(i64::from(n) * 31 * DAY_MS),
                }
            }
        }
    }

    /// The windows from the one holding `lo` to the one holding `hi` (inclusive bounds),
    /// ascending, with strictly increasing labels; their ranges are contiguous and cover
    /// exactly `[lo, hi + 1)`.
    pub fn spans(&self, lo: i64, hi: i64) -> Result<Vec<Span>, QueryError> {
        if lo > hi {
            return Ok(Vec::new());
        }
        let end = hi.saturating_add(1);
        // Fail fast on ranges that certainly hold too many windows: a fixed window is
        // shorter than 3 d even when both its ends move for DST, a calendar window is at
        // most 31 days per month.
        let longest_ms = match self.window {
            Window::Fixed(len_ms) => 3 * i128::from(len_ms),
            Window::Months(n) => i128::from(n) * 31 * i128::from(DAY_MS),
        };
        if (i128::from(hi) - i128::from(lo)) / longest_ms > AGG_WINDOWS_MAX as i128 {
            return Err(self.too_many(lo, hi));
        }
        let mut spans: Vec<Span> = Vec::new();
        let push = |spans: &mut Vec<Span>, span: Span| {
            spans.push(span);
            if spans.len() > AGG_WINDOWS_MAX {
                Err(self.too_many(lo, hi))
            } else {
                Ok(())
            }
        };
        match self.window {
            Window::Fixed(len_ms) => {
                let (mut label, mut from, mut t) = (self.fixed_start(lo, len_ms), lo, lo);
                loop {
                    let piece_end = self.piece_end(t, len_ms);
                    if piece_end >= end || piece_end == i64::MAX {
                        return push(
                            &mut spans,
                            Span {
                                label,
                                from,
                                to: end,
                            },
                        )
                        .map(|_| spans);
                    }
                    // Pieces whose label is not after the current one (the same window
                    // continuing, or a zone change that would go back) join it.
                    let next = self.fixed_start(piece_end, len_ms);
                    if next > label {
                        push(
                            &mut spans,
                            Span {
                                label,
                                from,
                                to: piece_end,
                            },
                        )?;
                        (label, from) = (next, piece_end);
                    }
                    t = piece_end;
                }
            }
            Window::Months(n) => {
                let (mut month, mut label) = self.calendar_window(lo, n);
                let mut from = lo;
                loop {
                    month += i64::from(n);
                    let next = self.month_start(month);
                    if next >= end || next == i64::MAX {
                        return push(
                            &mut spans,
                            Span {
                                label,
                                from,
                                to: end,
                            },
                        )
                        .map(|_| spans);
                    }
                    if next <= from {
                        // Only where instants were clamped to chrono's range.
                        continue;
                    }
                    push(
                        &mut spans,
                        Span {
                            label,
                            from,
                            to: next,
                        },
                    )?;
                    (label, from) = (next, next);
                }
            }
        }
    }

    fn too_many(&self, lo: i64, hi: i64) -> QueryError {
        let what = match self.window {
            Window::Fixed(len_ms) => format!("{len_ms} ms windows"),
            Window::Months(n) => format!("{n}-month windows"),
        };
        QueryError::BadParam {
            param: "agg",
            message: format!(
                "the range {lo}..{hi} holds more than {AGG_WINDOWS_MAX} {what}; use a longer window or a shorter range"
            ),
        }
    }

    /// UTC offset of the zone at the instant `t`, in ms (0 without a zone).
    fn offset_ms(&self, t: i64) -> i64 {
        match self.tz {
            None => 0,
            Some(tz) => {
                let utc = utc_naive(t);
                i64::from(tz.offset_from_utc_datetime(&utc).fix().local_minus_utc()) * 1000
            }
        }
    }

    /// InfluxDB's window start for `t`: truncate the local wall time, then move by the
    /// offset change between `t` and the truncated instant when it is below the length.
    fn fixed_start(&self, t: i64, len_ms: i64) -> i64 {
        let zone = self.offset_ms(t);
        let dt = (i128::from(t) + i128::from(zone)).rem_euclid(i128::from(len_ms));
        let start = saturate(i128::from(t) - dt);
        let change = zone - self.offset_ms(start);
        if change != 0 && change.abs() < len_ms {
            start.saturating_add(change)
        } else {
            start
        }
    }

    /// End of the piece holding `t` (always `> t`): the next instant where the local
    /// wall clock crosses a multiple of the length or the zone's offset changes.
    fn piece_end(&self, t: i64, len_ms: i64) -> i64 {
        let zone = self.offset_ms(t);
        let dt = (i128::from(t) + i128::from(zone)).rem_euclid(i128::from(len_ms));
        let grid = saturate(i128::from(t) - dt + i128::from(len_ms));
        if self.tz.is_none() {
            return grid;
        }
        self.first_offset_change(t, grid, zone).unwrap_or(grid)
    }

    /// The first instant in `(from, to]` whose offset differs from `zone`, if any.
    fn first_offset_change(&self, from: i64, to: i64, zone: i64) -> Option<i64> {
        let step = ((i128::from(to) - i128::from(from)) / i128::from(OFFSET_SAMPLES_MAX))
            .max(i128::from(DAY_MS));
        let mut before = from;
        while before < to {
            let probe = saturate(i128::from(before) + step).min(to);
            if self.offset_ms(probe) != zone {
                // One change between `before` and `probe` (they are at most a day, or
                // 1/512 of a very long window, apart): bisect to the millisecond.
                let (mut lo, mut hi) = (before, probe);
                while hi - lo > 1 {
                    let mid = lo + (hi - lo) / 2;
                    if self.offset_ms(mid) == zone {
                        lo = mid;
                    } else {
                        hi = mid;
                    }
                }
                return Some(hi);
            }
            before = probe;
        }
        None
    }

    /// Local wall time at the instant `t` (instants chrono cannot represent are clamped).
    fn local_naive(&self, t: i64) -> NaiveDateTime {
        let utc = utc_naive(t);
        TimeDelta::try_milliseconds(self.offset_ms(t))
            .and_then(|off| utc.checked_add_signed(off))
            .unwrap_or(utc)
    }

    /// The calendar window holding `t`: its first month (as `year * 12 + month0`) and
    /// its label.
    fn calendar_window(&self, t: i64, n: u32) -> (i64, i64) {
        let month = month_index(&self.local_naive(t));
        let first = month - month.rem_euclid(i64::from(n));
        let label = self.month_start(first);
        if label > t {
            // `t` lies in a DST gap right after a local midnight that does not exist.
            let prev = first - i64::from(n);
            return (prev, self.month_start(prev));
        }
        (first, label)
    }

    /// Instant of local midnight on the 1st of `month` (`year * 12 + month0`);
    /// saturates outside the dates chrono represents.
    fn month_start(&self, month: i64) -> i64 {
        let y = month.div_euclid(12);
        let date = i32::try_from(y)
            .ok()
            .and_then(|y| NaiveDate::from_ymd_opt(y, month.rem_euclid(12) as u32 + 1, 1));
        match date.and_then(|d| d.and_hms_opt(0, 0, 0)) {
            Some(midnight) => self.local_to_instant(midnight),
            None if y < 0 => i64::MIN,
            None => i64::MAX,
        }
    }

    /// The instant of a local wall time, resolved as Python's zoneinfo does with
    /// `fold=0` (the calendar reference): an ambiguous time takes its first occurrence; a
    /// time inside a DST gap is read with the offset from before the gap, which lands
    /// just after the gap.
    fn local_to_instant(&self, local: NaiveDateTime) -> i64 {
        let as_utc = local.and_utc().timestamp_millis();
        let Some(tz) = self.tz else { return as_utc };
        match tz.from_local_datetime(&local) {
            LocalResult::Single(dt) => dt.timestamp_millis(),
            LocalResult::Ambiguous(a, b) => a.timestamp_millis().min(b.timestamp_millis()),
            LocalResult::None => {
                as_utc.saturating_sub(self.offset_ms(as_utc.saturating_sub(DAY_MS)))
            }
        }
    }
}

/// `year * 12 + month0` of a local date.
fn month_index(local: &NaiveDateTime) -> i64 {
    i64::from(local.year()) * 12 + i64::from(local.month0())
}

fn days_in_month(y: i32, m: u32) -> Option<u32> {
    let first_next = if m == 12 {
        NaiveDate::from_ymd_opt(y.checked_add(1)?, 1, 1)?
    } else {
        NaiveDate::from_ymd_opt(y, m + 1, 1)?
    };
    first_next.pred_opt().map(|d| d.day())
}

/// The UTC date-time of an instant, clamped to the range chrono represents (less two
/// days, so a zone offset can still be added).
fn utc_naive(t: i64) -> NaiveDateTime {
    let lo = DateTime::<chrono::Utc>::MIN_UTC.timestamp_millis() + 2 * DAY_MS;
    let hi = DateTime::<chrono::Utc>::MAX_UTC.timestamp_millis() - 2 * DAY_MS;
    DateTime::from_timestamp_millis(t.clamp(lo, hi))
        .unwrap_or_default()
        .naive_utc()
}

fn saturate(x: i128) -> i64 {
    x.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::SecondsFormat;
    use chrono_tz::{America, Asia, Europe};

    const H: i64 = 3_600_000;

    fn ms(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    fn iso(t: i64) -> String {
        let dt = DateTime::from_timestamp_millis(t).unwrap();
        dt.to_rfc3339_opts(SecondsFormat::Secs, true)
    }

    fn fixed(len_ms: i64, tz: Option<Tz>) -> Windows {
        Windows::new(Window::Fixed(len_ms), tz)
    }

    /// Label of the window holding `t`, both in RFC 3339.
    fn label(w: &Windows, t: &str) -> String {
        iso(w.start(ms(t)))
    }

    /// Range of the window holding `t`, found among the spans of a range around it.
    fn range(w: &Windows, t: &str) -> (String, String) {
        let t = ms(t);
        let spans = w.spans(t - 40 * DAY_MS, t + 40 * DAY_MS).unwrap();
        let s = spans.iter().find(|s| s.from <= t && t < s.to).unwrap();
        assert_eq!(s.label, s.from, "a whole window starts at its label");
        (iso(s.from), iso(s.to))
    }

    fn pair(a: &str, b: &str) -> (String, String) {
        (a.to_string(), b.to_string())
    }

    #[test]
    fn madrid_days_are_23_and_25_hours() {
        let w = fixed(24 * H, Some(Europe::Madrid));
        let spring = pair("2024-03-30T23:00:00Z", "2024-03-31T22:00:00Z");
        assert_eq!(range(&w, "2024-03-31T12:00:00Z"), spring);
        assert_eq!(
            range(&w, "2024-03-30T23:30:00Z"),
            spring,
            "before the switch"
        );
        let fall = pair("2024-10-26T22:00:00Z", "2024-10-27T23:00:00Z");
        assert_eq!(range(&w, "2024-10-27T12:00:00Z"), fall);
        assert_eq!(range(&w, "2024-10-27T00:30:00Z"), fall, "before the switch");
    }

    #[test]
    fn madrid_three_and_six_hours_stay_on_local_multiples() {
        let w = fixed(3 * H, Some(Europe::Madrid));
        let fall = pair("2024-10-26T22:00:00Z", "2024-10-27T02:00:00Z");
        assert_eq!(range(&w, "2024-10-27T01:30:00Z"), fall);
        assert_eq!(label(&w, "2024-10-27T02:30:00Z"), "2024-10-27T02:00:00Z");
        // Spring: local 00:00-03:00 is 2 h long.
        let spring = pair("2024-03-30T23:00:00Z", "2024-03-31T01:00:00Z");
        assert_eq!(range(&w, "2024-03-31T00:30:00Z"), spring);
        let w = fixed(6 * H, Some(Europe::Madrid));
        assert_eq!(label(&w, "2024-10-27T04:00:00Z"), "2024-10-26T22:00:00Z");
        assert_eq!(label(&w, "2024-10-27T05:30:00Z"), "2024-10-27T05:00:00Z");
    }

    #[test]
    fn hour_windows_never_move_for_dst() {
        let w = fixed(H, Some(Europe::Madrid));
        for t in [
            "2024-03-31T00:30:00Z",
            "2024-03-31T01:30:00Z",
            "2024-10-27T00:30:00Z",
            "2024-10-27T01:30:00Z",
        ] {
            assert_eq!(w.start(ms(t)), ms(t) - 30 * 60_000, "{t}");
        }
    }

    #[test]
    fn two_hour_windows_at_fall_back_label_each_point_with_its_own_start() {
        // InfluxDB's windows overlap here ([00:00Z,03:00Z) and [01:00Z,03:00Z)); we
        // label every point with the start InfluxDB computes for it.
        let w = fixed(2 * H, Some(Europe::Madrid));
        assert_eq!(label(&w, "2024-10-27T00:30:00Z"), "2024-10-27T00:00:00Z");
        assert_eq!(label(&w, "2024-10-27T01:30:00Z"), "2024-10-27T01:00:00Z");
        let spans = w
            .spans(ms("2024-10-26T23:00:00Z"), ms("2024-10-27T04:00:00Z"))
            .unwrap();
        let labels: Vec<String> = spans.iter().map(|s| iso(s.label)).collect();
        let want = [
            "2024-10-26T22:00:00Z",
            "2024-10-27T00:00:00Z",
            "2024-10-27T01:00:00Z",
            "2024-10-27T03:00:00Z",
        ];
        assert_eq!(labels, want);
    }

    #[test]
    fn sub_hour_offsets_shift_short_windows() {
        let kathmandu = |len_ms| fixed(len_ms, Some(Asia::Kathmandu));
        assert_eq!(
            label(&kathmandu(H), "2024-01-01T10:20:00Z"),
            "2024-01-01T10:15:00Z"
        );
        assert_eq!(
            label(&kathmandu(H), "2024-01-01T10:10:00Z"),
            "2024-01-01T09:15:00Z"
        );
        assert_eq!(
            label(&kathmandu(H / 2), "2024-01-01T10:50:00Z"),
            "2024-01-01T10:45:00Z"
        );
        assert_eq!(
            label(&kathmandu(H / 2), "2024-01-01T10:40:00Z"),
            "2024-01-01T10:15:00Z"
        );
        assert_eq!(
            label(&kathmandu(24 * H), "2024-05-01T20:00:00Z"),
            "2024-05-01T18:15:00Z"
        );
        let kolkata = fixed(H, Some(Asia::Kolkata));
        assert_eq!(
            label(&kolkata, "2024-01-01T10:20:00Z"),
            "2024-01-01T09:30:00Z"
        );
        // Whole-hour zones give UTC sub-hour windows.
        let new_york = fixed(15 * 60_000, Some(America::New_York));
        assert_eq!(
            label(&new_york, "2024-01-01T10:20:00Z"),
            "2024-01-01T10:15:00Z"
        );
    }

    #[test]
    fn weeks_start_on_thursday() {
        let utc = fixed(7 * 24 * H, None);
        assert_eq!(label(&utc, "2024-01-10T00:00:00Z"), "2024-01-04T00:00:00Z");
        assert_eq!(label(&utc, "2024-01-04T00:00:00Z"), "2024-01-04T00:00:00Z");
        let madrid = fixed(7 * 24 * H, Some(Europe::Madrid));
        assert_eq!(
            label(&madrid, "2024-01-10T00:00:00Z"),
            "2024-01-03T23:00:00Z"
        );
        // The week holding the spring switch is 167 h, the autumn one 169 h.
        let spring = pair("2024-03-27T23:00:00Z", "2024-04-03T22:00:00Z");
        assert_eq!(range(&madrid, "2024-03-31T12:00:00Z"), spring);
        let fall = pair("2024-10-23T22:00:00Z", "2024-10-30T23:00:00Z");
        assert_eq!(range(&madrid, "2024-10-27T12:00:00Z"), fall);
    }

    #[test]
    fn odd_lengths_align_to_the_epoch() {
        let w = fixed(7 * 60_000, None);
        let t = ms("2024-01-10T09:03:00Z");
        assert_eq!(w.start(t), t - t.rem_euclid(7 * 60_000));
        let w = fixed(45_000, None);
        assert_eq!(w.start(45_001), 45_000);
        assert_eq!(w.start(-1), -45_000);
    }

    #[test]
    fn calendar_months_in_zones() {
        let m = Windows::new(Window::Months(1), Some(Europe::Madrid));
        assert_eq!(label(&m, "2024-03-15T00:00:00Z"), "2024-02-29T23:00:00Z");
        assert_eq!(label(&m, "2024-04-15T00:00:00Z"), "2024-03-31T22:00:00Z");
        assert_eq!(
            label(&m, "2024-03-31T22:30:00Z"),
            "2024-03-31T22:00:00Z",
            "already April in Madrid"
        );
        let q = Windows::new(Window::Months(3), Some(Europe::Madrid));
        assert_eq!(label(&q, "2024-05-10T00:00:00Z"), "2024-03-31T22:00:00Z");
        let h = Windows::new(Window::Months(6), None);
        assert_eq!(label(&h, "2024-12-31T23:59:59Z"), "2024-07-01T00:00:00Z");
        let y = Windows::new(Window::Months(12), Some(Asia::Kathmandu));
        assert_eq!(label(&y, "2024-06-01T00:00:00Z"), "2023-12-31T18:15:00Z");
        let spans = m
            .spans(ms("2024-01-20T00:00:00Z"), ms("2024-04-02T00:00:00Z"))
            .unwrap();
        let labels: Vec<String> = spans.iter().map(|s| iso(s.label)).collect();
        let want = [
            "2023-12-31T23:00:00Z",
            "2024-01-31T23:00:00Z",
            "2024-02-29T23:00:00Z",
            "2024-03-31T22:00:00Z",
        ];
        assert_eq!(labels, want);
    }

    #[test]
    fn one_window_back() {
        let day = fixed(24 * H, Some(Europe::Madrid));
        assert_eq!(
            iso(day.one_back(ms("2024-04-01T00:00:00Z"))),
            "2024-03-31T00:00:00Z"
        );
        let m = Windows::new(Window::Months(1), None);
        assert_eq!(
            iso(m.one_back(ms("2024-03-31T10:00:00Z"))),
            "2024-02-29T10:00:00Z"
        );
        // 2024-05-31 12:00 local (CEST) back 3 months: 2024-02-29 12:00 local (CET).
        let q = Windows::new(Window::Months(3), Some(Europe::Madrid));
        assert_eq!(
            iso(q.one_back(ms("2024-05-31T10:00:00Z"))),
            "2024-02-29T11:00:00Z"
        );
        let y = Windows::new(Window::Months(12), None);
        assert_eq!(
            iso(y.one_back(ms("2024-02-29T00:00:00Z"))),
            "2023-02-28T00:00:00Z"
        );
    }

    #[test]
    fn spans_are_contiguous_and_cover_the_range() {
        let cases = [
            (
                fixed(24 * H, Some(Europe::Madrid)),
                "2024-03-28T12:00:00Z",
                "2024-04-02T12:00:00Z",
            ),
            (
                fixed(3 * H, Some(Europe::Madrid)),
                "2024-10-26T12:00:00Z",
                "2024-10-27T18:00:00Z",
            ),
            (
                fixed(10_000, None),
                "2024-01-01T00:00:05Z",
                "2024-01-01T01:00:00Z",
            ),
            (
                Windows::new(Window::Months(1), Some(America::New_York)),
                "2023-11-30T18:00:00Z",
                "2024-07-31T00:00:00Z",
            ),
        ];
        for (w, lo, hi) in cases {
            let (lo, hi) = (ms(lo), ms(hi));
            let spans = w.spans(lo, hi).unwrap();
            assert_eq!((spans[0].from, spans[spans.len() - 1].to), (lo, hi + 1));
            for p in spans.windows(2) {
                assert_eq!(p[0].to, p[1].from);
                assert!(p[0].label < p[1].label);
            }
            for s in &spans {
                assert_eq!((w.start(s.from), w.start(s.to - 1)), (s.label, s.label));
            }
        }
        let madrid = fixed(24 * H, Some(Europe::Madrid));
        let days = madrid.spans(ms("2024-03-29T12:00:00Z"), ms("2024-04-02T12:00:00Z"));
        assert_eq!(days.unwrap().len(), 5);
    }

    #[test]
    fn too_many_windows_is_a_bad_agg() {
        let max = AGG_WINDOWS_MAX as i64;
        let e = fixed(1, None).spans(0, 10 * max).unwrap_err();
        assert!(e.to_string().contains("agg"), "{e}");
        let e = fixed(1_000, None)
            .spans(0, 1_000 * max + 5_000)
            .unwrap_err();
        assert!(e.to_string().contains("windows"), "{e}");
        assert!(fixed(1_000, None).spans(0, 1_000 * (max - 1)).is_ok());
    }

    #[test]
    fn extreme_instants_do_not_panic() {
        let kinds = [
            fixed(7, None),
            fixed(100 * 366 * 24 * H, Some(Europe::Madrid)),
            Windows::new(Window::Months(12), Some(Europe::Madrid)),
        ];
        for w in kinds {
            for t in [i64::MIN, i64::MIN + 1, -1, 0, i64::MAX - 1, i64::MAX] {
                let _ = (w.start(t), w.one_back(t));
            }
            let _ = w.spans(i64::MAX - 10, i64::MAX);
            let _ = w.spans(i64::MIN, i64::MIN + 10);
        }
        let years = Windows::new(Window::Months(12), None);
        assert_eq!(years.spans(i64::MAX - 10, i64::MAX).unwrap().len(), 1);
    }
}
