//! Bucket read parameters (Thinger's query string), parsed and validated once.
//!
//! The API passes the query string pairs as they came; tests build the same pairs. One
//! parser means one set of error messages for every surface.

use crate::error::QueryError;
use crate::limits::{ITEMS_DEFAULT, ITEMS_MAX};

/// Sort order of raw reads (by timestamp, then series).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sort {
    Asc,
    Desc,
}

/// Aggregate function (`agg_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggType {
    Count,
    Mean,
    Median,
    Mode,
    Spread,
    Stddev,
    Min,
    Max,
    Sum,
    First,
    Last,
}

impl AggType {
    /// Parses `agg_type`.
    pub fn parse(s: &str) -> Result<AggType, QueryError> {
        Ok(match s {
            "count" => AggType::Count,
            "mean" | "avg" => AggType::Mean,
            "median" => AggType::Median,
            "mode" => AggType::Mode,
            "spread" => AggType::Spread,
            "stddev" => AggType::Stddev,
            "min" => AggType::Min,
            "max" => AggType::Max,
            "sum" => AggType::Sum,
            "first" => AggType::First,
            "last" => AggType::Last,
            _ => {
                return Err(QueryError::BadParam {
                    param: "agg_type",
                    message: format!(
                        "unknown aggregate `{s}`; use count, mean, median, mode, spread, stddev, min, max, sum, first or last"
                    ),
                })
            }
        })
    }

    /// True when rollups (mergeable statistics) can answer it.
    pub fn mergeable(self) -> bool {
        !matches!(self, AggType::Median | AggType::Mode)
    }
}

/// Transform applied to the aggregated series (`transform`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transform {
    Abs,
    Ceil,
    Floor,
    Round,
    Difference,
    NonNegativeDifference,
    Derivative,
    NonNegativeDerivative,
    CumulativeSum,
    Elapsed,
}

impl Transform {
    /// Parses `transform`.
    pub fn parse(s: &str) -> Result<Transform, QueryError> {
        Ok(match s {
            "abs" => Transform::Abs,
            "ceil" => Transform::Ceil,
            "floor" => Transform::Floor,
            "round" => Transform::Round,
            "difference" => Transform::Difference,
            "non_negative_difference" => Transform::NonNegativeDifference,
            "derivative" => Transform::Derivative,
            "non_negative_derivative" => Transform::NonNegativeDerivative,
            "cumulative_sum" => Transform::CumulativeSum,
            "elapsed" => Transform::Elapsed,
            _ => {
                return Err(QueryError::BadParam {
                    param: "transform",
                    message: format!("unknown transform `{s}`"),
                })
            }
        })
    }

    /// Transforms that read one window before `min_ts` (SEMANTICS.md, "One window back").
    pub fn reads_one_window_back(self) -> bool {
        matches!(
            self,
            Transform::Difference
                | Transform::NonNegativeDifference
                | Transform::Derivative
                | Transform::NonNegativeDerivative
                | Transform::Elapsed
        )
    }
}

/// Aggregation window (`agg`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    /// A fixed length in ms, aligned to the epoch on the local wall clock.
    Fixed(i64),
    /// 1, 3, 6 or 12 calendar months starting on local midnight of the 1st.
    Months(u32),
}

impl Window {
    /// Parses `10s`, `15m`, `1h`, `1d`, `1w`, `1mo`, `3mo`, `6mo`, `1y`, `250ms`...
    pub fn parse(s: &str) -> Result<Window, QueryError> {
        let bad = |m: String| QueryError::BadParam {
            param: "agg",
            message: m,
        };
        let digits = s.chars().take_while(|c| c.is_ascii_digit()).count();
        let (n, unit) = s.split_at(digits);
        let n: i64 = n.parse().map_err(|_| {
            bad(format!(
                "window `{s}` must be a number and a unit, like 10s, 1h or 1mo"
            ))
        })?;
        if n <= 0 {
            return Err(bad(format!("window `{s}` must be longer than zero")));
        }
        let ms = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "mo" | "y" => {
                let months = if unit == "y" { n * 12 } else { n };
                return match months {
                    1 | 3 | 6 | 12 => Ok(Window::Months(months as u32)),
                    _ => Err(bad(format!(
                        "calendar window `{s}` must be 1mo, 3mo, 6mo or 1y"
                    ))),
                };
            }
            _ => {
                return Err(bad(format!(
                    "window `{s}` has an unknown unit; use ms, s, m, h, d, w, mo or y"
                )))
            }
        };
        let len = n
            .checked_mul(ms)
            .filter(|l| *l <= 100 * 366 * 86_400_000)
            .ok_or_else(|| bad(format!("window `{s}` is too long")))?;
        Ok(Window::Fixed(len))
    }
}

