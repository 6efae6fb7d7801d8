//! The list, read and update routes WooCommerce's products and orders share: `page` and
//! `per_page` paging with `X-WP-Total`, `X-WP-TotalPages` and a `Link` header, `orderby`,
//! `order` and `modified_after`, one record by id, and PUT, PATCH or POST of a body that
//! changes it (nothing changes when it is refused). What a resource filters on and how a body
//! changes it are [`Resource`] hooks in its own file.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use super::{API_PATH, MAX_PER_PAGE, WooData, WooError, WooResult, WooState};
use crate::server::{ListQuery, query_get, query_pairs};
use crate::table::{Record, Since, Table};

const DEFAULT_PER_PAGE: usize = 10;

/// A record type served on the shared routes.
pub(super) trait Resource: Record + Serialize + Send + Sync + 'static {
    /// Singular (`product`, `order`): it picks the `…_invalid_id` error code.
    const NAME: &'static str;
    /// Below [`API_PATH`] (`/products`).
    const PATH: &'static str;

    fn table(data: &mut WooData) -> &mut Table<Self>;

    /// Which rows a list request keeps; a filter it cannot take is refused here.
    fn keep(list: &WooList) -> Result<impl Fn(&Self) -> bool, WooError>;

    /// Changes row `id` with a request body.
    fn change(state: &WooState, id: u64, body: &Map<String, Value>) -> Result<Self, WooError>;
}

/// The list route and GET, PUT, PATCH and POST of one record.
pub(super) fn routes<R: Resource>() -> Router<Arc<WooState>> {
    Router::new()
        .route(&format!("{API_PATH}{}", R::PATH), get(list::<R>))
        .route(
            &format!("{API_PATH}{}/{{id}}", R::PATH),
            get(read::<R>)
                .put(update::<R>)
                .patch(update::<R>)
                .post(update::<R>),
        )
}

async fn list<R: Resource>(State(state): State<Arc<WooState>>, RawQuery(q): RawQuery) -> WooResult {
    let list = WooList::read(q.as_deref())?;
    let keep = R::keep(&list)?;
    let mut data = state.data.lock().unwrap();
    let table = R::table(&mut data);
    let (rows, total, drift) = list.select(table, keep);
    state.core.drift(table, drift);
    let items = rows.iter().map(to_json).collect();
    let path = format!("{API_PATH}{}", R::PATH);
    Ok(list.respond(&state.core.base_url, &path, items, total))
}

async fn read<R: Resource>(
    State(state): State<Arc<WooState>>,
    Path(id): Path<String>,
) -> WooResult {
    let id = parse_id(&id, R::NAME, 404)?;
    let mut data = state.data.lock().unwrap();
    let r = R::table(&mut data)
        .get(id)
        .ok_or_else(|| WooError::invalid_id(R::NAME, 404))?;
    Ok(Json(to_json(r)).into_response())
}

