//! The `whitelist` stage: being written.
