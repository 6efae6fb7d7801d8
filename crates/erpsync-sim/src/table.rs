//! An in-memory table whose list order is (updated_at, key), oldest first: the order the
//! simulated list endpoints page through, so a record that changes while a client pages moves
//! to the end, exactly as in APIs that sort by modification time. The table also keeps the
//! values its records must not share (a SKU, an e-mail, a fiscal code) unique and findable.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};

/// A row refused by [`Table::save`]: another row holds one of its unique values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("another row holds `{value}`")]
pub(crate) struct UniqueValueTakenError {
    /// The value, as the row's `unique` gives it.
    pub(crate) value: String,
}

/// A row of a [`Table`]: it carries its own modification stamp and may show its key as an id
/// and hold values no other row of the table may hold.
pub(crate) trait Record: Clone {
    fn updated_at(&self) -> DateTime<Utc>;
    fn set_updated_at(&mut self, t: DateTime<Utc>);

    /// Tells a row that shows its id the key [`Table::save`] stores it under.
    fn set_key(&mut self, _key: u64) {}

    /// Values no other row may hold, in the form they are looked up in (an e-mail lowercased,
    /// a fiscal code's digits); none by default.
    fn unique(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Implements [`Record`] for a type with an `updated_at` field. `record!(T, id)` also makes
/// the key the row's `id`; methods in braces at the end are added to the impl.
macro_rules! record {
    ($t:ident $(, $id:ident)? $({ $($methods:tt)* })?) => {
        impl $crate::table::Record for $t {
            fn updated_at(&self) -> ::chrono::DateTime<::chrono::Utc> {
                self.updated_at
            }
            fn set_updated_at(&mut self, t: ::chrono::DateTime<::chrono::Utc>) {
                self.updated_at = t;
            }
            $(
                fn set_key(&mut self, key: u64) {
                    self.$id = key;
                }
            )?
            $($($methods)*)?
        }
    };
}
pub(crate) use record;

/// Where a filtered list starts in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Since {
    /// Every record.
    All,
    /// Records stamped strictly after the instant.
    After(DateTime<Utc>),
    /// Records stamped at or after the instant.
    AtOrAfter(DateTime<Utc>),
}

/// One page of a list and whether more records follow it.
pub(crate) struct Page<'a, T> {
    pub rows: Vec<(u64, &'a T)>,
    pub has_more: bool,
}

impl<T> Page<'_, T> {
    /// The key of the first row when more rows follow: the row a `page_drift` fault changes
    /// before the next page is read.
    pub(crate) fn drift_key(&self) -> Option<u64> {
        self.rows.first().map(|(k, _)| *k).filter(|_| self.has_more)
    }
}

/// Rows live in a vector indexed by key (keys are dense and never reused), so the lookups a
/// filtered page makes for every row it passes cost no tree walk.
#[derive(Debug)]
pub(crate) struct Table<T> {
    rows: Vec<Option<T>>,
    live: usize,
    order: BTreeSet<(DateTime<Utc>, u64)>,
    last_key: u64,
    /// Bumped by every change, so a remembered paging position is only reused while it is
    /// still exactly what skipping `offset` rows would give.
    version: u64,
    resume: Mutex<Option<Resume>>,
    /// Each unique value ([`Record::unique`]) of the rows → the key of the row holding it.
    index: HashMap<String, u64>,
}

/// Where the last page ended: lets the next page of the same list start there instead of
/// skipping `offset` rows again (a full crawl would otherwise cost rows²/limit steps).
#[derive(Debug)]
struct Resume {
    version: u64,
    since: Since,
    filter: String,
    next_offset: usize,
    after: (DateTime<Utc>, u64),
}

impl<T: Record> Table<T> {
    pub fn new() -> Self {
        Table {
            rows: Vec::new(),
            live: 0,
            order: BTreeSet::new(),
            last_key: 0,
            version: 0,
            resume: Mutex::new(None),
            index: HashMap::new(),
        }
    }

    /// A key never handed out before (keys are never reused, like database ids).
    pub fn next_key(&mut self) -> u64 {
        self.last_key += 1;
        self.last_key
    }