/// `fill` for aggregated reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fill {
    /// Empty windows are left out (Thinger's default).
    None,
    /// Every window in range, null (0 for count) when empty.
    Null,
}

/// Aggregation part of a read.
#[derive(Clone, Debug, PartialEq)]
pub struct AggSpec {
    pub window: Window,
    pub agg_type: AggType,
    /// IANA zone windows align in; `None` is UTC.
    pub tz: Option<chrono_tz::Tz>,
    /// Tag whose values split the result into groups.
    pub group_by: Option<String>,
    pub transform: Option<Transform>,
    pub fill: Fill,
}

/// A parsed bucket read.
#[derive(Clone, Debug, PartialEq)]
pub struct ReadQuery {
    /// Max rows returned (raw reads); aggregated reads are bounded by window count.
    pub items: usize,
    /// Inclusive bounds in epoch ms.
    pub min_ts: i64,
    pub max_ts: i64,
    pub sort: Sort,
    /// Selected field names; `None` is every field.
    pub fields: Option<Vec<String>>,
    /// Tag filters: a record matches when, for every entry, its tag value is one of the values.
    pub tags: Vec<(String, Vec<String>)>,
    /// Opaque cursor from a previous page (raw reads).
    pub page: Option<String>,
    pub agg: Option<AggSpec>,
}

impl Default for ReadQuery {
    fn default() -> Self {
        ReadQuery {
            items: ITEMS_DEFAULT,
            min_ts: i64::MIN,
            max_ts: i64::MAX,
            sort: Sort::Desc,
            fields: None,
            tags: Vec::new(),
            page: None,
            agg: None,
        }
    }
}

/// Query-string keys that are not tag filters.
const RESERVED: &[&str] = &[
    "items",
    "min_ts",
    "max_ts",
    "sort",
    "fields",
    "agg",
    "agg_type",
    "tz",
    "group_by",
    "transform",
    "fill",
    "page",
    "consistency",
    "authorization",
    "count",
    "index",
    "format",
    "tags",
];

