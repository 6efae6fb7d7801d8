//! The routes every shop resource is served by: a list in modification order with
//! `updated_after` and `meta.links.next` page links, one record by id, POST creates and PATCH
//! changes, every answer in a `data` envelope. What differs per resource (its filters, how it
//! is shown, how a body changes it) is a [`Resource`] hook in the resource's own file;
//! customers and suppliers, which differ only in their fields, are [`Plain`] resources.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::{DEFAULT_LIMIT, MAX_LIMIT, ShopData, ShopError, ShopResult, ShopState, created, ok};
use crate::server::{JsonList, ListQuery, list_answer, query_get, query_pairs};
use crate::table::{Page, Record, Since, Table, parse_time};

/// A list page: the records as served, whether more follow, and the key a `page_drift` fault
/// changes.
pub(super) type Listed = (JsonList, bool, Option<u64>);

/// A record type the shop serves on the generic routes.
pub(super) trait Resource: Record + Serialize + Send + Sync + 'static {
    /// Singular, as messages name it (`customer`).
    const NAME: &'static str;
    /// Where the list is (`/api/v2/customers`).
    const PATH: &'static str;

    fn table(data: &mut ShopData) -> &mut Table<Self>;

    /// The page of `table` a list request asks for.
    fn page(list: &ListQuery, table: &Table<Self>) -> Listed;

    /// How one record is shown on its own, given the request's query.
    fn shown(&self, _pairs: &[(String, String)]) -> Value {
        serde_json::to_value(self).expect("records serialize")
    }

    /// Creates a record from a POST.
    fn create(state: &ShopState, req: &Write) -> Result<Self, ShopError>;

    /// Changes record `id` (as the path gives it) from a PATCH.
    fn change(state: &ShopState, id: &str, req: &Write) -> Result<Self, ShopError>;
}

/// A POST or PATCH: the pairs of its query and its body.
pub(super) struct Write {
    pub pairs: Vec<(String, String)>,
    pub body: Bytes,
}

impl Write {
    fn new(query: Option<String>, body: Bytes) -> Write {
        Write {
            pairs: query_pairs(query.as_deref()),
            body,
        }
    }

    /// The body, which must be a JSON object.
    pub fn object(&self) -> Result<Map<String, Value>, ShopError> {
        body_object(&self.body)
    }

    /// Whether `ignore_nonexistent_fields` asks to drop unknown fields.
    pub fn ignore_unknown(&self) -> bool {
        ignore_unknown(&self.pairs)
    }

    /// The body read into `T` (see [`parse_input`]).
    pub fn input<T: DeserializeOwned>(&self, fields: &[&str], what: &str) -> Result<T, ShopError> {
        parse_input(self.object()?, self.ignore_unknown(), fields, what)
    }
}

/// A resource whose body is a plain set of fields (customers, suppliers): unknown fields
/// refused unless `ignore_nonexistent_fields`, the list filtered on the field that is unique.
pub(super) trait Plain: Record + Serialize + Send + Sync + 'static {
    const NAME: &'static str;
    const PATH: &'static str;
    /// Fields a body may carry; `ignore_nonexistent_fields` drops the others.
    const FIELDS: &'static [&'static str];
    /// The query parameter that filters the list on the unique field.
    const FILTER: &'static str;

    /// Fields of a POST or PATCH.
    type Input: DeserializeOwned;

    /// A value given in [`Plain::FILTER`], in the form [`Record::unique`] gives.
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

impl<R: Plain> Resource for R {
    const NAME: &'static str = <R as Plain>::NAME;
    const PATH: &'static str = <R as Plain>::PATH;

    fn table(data: &mut ShopData) -> &mut Table<Self> {
        <R as Plain>::table(data)
    }

    fn page(list: &ListQuery, table: &Table<Self>) -> Listed {
        let wanted = list.get(R::FILTER).map(R::lookup_form);
        let page = list.page(table, |r| {
            wanted.as_ref().is_none_or(|w| r.unique().contains(w))
        });
        finish_page(page, |r, list| list.push(r))
    }

    fn create(state: &ShopState, req: &Write) -> Result<Self, ShopError> {
        state.save::<R>(None, req.input(R::FIELDS, <R as Plain>::NAME)?)
    }

    fn change(state: &ShopState, id: &str, req: &Write) -> Result<Self, ShopError> {
        let key = parse_id(id, <R as Plain>::NAME)?;
        state.save::<R>(Some(key), req.input(R::FIELDS, <R as Plain>::NAME)?)
    }
}

impl ShopState {
    /// Creates (`key` is `None`) or changes a plain record with the fields given, stamped now.
    pub(super) fn save<R: Plain>(&self, key: Option<u64>, input: R::Input) -> Result<R, ShopError> {
        let now = self.core.now();
        R::save(&mut self.data.lock().unwrap(), key, input, now)
    }
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
    let mut data = state.data.lock().unwrap();
    let table = R::table(&mut data);
    let (items, has_more, first) = R::page(&list, table);
    state.core.drift(table, first);
    Ok(list_body(&state, R::PATH, &list, items, has_more))
}

