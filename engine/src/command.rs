//! Replicated commands and their outputs.
//!
//! Commands travel in Raft log entries and are applied on every node in the same order,
//! so they are persisted: variants and fields are append-only and covered by golden-bytes
//! tests. JSON travels as text (bincode cannot carry `serde_json::Value`).

use serde::{Deserialize, Serialize};

/// Kinds of catalog documents. Persisted (in keys): append-only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum DocKind {
    User = 0,
    Bucket = 1,
    Device = 2,
    Token = 3,
    /// Device property: `parent` is the device id.
    Property = 4,
    Dashboard = 5,
    Endpoint = 6,
    Storage = 7,
}

impl DocKind {
    /// Key tag.
    pub fn tag(self) -> u8 {
        self as u8
    }

    /// Singular name used in messages ("device `d1` of user `acme`").
    pub fn name(self) -> &'static str {
        match self {
            DocKind::User => "user",
            DocKind::Bucket => "bucket",
            DocKind::Device => "device",
            DocKind::Token => "token",
            DocKind::Property => "property",
            DocKind::Dashboard => "dashboard",
            DocKind::Endpoint => "endpoint",
            DocKind::Storage => "storage",
        }
    }

    /// Kinds a user owns (deleted with the user).
    pub const OWNED: [DocKind; 7] = [
        DocKind::Bucket,
        DocKind::Device,
        DocKind::Token,
        DocKind::Property,
        DocKind::Dashboard,
        DocKind::Endpoint,
        DocKind::Storage,
    ];
}

/// How a document write treats an existing document. Persisted: append-only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PutMode {
    /// Fails with a conflict when it exists.
    Create,
    /// Fails when missing; top-level keys of the new document replace the stored ones.
    Merge,
    /// Creates or replaces entirely.
    Upsert,
}

/// A state change. Persisted: append-only.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Writes a catalog document (not buckets: see the bucket commands). For users,
    /// `user` is the user id and `id` is empty.
    PutDoc {
        kind: DocKind,
        user: String,
        parent: String,
        id: String,
        doc: String,
    },
    /// Deletes a document; deleting a user deletes everything the user owns, and deleting
    /// a device deletes its properties.
    DeleteDoc {
        kind: DocKind,
        user: String,
        parent: String,
        id: String,
    },
    /// Creates a bucket; `doc` is Thinger's bucket JSON (`name`, `description`,
    /// `enabled`, `config.tags`, `retention`...).
    CreateBucket {
        user: String,
        bucket: String,
        doc: String,
    },
    /// Updates a bucket's document (top-level keys replace; tags cannot change).
    UpdateBucket {
        user: String,
        bucket: String,
        doc: String,
    },
    /// Deletes a bucket and all its data.
    DeleteBucket { user: String, bucket: String },
    /// Writes one JSON record or an array; records without `ts` take `default_ts`,
    /// stamped by the node that received the request.
    WriteRecords {
        user: String,
        bucket: String,
        records: String,
        default_ts: i64,
    },
    /// Removes records older than `before_ts` (aligned down to a UTC day, so that no
    /// rollup window is left half-expired) and their rollups.
    Expire {
        user: String,
        bucket: String,
        before_ts: i64,
    },
    /// Writes a document with an explicit mode (`PutDoc` is `Upsert`).
    PutDocWith {
        kind: DocKind,
        user: String,
        parent: String,
        id: String,
        doc: String,
        mode: PutMode,
    },
}

/// What an applied command produced. Persisted in Raft results: append-only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Output {
    Done,
    Written { records: u64 },
}

/// bincode configuration used for every persisted and wire encoding of commands.
pub fn bincode_config() -> bincode::config::Configuration {
    bincode::config::standard()
}

impl Command {
    /// Encodes for the log.
    pub fn encode(&self) -> Vec<u8> {
        // Serialising plain data into a Vec cannot fail.
        bincode::serde::encode_to_vec(self, bincode_config()).unwrap_or_default()
    }

    /// Decodes from the log.
    pub fn decode(bytes: &[u8]) -> Result<Command, String> {
        bincode::serde::decode_from_slice(bytes, bincode_config())
            .map(|(c, _)| c)
            .map_err(|e| format!("undecodable command: {e}"))
    }

    /// Approximate size, for batching bounds.
    pub fn size_bytes(&self) -> usize {
        match self {
            Command::WriteRecords { records, .. } => records.len() + 64,
            Command::PutDoc { doc, .. }
            | Command::PutDocWith { doc, .. }
            | Command::CreateBucket { doc, .. }
            | Command::UpdateBucket { doc, .. } => doc.len() + 64,
            _ => 64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// Golden bytes: a change here breaks every stored log and every mixed-version cluster.
    #[test]
    fn command_golden_bytes() {
        let cases = [
            (
                Command::PutDoc {
                    kind: DocKind::Device,
                    user: "u".into(),
                    parent: "".into(),
                    id: "d".into(),
                    doc: "{}".into(),
                },
                "00020175000164027b7d",
            ),
            (
                Command::DeleteDoc {
                    kind: DocKind::User,
                    user: "u".into(),
                    parent: "".into(),
                    id: "".into(),
                },
                "0100017500 00".replace(' ', "").leak() as &str,
            ),
            (
                Command::CreateBucket {
                    user: "u".into(),
                    bucket: "b".into(),
                    doc: "{}".into(),
                },
                "02017501620 27b7d".replace(' ', "").leak(),
            ),
            (
                Command::UpdateBucket {
                    user: "u".into(),
                    bucket: "b".into(),
                    doc: "{}".into(),
                },
                "030175016202 7b7d".replace(' ', "").leak(),
            ),
            (
                Command::DeleteBucket {
                    user: "u".into(),
                    bucket: "b".into(),
                },
                "0401750162",
            ),
            (
                Command::WriteRecords {
                    user: "u".into(),
                    bucket: "b".into(),
                    records: "[]".into(),
                    default_ts: 1000,
                },
                "05017501620 25b5dfbd007".replace(' ', "").leak(),
            ),
            (
                Command::Expire {
                    user: "u".into(),
                    bucket: "b".into(),
                    before_ts: -1,
                },
                "060175016201",
            ),
            (
                Command::PutDocWith {
                    kind: DocKind::Token,
                    user: "u".into(),
                    parent: "".into(),
                    id: "t".into(),
                    doc: "{}".into(),
                    mode: PutMode::Merge,
                },
                "0703017500017402 7b7d01".replace(' ', "").leak(),
            ),
        ];
        for (cmd, want) in cases {
            let bytes = cmd.encode();
            assert_eq!(hex(&bytes), want, "encoding of {cmd:?} changed");
            assert_eq!(Command::decode(&bytes).unwrap(), cmd);
        }
        assert_eq!(
            hex(
                &bincode::serde::encode_to_vec(Output::Written { records: 3 }, bincode_config())
                    .unwrap()
            ),
            "0103"
        );
    }

    #[test]
    fn garbage_does_not_decode() {
        assert!(Command::decode(&[0xff, 0xff]).is_err());
    }
}
