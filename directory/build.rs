//! `sqlx::migrate!` embeds the SQL files at compile time, and cargo does not know it reads
//! them: without this, a new or edited migration is missed until something else changes.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
