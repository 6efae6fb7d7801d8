//! The routes of the shop's customers and suppliers, which it serves alike: a list in
//! modification order with `updated_after`, page links and a filter on the field that is
//! unique; one record by id; POST creates and PATCH changes (unknown fields refused unless
//! `ignore_nonexistent_fields`), every answer in a `data` envelope.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{
    ShopData, ShopError, ShopResult, ShopState, body_object, created, finish_page, ignore_unknown,
    list_body, list_query, ok, parse_id, parse_input,
};
use crate::server::query_pairs;
use crate::table::{Record, Table};

/// A record type the shop serves this way.
pub(super) trait Resource: Record + Serialize + Send + Sync + 'static {
    /// Singular, as messages name it (`customer`).
    const NAME: &'static str;
    /// Where the list is (`/api/v2/customers`).
    const PATH: &'static str;
    /// Fields a body may carry; `ignore_nonexistent_fields` drops the others.
    const FIELDS: &'static [&'static str];
    /// The query parameter that filters the list on the unique field.
    const FILTER: &'static str;

    /// Fields of a POST or PATCH.
    type Input: DeserializeOwned;

    /// A value given in [`Resource::FILTER`], in the form [`Record::unique`] gives.
    fn lookup_form(value: &str) -> String;

    fn table(data: &mut ShopData) -> &mut Table<Self>;

    /// Creates (`key` is `None`) or changes a record with the fields given.
    fn save(
        data: &mut ShopData,
        key: Option<u64>,
        input: Self::Input,
        now: DateTime<Utc>,
    ) -> Result<Self, ShopError>;
}

/// The list and the record routes of `R`.
pub(super) fn routes<R: Resource>() -> Router<Arc<ShopState>> {
    Router::new()
        .route(R::PATH, get(list::<R>).post(create::<R>))
        .route(
            &format!("{}/{{id}}", R::PATH),
            get(read::<R>).patch(change::<R>),
        )
}

async fn list<R: Resource>(
    State(state): State<Arc<ShopState>>,
    RawQuery(q): RawQuery,
) -> ShopResult {
    let list = list_query(&state, q.as_deref())?;
    let wanted = list.get(R::FILTER).map(R::lookup_form);
    let mut data = state.data.lock().unwrap();
    let table = R::table(&mut data);
    let page = list.page(table, |r| {
        wanted.as_ref().is_none_or(|w| r.unique().contains(w))
    });
    let (items, has_more, first) = finish_page(page, |r| {
        serde_json::to_value(r).expect("records serialize")
    });
    state.core.drift(table, first);
    Ok(list_body(&state, R::PATH, &list, items, has_more))
}

async fn read<R: Resource>(
    State(state): State<Arc<ShopState>>,
    Path(id): Path<String>,
) -> ShopResult {
    let key = parse_id(&id, R::NAME)?;
    let mut data = state.data.lock().unwrap();
    let r = R::table(&mut data)
        .get(key)
        .ok_or_else(|| ShopError::not_found(R::NAME, &id))?;
    ok(r)
}

async fn create<R: Resource>(
    State(state): State<Arc<ShopState>>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> ShopResult {
    let r = save::<R>(&state, None, q, &body)?;
    created(r)
}

async fn change<R: Resource>(
    State(state): State<Arc<ShopState>>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> ShopResult {
    let key = parse_id(&id, R::NAME)?;
    let r = save::<R>(&state, Some(key), q, &body)?;
    ok(r)
}

/// Creates (`key` is `None`) or changes a record from a request's query and body.
fn save<R: Resource>(
    state: &ShopState,
    key: Option<u64>,
    query: Option<String>,
    body: &Bytes,
) -> Result<R, ShopError> {
    let pairs = query_pairs(query.as_deref());
    let input = parse_input(
        body_object(body)?,
        ignore_unknown(&pairs),
        R::FIELDS,
        R::NAME,
    )?;
    state.save::<R>(key, input)
}

impl ShopState {
    /// Creates (`key` is `None`) or changes a record with the fields given, stamped now.
    pub(super) fn save<R: Resource>(
        &self,
        key: Option<u64>,
        input: R::Input,
    ) -> Result<R, ShopError> {
        let now = self.core.now();
        R::save(&mut self.data.lock().unwrap(), key, input, now)
    }
}
