//! Lists: one page of items and the cursor to the next, and the query that asks for one.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;

/// One page of a list; pass `next_cursor` back as `?cursor=` for the next (`null`: the end).
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    pub fn new(items: Vec<T>, next_cursor: Option<String>) -> Self {
        Page { items, next_cursor }
    }
}

pub const DEFAULT_PAGE_SIZE: i32 = 20;
pub const MAX_PAGE_SIZE: i32 = 100;

/// `?limit=&cursor=`. `limit` is read as text so a bad one is a 422 naming `limit`, like
/// every other field, rather than the query extractor's own message.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1–100 (default 20).
    #[param(value_type = Option<i32>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
    /// `next_cursor` from the previous page.
    #[param(min_length = 1)]
    pub cursor: Option<String>,
}

impl PageQuery {
    pub fn limit(&self) -> Result<i32, ApiError> {
        page_limit(self.limit.as_deref())
    }
}

pub fn page_limit(raw: Option<&str>) -> Result<i32, ApiError> {
    match raw {
        None => Ok(DEFAULT_PAGE_SIZE),
        Some(raw) => raw.parse::<i32>().ok().filter(|n| (1..=MAX_PAGE_SIZE).contains(n)).ok_or_else(|| {
            ApiError::invalid_field("limit", format!("must be a whole number from 1 to {MAX_PAGE_SIZE}"))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_whole_numbers_from_one_to_the_maximum() {
        assert_eq!(page_limit(None).ok(), Some(DEFAULT_PAGE_SIZE));
        assert_eq!(page_limit(Some("1")).ok(), Some(1));
        assert_eq!(page_limit(Some("100")).ok(), Some(MAX_PAGE_SIZE));
        for bad in ["0", "101", "-1", "2.5", "", "ten"] {
            let error = page_limit(Some(bad)).err().map(|e| e.details["field"].clone());
            assert_eq!(error, Some(serde_json::json!("limit")), "{bad:?}");
        }
    }
}
