//! Pagination: where the next page of a list is, and when a list has ended. Every kind also
//! guards against a server that would keep a listing going forever.

use std::collections::HashSet;

use reqwest::header::HeaderMap;
use serde_json::Value;
use url::Url;

use super::problem::Problems;
use crate::config::model::PaginationConfig;
use crate::expr::JsonPath;

/// A number a response tells in a header or its body (pages of a listing, its records).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TotalPages {
    Header(String),
    Body(JsonPath),
}

impl TotalPages {
    /// `header:NAME` or a JSONPath; `field` names the setting in problems.
    pub(crate) fn compile(text: &str, field: &str, p: &mut Problems) -> Option<TotalPages> {
        match text.strip_prefix("header:") {
            Some(h) if !h.trim().is_empty() => Some(TotalPages::Header(h.trim().into())),
            Some(_) => {
                p.invalid(field, "`header:` needs a header name");
                None
            }
            None => Some(TotalPages::Body(p.path(field, text)?)),
        }
    }

    /// Whether it may be read from the body's member `name`: a body path whose text holds
    /// that name (any body path when `name` is empty).
    pub(crate) fn may_read(&self, name: &str) -> bool {
        matches!(self, TotalPages::Body(path) if path.source().contains(name))
    }

    /// The number in this response, when it has one.
    pub(crate) fn read(&self, headers: &HeaderMap, body: &Value) -> Option<u64> {
        match self {
            TotalPages::Header(h) => headers
                .get(h.as_str())
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok()),
            TotalPages::Body(path) => path.first(body).and_then(as_u64),
        }
    }
}

/// Why a listing cannot go on to its next page: the system leads it in a loop or nowhere.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PageFollowError {
    #[error("the cursor `{0}` was already used")]
    CursorReused(String),
    #[error("the next page URL `{next}` is not valid: {source}")]
    InvalidUrl {
        next: String,
        source: url::ParseError,
    },
    #[error("the next page URL `{0}` was already read")]
    UrlReread(String),
}

/// A compiled `paginate` section.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Paginate {
    Page {
        param: String,
        start: u64,
        size_param: Option<String>,
        size: Option<u64>,
        total_pages: Option<TotalPages>,
    },
    Offset {
        offset_param: String,
        limit_param: String,
        limit: u64,
    },
    Cursor {
        cursor_path: JsonPath,
        param: String,
    },
    LinkHeader,
    NextUrl {
        path: JsonPath,
    },
}

impl Paginate {
    /// Whether where the next page is, or how many pages there are, may be read from the
    /// body's member `name` (see `TotalPages::may_read`).
    pub(crate) fn may_read(&self, name: &str) -> bool {
        match self {
            Paginate::Page { total_pages, .. } => {
                total_pages.as_ref().is_some_and(|t| t.may_read(name))
            }
            Paginate::Cursor {
                cursor_path: path, ..
            }
            | Paginate::NextUrl { path } => path.source().contains(name),
            Paginate::Offset { .. } | Paginate::LinkHeader => false,
        }
    }
}

/// Where the next page is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Next {
    /// The operation's own request with these query parameters set.
    Query(Vec<(String, String)>),
    /// A URL given by the server, used verbatim.
    Url(String),
}

/// What the pager needs to know about the page just read.
pub(crate) struct PageSeen<'a> {
    pub(crate) url: &'a str,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) body: &'a Value,
    pub(crate) records: usize,
}

/// Progress through one listing.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    page: u64,
    offset: u64,
    seen: HashSet<String>,
    /// Where a `page` or `offset` listing ends (the page number or offset past its last
    /// page), once a response told its size.
    end: Option<u64>,
}

