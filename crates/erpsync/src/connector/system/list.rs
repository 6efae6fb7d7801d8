//! Reading a listing page by page along its `paginate` section, with pages asked for ahead
//! when the listing has told its size, or by a task of its own ahead of the caller.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

use futures::{Stream, StreamExt};
use serde_json::Value;

use super::body::holds_records;
use super::execute::Response;
use super::{CallInput, HttpSystem, ListingReader, Page};
use crate::connector::Extracted;
use crate::connector::error::CallError;
use crate::connector::operation::Operation;
use crate::connector::paginate::{Next, PageSeen, Progress};
use crate::json::hash_value;
use crate::redact::redact;

impl HttpSystem {
    /// Lists an operation page by page, following its `paginate` section; empty pages are
    /// not yielded. After an error the stream ends.
    pub fn list<'a>(
        &'a self,
        op_name: &str,
        input: CallInput,
    ) -> impl Stream<Item = Result<Page, CallError>> + 'a {
        self.list_with(op_name, input, 1)
    }

    /// `list`, with up to `width` requests in flight once a `page` or `offset` listing has
    /// told its size (see `Paginate::learn_size`): the pages that follow are asked for while
    /// the first of them is awaited, each through the rate limiter, retries and breaker as
    /// any request. They are taken strictly in page order and only as far as the listing
    /// goes: each page still decides, as it would alone, whether and where the listing goes
    /// on (a short or empty page ends it, a repeated page is an error), and a page asked for
    /// ahead that the listing does not reach is dropped unread.
    pub fn list_with<'a>(
        &'a self,
        op_name: &str,
        input: CallInput,
        width: usize,
    ) -> impl Stream<Item = Result<Page, CallError>> + 'a {
        self.list_reading(op_name, input, width, None)
    }

    /// `list_with`, each page's records read by `reader` when it is given (`Page::read`).
    fn list_reading<'a>(
        &'a self,
        op_name: &str,
        input: CallInput,
        width: usize,
        reader: Option<Arc<ListingReader>>,
    ) -> impl Stream<Item = Result<Page, CallError>> + 'a {
        type Fetch<'f> = futures::future::BoxFuture<'f, Result<(Response, bool), CallError>>;
        struct State<'s> {
            next: Result<Option<Next>, CallError>,
            progress: Progress,
            number: u32,
            last_hash: Option<u64>,
            input: CallInput,
            /// Requests in flight, in page order, and the page each asks for.
            ahead: futures::stream::FuturesOrdered<Fetch<'s>>,
            ahead_of: std::collections::VecDeque<Next>,
        }
        let op_name = op_name.to_string();
        let width = width.max(1);
        let mut progress = Progress::default();
        let start = self.operation(&op_name).map(|op| {
            Some(Next::Query(
                op.paginate
                    .as_ref()
                    .map(|p| p.first(&mut progress))
                    .unwrap_or_default(),
            ))
        });
        let state = State {
            next: start,
            progress,
            number: 0,
            last_hash: None,
            input,
            ahead: futures::stream::FuturesOrdered::new(),
            ahead_of: std::collections::VecDeque::new(),
        };
        futures::stream::unfold(Some(state), move |state| {
            let (op_name, reader) = (op_name.clone(), reader.clone());
            async move {
                let mut st = state?;
                let target = match std::mem::replace(&mut st.next, Ok(None)) {
                    Err(e) => return Some((Some(Err(e)), None)),
                    Ok(None) => return None,
                    Ok(Some(t)) => t,
                };
                let op = match self.operation(&op_name) {
                    Ok(op) => op,
                    Err(e) => return Some((Some(Err(e)), None)),
                };
                if let Err(e) = self.ensure_resolved().await {
                    return Some((Some(Err(e)), None));
                }
                let pagination_error = |page: u32, message: String| CallError::Pagination {
                    system: self.name.clone(),
                    operation: op_name.clone(),
                    page,
                    message,
                };
                if st.number >= op.max_pages {
                    let e = pagination_error(
                        st.number,
                        format!(
                            "`max_pages` ({}) reached and the list goes on",
                            op.max_pages
                        ),
                    );
                    return Some((Some(Err(e)), None));
                }
                // Requests asked ahead are of use only while the listing goes where they
                // guessed.
                if st.ahead_of.front() != Some(&target) {
                    st.ahead = futures::stream::FuturesOrdered::new();
                    st.ahead_of.clear();
                }
                if width > 1
                    && let Some(p) = &op.paginate
                {
                    // This page and those after it, up to `max_pages`.
                    let room = (op.max_pages - st.number) as usize;
                    let wanted: Vec<Next> = std::iter::once(target.clone())
                        .chain(p.ahead(&st.progress, width - 1))
                        .take(width.min(room))
                        .collect();
                    if st.ahead_of.is_empty() && wanted.len() > 1 {
                        st.ahead_of.push_back(target.clone());
                        st.ahead.push_back(self.fetch(
                            &op_name,
                            op,
                            &st.input,
                            target.clone(),
                            reader.clone(),
                        ));
                    }
                    if !st.ahead_of.is_empty() {
                        for t in wanted.into_iter().skip(st.ahead_of.len()) {
                            st.ahead_of.push_back(t.clone());
                            st.ahead.push_back(self.fetch(
                                &op_name,
                                op,
                                &st.input,
                                t,
                                reader.clone(),
                            ));
                        }
                    }
                }
                let fetched = if st.ahead_of.pop_front().is_some() {
                    st.ahead
                        .next()
                        .await
                        .expect("a request for each page asked ahead")
                } else {
                    self.execute_reading(&op_name, op, &st.input, &target, reader.as_deref())
                        .await
                };
                let mut resp = match fetched {
                    Ok((resp, _)) => resp,
                    Err(e) => return Some((Some(Err(e)), None)),
                };
                st.number += 1;
                // A page without the member its records are read from is not an empty page
                // that ends the listing (every record after it would look missing): it is an
                // answer of another kind, an error served with a 2xx — unless the API is one
                // that leaves the member out when it has nothing to list.
                let holds = match holds_records(op, &resp.body) {
                    Ok(holds) => holds,
                    Err(why) => return Some((Some(Err(pagination_error(st.number, why))), None)),
                };
                // What the next page and the total are read from comes first: the records are
                // then moved out of the body rather than copied.
                let listed = match &op.records {
                    Some(p) if holds => p.count(&resp.body),
                    _ => 0,
                };
                let total = op
                    .total
                    .as_ref()
                    .and_then(|t| t.read(&resp.headers, &resp.body));
                let next = match &op.paginate {
                    None => Ok(None),
                    Some(p) => {
                        let seen = PageSeen {
                            url: &resp.url,
                            headers: &resp.headers,
                            body: &resp.body,
                            // A nested listing's page holds its outer list's elements.
                            records: listed,
                        };
                        if width > 1 {
                            p.learn_size(&mut st.progress, &seen, total);
                        }
                        p.next(&mut st.progress, &seen).map_err(|e| {
                            pagination_error(st.number, redact(&e.to_string()).into_owned())
                        })
                    }
                };
                let Extracted {
                    mut records,
                    parents,
                    listed: taken,
                } = match &op.records {
                    Some(p) if holds => p.take(&mut resp.body),
                    _ => Extracted::default(),
                };
                debug_assert_eq!(taken, listed, "a page's count and its records agree");
                // Read for a reader, the body's list holds a null for each record.
                let read = match resp.read.take() {
                    Some(read) => {
                        debug_assert_eq!(read.len(), records.len());
                        records = Vec::new();
                        read
                    }
                    None => Vec::new(),
                };
                let texts = std::mem::take(&mut resp.texts);
                if !records.is_empty() || !read.is_empty() {
                    let hash = if read.is_empty() {
                        hash_records(&records)
                    } else {
                        hash_read(&read)
                    };
                    if st.last_hash == Some(hash) {
                        let e = pagination_error(
                            st.number,
                            format!("page {} repeats page {}", st.number, st.number - 1),
                        );
                        return Some((Some(Err(e)), None));
                    }
                    st.last_hash = Some(hash);
                }
                st.next = next;
                let page = (!records.is_empty() || !read.is_empty()).then_some(Ok(Page {
                    records,
                    read,
                    texts,
                    parents,
                    number: st.number,
                    total,
                }));
                Some((page, Some(st)))
            }
        })
        .filter_map(futures::future::ready)
    }

    /// A page's request, sent on its own: what `list_with` keeps in flight.
    fn fetch<'f>(
        &'f self,
        op_name: &str,
        op: &Arc<Operation>,
        input: &CallInput,
        target: Next,
        reader: Option<Arc<ListingReader>>,
    ) -> futures::future::BoxFuture<'f, Result<(Response, bool), CallError>> {
        let (op_name, op, input) = (op_name.to_string(), Arc::clone(op), input.clone());
        Box::pin(async move {
            self.execute_reading(&op_name, &op, &input, &target, reader.as_deref())
                .await
        })
    }

    /// `list_with` run by a task of its own, `ahead` pages ahead of the caller: while the
    /// caller works through one page, the next ones are read. Pages come in order, an error
    /// ends the stream as it does `list`'s, and dropping the stream stops the task (a page
    /// read ahead and not taken is never seen by the caller).
    pub fn list_ahead(
        self: &Arc<Self>,
        op_name: &str,
        input: CallInput,
        ahead: usize,
    ) -> impl Stream<Item = Result<Page, CallError>> + 'static {
        self.list_ahead_reading(op_name, input, ahead, None)
    }

    /// `list_ahead`, each page's records read by `reader` when it is given (`Page::read`).
    pub(crate) fn list_ahead_reading(
        self: &Arc<Self>,
        op_name: &str,
        input: CallInput,
        ahead: usize,
        reader: Option<Arc<ListingReader>>,
    ) -> impl Stream<Item = Result<Page, CallError>> + 'static {
        let (tx, rx) = tokio::sync::mpsc::channel(ahead.max(1));
        let (system, op_name) = (Arc::clone(self), op_name.to_string());
        // A leased run's lease goes with the task, as it would with the caller.
        let watch = crate::state::lease::current_watch();
        let task = async move {
            let mut pages = std::pin::pin!(system.list_reading(&op_name, input, ahead, reader));
            while let Some(page) = pages.next().await {
                if tx.send(page).await.is_err() {
                    break;
                }
            }
        };
        let task = tokio::spawn(tracing::Instrument::in_current_span(
            crate::state::lease::with_watch(watch, task),
        ));
        let stop = AbortOnDrop(task);
        futures::stream::unfold((rx, stop), |(mut rx, stop)| async move {
            let page = rx.recv().await?;
            Some((page, (rx, stop)))
        })
    }
}

