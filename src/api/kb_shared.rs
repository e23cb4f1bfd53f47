//! What the knowledge-base routes (files, vector stores, admin) share: running store work off
//! the async runtime, query strings refused as OpenAI errors, OpenAI's paged-list shape, and
//! the checks on metadata and attributes.
//!
//! Must not depend on any one of those routes.

use axum::extract::rejection::QueryRejection;
use axum::extract::Query;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::ApiError;
use crate::knowledge::ListWindow;

/// SQLite, parsing and embedding block: they run on the blocking pool so the runtime keeps
/// serving other requests meanwhile.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
}

/// A query string that does not parse is the caller's error, in OpenAI's shape like any other
/// (axum's own rejection is plain text).
pub fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t).map_err(|e| ApiError::InvalidRequest {
        message: format!("invalid query string: {}", e.body_text()),
        param: None,
        code: None,
    })
}

/// The paging parameters of OpenAI's list routes, and the filters some of them take.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    pub limit: Option<usize>,
    pub order: Option<String>,
    pub after: Option<String>,
    pub before: Option<String>,
    /// Vector-store files: a status.
    pub filter: Option<String>,
    /// Files: a purpose.
    pub purpose: Option<String>,
}

impl ListQuery {
    /// The window asked for; newest first unless `order=asc`.
    pub fn window(&self, default_limit: usize, max_limit: usize) -> Result<ListWindow, ApiError> {
        let limit = self.limit.unwrap_or(default_limit);
        if limit == 0 || limit > max_limit {
            return Err(ApiError::invalid(
                format!("`limit` must be between 1 and {max_limit}, got {limit}"),
                "limit",
            ));
        }
        let descending = match self.order.as_deref() {
            None | Some("desc") => true,
            Some("asc") => false,
            Some(other) => {
                return Err(ApiError::invalid(
                    format!("`order` must be asc or desc, got `{other}`"),
                    "order",
                ))
            }
        };
        let cursor = |c: &Option<String>| c.clone().filter(|s| !s.is_empty());
        Ok(ListWindow {
            limit,
            after: cursor(&self.after),
            before: cursor(&self.before),
            descending,
        })
    }
}

/// OpenAI's list object.
#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub object: &'static str,
    pub data: Vec<T>,
    pub first_id: Option<String>,
    pub last_id: Option<String>,
    pub has_more: bool,
}

impl<T> Page<T> {
    pub fn new(data: Vec<T>, has_more: bool, id: impl Fn(&T) -> &str) -> Self {
        Self {
            first_id: data.first().map(|t| id(t).to_string()),
            last_id: data.last().map(|t| id(t).to_string()),
            object: "list",
            data,
            has_more,
        }
    }
}

/// A window over a list already in memory and in its listing order; also whether more items
/// follow the page.
pub fn window_slice<T>(
    items: Vec<T>,
    window: &ListWindow,
    id: impl Fn(&T) -> &str,
) -> Result<(Vec<T>, bool), ApiError> {
    let position = |cursor: &str, param: &str| {
        items.iter().position(|t| id(t) == cursor).ok_or_else(|| {
            ApiError::invalid(
                format!("`{param}`: `{cursor}` is not an item of this list"),
                param,
            )
        })
    };
    let start = match &window.after {
        Some(a) => position(a, "after")? + 1,
        None => 0,
    };
    let end = match &window.before {
        Some(b) => position(b, "before")?,
        None => items.len(),
    };
    let available = end.saturating_sub(start);
    let page: Vec<T> = items
        .into_iter()
        .skip(start)
        .take(available.min(window.limit))
        .collect();
    Ok((page, available > window.limit))
}

/// OpenAI's limits on `metadata`: at most 16 pairs, keys up to 64 characters, string values up
/// to 512.
pub fn check_metadata(metadata: &Map<String, Value>) -> Result<(), ApiError> {
    check_pairs(metadata, "metadata", |v| v.is_string())
}

/// OpenAI's limits on `attributes`: as metadata, but values may also be numbers or booleans.
pub fn check_attributes(attributes: &Map<String, Value>) -> Result<(), ApiError> {
    check_pairs(attributes, "attributes", |v| {
        v.is_string() || v.is_number() || v.is_boolean()
    })
}

fn check_pairs(
    pairs: &Map<String, Value>,
    param: &str,
    allowed: impl Fn(&Value) -> bool,
) -> Result<(), ApiError> {
    if pairs.len() > 16 {
        return Err(ApiError::invalid(
            format!("`{param}` has {} keys; at most 16 are allowed", pairs.len()),
            param,
        ));
    }
    for (k, v) in pairs {
        if k.is_empty() || k.chars().count() > 64 {
            return Err(ApiError::invalid(
                format!("`{param}` keys must have 1 to 64 characters; `{k}` does not"),
                param,
            ));
        }
        if !allowed(v) {
            return Err(ApiError::invalid(
                format!("`{param}.{k}` has a value of a type that is not allowed here"),
                param,
            ));
        }
        if v.as_str().is_some_and(|s| s.chars().count() > 512) {
            return Err(ApiError::invalid(
                format!("`{param}.{k}` is longer than 512 characters"),
                param,
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(limit: usize, after: Option<&str>, before: Option<&str>) -> ListWindow {
        ListWindow {
            limit,
            after: after.map(str::to_string),
            before: before.map(str::to_string),
            descending: true,
        }
    }

    fn ids(items: Vec<&'static str>, w: &ListWindow) -> (Vec<&'static str>, bool) {
        match window_slice(items, w, |s| *s) {
            Ok(page) => page,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn windows_page_through_a_list_between_cursors() {
        let all = vec!["a", "b", "c", "d"];
        assert_eq!(
            ids(all.clone(), &window(2, None, None)),
            (vec!["a", "b"], true)
        );
        assert_eq!(
            ids(all.clone(), &window(2, Some("b"), None)),
            (vec!["c", "d"], false)
        );
        assert_eq!(
            ids(all.clone(), &window(5, Some("a"), Some("d"))),
            (vec!["b", "c"], false)
        );
        assert!(window_slice(all, &window(2, Some("zz"), None), |s| *s).is_err());
    }
}
