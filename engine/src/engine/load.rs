//! Rebuilds [`State`] from the database: bucket views, field and series registries,
//! each series' newest record and its in-memory rollup windows.

use super::blocks::{BlockIter, OpenBlock};
use super::{cf, BucketHot, BucketView, FieldDef, State};
use crate::catalog::BucketDoc;
use crate::command::DocKind;
use crate::error::{EngineError, EngineResult};
use crate::keys;
use crate::stats::Stats;
use crate::value::FieldType;
use rocksdb::DB;
use std::collections::HashMap;
use std::sync::Arc;

pub(crate) fn load_state(db: &DB) -> EngineResult<State> {
    let meta = cf(db, keys::CF_META)?;
    let next_bucket_id = match db
        .get_cf(meta, keys::KEY_NEXT_BUCKET)
        .map_err(EngineError::rocks("reading bucket ids"))?
    {
        Some(v) => u32::from_be_bytes(
            v.as_slice()
                .try_into()
                .map_err(|_| EngineError::Corrupt("next bucket id is not 4 bytes".into()))?,
        ),
        None => 1,
    };
    let mut state = State {
        bucket_ids: HashMap::new(),
        views: HashMap::new(),
        hot: HashMap::new(),
        next_bucket_id,
        unflushed_bytes: 0,
    };
    let prefix = vec![0x01, DocKind::Bucket.tag()];
    for (k, v) in prefix_scan(db, keys::CF_META, &prefix)? {
        let (user, _, bucket) = keys::split_doc_key(&k)
            .ok_or_else(|| EngineError::Corrupt("undecodable bucket key".into()))?;
        let doc: BucketDoc = serde_json::from_slice(&v)
            .map_err(|e| EngineError::Corrupt(format!("bucket `{bucket}` of `{user}`: {e}")))?;
        let (view, hot) = load_bucket(db, user, bucket, doc)?;
        state
            .bucket_ids
            .insert((user.to_string(), bucket.to_string()), view.id);
        state.hot.insert(view.id, hot);
        state.views.insert(view.id, Arc::new(view));
    }
    Ok(state)
}

fn load_bucket(
    db: &DB,
    user: &str,
    bucket: &str,
    doc: BucketDoc,
) -> EngineResult<(BucketView, BucketHot)> {
    let id = doc.internal_id;
    let mut view = BucketView {
        id,
        user: user.to_string(),
        bucket: bucket.to_string(),
        doc,
        fields: Vec::new(),
        field_ids: Default::default(),
        series: Vec::new(),
    };
    let corrupt =
        |what: &str| EngineError::Corrupt(format!("bucket `{bucket}` of `{user}`: {what}"));
    for (k, v) in prefix_scan(db, keys::CF_META, &keys::bucket_internal_prefix(id))? {
        match k.get(5) {
            Some(0x01) => {
                let fid = u16::from_be_bytes(
                    k.get(6..8)
                        .and_then(|b| b.try_into().ok())
                        .ok_or_else(|| corrupt("field key"))?,
                );
                let (&ty, name) = v
                    .split_first()
                    .ok_or_else(|| corrupt("empty field entry"))?;
                let ty = FieldType::from_u8(ty).ok_or_else(|| corrupt("unknown field type"))?;
                let name = String::from_utf8(name.to_vec()).map_err(|_| corrupt("field name"))?;
                if fid as usize != view.fields.len() {
                    return Err(corrupt("field ids are not dense"));
                }
                view.field_ids.insert(name.clone(), fid);
                view.fields.push(FieldDef { name, ty });
            }
            Some(0x02) => {
                let sid = u32::from_be_bytes(
                    k.get(6..10)
                        .and_then(|b| b.try_into().ok())
                        .ok_or_else(|| corrupt("series key"))?,
                );
                if sid as usize != view.series.len() {
                    return Err(corrupt("series ids are not dense"));
                }
                view.series
                    .push(decode_tag_values(&v).ok_or_else(|| corrupt("series tags"))?);
            }
            _ => return Err(corrupt("unknown internal key")),
        }
    }
    let n = view.series.len();
    let mut hot = BucketHot {
        series_index: view
            .series
            .iter()
            .enumerate()
            .map(|(i, t)| (encode_tag_values(t), i as u32))
            .collect(),
        last_ts: vec![i64::MIN; n],
        open: vec![None; n],
        dirty: Vec::new(),
        is_dirty: vec![false; n],
        roll: vec![Default::default(); n],
    };
    // Each series' newest block is its open block: one backward seek per series.
    let mut it = db.raw_iterator_cf(cf(db, keys::CF_SERIES)?);
    for sid in 0..n {
        let prefix = keys::series_prefix(id, sid as u32);
        it.seek_for_prev(keys::prefix_end(&prefix));
        if let (Some(k), Some(v)) = (it.key(), it.value()) {
            if k.starts_with(&prefix) {
                let first = keys::record_key_ts(k).ok_or_else(|| corrupt("record key"))?;
                let mut open: Option<OpenBlock> = None;
                for r in BlockIter::new(first, v) {
                    let (ts, rec) = r?;
                    match &mut open {
                        Some(o) => o.append(ts, rec),
                        None => open = Some(OpenBlock::new(ts, rec)),
                    }
                }
                if let Some(o) = open {
                    hot.last_ts[sid] = o.last_ts;
                    hot.open[sid] = Some(Arc::new(o));
                }
            }
        }
    }
    it.status()
        .map_err(EngineError::rocks("reading newest records"))?;
    drop(it);
    let types: Vec<FieldType> = view.fields.iter().map(|f| f.ty).collect();
    for sid in 0..n {
        hot.roll[sid] =
            super::rollup::rebuild(db, id, sid as u32, hot.open[sid].as_deref(), &types)?;
    }
    Ok((view, hot))
}

