//! Fixed-window counters shared by every Lambda instance: sign-in failures per account and
//! per source address, and request rates on the auth endpoints. One item per key and window,
//! expired by TTL.

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

use crate::keys::{EXPIRES_AT, PK, SK, s};
use crate::{Store, StoreError};
use std::collections::HashMap;

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
fn counter_item(key: &str, window_seconds: i64, now: i64) -> (HashMap<String, AttributeValue>, i64) {
    let (pk, window_end) = window_key(key, window_seconds, now);
    (HashMap::from([(PK.to_owned(), s(pk)), (SK.to_owned(), s("COUNT"))]), window_end)
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
        let output = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(item_key))
            .update_expression("ADD hits :one SET expires_at = :expires")
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .expression_attribute_values(":expires", AttributeValue::N(window_end.to_string()))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(|e| StoreError::dynamo("UpdateItem", e))?;
        let count = output
            .attributes
            .and_then(|a| a.get("hits").and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok()))
            .unwrap_or(1);
        Ok(WindowCount { count, resets_in: window_end - now })
    }

    /// `key`'s count in the current window, without adding to it.
    pub async fn count_in_window(
        &self,
        key: &str,
        window_seconds: i64,
        now: i64,
    ) -> Result<WindowCount, StoreError> {
        let (item_key, window_end) = counter_item(key, window_seconds, now);
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(item_key))
            .projection_expression(format!("hits, {EXPIRES_AT}"))
            .send()
            .await
            .map_err(|e| StoreError::dynamo("GetItem", e))?
            .item;
        let count = item
            .and_then(|i| i.get("hits").and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok()))
            .unwrap_or(0);
        Ok(WindowCount { count, resets_in: window_end - now })
    }

    /// Forgets `key`'s count in the current window (a successful sign-in clears the
    /// account's failures).
    pub async fn clear_count(&self, key: &str, window_seconds: i64, now: i64) -> Result<(), StoreError> {
        let (item_key, _) = counter_item(key, window_seconds, now);
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(item_key))
            .send()
            .await
            .map_err(|e| StoreError::dynamo("DeleteItem", e))?;
        Ok(())
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