    /// Stores `row` under `key` (from [`Table::next_key`]), replacing any row there. Its unique
    /// values find it from now on; [`Table::save`] is the way that checks them first.
    pub fn insert(&mut self, key: u64, row: T) {
        assert!(key > 0, "keys start at 1");
        self.last_key = self.last_key.max(key);
        self.remove(key);
        let idx = (key - 1) as usize;
        if self.rows.len() <= idx {
            self.rows.resize_with(idx + 1, || None);
        }
        for value in row.unique() {
            self.index.insert(value, key);
        }
        self.order.insert((row.updated_at(), key));
        self.rows[idx] = Some(row);
        self.live += 1;
        self.version += 1;
    }

    pub fn get(&self, key: u64) -> Option<&T> {
        let idx = usize::try_from(key.checked_sub(1)?).ok()?;
        self.rows.get(idx)?.as_ref()
    }

    pub fn len(&self) -> usize {
        self.live
    }

    /// Rows in key (creation) order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &T)> {
        self.rows
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.as_ref().map(|r| (i as u64 + 1, r)))
    }

    pub fn remove(&mut self, key: u64) -> Option<T> {
        let idx = usize::try_from(key.checked_sub(1)?).ok()?;
        let row = self.rows.get_mut(idx)?.take()?;
        self.live -= 1;
        self.version += 1;
        self.order.remove(&(row.updated_at(), key));
        for value in row.unique() {
            if self.index.get(&value) == Some(&key) {
                self.index.remove(&value);
            }
        }
        Some(row)
    }

    /// Copies of every row, in key (creation) order.
    pub fn all(&self) -> Vec<T> {
        self.iter().map(|(_, r)| r.clone()).collect()
    }

    /// The key of the row holding this unique value.
    pub fn key_of(&self, value: &str) -> Option<u64> {
        self.index.get(value).copied()
    }

    /// The row holding this unique value.
    pub fn find(&self, value: &str) -> Option<&T> {
        self.get(self.key_of(value)?)
    }

    /// The row a create (`key` is `None`: `new()`) or a change (a copy of row `key`) starts
    /// from; the key when no row has it.
    pub fn draft(&self, key: Option<u64>, new: impl FnOnce() -> T) -> Result<T, u64> {
        match key {
            Some(k) => self.get(k).cloned().ok_or(k),
            None => Ok(new()),
        }
    }

    /// Stores `row` as row `key`, or under a new key when `key` is `None`, stamped `now` and
    /// told its key, unless another row holds one of its unique values: then nothing changes
    /// (no key is used up) and the error names that value.
    pub fn save(
        &mut self,
        key: Option<u64>,
        row: &mut T,
        now: DateTime<Utc>,
    ) -> Result<u64, UniqueValueTakenError> {
        if let Some(taken) = row
            .unique()
            .into_iter()
            .find(|v| self.key_of(v).is_some_and(|other| Some(other) != key))
        {
            return Err(UniqueValueTakenError { value: taken });
        }
        let key = key.unwrap_or_else(|| self.next_key());
        row.set_key(key);
        row.set_updated_at(now);
        self.insert(key, row.clone());
        Ok(key)
    }

    /// Applies `f` to a copy of the row and keeps the copy only when `f` succeeds, stamping it
    /// with `now`; a rejected change leaves the row untouched. Unique values are not checked:
    /// this is for changes that keep them.
    pub(crate) fn try_update<R, E>(
        &mut self,
        key: u64,
        now: DateTime<Utc>,
        f: impl FnOnce(&mut T) -> Result<R, E>,
    ) -> Option<Result<R, E>> {
        let mut copy = self.get(key)?.clone();
        match f(&mut copy) {
            Ok(r) => {
                copy.set_updated_at(now);
                self.insert(key, copy);
                Some(Ok(r))
            }
            Err(e) => Some(Err(e)),
        }
    }

    /// The latest stamp in the table.
    pub(crate) fn last_stamp(&self) -> Option<DateTime<Utc>> {
        self.order.last().map(|(t, _)| *t)
    }

    /// Gives the row a stamp later than every other one, so it moves to the end of the list
    /// order even when the clock stands still (a `ManualClock`).
    pub(crate) fn bump_to_end(&mut self, key: u64, now: DateTime<Utc>) {
        let Some(last) = self.last_stamp() else {
            return;
        };
        let stamp = now.max(last + Duration::milliseconds(1));
        if let Some(mut row) = self.remove(key) {
            row.set_updated_at(stamp);
            self.insert(key, row);
        }
    }

    /// Rows in list order from `since`, keeping those `keep` accepts, skipping `offset`.
    /// `filter` names what `keep` tests (equal names, equal predicates).
    pub fn page(
        &self,
        since: Since,
        filter: &str,
        offset: usize,
        limit: usize,
        keep: impl Fn(&T) -> bool,
    ) -> Page<'_, T> {
        let mut resume = self.resume.lock().unwrap();
        let resumed = resume.as_ref().and_then(|r| {
            (r.version == self.version
                && r.since == since
                && r.filter == filter
                && r.next_offset == offset)
                .then_some(r.after)
        });
        let (lower, skip) = match (resumed, since) {
            (Some(after), _) => (Bound::Excluded(after), 0),
            (None, Since::All) => (Bound::Unbounded, offset),
            (None, Since::After(t)) => (Bound::Excluded((t, u64::MAX)), offset),
            (None, Since::AtOrAfter(t)) => (Bound::Included((t, 0)), offset),
        };
        let mut hits = self
            .order
            .range((lower, Bound::Unbounded))
            .map(|(t, k)| (*t, *k, self.get(*k).expect("indexed rows exist")))
            .filter(|(_, _, row)| keep(row))
            .skip(skip);
        let found: Vec<_> = hits.by_ref().take(limit).collect();
        let has_more = hits.next().is_some();
        *resume = found.last().map(|(t, k, _)| Resume {
            version: self.version,
            since,
            filter: filter.to_owned(),
            next_offset: offset + found.len(),
            after: (*t, *k),
        });
        let rows = found.into_iter().map(|(_, k, r)| (k, r)).collect();
        Page { rows, has_more }
    }
}

