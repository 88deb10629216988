//! The `rbl` stage: being written.
