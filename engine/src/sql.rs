//! SQL over buckets (DataFusion): being written.
