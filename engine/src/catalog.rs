//! Catalog documents: id rules, document bounds, and the bucket document.
//!
//! Documents are stored as the JSON text that was validated, so every replica stores the
//! same bytes. Buckets keep their Thinger document plus an internal numeric id that
//! prefixes all their data keys (ids are never reused, so a re-created bucket never sees
//! an old bucket's rows).

use crate::error::CommandError;
use crate::limits::{BUCKET_TAGS_MAX, DOCUMENT_BYTES_MAX, ID_BYTES_MAX, TEXT_BYTES_MAX};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

/// Checks an identifier: `[A-Za-z0-9_-]{1,32}`.
pub fn validate_id(what: &str, id: &str) -> Result<(), CommandError> {
    if id.is_empty() {
        return Err(CommandError::Invalid(format!(
            "{what} id must not be empty"
        )));
    }
    if id.len() > ID_BYTES_MAX {
        return Err(CommandError::Invalid(format!(
            "{what} id `{}` is longer than {ID_BYTES_MAX} characters",
            &id[..id.floor_char_boundary(ID_BYTES_MAX)]
        )));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(CommandError::Invalid(format!(
            "{what} id `{id}` has the character `{c}`; use letters, digits, `_` and `-`"
        )));
    }
    Ok(())
}

/// Parses a document: a JSON object within the size bound.
pub fn parse_doc(what: &str, doc: &str) -> Result<Map<String, Json>, CommandError> {
    if doc.len() > DOCUMENT_BYTES_MAX {
        return Err(CommandError::TooLarge {
            what: format!("{what} document of {} bytes", doc.len()),
            limit: DOCUMENT_BYTES_MAX as u64,
        });
    }
    match serde_json::from_str::<Json>(doc) {
        Ok(Json::Object(m)) => Ok(m),
        Ok(_) => Err(CommandError::Invalid(format!(
            "{what} document must be a JSON object"
        ))),
        Err(e) => Err(CommandError::Invalid(format!(
            "{what} document is not valid JSON: {e}"
        ))),
    }
}

/// Shallow merge: top-level keys of `patch` replace those of `base`; null removes.
pub fn merge_doc(base: &mut Map<String, Json>, patch: Map<String, Json>) {
    for (k, v) in patch {
        if v.is_null() {
            base.remove(&k);
        } else {
            base.insert(k, v);
        }
    }
}

/// Bucket configuration (`config` in Thinger's bucket document).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BucketConfig {
    #[serde(default = "default_source")]
    pub source: String,
    /// Tag names; each distinct set of their values is one series.
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(flatten)]
    pub extra: Map<String, Json>,
}

fn default_source() -> String {
    "api".into()
}

fn default_true() -> bool {
    true
}

/// How long records are kept.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Retention {
    pub period: u64,
    /// `minutes`, `hours`, `days`, `weeks`, `months` (30 days) or `years` (365 days).
    pub unit: String,
}

impl Retention {
    /// The period in ms, or an error naming a bad unit.
    pub fn period_ms(&self) -> Result<i64, CommandError> {
        let unit_ms: i64 = match self.unit.as_str() {
            "minutes" => 60_000,
            "hours" => 3_600_000,
            "days" => 86_400_000,
            "weeks" => 7 * 86_400_000,
            "months" => 30 * 86_400_000,
            "years" => 365 * 86_400_000,
            u => {
                return Err(CommandError::Invalid(format!(
                    "retention unit `{u}` must be minutes, hours, days, weeks, months or years"
                )))
            }
        };
        i64::try_from(self.period)
            .ok()
            .and_then(|p| p.checked_mul(unit_ms))
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                CommandError::Invalid(format!("retention period {} is out of range", self.period))
            })
    }
}

