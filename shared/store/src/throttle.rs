//! Fixed-window counters shared by every Lambda instance: sign-in failures per account and
//! per source address, and request rates on the auth endpoints. One item per key and window,
//! expired by TTL.

use aws_sdk_dynamodb::types::ReturnValue;

use crate::dynamo::{Attributes, Expr};
use crate::keys::{ItemKey, n};
use crate::{Store, StoreError};

/// The counter's attribute.
const HITS: &str = "hits";

/// Where a count stands in its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowCount {
    pub count: u64,
    /// Seconds until the window closes (the `Retry-After` of a refusal).
    pub resets_in: i64,
}

fn window_key(key: &str, window_seconds: i64, now: i64) -> (String, i64) {
    let window = now.div_euclid(window_seconds.max(1));
    (format!("THROTTLE#{key}#{window}"), (window + 1) * window_seconds.max(1))
}

/// The item of `key`'s current window, and when that window ends.
fn counter_item(key: &str, window_seconds: i64, now: i64) -> (ItemKey, i64) {
    let (pk, window_end) = window_key(key, window_seconds, now);
    (ItemKey::counter(pk), window_end)
}

impl Store {
    /// Adds one to `key`'s count in the current window and returns the new count.
    pub async fn count_hit(
        &self,
        key: &str,
        window_seconds: i64,
        now: i64,
    ) -> Result<WindowCount, StoreError> {
        let (item_key, window_end) = counter_item(key, window_seconds, now);
        let add = Expr::new("ADD hits :one SET expires_at = :expires")
            .value(":one", n(1))
            .value(":expires", n(window_end));
        let updated = self.update(item_key, add, None, Some(ReturnValue::UpdatedNew)).await??;
        let count = updated.and_then(|a| a.optional_number(HITS)).unwrap_or(1);
        Ok(WindowCount { count, resets_in: window_end - now })
    }

    /// Takes one back from `key`'s count in the current window (an attempt counted up front
    /// that turned out not to be a failure). Never creates a count, so never goes below zero
    /// for a window that has none.
    pub async fn uncount_hit(&self, key: &str, window_seconds: i64, now: i64) -> Result<(), StoreError> {
        let (item_key, _) = counter_item(key, window_seconds, now);
        let take = Expr::new("ADD hits :minus_one").value(":minus_one", n(-1));
        let positive = Expr::new("hits > :zero").value(":zero", n(0));
        // Refused: the window closed (or was cleared) meanwhile; nothing to give back.
        let _gone = self.update(item_key, take, Some(positive), None).await?;
        Ok(())
    }

    /// Forgets `key`'s count in the current window (a successful sign-in clears the
    /// account's failures).
    pub async fn clear_count(&self, key: &str, window_seconds: i64, now: i64) -> Result<(), StoreError> {
        let (item_key, _) = counter_item(key, window_seconds, now);
        Ok(self.delete(item_key, None).await??)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_aligned_and_reset_at_their_end() {
        let (a, end_a) = window_key("k", 60, 120);
        let (b, end_b) = window_key("k", 60, 179);
        let (c, _) = window_key("k", 60, 180);
        assert_eq!(a, b);
        assert_ne!(b, c);
        assert_eq!((end_a, end_b), (180, 180));
    }
}