impl Paginate {
    pub(crate) fn compile(cfg: &PaginationConfig, p: &mut Problems) -> Option<Paginate> {
        Some(match cfg {
            PaginationConfig::Page {
                param,
                start,
                size_param,
                size,
                total_pages,
            } => {
                let total_pages = match total_pages.as_deref() {
                    None => None,
                    Some(t) => Some(TotalPages::compile(t, "paginate.total_pages", p)?),
                };
                Paginate::Page {
                    param: param.clone(),
                    start: *start,
                    size_param: size_param.clone(),
                    size: *size,
                    total_pages,
                }
            }
            PaginationConfig::Offset {
                offset_param,
                limit_param,
                limit,
            } => Paginate::Offset {
                offset_param: offset_param.clone(),
                limit_param: limit_param.clone(),
                limit: *limit,
            },
            PaginationConfig::Cursor { cursor_path, param } => Paginate::Cursor {
                cursor_path: p.path("paginate.cursor_path", cursor_path)?,
                param: param.clone(),
            },
            PaginationConfig::LinkHeader {} => Paginate::LinkHeader,
            PaginationConfig::NextUrl { path } => Paginate::NextUrl {
                path: p.path("paginate.path", path)?,
            },
        })
    }

    /// Query parameters of the first page.
    pub(crate) fn first(&self, progress: &mut Progress) -> Vec<(String, String)> {
        match self {
            Paginate::Page {
                param,
                start,
                size_param,
                size,
                ..
            } => {
                progress.page = *start;
                let mut q = vec![(param.clone(), start.to_string())];
                if let (Some(sp), Some(s)) = (size_param, size) {
                    q.push((sp.clone(), s.to_string()));
                }
                q
            }
            Paginate::Offset {
                offset_param,
                limit_param,
                limit,
            } => vec![
                (offset_param.clone(), "0".into()),
                (limit_param.clone(), limit.to_string()),
            ],
            _ => Vec::new(),
        }
    }

    /// Notes the listing's size a page told: its number of pages (`total_pages`) or, from the
    /// operation's `total`, its number of records. Only `page` and `offset` listings have pages
    /// known in advance; a `page` listing needs its `size` to turn records into pages.
    pub(crate) fn learn_size(
        &self,
        progress: &mut Progress,
        seen: &PageSeen,
        records: Option<u64>,
    ) {
        let end = match self {
            Paginate::Page {
                start,
                size,
                total_pages,
                ..
            } => {
                let pages = total_pages
                    .as_ref()
                    .and_then(|t| t.read(seen.headers, seen.body))
                    .or_else(|| Some(records?.div_ceil((*size)?.max(1))));
                pages.map(|p| start + p)
            }
            Paginate::Offset { .. } => records,
            _ => None,
        };
        if end.is_some() {
            progress.end = end;
        }
    }

