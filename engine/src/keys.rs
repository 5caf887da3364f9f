//! On-disk layout of the `state/` RocksDB: column families and key encodings.
//!
//! Keys are big-endian so that RocksDB's byte order is the logical order:
//! - `meta`: `[0x00] name` bookkeeping (format version, applied marker, id counters);
//!   `[0x01][kind][user] 0x00 [parent] 0x00 [id]` catalog documents (JSON text);
//!   `[0x02][bucket u32]` bucket internals: `[0x01][field u16]` field registry,
//!   `[0x02][series u32]` series tag values.
//! - `series`: `[bucket u32][series u32][first ts]` → a block of records (`engine/blocks.rs`).
//! - `rollups`: `[bucket u32][series u32][level u8][window start]` → per-field [`Stats`](crate::stats::Stats),
//!   for every window except each series' newest per level (those live in memory).
//! - `latest`: unused since format 2 (the newest record of each series lives in memory);
//!   still opened so that a format-1 database opens far enough to report its version.
//!
//! Timestamps are i64 with the sign bit flipped, so negative times sort first.

/// Column families of the state database (RocksDB's `default` is unused).
pub const CF_META: &str = "meta";
pub const CF_SERIES: &str = "series";
pub const CF_ROLLUPS: &str = "rollups";
pub const CF_LATEST: &str = "latest";
/// Every column family, in checksum order.
pub const ALL_CFS: [&str; 4] = [CF_META, CF_SERIES, CF_ROLLUPS, CF_LATEST];

/// Format of this database's layout; checked at open and in snapshots. 2: the newest
/// rollup window of each series is no longer stored, and hour/day rows are folds of
/// their children. 3: raw records are stored in blocks (`engine/blocks.rs`).
pub const FORMAT_VERSION: u32 = 3;

pub const KEY_FORMAT: &[u8] = b"\x00format";
pub const KEY_APPLIED: &[u8] = b"\x00applied";
pub const KEY_NEXT_BUCKET: &[u8] = b"\x00next_bucket";

const DOC: u8 = 0x01;
const BUCKET_INTERNAL: u8 = 0x02;
const FIELD: u8 = 0x01;
const SERIES: u8 = 0x02;

/// Order-preserving encoding of a signed timestamp.
pub fn ts_bytes(ts: i64) -> [u8; 8] {
    ((ts as u64) ^ (1 << 63)).to_be_bytes()
}

/// Inverse of [`ts_bytes`].
pub fn ts_from(b: [u8; 8]) -> i64 {
    (u64::from_be_bytes(b) ^ (1 << 63)) as i64
}

/// Catalog document key. `parent` is "" for top-level kinds.
pub fn doc_key(kind: u8, user: &str, parent: &str, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + user.len() + parent.len() + id.len());
    k.push(DOC);
    k.push(kind);
    k.extend_from_slice(user.as_bytes());
    k.push(0);
    k.extend_from_slice(parent.as_bytes());
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k
}

/// Prefix of all documents of one kind of one user (and parent, when given).
pub fn doc_prefix(kind: u8, user: &str, parent: Option<&str>) -> Vec<u8> {
    let mut k = vec![DOC, kind];
    k.extend_from_slice(user.as_bytes());
    k.push(0);
    if let Some(p) = parent {
        k.extend_from_slice(p.as_bytes());
        k.push(0);
    }
    k
}

/// Splits a document key into (user, parent, id).
pub fn split_doc_key(key: &[u8]) -> Option<(&str, &str, &str)> {
    let rest = key.get(2..)?;
    let mut parts = rest.splitn(3, |b| *b == 0);
    let user = std::str::from_utf8(parts.next()?).ok()?;
    let parent = std::str::from_utf8(parts.next()?).ok()?;
    let id = std::str::from_utf8(parts.next()?).ok()?;
    Some((user, parent, id))
}

/// Key of one field registry entry.
pub fn field_key(bucket: u32, field: u16) -> Vec<u8> {
    let mut k = bucket_internal_prefix(bucket);
    k.push(FIELD);
    k.extend_from_slice(&field.to_be_bytes());
    k
}

/// Key of one series registry entry.
pub fn series_key(bucket: u32, series: u32) -> Vec<u8> {
    let mut k = bucket_internal_prefix(bucket);
    k.push(SERIES);
    k.extend_from_slice(&series.to_be_bytes());
    k
}

/// Prefix of a bucket's internal meta entries.
pub fn bucket_internal_prefix(bucket: u32) -> Vec<u8> {
    let mut k = vec![BUCKET_INTERNAL];
    k.extend_from_slice(&bucket.to_be_bytes());
    k
}

/// `[bucket][series]` prefix shared by the data column families.
pub fn series_prefix(bucket: u32, series: u32) -> [u8; 8] {
    let mut k = [0u8; 8];
    k[..4].copy_from_slice(&bucket.to_be_bytes());
    k[4..].copy_from_slice(&series.to_be_bytes());
    k
}

/// Raw record key (of a record block: its first record's timestamp).
pub fn record_key(bucket: u32, series: u32, ts: i64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&series_prefix(bucket, series));
    k[8..].copy_from_slice(&ts_bytes(ts));
    k
}

/// Timestamp of a raw record key.
pub fn record_key_ts(key: &[u8]) -> Option<i64> {
    Some(ts_from(key.get(8..16)?.try_into().ok()?))
}

/// Rollup row key.
pub fn rollup_key(bucket: u32, series: u32, level: u8, window_start: i64) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[..8].copy_from_slice(&series_prefix(bucket, series));
    k[8] = level;
    k[9..].copy_from_slice(&ts_bytes(window_start));
    k
}

/// Window start of a rollup key.
pub fn rollup_key_ts(key: &[u8]) -> Option<i64> {
    Some(ts_from(key.get(9..17)?.try_into().ok()?))
}

/// The first key after every key starting with `prefix` (for range bounds).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0xff; prefix.len() + 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ts_order_is_numeric_order() {
        let ts = [i64::MIN, -5, -1, 0, 1, 1_700_000_000_000, i64::MAX];
        for w in ts.windows(2) {
            assert!(ts_bytes(w[0]) < ts_bytes(w[1]));
            assert_eq!(ts_from(ts_bytes(w[0])), w[0]);
        }
    }

    #[test]
    fn doc_keys_split() {
        let k = doc_key(3, "acme", "dev1", "temp");
        assert_eq!(split_doc_key(&k), Some(("acme", "dev1", "temp")));
        assert!(k.starts_with(&doc_prefix(3, "acme", Some("dev1"))));
        assert!(!doc_key(3, "acme2", "", "x").starts_with(&doc_prefix(3, "acme", None)));
    }

    #[test]
    fn prefix_end_bounds() {
        assert_eq!(prefix_end(&[1, 2]), vec![1, 3]);
        assert_eq!(prefix_end(&[1, 0xff]), vec![2]);
    }
}