/// Sets each field that is given a value; a field given `None` keeps its own (how a POST, PATCH
/// or PUT of only some fields changes a record).
pub(crate) fn patch<'a, T: 'a>(fields: impl IntoIterator<Item = (&'a mut T, Option<T>)>) {
    for (field, value) in fields {
        if let Some(v) = value {
            *field = v;
        }
    }
}

/// The stamp the simulators give a change: whole milliseconds, because that is what the API
/// prints, so a client that echoes a printed stamp back as a filter means the same instant.
pub(crate) fn stamp(now: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::SubsecRound;
    now.trunc_subsecs(3)
}

/// Serde format of every simulated timestamp: RFC 3339, milliseconds, `Z`.
/// A time written as the simulators write every stamp: RFC 3339 in UTC, to the millisecond.
pub(crate) struct Rfc3339<'a>(pub(crate) &'a DateTime<Utc>);

impl serde::Serialize for Rfc3339<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        rfc3339::serialize(self.0, s)
    }
}

pub(crate) mod rfc3339 {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::Serializer;

    pub(crate) fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
    }
}

/// Parses a time filter given in a query string.
pub(crate) fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone)]
    struct Row(DateTime<Utc>);
    impl Record for Row {
        fn updated_at(&self) -> DateTime<Utc> {
            self.0
        }
        fn set_updated_at(&mut self, t: DateTime<Utc>) {
            self.0 = t;
        }
    }

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    #[test]
    fn pages_in_stamp_order_and_a_bumped_row_moves_to_the_end() {
        let mut table = Table::new();
        for i in 0..5 {
            let k = table.next_key();
            table.insert(k, Row(t(i)));
        }
        let keys = |p: Page<'_, Row>| p.rows.iter().map(|(k, _)| *k).collect::<Vec<_>>();
        let first = table.page(Since::All, "", 0, 2, |_| true);
        assert!(first.has_more);
        assert_eq!(keys(first), vec![1, 2]);
        table.bump_to_end(1, t(0));
        assert_eq!(keys(table.page(Since::All, "", 2, 2, |_| true)), vec![4, 5]);
        let last = table.page(Since::After(t(3)), "", 0, 10, |_| true);
        assert!(!last.has_more);
        assert_eq!(keys(last), vec![5, 1]);
        assert_eq!(
            keys(table.page(Since::AtOrAfter(t(3)), "", 0, 10, |_| true)),
            vec![4, 5, 1]
        );
    }

    #[test]
    fn a_resumed_page_equals_a_skipped_one() {
        let mut table = Table::new();
        for i in 0..50 {
            let k = table.next_key();
            table.insert(k, Row(t(i % 7)));
        }
        let keys = |p: Page<'_, Row>| p.rows.iter().map(|(k, _)| *k).collect::<Vec<_>>();
        let even = |r: &Row| r.0.timestamp() % 2 == 0;
        let mut resumed = Vec::new();
        for offset in (0..40).step_by(5) {
            resumed.extend(keys(table.page(Since::All, "even", offset, 5, even)));
        }
        let fresh = Table::new();
        let _ = fresh.page(Since::All, "", 0, 1, |_: &Row| true);
        let mut skipped = Vec::new();
        for offset in (0..40).step_by(5) {
            // A different filter name never reuses the position.
            let _ = table.page(Since::All, "other", 0, 1, even);
            skipped.extend(keys(table.page(Since::All, "even", offset, 5, even)));
        }
        assert_eq!(resumed, skipped);
    }

    #[derive(Clone, Debug, PartialEq)]
    struct Named {
        id: u64,
        name: String,
        updated_at: DateTime<Utc>,
    }
    record!(Named, id {
        fn unique(&self) -> Vec<String> {
            vec![self.name.to_lowercase()]
        }
    });

    fn named(name: &str) -> Named {
        Named {
            id: 0,
            name: name.to_owned(),
            updated_at: t(0),
        }
    }

    #[test]
    fn unique_values_are_kept_unique_and_findable() {
        let mut table = Table::new();
        let mut ana = named("Ana");
        assert_eq!(table.save(None, &mut ana, t(1)), Ok(1));
        assert_eq!((ana.id, ana.updated_at), (1, t(1)));
        assert_eq!(
            table.save(None, &mut named("ANA"), t(2)),
            Err(UniqueValueTakenError {
                value: "ana".to_owned()
            })
        );
        // A refused row uses up no key.
        assert_eq!(table.save(None, &mut named("Ion"), t(2)), Ok(2));
        assert_eq!(table.find("ion").map(|r| r.id), Some(2));

        // A change may keep its own value, not take another row's.
        let mut changed = table.draft(Some(1), || named("")).unwrap();
        assert_eq!(table.save(Some(1), &mut changed, t(3)), Ok(1));
        changed.name = "Ion".to_owned();
        assert!(table.save(Some(1), &mut changed, t(4)).is_err());
        changed.name = "Maria".to_owned();
        assert_eq!(table.save(Some(1), &mut changed, t(4)), Ok(1));
        assert_eq!(table.key_of("ana"), None);
        assert_eq!(table.key_of("maria"), Some(1));
        assert_eq!(table.draft(Some(9), || named("")), Err(9));

        table.remove(1);
        assert_eq!(table.find("maria"), None);
        assert_eq!(table.save(None, &mut named("Maria"), t(5)), Ok(3));
    }

    #[test]
    fn a_rejected_update_leaves_the_row_alone() {
        let mut table = Table::new();
        table.insert(1, Row(t(0)));
        let r: Option<Result<(), ()>> = table.try_update(1, t(9), |_| Err(()));
        assert!(matches!(r, Some(Err(()))));
        assert_eq!(table.get(1).unwrap().0, t(0));
        assert!(table.try_update(1, t(9), |_| Ok::<_, ()>(())).is_some());
        assert_eq!(table.get(1).unwrap().0, t(9));
    }
}
