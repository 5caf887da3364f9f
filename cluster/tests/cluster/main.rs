//! Whole-cluster tests, grouped by area (one test binary: one link).
//! Real RocksDB in temp dirs, real QUIC with mutual TLS on 127.0.0.1.

mod harness;
mod membership;
mod partition;
mod replication;
mod snapshot;
mod storage_suite;
mod tls_auth;
