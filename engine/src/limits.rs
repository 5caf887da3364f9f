//! Named bounds on everything input can grow. Why each value: see its line.

/// Bytes of one record's JSON text: Thinger devices send small objects; 64 KiB leaves
/// room for arrays and long strings without letting one record stall a batch.
pub const RECORD_BYTES_MAX: usize = 64 * 1024;
/// Fields per record after flattening; the field registry of a bucket holds at most
/// [`BUCKET_FIELDS_MAX`].
pub const RECORD_FIELDS_MAX: usize = 256;
/// Distinct fields a bucket may ever register (field ids are u16 on disk).
pub const BUCKET_FIELDS_MAX: usize = 4096;
/// Records in one write command (one HTTP request body).
pub const RECORDS_PER_COMMAND_MAX: usize = 10_000;
/// Nesting depth of a record's objects.
pub const RECORD_DEPTH_MAX: usize = 8;
/// Length of a flattened field name (dotted path) in bytes.
pub const FIELD_NAME_BYTES_MAX: usize = 128;
/// Length of a tag value in bytes.
pub const TAG_VALUE_BYTES_MAX: usize = 128;
/// Tags per bucket (tags pick the series).
pub const BUCKET_TAGS_MAX: usize = 5;
/// Identifier length (user, bucket, device, token... ids).
pub const ID_BYTES_MAX: usize = 32;
/// Display names and descriptions.
pub const TEXT_BYTES_MAX: usize = 1024;
/// Stored JSON documents (dashboards, properties, device config).
pub const DOCUMENT_BYTES_MAX: usize = 256 * 1024;
/// Series per bucket: each distinct tag-value set costs memory on every node.
pub const SERIES_PER_BUCKET_MAX: usize = 1_000_000;
/// Default and maximum rows of a raw read.
pub const ITEMS_DEFAULT: usize = 100;
pub const ITEMS_MAX: usize = 100_000;
/// Windows one aggregated read may produce (per group and field).
pub const AGG_WINDOWS_MAX: usize = 1_000_000;
/// Default time and memory limits of one SQL query.
pub const SQL_TIMEOUT_MS_DEFAULT: u64 = 30_000;
pub const SQL_MEMORY_BYTES_DEFAULT: usize = 512 * 1024 * 1024;