/// All (key, value) pairs under `prefix` in one column family.
pub(crate) fn prefix_scan(
    db: &DB,
    cf_name: &str,
    prefix: &[u8],
) -> EngineResult<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut ro = rocksdb::ReadOptions::default();
    ro.set_iterate_upper_bound(keys::prefix_end(prefix));
    let mut it = db.raw_iterator_cf_opt(cf(db, cf_name)?, ro);
    it.seek(prefix);
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (it.key(), it.value()) {
        out.push((k.to_vec(), v.to_vec()));
        it.next();
    }
    it.status()
        .map_err(EngineError::rocks(format!("scanning {cf_name}")))?;
    Ok(out)
}

/// Series registry value: `[count u8] ([len u8] bytes)*`.
pub(crate) fn encode_tag_values<S: AsRef<str>>(tags: &[S]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_tag_values_into(tags, &mut out);
    out
}

/// [`encode_tag_values`] into a reused buffer (apply's series lookups).
pub(crate) fn encode_tag_values_into<S: AsRef<str>>(tags: &[S], out: &mut Vec<u8>) {
    out.clear();
    out.push(tags.len() as u8);
    for t in tags {
        let t = t.as_ref();
        out.push(t.len() as u8);
        out.extend_from_slice(t.as_bytes());
    }
}

pub(crate) fn decode_tag_values(mut b: &[u8]) -> Option<Vec<String>> {
    let (&n, rest) = b.split_first()?;
    b = rest;
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let (&len, rest) = b.split_first()?;
        let (s, rest) = rest.split_at_checked(len as usize)?;
        out.push(String::from_utf8(s.to_vec()).ok()?);
        b = rest;
    }
    Some(out)
}

/// Rollup row value: `[count u16 BE] ([field u16 BE] Stats)*`.
pub(crate) fn encode_rollup(stats: &[(u16, Stats)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + stats.len() * 90);
    out.extend_from_slice(&(stats.len() as u16).to_be_bytes());
    for (f, s) in stats {
        out.extend_from_slice(&f.to_be_bytes());
        s.encode_into(&mut out);
    }
    out
}

pub(crate) fn decode_rollup(b: &[u8]) -> Option<Vec<(u16, Stats)>> {
    let (n, mut rest) = b.split_first_chunk::<2>()?;
    let n = u16::from_be_bytes(*n);
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let (f, r) = rest.split_first_chunk::<2>()?;
        let (s, r) = Stats::decode(r)?;
        out.push((u16::from_be_bytes(*f), s));
        rest = r;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Num;

    /// Golden bytes: rollup rows and series entries are persisted.
    #[test]
    fn persisted_encodings_are_stable() {
        assert_eq!(
            encode_tag_values::<String>(&["a".into(), "".into()]),
            vec![2, 1, b'a', 0]
        );
        assert_eq!(
            decode_tag_values(&[2, 1, b'a', 0]),
            Some(vec!["a".to_string(), String::new()])
        );
        let mut s = Stats::single(1, Num::I(2));
        s.push(3, Num::I(4));
        let row = encode_rollup(&[(7, s)]);
        let hex: String = row.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "00010007\
             02\
             010c\
             0104\
             0108\
             02\
             0104\
             04\
             0108\
             0606\
             0604"
        );
        assert_eq!(decode_rollup(&row), Some(vec![(7, s)]));
        assert!(decode_rollup(&row[..row.len() - 1]).is_none());
    }
}
