//! Metric names of the event log and the stage runner (DESIGN.md §6).

/// Histogram: seconds from publish to durable ack, by `backend`.
pub const PUBLISH_DURATION_SECONDS: &str = "pampa_bus_publish_duration_seconds";
/// Counter: publishes by `backend` and `outcome` (`stored`, `duplicate`, `error`).
pub const PUBLISHED_TOTAL: &str = "pampa_bus_published_total";
/// Gauge: events waiting for a consumer, by `consumer`.
pub const CONSUMER_LAG: &str = "pampa_bus_consumer_lag_messages";
/// Counter: inputs handled by a stage, by `stage` and `outcome`
/// (`ok`, `retry`, `dead`).
pub const STAGE_PROCESSED_TOTAL: &str = "pampa_stage_processed_total";
/// Histogram: seconds a stage spent on one input, by `stage`.
pub const STAGE_DURATION_SECONDS: &str = "pampa_stage_duration_seconds";
/// Counter: inputs sent to `dead.<stage>`, by `stage`.
pub const DEAD_LETTERS_TOTAL: &str = "pampa_stage_dead_letters_total";
