//! The RADIUS role (authentication and accounting for the NAS fleet) will live here.
//!
//! Nothing is implemented yet; the crate exists so the workspace has the layout of
//! DESIGN.md §2 from the start.
//!
//! # Layout
//! Empty for now.
#![warn(missing_docs)]
