//! deliver's marks per (message, recipient, store): what each store has of each copy,
//! so retries skip what is done and a failing store holds back nobody else.

use sqlx::Row;

use crate::{store::now_unix, Directory, DirectoryError};

/// Where one copy in one store stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkState {
    /// An LMTP transaction began and its outcome was not recorded.
    Sending,
    /// The store has the copy.
    Delivered,
    /// The store said "later"; see `first_failed_at`.
    Deferred,
    /// The store refused it for good, or the grace period ran out.
    Failed,
}

impl MarkState {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            MarkState::Sending => "sending",
            MarkState::Delivered => "delivered",
            MarkState::Deferred => "deferred",
            MarkState::Failed => "failed",
        }
    }

    fn parse(text: &str) -> MarkState {
        match text {
            "delivered" => MarkState::Delivered,
            "deferred" => MarkState::Deferred,
            "failed" => MarkState::Failed,
            _ => MarkState::Sending,
        }
    }
}

/// One copy's mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryMark {
    /// The recipient.
    pub recipient: String,
    /// The store, as `Store`'s spelling.
    pub store: String,
    /// Where it stands.
    pub state: MarkState,
    /// The store's last reply, or where the copy is.
    pub detail: Option<String>,
    /// Unix seconds of the first "later", while deferred.
    pub first_failed_at: Option<i64>,
    /// Unix seconds of the first "mailbox full": the quota grace period counts from it.
    pub first_full_at: Option<i64>,
}

impl Directory {
    /// Every mark of one message.
    pub async fn delivery_marks(
        &self,
        message_id: &str,
    ) -> Result<Vec<DeliveryMark>, DirectoryError> {
        let rows = sqlx::query(&self.sql(
            "SELECT recipient, store, state, detail, first_failed_at, first_full_at FROM delivery_marks WHERE message_id = $1",
        ))
        .bind(message_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let state: String = row.try_get("state")?;
                Ok(DeliveryMark {
                    recipient: row.try_get("recipient")?,
                    store: row.try_get("store")?,
                    state: MarkState::parse(&state),
                    detail: row.try_get("detail")?,
                    first_failed_at: row.try_get("first_failed_at")?,
                    first_full_at: row.try_get("first_full_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// Records a copy's state. A deferral keeps the time of the first one, and a
    /// "mailbox full" (`full`) the time of the first of those, from which the quota
    /// grace period counts.
    pub async fn mark_delivery(
        &self,
        message_id: &str,
        recipient: &str,
        store: &str,
        state: MarkState,
        detail: Option<&str>,
        full: bool,
    ) -> Result<(), DirectoryError> {
        let detail = detail.map(|d| {
            let mut end = d.len().min(512);
            while !d.is_char_boundary(end) {
                end -= 1;
            }
            d[..end].to_owned()
        });
        // Two tries: another deliver process may create the row between our UPDATE and
        // INSERT; then the UPDATE is run again.
        for _ in 0..2 {
            let now = now_unix();
            let deferred = state == MarkState::Deferred;
            let updated = sqlx::query(&self.sql(
                "UPDATE delivery_marks SET state = $1, detail = $2, updated_at = $3, \
                 first_failed_at = CASE WHEN $4 = 1 THEN COALESCE(first_failed_at, $5) ELSE first_failed_at END, \
                 first_full_at = CASE WHEN $6 = 1 THEN COALESCE(first_full_at, $7) ELSE first_full_at END \
                 WHERE message_id = $8 AND recipient = $9 AND store = $10",
            ))
            .bind(state.as_str())
            .bind(detail.clone())
            .bind(now)
            .bind(i64::from(deferred))
            .bind(now)
            .bind(i64::from(deferred && full))
            .bind(now)
            .bind(message_id)
            .bind(recipient)
            .bind(store)
            .execute(&self.pool)
            .await?;
            if updated.rows_affected() > 0 {
                return Ok(());
            }
            let inserted = sqlx::query(&self.sql(
                "INSERT INTO delivery_marks (message_id, recipient, store, state, detail, first_failed_at, first_full_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            ))
            .bind(message_id)
            .bind(recipient)
            .bind(store)
            .bind(state.as_str())
            .bind(detail.clone())
            .bind(deferred.then_some(now))
            .bind((deferred && full).then_some(now))
            .bind(now)
            .execute(&self.pool)
            .await;
            match inserted {
                Ok(_) => return Ok(()),
                Err(e) if crate::store::is_unique_violation(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Removes marks not touched since `before` (unix seconds): messages the log no
    /// longer retains cannot be redelivered.
    pub async fn purge_delivery_marks(&self, before: i64) -> Result<u64, DirectoryError> {
        let done = sqlx::query(&self.sql("DELETE FROM delivery_marks WHERE updated_at < $1"))
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
