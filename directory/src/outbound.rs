//! What outbound mail needs from the directory: the addresses a user may send as
//! (`sender_aliases`), each sender's hourly limits and spam flag (`outbound_profiles`),
//! the domains' DKIM keys (`dkim_keys`), and the relay's queue (`relay_queue`).

use serde::Serialize;
use sqlx::{any::AnyRow, Row};

use crate::{
    store::{is_unique_violation, now_unix},
    Address, Directory, DirectoryError,
};

/// A user's outbound settings and flag. Limits left unset take the configured defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct OutboundProfile {
    /// Most messages an hour; `None`: the default.
    pub messages_per_hour: Option<u32>,
    /// Most recipients an hour; `None`: the default.
    pub recipients_per_hour: Option<u32>,
    /// Set when outbound mail from the user scored as spam.
    pub flag: Option<SenderFlag>,
}

/// Why and when a sender was flagged.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SenderFlag {
    /// The flagged user.
    pub address: String,
    /// Unix seconds.
    pub flagged_at: i64,
    /// Free text: the score and the decision.
    pub reason: String,
    /// The message that caused it, for `pampa trace`.
    pub message_id: Option<String>,
}

/// A domain's DKIM signing key.
#[derive(Clone, PartialEq)]
pub struct DkimKey {
    /// The signing domain (`d=`).
    pub domain: String,
    /// The selector (`s=`): the key's TXT record is at `{selector}._domainkey.{domain}`.
    pub selector: String,
    /// `rsa-sha256` or `ed25519-sha256`.
    pub algorithm: String,
    /// The private key, PEM (PKCS#8).
    pub private_key_pem: String,
    /// Unix seconds.
    pub created_at: i64,
}

impl std::fmt::Debug for DkimKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DkimKey")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .field("algorithm", &self.algorithm)
            .field("private_key_pem", &"<redacted>")
            .finish()
    }
}

/// Where a queued recipient stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueStatus {
    /// Waiting for its next attempt.
    Queued,
    /// The remote MX accepted it.
    Delivered,
    /// Refused for good (5xx), or given up on after the queue lifetime; a DSN went out
    /// where one is allowed.
    Bounced,
    /// An operator dropped it (`pampa queue drop`).
    Dropped,
}

impl QueueStatus {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueStatus::Queued => "queued",
            QueueStatus::Delivered => "delivered",
            QueueStatus::Bounced => "bounced",
            QueueStatus::Dropped => "dropped",
        }
    }

    fn parse(text: &str) -> QueueStatus {
        match text {
            "delivered" => QueueStatus::Delivered,
            "bounced" => QueueStatus::Bounced,
            "dropped" => QueueStatus::Dropped,
            _ => QueueStatus::Queued,
        }
    }
}

/// One (message, recipient) in the relay's queue.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueEntry {
    /// The message (the root event's correlation id).
    pub message_id: String,
    /// The remote recipient.
    pub recipient: String,
    /// The recipient's domain, which the attempt looks up the MX of.
    pub domain: String,
    /// The envelope sender (empty for a bounce).
    pub sender: String,
    /// The authenticated user who submitted it (empty for pampa's own DSNs).
    pub submitted_by: String,
    /// The `mail.outbound` event it came from.
    pub event_id: String,
    /// The body's claim check: key, size and SHA-256.
    pub blob_key: String,
    /// Body size in bytes.
    pub blob_size: u64,
    /// Lowercase hex SHA-256 of the body.
    pub blob_sha256: String,
    /// Where it stands.
    pub status: QueueStatus,
    /// Attempts made so far.
    pub attempts: u32,
    /// Unix seconds.
    pub queued_at: i64,
    /// Unix seconds; the next attempt is due then.
    pub next_attempt_at: i64,
    /// The last remote reply or connection error.
    pub last_reply: Option<String>,
    /// Unix seconds, once final.
    pub finished_at: Option<i64>,
    /// Until when the process that claimed it holds it (unix seconds); 0 if nobody
    /// does. A claim returns the value it set, and the claimer's writes are made only
    /// while that lease is still its own.
    #[serde(skip)]
    pub lease_until: i64,
}

const QUEUE_COLUMNS: &str = "message_id, recipient, domain, sender, submitted_by, event_id, blob_key, blob_size, blob_sha256, status, attempts, queued_at, next_attempt_at, last_reply, finished_at";

