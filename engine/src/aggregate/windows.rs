//! Window boundaries: fixed windows aligned to the epoch on the local wall clock (with
//! InfluxDB 1.x's DST adjustment) and calendar windows of 1, 3, 6 or 12 months.

use crate::error::QueryError;
use crate::limits::AGG_WINDOWS_MAX;
use crate::query::Window;
use chrono::{Datelike, NaiveDate, NaiveDateTime, Offset, TimeZone};
use chrono_tz::Tz;

/// Window arithmetic for one read.
#[derive(Clone, Copy, Debug)]
pub struct Windows {
    window: Window,
    tz: Option<Tz>,
}

impl Windows {
    pub fn new(window: Window, tz: Option<Tz>) -> Windows {
        Windows { window, tz }
    }

    /// UTC offset in ms of the zone at the instant `t` (0 without a zone).
    fn offset_ms(&self, t: i64) -> i64 {
        match self.tz {
            None => 0,
            Some(tz) => match chrono::DateTime::from_timestamp_millis(t) {
                Some(dt) => {
                    tz.offset_from_utc_datetime(&dt.naive_utc())
                        .fix()
                        .local_minus_utc() as i64
                        * 1000
                }
                None => 0,
            },
        }
    }

    /// (start, end) of the window holding `t`, following InfluxDB's `Window()`: the local
    /// wall time is truncated to the window length; the offsets at the truncated start and
    /// at the end are looked up again, and the start moves only when the change is
    /// smaller than the window (so windows of 1 h or less never move).
    pub fn bounds(&self, t: i64) -> (i64, i64) {
        match self.window {
            Window::Fixed(d) => {
                let Some(_) = self.tz else {
                    let s = t - t.rem_euclid(d);
                    return (s, s.saturating_add(d));
                };
                let offset = self.offset_ms(t);
                let local = t + offset;
                let dt = local.rem_euclid(d);
                // An offset looked up again at a boundary applies only when the change is
                // smaller than the window (InfluxDB looks it up at the wall-clock value).
                let adjusted = |wall: i64| {
                    let o = self.offset_ms(wall);
                    if (o - offset).abs() < d {
                        o
                    } else {
                        offset
                    }
                };
                let start_local = local - dt;
                let start = start_local - adjusted(start_local);
                let end_local = local + (d - dt);
                let end = end_local - adjusted(end_local);
                (start, end.max(start + 1))
            }
            Window::Months(n) => {
                let start = self.month_start(t, n);
                let (y, m) = self.local_ym(start + 1);
                let (ny, nm) = add_months(y, m, n as i32);
                (start, self.local_midnight(ny, nm).max(start + 1))
            }
        }
    }

    fn local_ym(&self, t: i64) -> (i32, u32) {
        let local = self.local_naive(t);
        (local.year(), local.month())
    }

    fn local_naive(&self, t: i64) -> NaiveDateTime {
        let utc = chrono::DateTime::from_timestamp_millis(t)
            .unwrap_or_default()
            .naive_utc();
        utc + chrono::Duration::milliseconds(self.offset_ms(t))
    }

    /// The instant of local midnight on the 1st of (y, m); if midnight does not exist (a
    /// DST gap), the first instant after it.
    fn local_midnight(&self, y: i32, m: u32) -> i64 {
        let naive = NaiveDate::from_ymd_opt(y, m, 1)
            .unwrap_or_default()
            .and_hms_opt(0, 0, 0)
            .unwrap_or_default();
        self.instant_of(naive)
    }

    /// Earliest instant whose local time is `naive` (or just after, inside a gap).
    fn instant_of(&self, naive: NaiveDateTime) -> i64 {
        match self.tz {
            None => naive.and_utc().timestamp_millis(),
            Some(tz) => {
                for step in 0..=4 {
                    let n = naive + chrono::Duration::minutes(30 * step);
                    if let Some(dt) = tz.from_local_datetime(&n).earliest() {
                        return dt.timestamp_millis() - 30 * 60_000 * step;
                    }
                }
                naive.and_utc().timestamp_millis()
            }
        }
    }

    fn month_start(&self, t: i64, n: u32) -> i64 {
        let (y, m) = self.local_ym(t);
        let pm = ((m - 1) / n) * n + 1;
        let s = self.local_midnight(y, pm);
        if s > t {
            // t is in a DST gap right after midnight: belongs to the previous period.
            let (py, pmm) = add_months(y, pm, -(n as i32));
            return self.local_midnight(py, pmm);
        }
        s
    }

    /// Start of the window holding `t` (its label).
    pub fn start(&self, t: i64) -> i64 {
        self.bounds(t).0
    }