/// Stops a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `hash_records` of a page read for a reader: its count, its first and last records'
/// values whole, and every record's first value (its id, the reader's first member).
fn hash_read(records: &[Vec<Value>]) -> u64 {
    hash_page(
        records,
        |r, h| r.iter().for_each(|v| hash_value(v, h)),
        |r, h| {
            if let Some(v) = r.first() {
                hash_value(v, h);
            }
        },
    )
}

/// What tells a page served again: its count, its first and last records whole, and every
/// record's first member (its id, in the APIs seen so far). A page that repeats the one
/// before holds the same records in the same places; one that moved on differs in these
/// nearly always, and hashing them costs a fraction of hashing every member of every
/// record (which was 2.7% of a first sync's instructions).
fn hash_records(records: &[Value]) -> u64 {
    hash_page(records, hash_value, |r, h| match r {
        Value::Object(m) => {
            if let Some((k, v)) = m.iter().next() {
                k.hash(h);
                hash_value(v, h);
            }
        }
        other => hash_value(other, h),
    })
}

/// The hash of a page of `records`: their count, the first and last `whole`, and the
/// `first` part of each. One fixed seed: pages of one listing are compared with each other.
fn hash_page<R>(
    records: &[R],
    whole: impl Fn(&R, &mut foldhash::fast::FoldHasher<'static>),
    first: impl Fn(&R, &mut foldhash::fast::FoldHasher<'static>),
) -> u64 {
    let mut h = foldhash::fast::FixedState::default().build_hasher();
    records.len().hash(&mut h);
    if let (Some(a), Some(z)) = (records.first(), records.last()) {
        whole(a, &mut h);
        whole(z, &mut h);
    }
    for r in records {
        first(r, &mut h);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn page(ids: impl Iterator<Item = u64>) -> Vec<Value> {
        ids.map(|id| json!({"id": id, "sku": format!("S{id}"), "price": 1.5}))
            .collect()
    }

    #[test]
    fn a_page_served_again_is_told_from_one_that_moved_on() {
        let first = page(1..=10);
        assert_eq!(hash_records(&first), hash_records(&page(1..=10)));
        // The next page, a page shifted by one, one record replaced in the middle, and one
        // record fewer: all differ from the first.
        let mut replaced = page(1..=10);
        replaced[4]["id"] = json!(99);
        for other in [page(11..=20), page(2..=11), replaced, page(1..=9)] {
            assert_ne!(hash_records(&first), hash_records(&other));
        }
        // Records without members to go by are hashed whole.
        assert_ne!(
            hash_records(&[json!(1), json!(2), json!(3)]),
            hash_records(&[json!(1), json!(4), json!(3)])
        );
    }
}