async fn read<R: Resource>(
    State(state): State<Arc<ShopState>>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ShopResult {
    let pairs = query_pairs(q.as_deref());
    let key = parse_id(&id, R::NAME)?;
    let mut data = state.data.lock().unwrap();
    let r = R::table(&mut data)
        .get(key)
        .ok_or_else(|| ShopError::not_found(R::NAME, &id))?;
    ok(r.shown(&pairs))
}

async fn create<R: Resource>(
    State(state): State<Arc<ShopState>>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> ShopResult {
    let r = R::create(&state, &Write::new(q, body))?;
    created(r)
}

async fn change<R: Resource>(
    State(state): State<Arc<ShopState>>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> ShopResult {
    let r = R::change(&state, &id, &Write::new(q, body))?;
    ok(r)
}

/// A control route, `POST {path}` with `{id}` in it: a merchant's change `E` to one record,
/// made by `edit` and answered like a PATCH.
pub(super) fn edit_route<E, R>(
    path: &str,
    edit: fn(&ShopState, &str, E) -> Result<R, ShopError>,
) -> Router<Arc<ShopState>>
where
    E: DeserializeOwned + Send + 'static,
    R: Serialize + 'static,
{
    Router::new().route(
        path,
        post(
            move |State(state): State<Arc<ShopState>>,
                  Path(id): Path<String>,
                  Json(e): Json<E>| async move { ok(edit(&state, &id, e)?) },
        ),
    )
}

// ---------------------------------------------------------------- lists and bodies

/// Reads a list request: `limit`, `page` and `updated_after`.
pub(super) fn list_query(state: &ShopState, query: Option<&str>) -> Result<ListQuery, ShopError> {
    let pairs = query_pairs(query);
    let number = |key: &str, default: usize| -> Result<usize, ShopError> {
        match query_get(&pairs, key) {
            None => Ok(default),
            Some(v) => v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                ShopError::validation(format!("`{key}` must be a positive integer"))
            }),
        }
    };
    let mut limit = number("limit", DEFAULT_LIMIT)?;
    if limit > MAX_LIMIT {
        if !state.clamp_limit {
            return Err(ShopError::validation(format!(
                "`limit` must be at most {MAX_LIMIT}"
            )));
        }
        limit = MAX_LIMIT;
    }
    let page = number("page", 1)?;
    let since = match query_get(&pairs, "updated_after") {
        None => Since::All,
        Some(v) => parse_time(v).map(Since::After).ok_or_else(|| {
            ShopError::validation("`updated_after` must be an RFC 3339 timestamp")
        })?,
    };
    Ok(ListQuery {
        pairs,
        offset: (page - 1) * limit,
        limit,
        since,
    })
}

pub(super) fn page_url(
    state: &ShopState,
    path: &str,
    pairs: &[(String, String)],
    page: usize,
) -> String {
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs.iter().filter(|(k, _)| k != "page") {
        ser.append_pair(k, v);
    }
    ser.append_pair("page", &page.to_string());
    format!("{}{path}?{}", state.core.base_url, ser.finish())
}

pub(super) fn list_body(
    state: &ShopState,
    path: &str,
    list: &ListQuery,
    items: JsonList,
    has_more: bool,
) -> Response {
    let page = list.offset / list.limit + 1;
    let mut links = Map::new();
    links.insert(
        "current".into(),
        page_url(state, path, &list.pairs, page).into(),
    );
    if has_more {
        links.insert(
            "next".into(),
            page_url(state, path, &list.pairs, page + 1).into(),
        );
    }
    let mut tail = br#","meta":"#.to_vec();
    serde_json::to_writer(&mut tail, &json!({ "links": links })).expect("links serialize");
    tail.push(b'}');
    list_answer(r#"{"data":"#, items, &tail)
}

/// Renders a page and notes the key a `page_drift` fault would change.
pub(super) fn finish_page<T: Record>(
    page: Page<'_, T>,
    render: impl Fn(&T, &mut JsonList),
) -> (JsonList, bool, Option<u64>) {
    let mut items = JsonList::default();
    for (_, r) in &page.rows {
        render(r, &mut items);
    }
    (items, page.has_more, page.drift_key())
}

pub(super) fn parse_id(id: &str, what: &str) -> Result<u64, ShopError> {
    id.parse().map_err(|_| ShopError::not_found(what, id))
}

pub(super) fn body_object(body: &Bytes) -> Result<Map<String, Value>, ShopError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ShopError::validation("the body must be a JSON object")),
        Err(e) => Err(ShopError::validation(format!("invalid JSON: {e}"))),
    }
}

pub(super) fn ignore_unknown(pairs: &[(String, String)]) -> bool {
    query_get(pairs, "ignore_nonexistent_fields").is_some_and(|v| v == "1" || v == "true")
}

/// Reads a POST or PATCH body of a `what` into its input type: with `ignore`, fields not in
/// `fields` are dropped first; the read-only `id` and `updated_at` a client may send back as it
/// read them always are.
pub(super) fn parse_input<T: DeserializeOwned>(
    mut body: Map<String, Value>,
    ignore: bool,
    fields: &[&str],
    what: &str,
) -> Result<T, ShopError> {
    if ignore {
        body.retain(|k, _| fields.contains(&k.as_str()));
    }
    body.remove("id");
    body.remove("updated_at");
    serde_json::from_value(Value::Object(body))
        .map_err(|e| ShopError::validation(format!("invalid {what}: {e}")))
}

/// Keeps only the requested `fields` (always keeping `id`).
pub(super) fn project(mut v: Value, fields: Option<&str>) -> Value {
    if let (Some(fields), Value::Object(map)) = (fields, &mut v) {
        let keep: Vec<&str> = fields.split(',').map(str::trim).collect();
        map.retain(|k, _| k == "id" || keep.contains(&k.as_str()));
    }
    v
}
