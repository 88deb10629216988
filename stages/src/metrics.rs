//! Metric names of the stages (DESIGN.md §6). The runner in `pampa-bus` counts
//! `pampa_stage_processed_total{stage,outcome}`, `pampa_stage_duration_seconds{stage}` and
//! `pampa_stage_dead_letters_total{stage}` for every stage.

/// Counter: errors inside a stage by `stage` and `kind` (`timeout`, `servfail`,
/// `list_error_code`, `unreachable`, …).
pub const STAGE_ERRORS_TOTAL: &str = "pampa_stage_errors_total";
/// Counter: tags added, by `stage` and `tag` (tag names are a bounded, configured set;
/// virus tags are counted as `VIRUS`).
pub const STAGE_TAGS_TOTAL: &str = "pampa_stage_tags_total";
/// Counter: per-recipient decisions of `score`, by `disposition`.
pub const DECISIONS_TOTAL: &str = "pampa_score_decisions_total";