/// A bucket's document as stored (Thinger's fields plus the internal id).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BucketDoc {
    /// Internal id prefixing the bucket's data keys.
    #[serde(rename = "_id")]
    pub internal_id: u32,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default)]
    pub config: BucketConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    /// Anything else the client stored (asset_type, asset_group, product...).
    #[serde(flatten)]
    pub extra: Map<String, Json>,
}

impl BucketDoc {
    /// Builds and validates a bucket document from client JSON.
    pub fn from_json(
        bucket: &str,
        mut doc: Map<String, Json>,
        internal_id: u32,
    ) -> Result<BucketDoc, CommandError> {
        doc.remove("bucket");
        doc.remove("_id");
        doc.insert("_id".into(), Json::from(internal_id));
        let b: BucketDoc = serde_json::from_value(Json::Object(doc))
            .map_err(|e| CommandError::Invalid(format!("bucket `{bucket}` document: {e}")))?;
        b.validate(bucket)?;
        Ok(b)
    }

    fn validate(&self, bucket: &str) -> Result<(), CommandError> {
        if self.name.len() > TEXT_BYTES_MAX || self.description.len() > TEXT_BYTES_MAX {
            return Err(CommandError::TooLarge {
                what: format!("bucket `{bucket}` name or description"),
                limit: TEXT_BYTES_MAX as u64,
            });
        }
        if self.config.tags.len() > BUCKET_TAGS_MAX {
            return Err(CommandError::TooLarge {
                what: format!("bucket `{bucket}` with {} tags", self.config.tags.len()),
                limit: BUCKET_TAGS_MAX as u64,
            });
        }
        for (i, t) in self.config.tags.iter().enumerate() {
            validate_id("tag", t)?;
            if t == "ts" {
                return Err(CommandError::Invalid(
                    "`ts` cannot be a tag: it is the timestamp".into(),
                ));
            }
            if self.config.tags[..i].contains(t) {
                return Err(CommandError::Invalid(format!("tag `{t}` is listed twice")));
            }
        }
        if let Some(r) = &self.retention {
            r.period_ms()?;
        }
        Ok(())
    }

    /// The document as the API shows it (with `bucket`, without the internal id).
    pub fn to_public_json(&self, bucket: &str) -> Json {
        let mut v = serde_json::to_value(self).unwrap_or(Json::Null);
        if let Json::Object(m) = &mut v {
            m.remove("_id");
            m.insert("bucket".into(), Json::String(bucket.into()));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(validate_id("bucket", "temp_1-a").is_ok());
        assert!(validate_id("bucket", "").is_err());
        assert!(validate_id("bucket", "a/b")
            .unwrap_err()
            .to_string()
            .contains("`/`"));
        assert!(validate_id("bucket", &"x".repeat(33)).is_err());
    }

    #[test]
    fn bucket_doc_validation() {
        let doc = parse_doc("bucket", r#"{"bucket":"b","name":"B","config":{"source":"api","tags":["device"]},"asset_type":"x"}"#).unwrap();
        let b = BucketDoc::from_json("b", doc, 7).unwrap();
        assert_eq!(b.internal_id, 7);
        assert_eq!(b.config.tags, vec!["device".to_string()]);
        assert!(b.enabled);
        let public = b.to_public_json("b");
        assert_eq!(public["bucket"], "b");
        assert_eq!(public["asset_type"], "x");
        assert!(public.get("_id").is_none());
        let doc = parse_doc("bucket", r#"{"config":{"tags":["a","b","c","d","e","f"]}}"#).unwrap();
        assert!(matches!(
            BucketDoc::from_json("b", doc, 1),
            Err(CommandError::TooLarge { .. })
        ));
        let doc = parse_doc(
            "bucket",
            r#"{"retention":{"period":3,"unit":"fortnights"}}"#,
        )
        .unwrap();
        assert!(BucketDoc::from_json("b", doc, 1)
            .unwrap_err()
            .to_string()
            .contains("fortnights"));
        assert!(parse_doc("x", "[1]").is_err());
    }
}
