//! Lists: `limit` and `cursor` checked, filters checked, and the `{data, next_cursor}` body.

use herald_shared::store::Cursor;

use crate::error::ApiError;

/// The most items one page may hold.
pub const MAX_LIMIT: usize = 250;
/// Items in a page when the request names no `limit`.
pub const DEFAULT_LIMIT: usize = 50;
/// The longest cursor this API hands out or takes back.
pub const MAX_CURSOR_LEN: usize = 512;

/// `limit` and `cursor` of a list.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct Page {
    /// 1 to 250; 50 by default.
    #[param(minimum = 1, maximum = 250)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[param(value_type = Option<crate::schemas::Cursor>)]
    pub cursor: Option<String>,
}

/// Checks `limit` and decodes `cursor`.
pub fn page(
    limit: Option<usize>,
    cursor: Option<&str>,
) -> Result<(usize, Option<Cursor>), ApiError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::field("limit", "must be between 1 and 250"));
    }
    let cursor = match cursor.filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => Some(
            Cursor::decode(c)
                .filter(|_| c.len() <= MAX_CURSOR_LEN)
                .ok_or_else(|| ApiError::field("cursor", "is not a cursor this API returned"))?,
        ),
    };
    Ok((limit, cursor))
}

/// Checks an optional id or type given as a filter: a token of at most 128 characters.
pub fn filter_token(field: &str, value: Option<String>) -> Result<Option<String>, ApiError> {
    match value.filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => {
            herald_shared::model::check_token(field, &v, 128)?;
            Ok(Some(v))
        }
    }
}

/// `{"data": [...], "next_cursor": ...}`.
pub fn list<T: serde::Serialize>(
    data: Vec<T>,
    next: Option<Cursor>,
) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"data": data, "next_cursor": next.map(|c| c.encode())}))
}