fn entry_from_row(row: &AnyRow) -> Result<QueueEntry, sqlx::Error> {
    let status: String = row.try_get("status")?;
    Ok(QueueEntry {
        message_id: row.try_get("message_id")?,
        recipient: row.try_get("recipient")?,
        domain: row.try_get("domain")?,
        sender: row.try_get("sender")?,
        submitted_by: row.try_get("submitted_by")?,
        event_id: row.try_get("event_id")?,
        blob_key: row.try_get("blob_key")?,
        blob_size: row.try_get::<i64, _>("blob_size")?.max(0) as u64,
        blob_sha256: row.try_get("blob_sha256")?,
        status: QueueStatus::parse(&status),
        attempts: row.try_get::<i64, _>("attempts")?.clamp(0, u32::MAX as i64) as u32,
        queued_at: row.try_get("queued_at")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        last_reply: row.try_get("last_reply")?,
        finished_at: row.try_get("finished_at")?,
        lease_until: row.try_get("lease_until").unwrap_or(0),
    })
}

/// Cuts a remote reply to the column's size, on a character boundary.
fn clip(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

fn limit_to_u32(value: Option<i64>) -> Option<u32> {
    value.map(|v| v.clamp(0, u32::MAX as i64) as u32)
}

impl Directory {
    /// Lets `user` send as `alias` too. The alias must be in a local domain: mail from
    /// a foreign domain through pampa fails that domain's SPF and DMARC, and its DSNs
    /// would go to a mailbox the ISP does not know.
    pub async fn add_sender_alias(&self, user: &str, alias: &str) -> Result<(), DirectoryError> {
        let user = self.known_user_address(user).await?;
        let alias = Address::parse(alias)?;
        if !self.is_local_domain(alias.domain()).await? {
            return Err(DirectoryError::UnknownDomain(alias.domain().to_owned()));
        }
        let alias = alias.to_string();
        let done = sqlx::query(&self.sql(
            "INSERT INTO sender_aliases (user_address, alias, created_at) VALUES ($1, $2, $3)",
        ))
        .bind(&user)
        .bind(&alias)
        .bind(now_unix())
        .execute(&self.pool)
        .await;
        match done {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => {
                Err(DirectoryError::Exists(format!("alias {alias} of {user}")))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Takes `alias` away from `user`.
    pub async fn remove_sender_alias(&self, user: &str, alias: &str) -> Result<(), DirectoryError> {
        let user = Address::parse(user)?.to_string();
        let alias = Address::parse(alias)?.to_string();
        let done = sqlx::query(
            &self.sql("DELETE FROM sender_aliases WHERE user_address = $1 AND alias = $2"),
        )
        .bind(&user)
        .bind(&alias)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(DirectoryError::UnknownUser(format!(
                "alias {alias} of {user}"
            )));
        }
        Ok(())
    }

    /// The aliases `user` may send as, sorted.
    pub async fn sender_aliases(&self, user: &str) -> Result<Vec<String>, DirectoryError> {
        let user = Address::parse(user)?.to_string();
        Ok(sqlx::query_scalar(
            &self.sql("SELECT alias FROM sender_aliases WHERE user_address = $1 ORDER BY alias"),
        )
        .bind(user)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Whether `user` may send as `address`: their own address, or one of their aliases.
    pub async fn may_send_as(&self, user: &str, address: &str) -> Result<bool, DirectoryError> {
        let (Ok(user), Ok(address)) = (Address::parse(user), Address::parse(address)) else {
            return Ok(false);
        };
        if user == address {
            return Ok(true);
        }
        let found: Option<String> = sqlx::query_scalar(
            &self.sql("SELECT alias FROM sender_aliases WHERE user_address = $1 AND alias = $2"),
        )
        .bind(user.to_string())
        .bind(address.to_string())
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }

    /// A user's outbound limits and flag (the defaults when nothing is set).
    pub async fn outbound_profile(&self, user: &str) -> Result<OutboundProfile, DirectoryError> {
        let user = Address::parse(user)?.to_string();
        let row = sqlx::query(&self.sql(
            "SELECT messages_per_hour, recipients_per_hour, flagged_at, flag_reason, flag_message_id \
             FROM outbound_profiles WHERE address = $1",
        ))
        .bind(&user)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(OutboundProfile::default());
        };
        let flagged_at: Option<i64> = row.try_get("flagged_at")?;
        Ok(OutboundProfile {
            messages_per_hour: limit_to_u32(row.try_get("messages_per_hour")?),
            recipients_per_hour: limit_to_u32(row.try_get("recipients_per_hour")?),
            flag: match flagged_at {
                Some(at) => Some(SenderFlag {
                    address: user,
                    flagged_at: at,
                    reason: row
                        .try_get::<Option<String>, _>("flag_reason")?
                        .unwrap_or_default(),
                    message_id: row.try_get("flag_message_id")?,
                }),
                None => None,
            },
        })
    }

    /// Sets a user's hourly limits (`None`: back to the default).
    pub async fn set_outbound_limits(
        &self,
        user: &str,
        messages_per_hour: Option<u32>,
        recipients_per_hour: Option<u32>,
    ) -> Result<(), DirectoryError> {
        let user = self.known_user_address(user).await?;
        self.upsert_profile(
            &user,
            "messages_per_hour = $1, recipients_per_hour = $2",
            "messages_per_hour, recipients_per_hour",
            vec![
                messages_per_hour.map(i64::from).into(),
                recipients_per_hour.map(i64::from).into(),
            ],
        )
        .await
    }

    /// Flags a user whose outbound mail scored as spam. A flag already set is kept as it
    /// was: the first message is the one an operator wants to see.
    pub async fn flag_sender(
        &self,
        user: &str,
        reason: &str,
        message_id: &str,
    ) -> Result<bool, DirectoryError> {
        let user = self.known_user_address(user).await?;
        if self.outbound_profile(&user).await?.flag.is_some() {
            return Ok(false);
        }
        self.upsert_profile(
            &user,
            "flagged_at = $1, flag_reason = $2, flag_message_id = $3",
            "flagged_at, flag_reason, flag_message_id",
            vec![
                Some(now_unix()).into(),
                Some(clip(reason, 255)).into(),
                Some(clip(message_id, 64)).into(),
            ],
        )
        .await?;
        Ok(true)
    }

    /// Clears a user's flag; `false` if there was none.
    pub async fn unflag_sender(&self, user: &str) -> Result<bool, DirectoryError> {
        let user = self.known_user_address(user).await?;
        let done = sqlx::query(&self.sql(
            "UPDATE outbound_profiles SET flagged_at = NULL, flag_reason = NULL, flag_message_id = NULL, updated_at = $1 \
             WHERE address = $2 AND flagged_at IS NOT NULL",
        ))
        .bind(now_unix())
        .bind(&user)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Every flagged user, the most recent first.
    pub async fn flagged_senders(&self) -> Result<Vec<SenderFlag>, DirectoryError> {
        let rows = sqlx::query(
            "SELECT address, flagged_at, flag_reason, flag_message_id FROM outbound_profiles \
             WHERE flagged_at IS NOT NULL ORDER BY flagged_at DESC, address",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(SenderFlag {
                    address: row.try_get("address")?,
                    flagged_at: row.try_get("flagged_at")?,
                    reason: row
                        .try_get::<Option<String>, _>("flag_reason")?
                        .unwrap_or_default(),
                    message_id: row.try_get("flag_message_id")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// Writes some columns of a user's profile row, creating the row if needed.
    async fn upsert_profile(
        &self,
        user: &str,
        assignments: &str,
        columns: &str,
        values: Vec<ProfileValue>,
    ) -> Result<(), DirectoryError> {
        let n = values.len();
        let update = format!(
            "UPDATE outbound_profiles SET {assignments}, updated_at = ${} WHERE address = ${}",
            n + 1,
            n + 2
        );
        let updated = bind_all(sqlx::query(&self.sql(&update)), &values)
            .bind(now_unix())
            .bind(user.to_owned())
            .execute(&self.pool)
            .await?;
        if updated.rows_affected() > 0 {
            return Ok(());
        }
        let placeholders: Vec<String> = (1..=n).map(|i| format!("${i}")).collect();
        let insert = format!(
            "INSERT INTO outbound_profiles ({columns}, updated_at, address) VALUES ({}, ${}, ${})",
            placeholders.join(", "),
            n + 1,
            n + 2
        );
        let inserted = bind_all(sqlx::query(&self.sql(&insert)), &values)
            .bind(now_unix())
            .bind(user.to_owned())
            .execute(&self.pool)
            .await;
        match inserted {
            Ok(_) => Ok(()),
            // Another process created the row between the two statements: update it.
            Err(e) if is_unique_violation(&e) => {
                bind_all(sqlx::query(&self.sql(&update)), &values)
                    .bind(now_unix())
                    .bind(user.to_owned())
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The normalised address of an existing user, or [`DirectoryError::UnknownUser`].
    async fn known_user_address(&self, user: &str) -> Result<String, DirectoryError> {
        let address = Address::parse(user)?;
        match self.find_user(&address).await? {
            Some(found) => Ok(found.address),
            None => Err(DirectoryError::UnknownUser(address.to_string())),
        }
    }

    /// Stores a domain's DKIM key as the current one (the relay signs with it from the
    /// next message on), replacing the one it had.
    pub async fn put_dkim_key(&self, key: &DkimKey) -> Result<(), DirectoryError> {
        self.put_key_into("dkim_keys", key).await
    }

    /// Stores a domain's next DKIM key, to become current with
    /// [`Directory::activate_dkim_key`] once its TXT record is published.
    pub async fn put_next_dkim_key(&self, key: &DkimKey) -> Result<(), DirectoryError> {
        self.put_key_into("dkim_next_keys", key).await
    }

    async fn put_key_into(&self, table: &str, key: &DkimKey) -> Result<(), DirectoryError> {
        let domain = crate::address::normalize_domain(&key.domain)?;
        let mut tx = self.pool.begin().await?;
        sqlx::query(&self.sql(&format!("DELETE FROM {table} WHERE domain = $1")))
            .bind(&domain)
            .execute(&mut *tx)
            .await?;
        sqlx::query(&self.sql(&format!(
            "INSERT INTO {table} (domain, selector, algorithm, private_key, created_at) VALUES ($1, $2, $3, $4, $5)"
        )))
        .bind(&domain)
        .bind(&key.selector)
        .bind(&key.algorithm)
        .bind(&key.private_key_pem)
        .bind(key.created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The current DKIM key of a domain, if it has one.
    pub async fn dkim_key(&self, domain: &str) -> Result<Option<DkimKey>, DirectoryError> {
        self.key_from("dkim_keys", domain).await
    }

    /// The next DKIM key of a domain, if one waits for its TXT record.
    pub async fn next_dkim_key(&self, domain: &str) -> Result<Option<DkimKey>, DirectoryError> {
        self.key_from("dkim_next_keys", domain).await
    }

    async fn key_from(&self, table: &str, domain: &str) -> Result<Option<DkimKey>, DirectoryError> {
        let domain = crate::address::normalize_domain(domain)?;
        let row = sqlx::query(&self.sql(&format!(
            "SELECT domain, selector, algorithm, private_key, created_at FROM {table} WHERE domain = $1"
        )))
        .bind(domain)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(DkimKey {
                domain: row.try_get("domain")?,
                selector: row.try_get("selector")?,
                algorithm: row.try_get("algorithm")?,
                private_key_pem: row.try_get("private_key")?,
                created_at: row.try_get("created_at")?,
            })
        })
        .transpose()
        .map_err(|e: sqlx::Error| e.into())
    }

    /// Makes a domain's next key the current one; `None` if there was no next key.
    pub async fn activate_dkim_key(&self, domain: &str) -> Result<Option<DkimKey>, DirectoryError> {
        let Some(next) = self.next_dkim_key(domain).await? else {
            return Ok(None);
        };
        let mut tx = self.pool.begin().await?;
        sqlx::query(&self.sql("DELETE FROM dkim_keys WHERE domain = $1"))
            .bind(&next.domain)
            .execute(&mut *tx)
            .await?;
        sqlx::query(&self.sql(
            "INSERT INTO dkim_keys (domain, selector, algorithm, private_key, created_at) VALUES ($1, $2, $3, $4, $5)",
        ))
        .bind(&next.domain)
        .bind(&next.selector)
        .bind(&next.algorithm)
        .bind(&next.private_key_pem)
        .bind(next.created_at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(&self.sql("DELETE FROM dkim_next_keys WHERE domain = $1"))
            .bind(&next.domain)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(next))
    }

    /// Adds recipients to the relay's queue. Rows already there (a redelivered
    /// `mail.outbound`) are left as they are, so a retry never resets a recipient.
    pub async fn enqueue_relay(&self, entries: &[QueueEntry]) -> Result<usize, DirectoryError> {
        let mut added = 0;
        for entry in entries {
            let done = sqlx::query(&self.sql(&format!(
                "INSERT INTO relay_queue ({QUEUE_COLUMNS}, lease_until) VALUES \
                 ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, 0)"
            )))
            .bind(&entry.message_id)
            .bind(&entry.recipient)
            .bind(&entry.domain)
            .bind(&entry.sender)
            .bind(&entry.submitted_by)
            .bind(&entry.event_id)
            .bind(&entry.blob_key)
            .bind(entry.blob_size as i64)
            .bind(&entry.blob_sha256)
            .bind(entry.status.as_str())
            .bind(i64::from(entry.attempts))
            .bind(entry.queued_at)
            .bind(entry.next_attempt_at)
            .bind(entry.last_reply.clone())
            .bind(entry.finished_at)
            .execute(&self.pool)
            .await;
            match done {
                Ok(_) => added += 1,
                Err(e) if is_unique_violation(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(added)
    }

    /// Takes up to `limit` queued recipients that are due, leasing them for `lease_secs`
    /// so that no other relay process attempts them meanwhile. A relay that dies while
    /// holding a lease only delays those recipients until it runs out.
    /// Recipients at `skip_domains` (those with every slot busy) are left for later.
    pub async fn claim_due_relay(
        &self,
        now: i64,
        lease_secs: i64,
        limit: usize,
        skip_domains: &[String],
    ) -> Result<Vec<QueueEntry>, DirectoryError> {
        let skip = if skip_domains.is_empty() {
            String::new()
        } else {
            let placeholders: Vec<String> = (0..skip_domains.len())
                .map(|i| format!("${}", i + 3))
                .collect();
            format!(" AND domain NOT IN ({})", placeholders.join(", "))
        };
        let sql = format!(
            "SELECT {QUEUE_COLUMNS}, lease_until FROM relay_queue \
             WHERE status = 'queued' AND next_attempt_at <= $1 AND lease_until <= $2{skip} \
             ORDER BY next_attempt_at LIMIT {}",
            limit.max(1)
        );
        let sql = self.sql(&sql);
        let mut query = sqlx::query(&sql).bind(now).bind(now);
        for domain in skip_domains {
            query = query.bind(domain.clone());
        }
        let rows = query.fetch_all(&self.pool).await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut entry = entry_from_row(row)?;
            let lease: i64 = row.try_get("lease_until")?;
            // Only the process whose UPDATE sees the lease it read wins the row; and
            // only while it is still due (a deferral in between resets the lease).
            let won = sqlx::query(&self.sql(
                "UPDATE relay_queue SET lease_until = $1 \
                 WHERE message_id = $2 AND recipient = $3 AND lease_until = $4 AND status = 'queued' \
                 AND next_attempt_at <= $5",
            ))
            .bind(now + lease_secs)
            .bind(&entry.message_id)
            .bind(&entry.recipient)
            .bind(lease)
            .bind(now)
            .execute(&self.pool)
            .await?;
            if won.rows_affected() == 1 {
                entry.lease_until = now + lease_secs;
                claimed.push(entry);
            }
        }
        Ok(claimed)
    }

    /// Gives a claimed recipient back unattempted (its domain had no free slot).
    pub async fn release_relay(
        &self,
        message_id: &str,
        recipient: &str,
    ) -> Result<(), DirectoryError> {
        sqlx::query(&self.sql(
            "UPDATE relay_queue SET lease_until = 0 WHERE message_id = $1 AND recipient = $2 AND status = 'queued'",
        ))
        .bind(message_id)
        .bind(recipient)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a failed attempt that will be tried again at `next_attempt_at`, if the
    /// caller still holds `lease` (the value its claim returned); `false` if not.
    pub async fn defer_relay(
        &self,
        message_id: &str,
        recipient: &str,
        reply: &str,
        next_attempt_at: i64,
        lease: i64,
    ) -> Result<bool, DirectoryError> {
        let done = sqlx::query(&self.sql(
            "UPDATE relay_queue SET attempts = attempts + 1, last_reply = $1, next_attempt_at = $2, lease_until = 0 \
             WHERE message_id = $3 AND recipient = $4 AND status = 'queued' AND lease_until = $5",
        ))
        .bind(clip(reply, 512))
        .bind(next_attempt_at)
        .bind(message_id)
        .bind(recipient)
        .bind(lease)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Ends a recipient's time in the queue; `false` if it had ended already (another
    /// process, or an operator's drop, got there first) or, with `lease` (an attempt's
    /// result), if the caller no longer holds it. An operator's drop passes `None`.
    pub async fn finish_relay(
        &self,
        message_id: &str,
        recipient: &str,
        status: QueueStatus,
        reply: &str,
        lease: Option<i64>,
    ) -> Result<bool, DirectoryError> {
        let held = if lease.is_some() {
            " AND lease_until = $7"
        } else {
            ""
        };
        let sql = format!(
            "UPDATE relay_queue SET status = $1, last_reply = $2, finished_at = $3, lease_until = 0, \
             attempts = attempts + $4 WHERE message_id = $5 AND recipient = $6 AND status = 'queued'{held}"
        );
        let sql = self.sql(&sql);
        let mut query = sqlx::query(&sql)
            .bind(status.as_str())
            .bind(clip(reply, 512))
            .bind(now_unix())
            .bind(i64::from(lease.is_some()))
            .bind(message_id)
            .bind(recipient);
        if let Some(lease) = lease {
            query = query.bind(lease);
        }
        let done = query.execute(&self.pool).await?;
        Ok(done.rows_affected() == 1)
    }

    /// The recipients still queued, oldest first.
    pub async fn relay_queue(&self) -> Result<Vec<QueueEntry>, DirectoryError> {
        let rows = sqlx::query(&format!(
            "SELECT {QUEUE_COLUMNS} FROM relay_queue WHERE status = 'queued' ORDER BY queued_at, message_id, recipient"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(entry_from_row).collect::<Result<_, _>>()?)
    }

    /// How many recipients are queued, and how many of those have failed at least once.
    pub async fn relay_queue_size(&self) -> Result<(i64, i64), DirectoryError> {
        // Two counts rather than a SUM: MySQL sums to DECIMAL, which the Any driver
        // does not read as an integer.
        let queued: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM relay_queue WHERE status = 'queued'")
                .fetch_one(&self.pool)
                .await?;
        let deferred: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM relay_queue WHERE status = 'queued' AND attempts > 0",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((queued, deferred))
    }

    /// Every recipient of one message, in whatever state.
    pub async fn relay_message(&self, message_id: &str) -> Result<Vec<QueueEntry>, DirectoryError> {
        let rows = sqlx::query(&self.sql(&format!(
            "SELECT {QUEUE_COLUMNS} FROM relay_queue WHERE message_id = $1 ORDER BY recipient"
        )))
        .bind(message_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(entry_from_row).collect::<Result<_, _>>()?)
    }

    /// Removes recipients that left the queue before `before` (unix seconds): the log
    /// keeps their history until its own retention.
    pub async fn purge_relay_queue(&self, before: i64) -> Result<u64, DirectoryError> {
        let done = sqlx::query(
            &self.sql("DELETE FROM relay_queue WHERE status <> 'queued' AND finished_at < $1"),
        )
        .bind(before)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Makes a message's queued recipients due now; returns how many.
    pub async fn retry_relay(&self, message_id: &str) -> Result<u64, DirectoryError> {
        let done = sqlx::query(&self.sql(
            "UPDATE relay_queue SET next_attempt_at = $1 WHERE message_id = $2 AND status = 'queued'",
        ))
        .bind(now_unix())
        .bind(message_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}

/// A value bound into a profile write: the three backends share integers and text.
enum ProfileValue {
    Int(Option<i64>),
    Text(Option<String>),
}

impl From<Option<i64>> for ProfileValue {
    fn from(value: Option<i64>) -> Self {
        ProfileValue::Int(value)
    }
}

impl From<Option<String>> for ProfileValue {
    fn from(value: Option<String>) -> Self {
        ProfileValue::Text(value)
    }
}

fn bind_all<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    values: &[ProfileValue],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for value in values {
        query = match value {
            ProfileValue::Int(v) => query.bind(*v),
            ProfileValue::Text(v) => query.bind(v.clone()),
        };
    }
    query
}
