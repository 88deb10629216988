use std::{borrow::Cow, time::Duration};

use serde::Serialize;
use sqlx::{
    any::{AnyPoolOptions, AnyRow},
    migrate::{MigrateDatabase, Migrator},
    Any, AnyPool, Executor, Row,
};

use crate::{address::normalize_domain, password, Address, DirectoryError};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static MYSQL_MIGRATIONS: Migrator = sqlx::migrate!("migrations/mysql");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// Which SQL server the directory lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite, the embedded default.
    Sqlite,
    /// MariaDB or MySQL.
    MySql,
    /// PostgreSQL.
    Postgres,
}

impl Backend {
    fn of(url: &str) -> Result<Self, DirectoryError> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("mysql:") || url.starts_with("mariadb:") {
            Ok(Backend::MySql)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Backend::Postgres)
        } else {
            Err(DirectoryError::UnsupportedUrl(url.to_owned()))
        }
    }
}

/// A spam level: below `cut` mail goes to the inbox, from `cut` to Spam, from `discard`
/// it is dropped. `None` means "never" (the `off` level has neither).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpamLevel {
    /// Numeric id.
    pub id: i64,
    /// Name users pick (`strict`, `normal`, …).
    pub name: String,
    /// Score from which mail goes to Spam.
    pub cut: Option<f64>,
    /// Score from which mail is discarded.
    pub discard: Option<f64>,
}

/// A mailbox owner.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct User {
    /// The normalised address.
    pub address: String,
    /// The domain part.
    pub domain: String,
    /// The user's spam level.
    pub level: SpamLevel,
    /// Where the mailbox lives; `None` means the default Maildir.
    pub mailbox_location: Option<String>,
    /// Bytes the mailbox may hold; `None`: no quota.
    pub quota_bytes: Option<u64>,
}

/// The directory on one SQL backend. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Directory {
    pub(crate) pool: AnyPool,
    backend: Backend,
}

const USER_COLUMNS: &str = "u.address, u.domain, u.mailbox_location, u.quota_bytes, l.id AS level_id, l.name AS level_name, l.cut, l.discard";

fn user_from_row(row: &AnyRow) -> Result<User, sqlx::Error> {
    Ok(User {
        address: row.try_get("address")?,
        domain: row.try_get("domain")?,
        mailbox_location: row.try_get("mailbox_location")?,
        quota_bytes: row
            .try_get::<Option<i64>, _>("quota_bytes")?
            .map(|q| q.max(0) as u64),
        level: SpamLevel {
            id: row.try_get("level_id")?,
            name: row.try_get("level_name")?,
            cut: row.try_get("cut")?,
            discard: row.try_get("discard")?,
        },
    })
}

fn level_from_row(row: &AnyRow) -> Result<SpamLevel, sqlx::Error> {
    Ok(SpamLevel {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        cut: row.try_get("cut")?,
        discard: row.try_get("discard")?,
    })
}

pub(crate) fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
}

