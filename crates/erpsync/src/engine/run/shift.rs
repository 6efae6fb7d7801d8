//! Reading through shifting pages. Lists that page by position over an order by
//! modification time shift when a record changes while they are read: the changed record is
//! served again at the end and another one slides back across a page boundary unseen. A
//! record served twice is handled once per version; a record a whole read should have served
//! and did not is asked for one by one before anything is decided about it.

use std::hash::{BuildHasher, Hasher};

use super::*;
use crate::json::{hash_value, packed};

impl<'e> Runner<'e> {
    /// Notes a record served by the source listing; `false` when it needs no handling. A
    /// record served again shows that the pages shifted (see `note_reread`). Served again
    /// unchanged, it is the same record twice and is handled once; changed, the later
    /// reading is the newer version and is handled as well.
    pub(super) fn note_listed(&mut self, seen: &Seen) -> bool {
        let print = self.fingerprint(&seen.canon);
        let now = Listed::new(self.stamp(seen), print);
        self.note_reading(&seen.key, now)
    }

    /// `note_listed` of a record read positionally: the same reading as of its object,
    /// its fingerprint taken from the record as packed (`Positional::packed`).
    pub(super) fn note_listed_values(&mut self, read: &Positional, at: &Positions) -> bool {
        let mut h = self.listing.prints.build_hasher();
        // Consecutive members are consecutive bytes of the record: a run of them is hashed
        // where it lies.
        let mut run: Option<std::ops::Range<usize>> = None;
        let members = packed::member_spans(&read.packed, &read.spans);
        for (name, member) in at.names.iter().zip(members) {
            if !self.is_volatile(name) {
                run = Some(run.map_or(member.clone(), |r| r.start..member.end));
            } else if let Some(r) = run.take() {
                h.write(&read.packed[r]);
            }
        }
        if let Some(r) = run {
            h.write(&read.packed[r]);
        }
        let stamp = at
            .stamp_at
            .and_then(|i| read.values.get(i))
            .and_then(stamp_of);
        self.note_reading(&read.key, Listed::new(stamp, h.finish()))
    }

    fn note_reading(&mut self, key: &str, now: Listed) -> bool {
        match self.listing.listed.note(key, now) {
            None => true,
            Some(first) => {
                self.listing.shifted = true;
                self.note_reread(first.stamp());
                !first.same_reading(&now)
            }
        }
    }

    /// A field whose changes are not a new reading (a modification stamp, changed when a
    /// record is merely touched). A short list: a search of the entity's fields cost
    /// several comparisons a field.
    fn is_volatile(&self, name: &str) -> bool {
        self.volatile.iter().any(|v| v.as_str() == name)
    }

    /// A digest of a canonical record without its volatile fields: its other members as
    /// the record packed holds them (`packed::pack_member`), each run of them between two
    /// volatile ones one write, so that a record read by position (`note_listed_values`)
    /// has the digest of its object.
    fn fingerprint(&self, canon: &Value) -> u64 {
        let mut h = self.listing.prints.build_hasher();
        match canon {
            Value::Object(fields) => {
                let mut run = Vec::with_capacity(512);
                for (name, value) in fields {
                    if !self.is_volatile(name) {
                        packed::pack_member(name, value, &mut run);
                    } else if !run.is_empty() {
                        h.write(&run);
                        run.clear();
                    }
                }
                if !run.is_empty() {
                    h.write(&run);
                }
            }
            other => hash_value(other, &mut h),
        }
        h.finish()
    }

    /// Asks a side for a bound record a whole read did not serve: by
    /// id with the entity's `get` operation, else by key with its `lookup`. `None` when the
    /// side says it is not there, or cannot be asked.
    pub(super) async fn confirm(
        &self,
        side: Side,
        key: &str,
        id: Option<&str>,
    ) -> Result<Option<Seen>, Fail> {
        let end = self.end(side);
        let (op, input) = match (&end.ent.get, id, &end.ent.lookup) {
            (Some(get), Some(id), _) => (
                get,
                CallInput {
                    id: Some(id.to_string()),
                    ..Default::default()
                },
            ),
            (_, _, Some(lookup)) => (
                lookup,
                CallInput {
                    key: Some(key.to_string()),
                    ..Default::default()
                },
            ),
            _ => return Ok(None),
        };
        tracing::debug!(flow = %self.flow.id, system = end.name, key, "record missing from a full read; asking for it");
        match self.ask(end, op, &input, key).await {
            // A record asked for by id that is gone: some APIs answer 404 with an error
            // body that their rules treat as a failure.
            Err(f) if input.id.is_some() && f.status == Some(404) => Ok(None),
            other => other,
        }
    }

    /// Looks for `key` in the target, which cannot be searched by key, after a full read
    /// that shifted and did not have it: the target is read in full again (a few times per
    /// run at most) and the readings are joined, the later one winning.
    pub(super) async fn reread_index(&mut self, key: &str) -> Result<Option<Seen>, Fail> {
        if self.index.rereads >= INDEX_REREADS {
            return Ok(None);
        }
        self.index.rereads += 1;
        tracing::info!(flow = %self.flow.id, system = self.dst.name, key, "full read shifted and lacks a record; reading it again");
        let (again, shifted) = self
            .read_all_dst(None, false)
            .await
            .map_err(|e| Fail::msg(e.to_string()))?;
        self.index.shifted = shifted;
        let bound = self.index_bound();
        let index = self
            .index
            .records
            .get_or_insert_with(|| KeyIndex::with_bound(bound));
        index.extend(again).map_err(|e| Fail::msg(e.to_string()))?;
        index.get(key).map_err(|e| Fail::msg(e.to_string()))
    }

    /// One-way reconciliation: bound records the target has but the whole source listing
    /// did not serve (its pages shifted, or the record was deleted) are asked for, and those
    /// the source still has are handled like listed ones.
    pub(super) async fn recover_unlisted(&mut self) -> Result<(), EngineRunError> {
        let Some(index) = &self.index.records else {
            return Ok(());
        };
        let listed = &self.listing.listed;
        let unlisted =
            index
                .keys_where(|k| !listed.contains(k))
                .map_err(|e| EngineRunError::Read {
                    flow: self.flow.id.to_string(),
                    system: self.dst.name.to_string(),
                    message: e.to_string(),
                })?;
        if unlisted.is_empty() {
            return Ok(());
        }
        let mut bound: Vec<(String, String)> = self
            .e
            .bindings(&self.scope, &unlisted)
            .await?
            .into_values()
            .filter_map(|b| {
                self.id_on(&b, Side::Source)
                    .map(|id| (b.key.clone(), id.to_string()))
            })
            .collect();
        bound.sort();
        for (key, id) in bound {
            match self.confirm(Side::Source, &key, Some(&id)).await {
                Ok(Some(seen)) => {
                    self.report.counts.read += 1;
                    self.note_listed(&seen);
                    self.handle(seen).await?;
                }
                // Gone from the source: nothing to bring over, as when it is not listed.
                Ok(None) => {}
                Err(f) => self.fail(&key, &Value::Null, f).await?,
            }
        }
        Ok(())
    }
}
