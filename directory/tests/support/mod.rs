//! What every directory test file shares: one scenario run against SQLite, MariaDB and
//! PostgreSQL, each server test on a throwaway database that is dropped afterwards.

use sqlx::{migrate::MigrateDatabase, Any};

/// A database name no other test run uses at the same time.
pub fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "pampa_test_{prefix}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000
    )
}

/// Runs `scenario` on a fresh database of the server at `base`, then drops it.
pub async fn on_server<F, Fut>(base: &str, prefix: &str, scenario: F)
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let url = format!("{}/{}", base.trim_end_matches('/'), unique_name(prefix));
    scenario(url.clone()).await;
    Any::drop_database(&url)
        .await
        .expect("drop throwaway database");
}

/// `sqlite`, `mariadb` and `postgres` tests that each run `scenario(&url)`; the servers'
/// base URLs come from `PAMPA_TEST_MYSQL_URL` and `PAMPA_TEST_POSTGRES_URL`.
#[macro_export]
macro_rules! on_every_backend {
    ($prefix:literal, $scenario:ident) => {
        #[tokio::test]
        async fn sqlite() {
            let tmp = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}/sub/{}.db", tmp.path().display(), $prefix);
            $scenario(&url).await;
        }

        #[tokio::test]
        async fn mariadb() {
            sqlx::any::install_default_drivers();
            let base = std::env::var("PAMPA_TEST_MYSQL_URL")
                .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into());
            support::on_server(&base, $prefix, |url| async move { $scenario(&url).await }).await;
        }

        #[tokio::test]
        async fn postgres() {
            sqlx::any::install_default_drivers();
            let base = std::env::var("PAMPA_TEST_POSTGRES_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
            support::on_server(&base, $prefix, |url| async move { $scenario(&url).await }).await;
        }
    };
}
