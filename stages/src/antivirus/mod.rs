//! The `antivirus` stage: being written.