    /// Where a transform that reads one window back starts reading: `min_ts - d` for fixed
    /// windows (24 h for `1d` whatever the zone), or `min_ts` moved back the window's
    /// months on the local clock with the day clamped to the month's length.
    pub fn one_back(&self, min_ts: i64) -> i64 {
        match self.window {
            Window::Fixed(d) => min_ts.saturating_sub(d),
            Window::Months(n) => {
                let local = self.local_naive(min_ts);
                let (y, m) = add_months(local.year(), local.month(), -(n as i32));
                let day = local.day().min(days_in_month(y, m));
                let date = NaiveDate::from_ymd_opt(y, m, day).unwrap_or_default();
                self.instant_of(date.and_time(local.time()))
            }
        }
    }

    /// Every window from the one holding `lo` to the one holding `hi`, as (start, end),
    /// contiguous and ascending.
    pub fn enumerate(&self, lo: i64, hi: i64) -> Result<Vec<(i64, i64)>, QueryError> {
        let mut out = Vec::new();
        let (mut s, mut e) = self.bounds(lo);
        loop {
            if out.len() >= AGG_WINDOWS_MAX {
                return Err(QueryError::BadParam {
                    param: "agg",
                    message: format!("the range holds more than {AGG_WINDOWS_MAX} windows; use a longer window or a shorter range"),
                });
            }
            out.push((s, e));
            if e > hi {
                break;
            }
            let (ns, ne) = self.bounds(e);
            // Windows that overlap around a DST change: continue from the end.
            s = ns.max(e);
            e = ne.max(s + 1);
        }
        // Make them contiguous: each window ends where the next starts.
        for i in 1..out.len() {
            out[i - 1].1 = out[i].0;
        }
        Ok(out)
    }
}

fn add_months(y: i32, m: u32, delta: i32) -> (i32, u32) {
    let idx = y * 12 + (m as i32 - 1) + delta;
    (idx.div_euclid(12), (idx.rem_euclid(12) + 1) as u32)
}

fn days_in_month(y: i32, m: u32) -> u32 {
    let (ny, nm) = add_months(y, m, 1);
    let first_next = NaiveDate::from_ymd_opt(ny, nm, 1).unwrap_or_default();
    first_next.pred_opt().map(|d| d.day()).unwrap_or(28)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn madrid_days_are_23_and_25_hours() {
        let w = Windows::new(Window::Fixed(86_400_000), Some(chrono_tz::Europe::Madrid));
        assert_eq!(
            w.bounds(ms("2024-03-31T12:00:00Z")),
            (ms("2024-03-30T23:00:00Z"), ms("2024-03-31T22:00:00Z"))
        );
        assert_eq!(
            w.bounds(ms("2024-10-27T12:00:00Z")),
            (ms("2024-10-26T22:00:00Z"), ms("2024-10-27T23:00:00Z"))
        );
    }

    #[test]
    fn madrid_three_hours_across_fall_back() {
        let w = Windows::new(
            Window::Fixed(3 * 3_600_000),
            Some(chrono_tz::Europe::Madrid),
        );
        assert_eq!(
            w.bounds(ms("2024-10-27T01:30:00Z")),
            (ms("2024-10-26T22:00:00Z"), ms("2024-10-27T02:00:00Z"))
        );
    }

    #[test]
    fn kathmandu_hours_start_at_quarter_past() {
        let w = Windows::new(Window::Fixed(3_600_000), Some(chrono_tz::Asia::Kathmandu));
        assert_eq!(
            w.start(ms("2024-01-01T10:20:00Z")),
            ms("2024-01-01T10:15:00Z")
        );
        let w = Windows::new(Window::Fixed(1_800_000), Some(chrono_tz::Asia::Kathmandu));
        assert_eq!(
            w.start(ms("2024-01-01T10:50:00Z")),
            ms("2024-01-01T10:45:00Z")
        );
    }

    #[test]
    fn weeks_start_on_thursday() {
        let w = Windows::new(Window::Fixed(7 * 86_400_000), None);
        assert_eq!(
            w.start(ms("2024-01-10T00:00:00Z")),
            ms("2024-01-04T00:00:00Z")
        );
    }

    #[test]
    fn calendar_months_in_a_zone_and_one_back() {
        let w = Windows::new(Window::Months(3), Some(chrono_tz::Europe::Madrid));
        assert_eq!(
            w.bounds(ms("2024-05-10T00:00:00Z")),
            (ms("2024-03-31T22:00:00Z"), ms("2024-06-30T22:00:00Z"))
        );
        let m = Windows::new(Window::Months(1), None);
        assert_eq!(
            m.one_back(ms("2024-03-31T10:00:00Z")),
            ms("2024-02-29T10:00:00Z")
        );
    }

    #[test]
    fn enumeration_is_contiguous() {
        let w = Windows::new(Window::Fixed(86_400_000), Some(chrono_tz::Europe::Madrid));
        let ws = w
            .enumerate(ms("2024-03-29T12:00:00Z"), ms("2024-04-02T12:00:00Z"))
            .unwrap();
        assert_eq!(ws.len(), 5);
        for p in ws.windows(2) {
            assert_eq!(p[0].1, p[1].0);
        }
    }
}
