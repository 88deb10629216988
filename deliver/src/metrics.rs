//! Metric names of deliver (DESIGN.md §6).

/// Counter: recipient copies by `store`, `folder` and `outcome`
/// (`delivered`, `already_delivered`, `discarded`, `failed`); `folder` is `none` for a discard.
pub const COPIES_TOTAL: &str = "pampa_deliver_copies_total";