impl Directory {
    /// Connects to `url` (creating the database if it does not exist) and brings the
    /// schema up to date.
    pub async fn connect(url: &str) -> Result<Self, DirectoryError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of(url)?;
        if backend == Backend::Sqlite {
            if let Some(dir) = sqlite_parent_dir(url) {
                std::fs::create_dir_all(dir).map_err(|e| DirectoryError::Unavailable(e.into()))?;
            }
        }
        if !Any::database_exists(url).await? {
            Any::create_database(url).await?;
        }
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 16 })
            // A SQLite connection is a file in this process: nothing to lose on the way,
            // so no ping before each use (it doubled the cost of a RADIUS user lookup).
            .test_before_acquire(backend != Backend::Sqlite)
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute("PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;")
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await?;
        if backend == Backend::Sqlite {
            pool.execute("PRAGMA journal_mode = WAL").await?;
        }
        let directory = Directory { pool, backend };
        directory.migrate().await?;
        Ok(directory)
    }

    async fn migrate(&self) -> Result<(), DirectoryError> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::MySql => &MYSQL_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator.run(&self.pool).await?;
        Ok(())
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Queries are written with `$1` placeholders, which SQLite and PostgreSQL take;
    /// MySQL wants `?`. Every query binds its parameters in `$1, $2, …` order.
    pub(crate) fn sql<'a>(&self, query: &'a str) -> Cow<'a, str> {
        if self.backend != Backend::MySql {
            return Cow::Borrowed(query);
        }
        let mut out = String::with_capacity(query.len());
        let mut chars = query.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
                while chars.peek().is_some_and(char::is_ascii_digit) {
                    chars.next();
                }
                out.push('?');
            } else {
                out.push(c);
            }
        }
        Cow::Owned(out)
    }

    /// Answers when the database does (for `/readyz`).
    pub async fn ping(&self) -> Result<(), DirectoryError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Adds a local domain.
    pub async fn add_domain(&self, name: &str) -> Result<String, DirectoryError> {
        let name = normalize_domain(name)?;
        let done = sqlx::query(&self.sql("INSERT INTO domains (name, created_at) VALUES ($1, $2)"))
            .bind(&name)
            .bind(now_unix())
            .execute(&self.pool)
            .await;
        match done {
            Err(e) if is_unique_violation(&e) => {
                Err(DirectoryError::Exists(format!("domain {name}")))
            }
            Err(e) => Err(e.into()),
            Ok(_) => Ok(name),
        }
    }

    /// Removes a domain that has no users left.
    pub async fn remove_domain(&self, name: &str) -> Result<(), DirectoryError> {
        let name = normalize_domain(name)?;
        let users: i64 =
            sqlx::query_scalar(&self.sql("SELECT COUNT(*) FROM users WHERE domain = $1"))
                .bind(&name)
                .fetch_one(&self.pool)
                .await?;
        if users > 0 {
            return Err(DirectoryError::DomainInUse(name, users));
        }
        let done = sqlx::query(&self.sql("DELETE FROM domains WHERE name = $1"))
            .bind(&name)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(DirectoryError::UnknownDomain(name));
        }
        Ok(())
    }

    /// All local domains, sorted.
    pub async fn list_domains(&self) -> Result<Vec<String>, DirectoryError> {
        Ok(sqlx::query_scalar("SELECT name FROM domains ORDER BY name")
            .fetch_all(&self.pool)
            .await?)
    }

    /// Whether `domain` is one of ours.
    pub async fn is_local_domain(&self, domain: &str) -> Result<bool, DirectoryError> {
        let found: Option<String> =
            sqlx::query_scalar(&self.sql("SELECT name FROM domains WHERE name = $1"))
                .bind(domain.to_ascii_lowercase())
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.is_some())
    }

    /// All spam levels, by id.
    pub async fn list_levels(&self) -> Result<Vec<SpamLevel>, DirectoryError> {
        let rows = sqlx::query("SELECT id, name, cut, discard FROM spam_levels ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(level_from_row).collect::<Result<_, _>>()?)
    }

    /// The level called `name`.
    pub async fn level(&self, name: &str) -> Result<SpamLevel, DirectoryError> {
        let levels = self.list_levels().await?;
        let known = levels
            .iter()
            .map(|l| l.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        levels
            .iter()
            .find(|l| l.name.eq_ignore_ascii_case(name))
            .cloned()
            .ok_or_else(|| DirectoryError::UnknownLevel(name.to_owned(), known))
    }

    /// Adds a user of an existing local domain, with an argon2 hash of `password`.
    pub async fn add_user(
        &self,
        address: &str,
        password: &str,
        level: &str,
    ) -> Result<User, DirectoryError> {
        let address = Address::parse(address)?;
        if !self.is_local_domain(address.domain()).await? {
            return Err(DirectoryError::UnknownDomain(address.domain().to_owned()));
        }
        let level = self.level(level).await?;
        let hash = password::hash(password)?;
        let done = sqlx::query(&self.sql(
            "INSERT INTO users (address, local_part, domain, password_hash, level_id, mailbox_location, created_at) \
             VALUES ($1, $2, $3, $4, $5, NULL, $6)",
        ))
        .bind(address.to_string())
        .bind(address.local())
        .bind(address.domain())
        .bind(hash)
        .bind(level.id)
        .bind(now_unix())
        .execute(&self.pool)
        .await;
        match done {
            Err(e) if is_unique_violation(&e) => {
                Err(DirectoryError::Exists(format!("user {address}")))
            }
            Err(e) => Err(e.into()),
            Ok(_) => Ok(User {
                address: address.to_string(),
                domain: address.domain().to_owned(),
                level,
                mailbox_location: None,
                quota_bytes: None,
            }),
        }
    }

    /// Removes a user (the mailbox itself is left on disk).
    pub async fn remove_user(&self, address: &str) -> Result<(), DirectoryError> {
        let address = Address::parse(address)?;
        let done = sqlx::query(&self.sql("DELETE FROM users WHERE address = $1"))
            .bind(address.to_string())
            .execute(&self.pool)
            .await?;
        user_was_there(done, &address)
    }

    /// Replaces a user's password.
    pub async fn set_password(&self, address: &str, password: &str) -> Result<(), DirectoryError> {
        let address = Address::parse(address)?;
        let hash = password::hash(password)?;
        let done = sqlx::query(&self.sql("UPDATE users SET password_hash = $1 WHERE address = $2"))
            .bind(hash)
            .bind(address.to_string())
            .execute(&self.pool)
            .await?;
        user_was_there(done, &address)
    }

    /// Moves a user to another spam level.
    pub async fn set_level(&self, address: &str, level: &str) -> Result<(), DirectoryError> {
        let address = Address::parse(address)?;
        let level = self.level(level).await?;
        let done = sqlx::query(&self.sql("UPDATE users SET level_id = $1 WHERE address = $2"))
            .bind(level.id)
            .bind(address.to_string())
            .execute(&self.pool)
            .await?;
        user_was_there(done, &address)
    }

    /// Checks a user's password.
    pub async fn verify_password(
        &self,
        address: &str,
        password: &str,
    ) -> Result<bool, DirectoryError> {
        let Ok(address) = Address::parse(address) else {
            return Ok(false);
        };
        let stored: Option<String> =
            sqlx::query_scalar(&self.sql("SELECT password_hash FROM users WHERE address = $1"))
                .bind(address.to_string())
                .fetch_optional(&self.pool)
                .await?;
        // argon2 is slow on purpose (tens of ms, ~19 MiB): it runs on the blocking pool,
        // a few at a time, so a burst of AUTH attempts cannot stall the async workers
        // that every other role in the process shares.
        static ARGON2_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);
        let _slot = ARGON2_SLOTS
            .acquire()
            .await
            .map_err(|e| DirectoryError::Hash(e.to_string()))?;
        let password = password.to_owned();
        tokio::task::spawn_blocking(move || match stored {
            Some(hash) => password::verify(&password, &hash),
            None => {
                // The same argon2 work for an unknown user as for a known one, so the
                // answer's timing does not tell which addresses exist (submission's
                // AUTH and RADIUS are both open to guessing).
                static DUMMY: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
                if let Some(dummy) = DUMMY.get_or_init(|| password::hash("pampa-unknown-user").ok())
                {
                    let _ = password::verify(&password, dummy);
                }
                false
            }
        })
        .await
        .map_err(|e| DirectoryError::Hash(e.to_string()))
    }

    /// The user with this exact (normalised) address.
    pub async fn find_user(&self, address: &Address) -> Result<Option<User>, DirectoryError> {
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM users u JOIN spam_levels l ON l.id = u.level_id WHERE u.address = $1"
        );
        let row = sqlx::query(&self.sql(&sql))
            .bind(address.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(user_from_row).transpose()?)
    }

    /// All users, or those of one domain, sorted by address.
    pub async fn list_users(&self, domain: Option<&str>) -> Result<Vec<User>, DirectoryError> {
        let rows = match domain {
            Some(domain) => {
                let sql = format!(
                    "SELECT {USER_COLUMNS} FROM users u JOIN spam_levels l ON l.id = u.level_id \
                     WHERE u.domain = $1 ORDER BY u.address"
                );
                sqlx::query(&self.sql(&sql))
                    .bind(normalize_domain(domain)?)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                let sql = format!(
                    "SELECT {USER_COLUMNS} FROM users u JOIN spam_levels l ON l.id = u.level_id ORDER BY u.address"
                );
                sqlx::query(&sql).fetch_all(&self.pool).await?
            }
        };
        Ok(rows.iter().map(user_from_row).collect::<Result<_, _>>()?)
    }

    /// Sets where a user's mailbox lives (`None`: the default Maildir).
    pub async fn set_mailbox_location(
        &self,
        address: &str,
        location: Option<&str>,
    ) -> Result<(), DirectoryError> {
        let address = Address::parse(address)?;
        let done =
            sqlx::query(&self.sql("UPDATE users SET mailbox_location = $1 WHERE address = $2"))
                .bind(location.map(str::to_owned))
                .bind(address.to_string())
                .execute(&self.pool)
                .await?;
        user_was_there(done, &address)
    }
}

impl Directory {
    /// Sets a user's quota in bytes (`None`: no quota).
    pub async fn set_quota(&self, address: &str, bytes: Option<u64>) -> Result<(), DirectoryError> {
        let address = Address::parse(address)?;
        let done = sqlx::query(&self.sql("UPDATE users SET quota_bytes = $1 WHERE address = $2"))
            .bind(bytes.map(|b| b.min(i64::MAX as u64) as i64))
            .bind(address.to_string())
            .execute(&self.pool)
            .await?;
        user_was_there(done, &address)
    }
}

/// A write that names one user by address touched a row, or the user does not exist.
fn user_was_there(
    done: sqlx::any::AnyQueryResult,
    address: &Address,
) -> Result<(), DirectoryError> {
    if done.rows_affected() == 0 {
        return Err(DirectoryError::UnknownUser(address.to_string()));
    }
    Ok(())
}

/// The directory a `sqlite://` URL's file lives in, so it can be created first.
fn sqlite_parent_dir(url: &str) -> Option<std::path::PathBuf> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = path.split('?').next()?;
    if path.is_empty() || path == ":memory:" {
        return None;
    }
    std::path::Path::new(path)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Into::into)
}
