//! The list and read routes the ERP's resources share: a list in modification order with
//! `limitPerPage`, `offset`, `updatedAfter` and `changedSince`, answered in the
//! `status`/`statusMessage`/`data` envelope without totals, and one record by id. A resource
//! says how it filters, shows and drifts its rows as [`Listed`] hooks in its own file.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{DEFAULT_LIMIT, ErpData, ErpError, ErpResult, ErpState, MAX_LIMIT, bad, ok, ok_list};
use crate::server::{JsonList, ListQuery, query_get, query_pairs};
use crate::table::{Record, Since, Table, parse_time};

/// How a list moves a row to its end under a `page_drift` fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Drift {
    /// The list never drifts.
    Never,
    /// The first row of a page that more pages follow.
    WhenMore,
    /// The first row of every page, the last one too.
    Always,
}

/// The two accessors of [`Listed`] for the table in field `$field` of the ERP's data.
macro_rules! table {
    ($field:ident) => {
        fn table(data: &ErpData) -> &Table<Self> {
            &data.$field
        }

        fn table_mut(data: &mut ErpData) -> &mut Table<Self> {
            &mut data.$field
        }
    };
}
pub(super) use table;

/// A record type the ERP lists (and may read by id) through the shared routes.
pub(super) trait Listed: Record + Serialize + Send + Sync + 'static {
    const DRIFT: Drift;

    fn table(data: &ErpData) -> &Table<Self>;
    fn table_mut(data: &mut ErpData) -> &mut Table<Self>;

    /// Which rows a list request keeps.
    fn keep(list: &ListQuery) -> impl Fn(&Self) -> bool;

    /// A list request that names one row by its unique value, answered from the index:
    /// `Some` with that row if any (only on the first page), never drifting.
    fn exact<'t>(_list: &ListQuery, _table: &'t Table<Self>) -> Option<Option<&'t Self>> {
        None
    }

    /// How a row is shown, in a list and read alone.
    fn shown<'a>(&'a self, _state: &'a ErpState, _data: &'a ErpData) -> impl Serialize + 'a {
        self
    }
}

/// A listed record that is also read by its numeric id.
pub(super) trait Read: Listed {
    /// The answer to reading a row that is not there.
    fn missing(id: u64) -> ErpError;
}

pub(super) async fn list<R: Listed>(
    State(state): State<Arc<ErpState>>,
    RawQuery(q): RawQuery,
) -> ErpResult {
    let list = list_query(q.as_deref())?;
    let mut data = state.data.lock().unwrap();
    let table = R::table(&data);
    let mut items = JsonList::default();
    if let Some(row) = R::exact(&list, table) {
        if let Some(r) = row.filter(|_| list.offset == 0) {
            items.push(&r.shown(&state, &data));
        }
        return ok_list(items);
    }
    let page = list.page(table, R::keep(&list));
    let first = match R::DRIFT {
        Drift::Never => None,
        Drift::WhenMore => page.drift_key(),
        Drift::Always => page.rows.first().map(|(k, _)| *k),
    };
    for (_, r) in &page.rows {
        items.push(&r.shown(&state, &data));
    }
    state.core.drift(R::table_mut(&mut data), first);
    ok_list(items)
}

/// One row by its numeric id.
pub(super) async fn read<R: Read>(
    State(state): State<Arc<ErpState>>,
    Path(id): Path<u64>,
) -> ErpResult {
    let data = state.data.lock().unwrap();
    let r = R::table(&data).get(id).ok_or_else(|| R::missing(id))?;
    ok(r.shown(&state, &data))
}

/// Reads a list request: `limitPerPage`, `offset`, `updatedAfter` and `changedSince`.
pub(super) fn list_query(query: Option<&str>) -> Result<ListQuery, ErpError> {
    let pairs = query_pairs(query);
    let number = |key: &str, default: usize| -> Result<usize, ErpError> {
        match query_get(&pairs, key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| bad(format!("`{key}` trebuie sa fie un numar"))),
        }
    };
    let limit = number("limitPerPage", DEFAULT_LIMIT)?;
    if limit == 0 || limit > MAX_LIMIT {
        return Err(bad(format!(
            "`limitPerPage` trebuie sa fie intre 1 si {MAX_LIMIT}"
        )));
    }
    let offset = number("offset", 0)?;
    let time = |key: &str| -> Result<Option<DateTime<Utc>>, ErpError> {
        query_get(&pairs, key)
            .map(|v| parse_time(v).ok_or_else(|| bad(format!("`{key}` nu este o data RFC 3339"))))
            .transpose()
    };
    let since = match (time("updatedAfter")?, time("changedSince")?) {
        (Some(t), _) => Since::After(t),
        (None, Some(t)) => Since::AtOrAfter(t),
        (None, None) => Since::All,
    };
    Ok(ListQuery {
        pairs,
        offset,
        limit,
        since,
    })
}