    /// Up to `n` pages that follow the one `next` last returned, when the listing's size is
    /// known (see `learn_size`): what the listing will ask for next if every page is full.
    /// Whether it does is still `next`'s to say, page by page.
    pub(crate) fn ahead(&self, progress: &Progress, n: usize) -> Vec<Next> {
        let Some(end) = progress.end else {
            return Vec::new();
        };
        match self {
            Paginate::Page {
                param,
                size_param,
                size,
                ..
            } => (progress.page + 1..end)
                .take(n)
                .map(|page| {
                    let mut q = vec![(param.clone(), page.to_string())];
                    if let (Some(sp), Some(s)) = (size_param, size) {
                        q.push((sp.clone(), s.to_string()));
                    }
                    Next::Query(q)
                })
                .collect(),
            Paginate::Offset {
                offset_param,
                limit_param,
                limit,
            } => (1..=n as u64)
                .map(|i| progress.offset + i * limit)
                .take_while(|o| *o < end)
                .map(|o| {
                    Next::Query(vec![
                        (offset_param.clone(), o.to_string()),
                        (limit_param.clone(), limit.to_string()),
                    ])
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The next page after `seen`, `None` at the end, or why the listing cannot go on.
    pub(crate) fn next(
        &self,
        progress: &mut Progress,
        seen: &PageSeen,
    ) -> Result<Option<Next>, PageFollowError> {
        match self {
            Paginate::Page {
                param,
                start,
                size_param,
                size,
                total_pages,
            } => {
                if seen.records == 0 || size.is_some_and(|s| (seen.records as u64) < s) {
                    return Ok(None);
                }
                if let Some(total) = total_pages
                    && let Some(total) = total.read(seen.headers, seen.body)
                    && progress.page + 1 >= start + total
                {
                    return Ok(None);
                }
                progress.page += 1;
                let mut q = vec![(param.clone(), progress.page.to_string())];
                if let (Some(sp), Some(s)) = (size_param, size) {
                    q.push((sp.clone(), s.to_string()));
                }
                Ok(Some(Next::Query(q)))
            }
            Paginate::Offset {
                offset_param,
                limit_param,
                limit,
            } => {
                if (seen.records as u64) < *limit {
                    return Ok(None);
                }
                progress.offset += limit;
                Ok(Some(Next::Query(vec![
                    (offset_param.clone(), progress.offset.to_string()),
                    (limit_param.clone(), limit.to_string()),
                ])))
            }
            Paginate::Cursor { cursor_path, param } => {
                let Some(cursor) = cursor_path.first(seen.body).and_then(as_text) else {
                    return Ok(None);
                };
                if !progress.seen.insert(cursor.clone()) {
                    return Err(PageFollowError::CursorReused(cursor));
                }
                Ok(Some(Next::Query(vec![(param.clone(), cursor)])))
            }
            Paginate::LinkHeader => {
                let next = seen
                    .headers
                    .get_all(reqwest::header::LINK)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .find_map(next_link);
                follow(progress, seen.url, next)
            }
            Paginate::NextUrl { path } => {
                follow(progress, seen.url, path.first(seen.body).and_then(as_text))
            }
        }
    }
}

/// A next URL, resolved against the current one, that must not lead back to a page already
/// read.
fn follow(
    progress: &mut Progress,
    current: &str,
    next: Option<String>,
) -> Result<Option<Next>, PageFollowError> {
    progress.seen.insert(current.to_string());
    let Some(next) = next else { return Ok(None) };
    let absolute = match Url::parse(current).and_then(|base| base.join(&next)) {
        Ok(url) => url.to_string(),
        Err(source) => return Err(PageFollowError::InvalidUrl { next, source }),
    };
    if progress.seen.contains(&absolute) {
        return Err(PageFollowError::UrlReread(absolute));
    }
    Ok(Some(Next::Url(absolute)))
}

fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The `rel="next"` target of one `Link` header value (RFC 8288), which may list several
/// links: `<https://…?page_info=x>; rel="next", <…>; rel="previous"`.
pub(crate) fn next_link(header: &str) -> Option<String> {
    let mut rest = header;
    while let Some(open) = rest.find('<') {
        let after = &rest[open + 1..];
        let close = after.find('>')?;
        let target = &after[..close];
        let params_end = after[close..].find('<').map_or(after.len(), |i| close + i);
        let params = &after[close + 1..params_end];
        let is_next = params.split(';').any(|p| {
            let Some((k, v)) = p.split_once('=') else {
                return false;
            };
            k.trim().eq_ignore_ascii_case("rel")
                && v.trim()
                    .trim_end_matches(',')
                    .trim()
                    .trim_matches('"')
                    .split_whitespace()
                    .any(|r| r.eq_ignore_ascii_case("next"))
        });
        if is_next {
            return Some(target.to_string());
        }
        rest = &after[params_end..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers() {
        let h = r#"<https://s/orders.json?page_info=p1&limit=50>; rel="previous", <https://s/orders.json?page_info=n2&limit=50>; rel="next""#;
        assert_eq!(
            next_link(h).as_deref(),
            Some("https://s/orders.json?page_info=n2&limit=50")
        );
        assert_eq!(next_link(r#"<https://s/a>; rel="prev""#), None);
        assert_eq!(
            next_link("</p?page=2>; rel=next").as_deref(),
            Some("/p?page=2")
        );
        assert_eq!(
            next_link(r#"<https://s/x>; rel="last next""#).as_deref(),
            Some("https://s/x")
        );
        assert_eq!(next_link(""), None);
    }
}