async fn update<R: Resource>(
    State(state): State<Arc<WooState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> WooResult {
    let id = parse_id(&id, R::NAME, 400)?;
    let body = body_object(&body)?;
    let r = R::change(&state, id, &body)?;
    Ok(Json(to_json(&r)).into_response())
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum OrderBy {
    Date,
    Id,
    Modified,
}

/// A list request: paging, order and `modified_after`.
pub(super) struct WooList {
    query: ListQuery,
    page: usize,
    orderby: OrderBy,
    desc: bool,
}

impl WooList {
    pub fn read(query: Option<&str>) -> Result<WooList, WooError> {
        let pairs = query_pairs(query);
        let number = |key: &str, default: usize, max: usize| -> Result<usize, WooError> {
            match query_get(&pairs, key) {
                None => Ok(default),
                Some(v) => v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=max).contains(n))
                    .ok_or_else(|| {
                        if max == usize::MAX {
                            WooError::param(
                                key,
                                format!("{key} must be greater than or equal to 1"),
                            )
                        } else {
                            WooError::param(
                                key,
                                format!(
                                    "{key} must be between 1 (inclusive) and {max} (inclusive)"
                                ),
                            )
                        }
                    }),
            }
        };
        let per_page = number("per_page", DEFAULT_PER_PAGE, MAX_PER_PAGE)?;
        let page = number("page", 1, usize::MAX)?;
        let orderby = match query_get(&pairs, "orderby").unwrap_or("date") {
            "date" => OrderBy::Date,
            "id" => OrderBy::Id,
            "modified" => OrderBy::Modified,
            _ => {
                return Err(WooError::param(
                    "orderby",
                    "orderby is not one of date, id and modified.",
                ));
            }
        };
        let desc = match query_get(&pairs, "order").unwrap_or("desc") {
            "desc" => true,
            "asc" => false,
            _ => {
                return Err(WooError::param(
                    "order",
                    "order is not one of asc and desc.",
                ));
            }
        };
        let since = match query_get(&pairs, "modified_after") {
            None | Some("") => Since::All,
            Some(v) => Since::After(
                parse_wp_date(v)
                    .ok_or_else(|| WooError::param("modified_after", "Invalid date."))?,
            ),
        };
        Ok(WooList {
            query: ListQuery {
                pairs,
                offset: (page - 1) * per_page,
                limit: per_page,
                since,
            },
            page,
            orderby,
            desc,
        })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.query.get(key)
    }

    fn per_page(&self) -> usize {
        self.query.limit
    }

    fn in_time(&self, t: DateTime<Utc>) -> bool {
        match self.query.since {
            Since::All => true,
            Since::After(s) => t > s,
            Since::AtOrAfter(s) => t >= s,
        }
    }

    /// The requested page of `table` among the rows `keep` accepts, the number of those
    /// rows, and the key a `page_drift` fault would change.
    pub fn select<T: Record + Clone>(
        &self,
        table: &Table<T>,
        keep: impl Fn(&T) -> bool,
    ) -> (Vec<T>, usize, Option<u64>) {
        let total = table
            .iter()
            .filter(|(_, r)| self.in_time(r.updated_at()) && keep(r))
            .count();
        if self.orderby == OrderBy::Modified && !self.desc {
            // The table's own order: pages resume where the last one ended.
            let page = self.query.page(table, &keep);
            let drift = page.drift_key();
            let rows = page.rows.iter().map(|(_, r)| (*r).clone()).collect();
            return (rows, total, drift);
        }
        let mut rows: Vec<(u64, &T)> = table
            .iter()
            .filter(|(_, r)| self.in_time(r.updated_at()) && keep(r))
            .collect();
        if self.orderby == OrderBy::Modified {
            rows.sort_by_key(|(k, r)| (r.updated_at(), *k));
        }
        // Ids grow with creation, so `date` and `id` order alike.
        if self.desc {
            rows.reverse();
        }
        let page: Vec<(u64, &T)> = rows
            .into_iter()
            .skip(self.query.offset)
            .take(self.query.limit)
            .collect();
        let drift = page
            .first()
            .map(|(k, _)| *k)
            .filter(|_| self.query.offset + self.query.limit < total);
        let rows = page.into_iter().map(|(_, r)| r.clone()).collect();
        (rows, total, drift)
    }

    /// The page as a JSON array with `X-WP-Total`, `X-WP-TotalPages` and `Link`.
    pub fn respond(&self, base_url: &str, path: &str, items: Vec<Value>, total: usize) -> Response {
        let pages = total.div_ceil(self.per_page());
        let mut headers = HeaderMap::new();
        headers.insert("X-WP-Total", HeaderValue::from(total));
        headers.insert("X-WP-TotalPages", HeaderValue::from(pages));
        let link = |page: usize, rel: &str| {
            let mut ser = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in self.query.pairs.iter().filter(|(k, _)| k != "page") {
                ser.append_pair(k, v);
            }
            ser.append_pair("page", &page.to_string());
            format!("<{base_url}{path}?{}>; rel=\"{rel}\"", ser.finish())
        };
        let mut links = Vec::new();
        if self.page > 1 && self.page <= pages + 1 {
            links.push(link(self.page - 1, "prev"));
        }
        if self.page < pages {
            links.push(link(self.page + 1, "next"));
        }
        if !links.is_empty()
            && let Ok(v) = HeaderValue::from_str(&links.join(", "))
        {
            headers.insert("Link", v);
        }
        (headers, Json(Value::Array(items))).into_response()
    }
}

/// ISO 8601 as WordPress takes it: with a zone, or without one (the site's, UTC here).
fn parse_wp_date(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S")
                .ok()
                .map(|t| t.and_utc())
        })
}

pub(super) fn to_json(v: &impl Serialize) -> Value {
    serde_json::to_value(v).expect("records serialize")
}

pub(super) fn parse_id(id: &str, what: &str, status: u16) -> Result<u64, WooError> {
    id.parse().map_err(|_| WooError::invalid_id(what, status))
}

pub(super) fn body_object(body: &Bytes) -> Result<Map<String, Value>, WooError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(WooError::new(
            400,
            "rest_invalid_json",
            "Invalid JSON body passed.",
        )),
    }
}
