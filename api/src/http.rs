//! HTTP routes of a node (Thinger-compatible paths).
//!
//! Bodies are bounded ([`BODY_BYTES_MAX`]); every failure is a JSON error naming the
//! problem. Authentication arrives with the API issue; until then `serve` binds to
//! 127.0.0.1 by default.
//!
//! Every node answers every route: writes go through the cluster handle (forwarded to
//! the leader when needed), reads first establish their `consistency` (`linearizable`
//! by default, `leader` or `local`), then read this node's engine.

use crate::http_error::ApiError;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value as Json_};
use std::time::Duration;
use thicket_cluster::{ClusterNode, Consistency};
use thicket_engine::aggregate::AggRows;
use thicket_engine::{Command, DocKind, PutMode, RawRows, ReadQuery, ReadResult};

/// Largest request body: a write of many records fits; a runaway client does not.
pub const BODY_BYTES_MAX: usize = 16 << 20;

/// How long `/v1/cluster` waits for each member's answer.
const STATUS_MEMBER_TIMEOUT: Duration = Duration::from_millis(500);

/// Builds the router over a node.
pub fn router(node: ClusterNode) -> Router {
    Router::new()
        .route("/v1/server/healthcheck", get(health))
        .route("/v1/cluster", get(cluster_status))
        .route("/v1/cluster/members", post(add_member))
        .route("/v1/cluster/members/{id}/promote", post(promote_member))
        .route("/v1/cluster/members/{id}", delete(remove_member))
        .route(
            "/v1/users/{user}/buckets",
            post(create_bucket).get(list_buckets),
        )
        .route(
            "/v1/users/{user}/buckets/{bucket}/data",
            post(write_data).get(read_data),
        )
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .with_state(node)
}

async fn health() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn parse_json(body: &str) -> Result<Json_, ApiError> {
    serde_json::from_str(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))
}

/// Until users are managed by the API, a bucket's owner is created on first use.
fn ensure_user(user: &str) -> Command {
    Command::PutDocWith {
        kind: DocKind::User,
        user: user.into(),
        parent: String::new(),
        id: String::new(),
        doc: "{}".into(),
        mode: PutMode::Create,
    }
}

async fn create_bucket(
    State(node): State<ClusterNode>,
    Path(user): Path<String>,
    body: String,
) -> Result<impl IntoResponse, ApiError> {
    let doc = parse_json(&body)?;
    let bucket = doc
        .get("bucket")
        .and_then(|b| b.as_str())
        .ok_or_else(|| {
            ApiError::bad_request(
                "the body needs a `bucket` id, like {\"bucket\":\"temperatures\"}",
            )
        })?
        .to_string();
    let res = node
        .write(vec![
            ensure_user(&user),
            Command::CreateBucket {
                user,
                bucket,
                doc: body,
            },
        ])
        .await?;
    match res.into_iter().nth(1) {
        Some(Ok(_)) => Ok(StatusCode::OK),
        Some(Err(e)) => Err(e.into()),
        None => Err(ApiError::bad_request("no result")),
    }
}

