//! Per-user quotas: how many entries a user may keep and how many bytes of
//! title and text. Usage is kept per user and database node in `todo_usage`,
//! changed in the same transaction as the entries, with the node's usage row
//! locked first so concurrent writes through one node cannot both pass the
//! limit (SQLite: the service's write lock). The rule is
//! [`QuotaSettings`]'s; the store's SQLite statements and MariaDB procedures
//! carry the same rule in SQL, and a refusal is explained by this one.
//!
//! Usage is kept in slots: `todo_usage` has one row per (user, slot), and a
//! user's usage is the sum of their rows. A write locks and changes only the
//! slot of the database node it runs on (on MariaDB the node's
//! `auto_increment_offset`, which Galera makes distinct per node; SQLite has
//! one writer and one slot, counted by triggers). So one user's writes
//! through the same node queue on one row and the quota is exact there,
//! while writes through different Galera nodes share no row and cannot fail
//! certification against each other. The price on Galera: a write reads the
//! other nodes' slots without locking them, so a create through each other
//! node that is in flight at that moment is not seen, and a user can end up
//! to (nodes - 1) entries (and as many entries' bytes) over a quota; see
//! README "Scaling out". A node's slot is created on its own, outside the
//! write's transaction: on MariaDB a locking read of a missing row locks the
//! gap, and concurrent first writers inserting into it would deadlock.

use serde::{Deserialize, Serialize};
use todoapp_db::StoreError;
use todoapp_runtime::ConfigError;

use crate::domain::Content;

/// The `[quota]` section of the todo service's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaSettings {
    /// Entries per user.
    pub max_entries: u64,
    /// Bytes of title and text (UTF-8) per user.
    pub max_bytes: u64,
}

impl Default for QuotaSettings {
    fn default() -> Self {
        Self {
            max_entries: 10_000,
            max_bytes: 20 * 1000 * 1000,
        }
    }
}

impl QuotaSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_entries == 0 || self.max_entries > i64::MAX as u64 {
            return Err(ConfigError::invalid(
                "quota.max_entries",
                "must be at least 1",
            ));
        }
        // One entry of maximal size must fit.
        if self.max_bytes < MAX_ENTRY_BYTES || self.max_bytes > i64::MAX as u64 {
            return Err(ConfigError::invalid(
                "quota.max_bytes",
                format!("must be at least {MAX_ENTRY_BYTES} (one entry of maximal size)"),
            ));
        }
        Ok(())
    }

    /// (entries, bytes) as the statements that carry the check bind them:
    /// BIGINT, where [`QuotaSettings::validate`] caps both.
    pub fn sql_limits(&self) -> (i64, i64) {
        let bigint = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        (bigint(self.max_entries), bigint(self.max_bytes))
    }

    /// Whether one more entry of `bytes` fits next to `usage`.
    pub fn admits_create(&self, usage: Usage, bytes: i64) -> Result<(), QuotaExceeded> {
        if usage.entries >= self.max_entries as i64 {
            return Err(QuotaExceeded::Entries {
                limit: self.max_entries,
            });
        }
        self.admits_bytes(usage.bytes + bytes)
    }

    /// Whether replacing an entry of `old_bytes` by one of `new_bytes`
    /// fits. Shrinking is always allowed, even over a lowered quota.
    pub fn admits_update(
        &self,
        usage: Usage,
        old_bytes: i64,
        new_bytes: i64,
    ) -> Result<(), QuotaExceeded> {
        if new_bytes <= old_bytes {
            return Ok(());
        }
        self.admits_bytes(usage.bytes - old_bytes + new_bytes)
    }

    fn admits_bytes(&self, total: i64) -> Result<(), QuotaExceeded> {
        if total > self.max_bytes as i64 {
            return Err(QuotaExceeded::Bytes {
                limit: self.max_bytes,
            });
        }
        Ok(())
    }
}

/// 200 title and 2000 text characters of up to 4 bytes each.
const MAX_ENTRY_BYTES: u64 = (200 + 2000) * 4;

/// A user's current usage, as read in the write's transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub entries: i64,
    pub bytes: i64,
}

/// What a quota counts of an entry: its title and text in UTF-8.
pub fn stored_bytes(content: &Content) -> i64 {
    (content.title.len() + content.text.len()) as i64
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuotaExceeded {
    #[error("entry quota exceeded: at most {limit} entries per user")]
    Entries { limit: u64 },
    #[error("storage quota exceeded: at most {limit} bytes of titles and texts per user")]
    Bytes { limit: u64 },
}

/// How a create or update failed: over quota, or the store.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Quota(#[from] QuotaExceeded),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl todoapp_db::Contended for WriteError {
    fn is_contention(&self) -> bool {
        matches!(self, WriteError::Store(e) if e.is_contention())
    }
}

impl From<sqlx::Error> for WriteError {
    fn from(error: sqlx::Error) -> Self {
        Self::Store(error.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(entries: i64, bytes: i64) -> Usage {
        Usage { entries, bytes }
    }

    #[test]
    fn creates_stop_at_either_limit() {
        let quota = QuotaSettings {
            max_entries: 3,
            max_bytes: 10_000,
        };
        assert!(quota.admits_create(usage(2, 9_000), 1_000).is_ok());
        assert_eq!(
            quota.admits_create(usage(3, 0), 1),
            Err(QuotaExceeded::Entries { limit: 3 })
        );
        assert_eq!(
            quota.admits_create(usage(2, 9_000), 1_001),
            Err(QuotaExceeded::Bytes { limit: 10_000 })
        );
    }

    #[test]
    fn updates_may_shrink_but_not_grow_past_the_limit() {
        let quota = QuotaSettings {
            max_entries: 3,
            max_bytes: 10_000,
        };
        assert!(quota.admits_update(usage(1, 10_000), 100, 100).is_ok());
        assert!(quota.admits_update(usage(1, 12_000), 5_000, 10).is_ok());
        assert!(quota.admits_update(usage(2, 9_000), 100, 1_100).is_ok());
        assert_eq!(
            quota.admits_update(usage(2, 9_000), 100, 1_101),
            Err(QuotaExceeded::Bytes { limit: 10_000 })
        );
    }

    #[test]
    fn sql_limits_are_the_settings_and_saturate_past_bigint() {
        let quota = QuotaSettings {
            max_entries: 3,
            max_bytes: 10_000,
        };
        assert_eq!(quota.sql_limits(), (3, 10_000));
        let unvalidated = QuotaSettings {
            max_entries: u64::MAX,
            max_bytes: u64::MAX,
        };
        assert_eq!(unvalidated.sql_limits(), (i64::MAX, i64::MAX));
    }

    #[test]
    fn messages_name_the_quota() {
        assert!(QuotaExceeded::Entries { limit: 7 }
            .to_string()
            .contains("at most 7 entries"));
        assert!(QuotaExceeded::Bytes { limit: 9 }
            .to_string()
            .contains("at most 9 bytes"));
    }

    #[test]
    fn settings_are_validated() {
        assert!(QuotaSettings::default().validate().is_ok());
        let error = QuotaSettings {
            max_entries: 0,
            ..QuotaSettings::default()
        }
        .validate()
        .expect_err("zero");
        assert!(error.to_string().contains("quota.max_entries"));
        let error = QuotaSettings {
            max_bytes: 100,
            ..QuotaSettings::default()
        }
        .validate()
        .expect_err("too small");
        assert!(error.to_string().contains("quota.max_bytes"));
    }
}