impl ReadQuery {
    /// Parses query-string pairs. Keys that are not parameters are tag filters
    /// (`device=a&device=b` selects both); `tags` may also carry a JSON object.
    pub fn from_params<'a, I>(pairs: I) -> Result<ReadQuery, QueryError>
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let mut q = ReadQuery::default();
        let mut agg = None;
        let mut agg_type = None;
        let mut tz = None;
        let mut group_by = None;
        let mut transform = None;
        let mut fill = Fill::None;
        let int = |param: &'static str, v: &str| -> Result<i64, QueryError> {
            v.trim().parse::<i64>().map_err(|_| QueryError::BadParam {
                param,
                message: format!("`{v}` is not an integer"),
            })
        };
        for (k, v) in pairs {
            match k {
                "items" => {
                    let n = int("items", v)?;
                    if n <= 0 || n as usize > ITEMS_MAX {
                        return Err(QueryError::BadParam {
                            param: "items",
                            message: format!("must be between 1 and {ITEMS_MAX}, got {n}"),
                        });
                    }
                    q.items = n as usize;
                }
                "min_ts" => q.min_ts = int("min_ts", v)?,
                "max_ts" => q.max_ts = int("max_ts", v)?,
                "sort" => {
                    q.sort = match v {
                        "asc" => Sort::Asc,
                        "desc" => Sort::Desc,
                        _ => {
                            return Err(QueryError::BadParam {
                                param: "sort",
                                message: format!("`{v}` must be asc or desc"),
                            })
                        }
                    }
                }
                "fields" => {
                    let fs: Vec<String> = v
                        .split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect();
                    if !fs.is_empty() {
                        q.fields = Some(fs);
                    }
                }
                "agg" => agg = Some(Window::parse(v)?),
                "agg_type" => agg_type = Some(AggType::parse(v)?),
                "tz" => {
                    if !v.is_empty() && v != "UTC" {
                        tz =
                            Some(
                                v.parse::<chrono_tz::Tz>()
                                    .map_err(|_| QueryError::BadParam {
                                        param: "tz",
                                        message: format!("`{v}` is not an IANA time zone"),
                                    })?,
                            );
                    }
                }
                "group_by" => group_by = Some(v.to_string()).filter(|s| !s.is_empty()),
                "transform" => {
                    if !v.is_empty() {
                        transform = Some(Transform::parse(v)?)
                    }
                }
                "fill" => {
                    fill = match v {
                        "null" => Fill::Null,
                        "none" | "" => Fill::None,
                        _ => {
                            return Err(QueryError::BadParam {
                                param: "fill",
                                message: format!("`{v}` must be none or null"),
                            })
                        }
                    }
                }
                "page" => q.page = Some(v.to_string()),
                "tags" => {
                    let obj: serde_json::Map<String, serde_json::Value> =
                        serde_json::from_str(v).map_err(|e| QueryError::BadParam {
                            param: "tags",
                            message: format!("must be a JSON object of tag values: {e}"),
                        })?;
                    for (tag, val) in obj {
                        let vals = match val {
                            serde_json::Value::String(s) => vec![s],
                            serde_json::Value::Array(a) => a
                                .into_iter()
                                .map(|x| match x {
                                    serde_json::Value::String(s) => s,
                                    other => other.to_string(),
                                })
                                .collect(),
                            other => vec![other.to_string()],
                        };
                        push_tag(&mut q.tags, tag, vals);
                    }
                }
                _ if RESERVED.contains(&k) => {}
                _ => push_tag(&mut q.tags, k.to_string(), vec![v.to_string()]),
            }
        }
        if q.min_ts > q.max_ts {
            return Err(QueryError::BadParam {
                param: "min_ts",
                message: format!("min_ts {} is after max_ts {}", q.min_ts, q.max_ts),
            });
        }
        q.agg = match (agg, agg_type) {
            (None, None) => None,
            (Some(window), at) => Some(AggSpec {
                window,
                agg_type: at.unwrap_or(AggType::Mean),
                tz,
                group_by,
                transform,
                fill,
            }),
            (None, Some(_)) => {
                return Err(QueryError::BadParam {
                    param: "agg",
                    message: "agg_type needs a window in agg, like agg=1h".into(),
                })
            }
        };
        Ok(q)
    }
}

fn push_tag(tags: &mut Vec<(String, Vec<String>)>, tag: String, vals: Vec<String>) {
    match tags.iter_mut().find(|(t, _)| *t == tag) {
        Some((_, vs)) => vs.extend(vals),
        None => tags.push((tag, vals)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_windows() {
        assert_eq!(Window::parse("10s").unwrap(), Window::Fixed(10_000));
        assert_eq!(Window::parse("1w").unwrap(), Window::Fixed(604_800_000));
        assert_eq!(Window::parse("3mo").unwrap(), Window::Months(3));
        assert_eq!(Window::parse("1y").unwrap(), Window::Months(12));
        assert!(Window::parse("2mo").is_err());
        assert!(Window::parse("0s").is_err());
        assert!(Window::parse("h").is_err());
    }

    #[test]
    fn repeated_tags_accumulate() {
        let q = ReadQuery::from_params([("device", "a"), ("device", "b"), ("items", "5")]).unwrap();
        assert_eq!(
            q.tags,
            vec![("device".to_string(), vec!["a".into(), "b".into()])]
        );
        assert_eq!(q.items, 5);
    }

    #[test]
    fn bad_params_name_the_parameter() {
        let e = ReadQuery::from_params([("agg", "1h"), ("agg_type", "avgx")]).unwrap_err();
        assert!(e.to_string().contains("agg_type"), "{e}");
        let e = ReadQuery::from_params([("min_ts", "5"), ("max_ts", "1")]).unwrap_err();
        assert!(e.to_string().contains("min_ts"), "{e}");
    }
}