async fn list_buckets(
    State(node): State<ClusterNode>,
    Path(user): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<impl IntoResponse, ApiError> {
    node.read_barrier(consistency(&pairs)?).await?;
    Ok(Json(Json_::Array(node.engine().list_buckets(&user))))
}

async fn write_data(
    State(node): State<ClusterNode>,
    Path((user, bucket)): Path<(String, String)>,
    body: String,
) -> Result<impl IntoResponse, ApiError> {
    let cmd = Command::WriteRecords {
        user,
        bucket,
        records: body,
        default_ts: now_ms(),
    };
    match node.write(vec![cmd]).await?.into_iter().next() {
        Some(Ok(_)) => Ok(StatusCode::OK),
        Some(Err(e)) => Err(e.into()),
        None => Err(ApiError::bad_request("no result")),
    }
}

async fn read_data(
    State(node): State<ClusterNode>,
    Path((user, bucket)): Path<(String, String)>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<impl IntoResponse, ApiError> {
    let level = consistency(&pairs)?;
    let query = ReadQuery::from_params(
        pairs
            .iter()
            .filter(|(k, _)| k != "consistency")
            .map(|(k, v)| (k.as_str(), v.as_str())),
    )?;
    node.read_barrier(level).await?;
    let engine = node.engine().clone();
    // RocksDB reads block: keep them off the async workers.
    let result = tokio::task::spawn_blocking(move || engine.read_bucket(&user, &bucket, &query))
        .await
        .map_err(|e| ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("the read failed inside the server: {e}"),
            retry_after_s: None,
        })??;
    Ok(Json(match result {
        ReadResult::Raw(r) => raw_json(&r),
        ReadResult::Agg(a) => agg_json(&a),
    }))
}

/// The `consistency` parameter (default linearizable).
fn consistency(pairs: &[(String, String)]) -> Result<Consistency, ApiError> {
    match pairs.iter().find(|(k, _)| k == "consistency") {
        Some((_, v)) => v.parse().map_err(ApiError::bad_request),
        None => Ok(Consistency::Linearizable),
    }
}

async fn cluster_status(State(node): State<ClusterNode>) -> impl IntoResponse {
    Json(node.status(STATUS_MEMBER_TIMEOUT).await)
}

async fn add_member(
    State(node): State<ClusterNode>,
    body: String,
) -> Result<impl IntoResponse, ApiError> {
    let doc = parse_json(&body)?;
    let id = doc.get("id").and_then(|v| v.as_u64()).ok_or_else(|| {
        ApiError::bad_request(
            "the body needs a numeric node `id`, like {\"id\":4,\"addr\":\"10.0.0.4:7400\"}",
        )
    })?;
    let addr = doc
        .get("addr")
        .and_then(|v| v.as_str())
        .ok_or_else(|| {
            ApiError::bad_request("the body needs the node's cluster `addr` (host:port)")
        })?
        .to_string();
    let msg = node.add_learner(id, addr).await?;
    Ok(Json(json!({"message": msg})))
}

async fn promote_member(
    State(node): State<ClusterNode>,
    Path(id): Path<u64>,
) -> Result<impl IntoResponse, ApiError> {
    let msg = node.promote(id).await?;
    Ok(Json(json!({"message": msg})))
}

async fn remove_member(
    State(node): State<ClusterNode>,
    Path(id): Path<u64>,
) -> Result<impl IntoResponse, ApiError> {
    let msg = node.remove(id).await?;
    Ok(Json(json!({"message": msg})))
}

/// Raw rows as flat objects `{ts, <tag>: value, <field>: value}`.
fn raw_json(r: &RawRows) -> Json_ {
    Json_::Array(
        r.rows
            .iter()
            .map(|row| {
                let mut m = Map::new();
                m.insert("ts".into(), row.ts.into());
                for (t, v) in r.tags.iter().zip(&row.tags) {
                    m.insert(t.clone(), v.clone().into());
                }
                for (f, v) in &row.fields {
                    m.insert(f.clone(), v.to_json());
                }
                Json_::Object(m)
            })
            .collect(),
    )
}

/// Windows as flat objects `{ts, <group tag>, <field>: value|null}`.
fn agg_json(a: &AggRows) -> Json_ {
    Json_::Array(
        a.rows
            .iter()
            .map(|row| {
                let mut m = Map::new();
                m.insert("ts".into(), row.ts.into());
                if let (Some(g), Some(v)) = (&a.group_by, &row.group) {
                    m.insert(g.clone(), v.clone().into());
                }
                for (f, v) in a.fields.iter().zip(&row.values) {
                    m.insert(
                        f.clone(),
                        v.as_ref().map(|v| v.to_json()).unwrap_or(Json_::Null),
                    );
                }
                Json_::Object(m)
            })
            .collect(),
    )
}
