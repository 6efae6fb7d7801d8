//! What a run holds of a whole side, in memory that stays flat as the catalogue grows.
//!
//! `KeyIndex` is the target read in full: per key, its id and canonical record (and the
//! native record only when a write mapping merges with it), packed (`packed`). Past
//! `SPILL_BYTES` it moves into a private temporary file (`spill`), deleted when the run
//! ends, and answers lookups from there: a catalogue of a million records costs a file and
//! 8 bytes a record of memory, not a gigabyte.
//!
//! `ListedKeys` is what the source listing served: a 128-bit digest per key, with the
//! reading's `updated_at` (to the microsecond) and a fingerprint, in 64 maps so that no
//! single allocation doubles to a large size at once. `KeySet` keeps keys the same way,
//! with nothing beside them (the target records a bidirectional run has taken).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{BuildHasherDefault, DefaultHasher, Hash, Hasher};
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use indexmap::IndexMap;
use serde_json::Value;

use super::spill::{Indexed, Kept, Spill};
use super::{Seen, packed};

/// Bytes (keys, ids, packed canonical and native records) the index keeps in memory before it
/// moves to a temporary file.
/// `RunOptions::index_spill_bytes` sets it for a run, `Engine::index_memory` for an engine's
/// runs (see `Runner::index_bound`).
pub(super) const SPILL_BYTES: usize = 8 << 20;

/// A failure of a spilled index's file. The record asked for may be there: a caller must
/// not take it as absent.
#[derive(Debug, thiserror::Error)]
#[error("the target index could not be read: {0}")]
pub(super) struct IndexReadError(#[from] std::io::Error);

impl Indexed {
    /// A record of the target, its canonical record packed by `packed::pack_object`.
    pub(super) fn packed(id: Option<String>, canon: Box<[u8]>) -> Indexed {
        Indexed {
            id: id.map(String::into_boxed_str),
            canon,
            native: None,
        }
    }

    fn of(seen: Seen) -> Indexed {
        Indexed {
            id: seen.id.map(String::into_boxed_str),
            canon: packed::pack(&seen.canon),
            native: (!seen.native.is_null()).then(|| packed::pack(&seen.native)),
        }
    }

    fn bytes(&self, key: &str) -> usize {
        key.len()
            + self.id.as_deref().map_or(0, str::len)
            + self.canon.len()
            + self.native.as_deref().map_or(0, <[u8]>::len)
    }
}

impl Kept<'_> {
    fn seen(self, key: &str) -> Seen {
        self.seen_as(key, Native::Kept)
    }

    fn seen_as(self, key: &str, native: Native) -> Seen {
        // Packed by `Indexed::of` (or read back from the file it was written to): it reads
        // back to the same value.
        let canon = packed::unpack(self.canon).unwrap_or(Value::Null);
        let native = match native {
            Native::Kept => self.native.and_then(packed::unpack),
            Native::Left => None,
        };
        Seen {
            key: key.to_string(),
            id: self.id.map(str::to_string),
            canon,
            native: native.unwrap_or(Value::Null),
            text: None,
        }
    }
}

/// A record found by `KeyIndex::get_like`.
pub(super) enum Like {
    /// Its canonical record is the one asked with; its id.
    Same { id: Option<String> },
    /// Another canonical record (without the native record).
    Other(Seen),
}

/// Whether a record taken out of the index comes with its native record (when kept).
#[derive(Clone, Copy)]
pub(super) enum Native {
    Kept,
    /// Left out: the caller reads the canonical record only (a merge), and the native one,
    /// often the bigger, is not read back for nothing.
    Left,
}

/// The target's records by key (see the module's documentation).
pub(super) struct KeyIndex {
    /// Records in memory, in the order they were read: all of them until the index spills;
    /// after, only those the file could not take (which shadow it). The file takes them in
    /// that order, so that a source listed in the target's order finds them through the
    /// file's read window, as it finds the records appended after them. In the map's own
    /// order (a hash's), they were spread over the file's first megabytes, and each lookup
    /// of one was a read of its own (17,714 of a 100k first sync).
    mem: IndexMap<String, Indexed>,
    /// Bytes held in `mem`.
    held: usize,
    /// Bytes past which the index spills.
    bound: usize,
    /// The spill's file, once spilled. Behind a lock because reading it moves its read
    /// window, and the runner, shared across awaits, must stay `Sync`: one task uses it.
    disk: Option<Mutex<Spill>>,
    /// Set when no file could be made: the index stays in memory.
    no_disk: bool,
    /// A key's hash in the file's tables (see `hash_of`); another function only in tests,
    /// to make keys share their hashes.
    hash: fn(&str) -> i64,
    /// Where `take_some` walks the file on from.
    drained: u64,
}

impl Default for KeyIndex {
    fn default() -> Self {
        KeyIndex::with_bound(SPILL_BYTES)
    }
}

impl KeyIndex {
    /// An index that spills past `bound` bytes (keys, ids, packed records).
    pub(super) fn with_bound(bound: usize) -> Self {
        KeyIndex {
            mem: IndexMap::new(),
            held: 0,
            bound,
            disk: None,
            no_disk: false,
            hash: hash_of,
            drained: 0,
        }
    }

    /// The record read under `key`. An error is a failure of the spill's file: the record
    /// may be there, so the caller must not take it as absent.
    pub(super) fn get(&self, key: &str) -> Result<Option<Seen>, IndexReadError> {
        self.read(key, |found| found.seen(key))
    }

    /// What `read` makes of the record kept under `key`, from memory or from the file.
    fn read<R>(
        &self,
        key: &str,
        read: impl FnOnce(Kept<'_>) -> R,
    ) -> Result<Option<R>, IndexReadError> {
        if let Some(found) = self.mem.get(key) {
            return Ok(Some(read(found.view())));
        }
        match &self.disk {
            Some(disk) => Ok(lock(disk).get((self.hash)(key) as u64, key, read)?),
            None => Ok(None),
        }
    }

    /// As `get`, without the native record, for a caller holding a record `like` the one
    /// it expects: `Like::Same` when the kept canonical record is `like` exactly (as
    /// `packed::holds` tells), without reading it out of its packed form; else the record,
    /// its canonical record unpacked. A first sync adopting a catalogue finds nearly every
    /// record the same.
    pub(super) fn get_like(&self, key: &str, like: &Value) -> Result<Option<Like>, IndexReadError> {
        self.read(key, |kept| {
            if packed::holds(kept.canon, like) {
                Like::Same {
                    id: kept.id.map(str::to_string),
                }
            } else {
                Like::Other(kept.seen_as(key, Native::Left))
            }
        })
    }

    /// What `read` makes of the id and the packed canonical record kept under `key`, when
    /// one is kept.
    pub(super) fn kept<R>(
        &self,
        key: &str,
        read: impl FnOnce(Option<&str>, &[u8]) -> R,
    ) -> Result<Option<R>, IndexReadError> {
        self.read(key, |kept| read(kept.id, kept.canon))
    }

    fn find(&self, key: &str) -> Result<Option<Indexed>, IndexReadError> {
        self.read(key, |kept| kept.owned())
    }

    /// Takes the record read under `key` out of the index. On an error nothing was taken.
    pub(super) fn take(&mut self, key: &str) -> Result<Option<Seen>, IndexReadError> {
        self.take_as(key, Native::Kept)
    }

    /// As `take`, with the native record or without it.
    pub(super) fn take_as(
        &mut self,
        key: &str,
        native: Native,
    ) -> Result<Option<Seen>, IndexReadError> {
        // The file's copy goes first: one in memory shadows it, and must not uncover it
        // once taken.
        let on_disk = match &self.disk {
            Some(disk) => lock(disk).take((self.hash)(key) as u64, key)?,
            None => None,
        };
        let in_mem = self.mem.swap_remove(key);
        if let Some(found) = &in_mem
            && self.disk.is_none()
        {
            self.held -= found.bytes(key);
        }
        Ok(in_mem
            .or(on_disk)
            .map(|found| found.view().seen_as(key, native)))
    }

    /// Takes up to `n` records out of the index, those in memory first; none when it is
    /// empty. On an error, the records not returned stay.
    pub(super) fn take_some(&mut self, n: usize) -> Result<Vec<Seen>, IndexReadError> {
        let mut keys: Vec<String> = self.mem.keys().take(n).cloned().collect();
        let mut drained = self.drained;
        if keys.len() < n
            && let Some(disk) = &self.disk
        {
            let mem = &self.mem;
            drained = lock(disk).each(self.drained, self.hash, |_, key, _| {
                if !mem.contains_key(key) {
                    keys.push(key.to_owned());
                }
                Ok(keys.len() < n)
            })?;
        }
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(seen) = self.take(&key)? {
                out.push(seen);
            }
        }
        // The file is walked on from there next time: what lies before is taken, or was
        // not held (a later reading of a key is written further on).
        self.drained = drained;
        Ok(out)
    }

    /// Adds a record unless one is held under its key.
    pub(super) fn put_absent(&mut self, seen: Seen) -> Result<(), IndexReadError> {
        if self.find(&seen.key)?.is_none() {
            self.put(seen.key.clone(), Indexed::of(seen));
        }
        Ok(())
    }

    /// Only the records of these keys.
    pub(super) fn only(self, keys: &[String]) -> Result<KeyIndex, IndexReadError> {
        let mut kept = KeyIndex::with_bound(self.bound);
        kept.hash = self.hash;
        for key in keys {
            if let Some(found) = self.find(key)? {
                kept.put(key.clone(), found);
            }
        }
        Ok(kept)
    }

    /// The keys held for which `keep` says yes.
    pub(super) fn keys_where(
        &self,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Vec<String>, IndexReadError> {
        let mut out: Vec<String> = self
            .mem
            .keys()
            .filter(|k| keep(k.as_str()))
            .cloned()
            .collect();
        if let Some(disk) = &self.disk {
            lock(disk).each(0, self.hash, |_, key, _| {
                if keep(key) && !self.mem.contains_key(key) {
                    out.push(key.to_owned());
                }
                Ok(true)
            })?;
        }
        Ok(out)
    }

    /// Adds another reading of the target, whose records replace those held.
    pub(super) fn extend(&mut self, other: KeyIndex) -> Result<(), IndexReadError> {
        let KeyIndex {
            mem, disk, hash, ..
        } = other;
        for (key, kept) in mem {
            self.put(key, kept);
        }
        if let Some(disk) = disk {
            let mut disk = disk.into_inner().unwrap_or_else(|e| e.into_inner());
            disk.each(0, hash, |disk, key, at| {
                let kept = disk.kept_at(at)?;
                self.put(key.to_owned(), kept);
                Ok(true)
            })?;
        }
        Ok(())
    }

    /// Whether the index moved to its file.
    #[cfg(test)]
    fn spilled(&self) -> bool {
        self.disk.is_some()
    }

    /// Stores `kept` under `key` and returns what it replaced.
    fn put(&mut self, key: String, kept: Indexed) -> Option<Indexed> {
        if self.disk.is_none() {
            let add = kept.bytes(&key);
            let before = self.mem.insert(key.clone(), kept);
            self.held += add;
            if let Some(b) = &before {
                self.held -= b.bytes(&key);
            }
            if self.held > self.bound && !self.no_disk {
                self.spill();
            }
            return before;
        }
        if let Some(before) = self.mem.get_mut(&key) {
            return Some(std::mem::replace(before, kept));
        }
        let put = lock(self.disk.as_ref().expect("spilled")).put(
            (self.hash)(&key) as u64,
            &key,
            kept.view(),
        );
        match put {
            Ok(before) => before,
            Err(e) => {
                // Kept in memory rather than lost: a record missing from the index would be
                // created a second time.
                tracing::warn!(error = %e, "the target index could not be written; keeping the record in memory");
                self.mem.insert(key, kept);
                None
            }
        }
    }

    /// Moves the records held in memory into a new file.
    fn spill(&mut self) {
        let mut disk = match Spill::new() {
            Ok(disk) => disk,
            Err(e) => {
                tracing::warn!(error = %e, "no temporary file for the target index; it stays in memory");
                self.no_disk = true;
                return;
            }
        };
        tracing::info!(
            records = self.mem.len(),
            bytes = self.held,
            bound = self.bound,
            "the target index passed its memory bound (--index-memory); it moves to a temporary file"
        );
        let mut refused = IndexMap::new();
        for (key, kept) in std::mem::take(&mut self.mem) {
            if let Err(e) = disk.put((self.hash)(&key) as u64, &key, kept.view()) {
                tracing::warn!(error = %e, "the target index could not be written; keeping the record in memory");
                refused.insert(key, kept);
            }
        }
        self.mem = refused;
        self.held = 0;
        self.disk = Some(Mutex::new(disk));
    }
}

impl KeyIndex {
    /// Keeps a record read under its key. When the key was read before, the earlier reading
    /// is replaced and its `updated_at` returned (`Some(None)`: it had none).
    pub(super) fn keep(
        &mut self,
        seen: Seen,
        stamp: impl Fn(&Seen) -> Option<DateTime<Utc>>,
    ) -> Option<Option<DateTime<Utc>>> {
        let key = seen.key.clone();
        self.keep_indexed(key, Indexed::of(seen), stamp)
    }

    /// `keep` of a record already packed (no native record).
    pub(super) fn keep_indexed(
        &mut self,
        key: String,
        indexed: Indexed,
        stamp: impl Fn(&Seen) -> Option<DateTime<Utc>>,
    ) -> Option<Option<DateTime<Utc>>> {
        let first = self.put(key.clone(), indexed)?;
        // Read twice (rare: the pages shifted): the first reading's stamp.
        Some(stamp(&first.view().seen(&key)))
    }
}

fn lock(disk: &Mutex<Spill>) -> MutexGuard<'_, Spill> {
    disk.lock().unwrap_or_else(|e| e.into_inner())
}

/// A key's 64-bit hash, for the spill's tables (see `spill`).
fn hash_of(key: &str) -> i64 {
    use std::hash::BuildHasher;
    const SEED: foldhash::quality::FixedState =
        foldhash::quality::FixedState::with_seed(0x6572_7073_796e_6321);
    SEED.hash_one(key) as i64
}

/// What the source listing served under one key (see `Runner::note_listed`), and whether
/// a bidirectional run has taken the key's target record (see `ListedKeys::take`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Listed {
    /// The reading's `updated_at` in microseconds since the epoch, rounded down
    /// (`i64::MIN`: none).
    stamp: i64,
    /// A digest of the reading, without volatile fields, in every bit but the lowest; the
    /// lowest is `TAKEN`. A reconciliation takes every key of the catalogue: a flag here
    /// costs nothing, where a set of its own held a million keys a second time.
    print: u64,
}

/// The bit of `Listed::print` that tells the key's target record was taken.
const TAKEN: u64 = 1;

impl Listed {
    pub(super) fn new(stamp: Option<DateTime<Utc>>, print: u64) -> Self {
        Listed {
            stamp: stamp.map_or(i64::MIN, |t| t.timestamp_micros()),
            print: print & !TAKEN,
        }
    }

    /// The reading's `updated_at`, to the microsecond.
    pub(super) fn stamp(&self) -> Option<DateTime<Utc>> {
        (self.stamp != i64::MIN)
            .then(|| DateTime::from_timestamp_micros(self.stamp))
            .flatten()
    }

    /// Whether `other` is a reading of the same content (63 bits of the digest agree).
    pub(super) fn same_reading(&self, other: &Listed) -> bool {
        (self.print ^ other.print) & !TAKEN == 0
    }
}

/// Maps whose keys are digests already: the low bits serve as the hash.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

/// Maps `KeyDigests` splits its keys over.
const SHARDS: usize = 64;

/// Keys as 128-bit digests (see the module's documentation), each with a `V`: 16 bytes a
/// key instead of the key's text and its `String`. Two keys with one digest would be taken
/// for one; at 128 bits that takes some 10^19 keys.
pub(super) struct KeyDigests<V> {
    shards: Vec<HashMap<u128, V, BuildHasherDefault<Prehashed>>>,
}

/// The keys the source listing served, with what it served under each.
pub(super) type ListedKeys = KeyDigests<Listed>;

/// A set of keys (`KeyDigests` with nothing beside each).
pub(super) type KeySet = KeyDigests<()>;

impl<V> Default for KeyDigests<V> {
    fn default() -> Self {
        KeyDigests {
            shards: (0..SHARDS).map(|_| HashMap::default()).collect(),
        }
    }
}

impl<V> KeyDigests<V> {
    /// The entry of `key`, in the map its digest falls in.
    fn entry(&mut self, key: &str) -> Entry<'_, u128, V> {
        let d = digest(key);
        self.shards[shard(d)].entry(d)
    }

    pub(super) fn contains(&self, key: &str) -> bool {
        let d = digest(key);
        self.shards[shard(d)].contains_key(&d)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.iter().map(HashMap::len).sum()
    }
}

impl ListedKeys {
    /// Notes what the listing served under `key`; returns what it served before. A key
    /// whose target record was taken stays taken.
    pub(super) fn note(&mut self, key: &str, mut listed: Listed) -> Option<Listed> {
        match self.entry(key) {
            Entry::Occupied(mut slot) => {
                listed.print |= slot.get().print & TAKEN;
                Some(slot.insert(listed))
            }
            Entry::Vacant(slot) => {
                slot.insert(listed);
                None
            }
        }
    }

    /// Marks the target record of the listed `key` taken: whether it was not yet, or
    /// `None` when the listing has not served `key`.
    pub(super) fn take(&mut self, key: &str) -> Option<bool> {
        let d = digest(key);
        let listed = self.shards[shard(d)].get_mut(&d)?;
        let first = listed.print & TAKEN == 0;
        listed.print |= TAKEN;
        Some(first)
    }
}

impl KeySet {
    /// Adds `key`; whether it was not there yet.
    pub(super) fn add(&mut self, key: &str) -> bool {
        match self.entry(key) {
            Entry::Occupied(_) => false,
            Entry::Vacant(slot) => {
                slot.insert(());
                true
            }
        }
    }
}

fn shard(d: u128) -> usize {
    (d >> 122) as usize % SHARDS
}

/// Two independent 64-bit SipHash digests of a key, side by side.
fn digest(key: &str) -> u128 {
    let mut lo = DefaultHasher::new();
    key.hash(&mut lo);
    let mut hi = DefaultHasher::new();
    (0x5eed_u16, key).hash(&mut hi);
    (u128::from(hi.finish()) << 64) | u128::from(lo.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn seen(key: &str, id: &str, price: u64) -> Seen {
        Seen {
            key: key.into(),
            id: Some(id.into()),
            canon: json!({"sku": key, "price": price, "name": format!("product {key}")}),
            native: Value::Null,
            text: None,
        }
    }

    fn no_stamp(_: &Seen) -> Option<DateTime<Utc>> {
        None
    }

    /// An index that spills after a few records.
    fn small() -> KeyIndex {
        KeyIndex::with_bound(300)
    }

    #[test]
    fn a_spilled_index_finds_every_record_it_was_given() {
        let mut index = small();
        for i in 0..500 {
            assert!(
                index
                    .keep(seen(&format!("K{i}"), &format!("{i}"), i), no_stamp)
                    .is_none()
            );
        }
        assert!(index.spilled(), "500 records are past the bound");
        for i in 0..500 {
            let found = index.get(&format!("K{i}")).unwrap().expect("kept");
            assert_eq!(found.id.as_deref(), Some(format!("{i}").as_str()));
            assert_eq!(found.canon["price"], json!(i));
            assert!(found.native.is_null());
        }
    }

    /// Keys whose hashes collide (here, all of them hash to one of two values): every key
    /// answers with its own record, is replaced, taken and drained once.
    #[test]
    fn keys_that_share_a_hash_each_keep_their_own_record() {
        let mut index = small();
        index.hash = |key| (key.len() % 2) as i64;
        for i in 0..120u64 {
            index.keep(seen(&format!("K{i}"), &format!("{i}"), i), no_stamp);
        }
        assert!(index.spilled());
        for i in 0..120u64 {
            let found = index.get(&format!("K{i}")).unwrap().expect("kept");
            assert_eq!(found.canon["price"], json!(i), "K{i}");
        }
        assert!(
            index.get("K999").unwrap().is_none(),
            "its hash leads to other keys"
        );
        // Read again: replaced.
        for key in ["K0", "K1", "K55"] {
            assert!(
                index.keep(seen(key, "new", 1000), no_stamp).is_some(),
                "{key}"
            );
            assert_eq!(index.get(key).unwrap().unwrap().canon["price"], json!(1000));
        }
        let mut keys = index.keys_where(|_| true).unwrap();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 120);
        assert_eq!(
            index.take("K0").unwrap().unwrap().canon["price"],
            json!(1000)
        );
        assert!(index.take("K0").unwrap().is_none());
        assert_eq!(
            index.take("K12").unwrap().unwrap().canon["price"],
            json!(12)
        );
        let mut drained = Vec::new();
        loop {
            let batch = index.take_some(16).unwrap();
            if batch.is_empty() {
                break;
            }
            drained.extend(batch.into_iter().map(|s| s.key));
        }
        drained.sort();
        drained.dedup();
        assert_eq!(drained.len(), 118, "every record not taken, once");

        let mut index = small();
        index.hash = |_| 7;
        for i in 0..60u64 {
            index.keep(seen(&format!("K{i}"), &format!("{i}"), i), no_stamp);
        }
        let only = index
            .only(&["K1".into(), "K2".into(), "nope".into()])
            .unwrap();
        assert_eq!(only.get("K1").unwrap().unwrap().canon["price"], json!(1));
        assert_eq!(only.get("K2").unwrap().unwrap().canon["price"], json!(2));
        assert!(only.get("K3").unwrap().is_none());
        assert_eq!(only.keys_where(|_| true).unwrap().len(), 2);
    }

    /// The records held in memory when the index spills go to the file in the order they
    /// were read, before those read after: the file holds the whole listing in its order,
    /// which a source listed in the same order walks through the read window.
    #[test]
    fn a_spilled_index_keeps_its_records_in_the_order_they_were_read() {
        let read: Vec<String> = (0..200u64).map(|i| format!("K{}", i * 37 % 200)).collect();
        let mut index = KeyIndex::with_bound(4_000);
        for (i, key) in read.iter().enumerate() {
            index.keep(seen(key, &format!("{i}"), i as u64), no_stamp);
            if i == 30 {
                assert!(!index.spilled(), "the first records are held in memory");
            }
        }
        assert!(index.spilled());
        assert!(index.mem.is_empty(), "the file took every record");
        let mut drained = Vec::new();
        loop {
            let batch = index.take_some(64).unwrap();
            if batch.is_empty() {
                break;
            }
            drained.extend(batch.into_iter().map(|s| s.key));
        }
        assert_eq!(drained, read, "the file's order is the reading's");
    }

    /// The target's changes of a bidirectional flow are taken out one by one as the source
    /// meets them, and the rest drained in batches: every record comes out exactly once,
    /// with its native record, in memory and spilled alike.
    #[test]
    fn records_taken_out_come_out_once_and_the_rest_drains_in_batches() {
        for mut index in [KeyIndex::with_bound(usize::MAX), small()] {
            for i in 0..300u64 {
                let mut s = seen(&format!("K{i}"), &format!("{i}"), i);
                s.native = json!({"code": format!("K{i}"), "raw": i});
                index.keep(s, no_stamp);
            }
            let taken = index.take("K7").unwrap().expect("held");
            assert_eq!(taken.canon["price"], json!(7));
            assert_eq!(taken.native, json!({"code": "K7", "raw": 7}));
            assert!(index.take("K7").unwrap().is_none(), "taken once");
            assert!(index.get("K7").unwrap().is_none());
            assert!(index.take("nope").unwrap().is_none());

            let mut drained = Vec::new();
            loop {
                let batch = index.take_some(64).unwrap();
                assert!(batch.len() <= 64);
                if batch.is_empty() {
                    break;
                }
                drained.extend(batch);
            }
            let mut keys: Vec<String> = drained.iter().map(|s| s.key.clone()).collect();
            keys.sort();
            keys.dedup();
            assert_eq!(keys.len(), 299, "every other record, once");
            assert_eq!(drained.len(), 299);
            assert!(!keys.contains(&"K7".to_string()));
            let k42 = drained.iter().find(|s| s.key == "K42").expect("drained");
            assert_eq!(k42.native["raw"], json!(42));
            assert!(index.keys_where(|_| true).unwrap().is_empty());
        }
    }

    #[test]
    fn put_absent_keeps_the_reading_held_and_only_keeps_the_keys_asked_for() {
        for mut index in [KeyIndex::with_bound(usize::MAX), small()] {
            for i in 0..300u64 {
                index.keep(seen(&format!("K{i}"), &format!("{i}"), i), no_stamp);
            }
            // A planned create of a dry run does not replace what the target sent.
            index.put_absent(seen("K3", "planned", 999)).unwrap();
            index.put_absent(seen("NEW", "planned", 5)).unwrap();
            assert_eq!(index.get("K3").unwrap().unwrap().canon["price"], json!(3));
            assert_eq!(index.get("NEW").unwrap().unwrap().canon["price"], json!(5));

            let only = index
                .only(&["K3".into(), "NEW".into(), "absent".into()])
                .unwrap();
            let mut keys = only.keys_where(|_| true).unwrap();
            keys.sort();
            assert_eq!(keys, ["K3", "NEW"]);
            assert_eq!(only.get("K3").unwrap().unwrap().id.as_deref(), Some("3"));
        }
    }

    #[test]
    fn a_spilled_index_lacks_what_it_was_not_given() {
        let mut index = small();
        for i in 0..100 {
            index.keep(seen(&format!("K{i}"), "1", 1), no_stamp);
        }
        assert!(index.spilled());
        assert!(index.get("K100").unwrap().is_none());
        assert!(index.get("").unwrap().is_none());
        assert!(index.get("k1").unwrap().is_none(), "keys are exact");
    }

    #[test]
    fn a_record_read_again_replaces_the_first_reading_before_and_after_the_spill() {
        for count in [2, 100] {
            let mut index = small();
            let stamp_of = |s: &Seen| {
                s.canon["price"]
                    .as_i64()
                    .and_then(|p| DateTime::from_timestamp(p, 0))
            };
            for i in 0..count {
                index.keep(seen(&format!("K{i}"), "1", 7), stamp_of);
            }
            assert_eq!(index.spilled(), count == 100);
            let first = index.keep(seen("K1", "2", 9), stamp_of);
            assert_eq!(
                first,
                Some(DateTime::from_timestamp(7, 0)),
                "the first reading's stamp ({count} records)"
            );
            let found = index.get("K1").unwrap().expect("kept");
            assert_eq!(found.id.as_deref(), Some("2"), "{count} records");
            assert_eq!(found.canon["price"], json!(9), "{count} records");
            assert_eq!(
                index.keys_where(|k| k == "K1").unwrap(),
                vec!["K1".to_string()],
                "one key, once"
            );
        }
    }

    #[test]
    fn native_records_survive_the_spill() {
        let mut index = small();
        for i in 0..100 {
            let mut s = seen(&format!("K{i}"), "1", i);
            s.native = json!({"id": i, "sku": format!("K{i}")});
            s.id = None;
            index.keep(s, no_stamp);
        }
        assert!(index.spilled());
        let found = index.get("K42").unwrap().expect("kept");
        assert_eq!(found.native, json!({"id": 42, "sku": "K42"}));
        assert_eq!(found.id, None);
        // Taken for its canonical record only: that, without the native one; taken all the
        // same (not served again).
        let bare = index.take_as("K42", Native::Left).unwrap().expect("kept");
        assert_eq!((bare.canon, bare.native), (found.canon, Value::Null));
        assert!(index.get("K42").unwrap().is_none());
        assert_eq!(
            index.take("K43").unwrap().expect("kept").native,
            json!({"id": 43, "sku": "K43"})
        );
    }

    /// Asked with a record like the one expected: `Same` with the id when the kept record is
    /// that one exactly, else the kept record in its own member order, without the native
    /// record; whether held in memory or spilled.
    #[test]
    fn a_record_asked_for_like_another_is_the_same_or_comes_back_as_it_was_kept() {
        for (index_of, spilled) in [
            (KeyIndex::default as fn() -> KeyIndex, false),
            (small, true),
        ] {
            let mut index = index_of();
            for i in 0..100 {
                let mut s = seen(&format!("K{i}"), &format!("{i}"), i);
                s.native = json!({"id": i});
                index.keep(s, no_stamp);
            }
            assert_eq!(index.spilled(), spilled);
            let kept = seen("K7", "7", 7).canon;
            let other = |like: &Value| match index.get_like("K7", like).unwrap() {
                Some(Like::Other(found)) => found,
                Some(Like::Same { .. }) => panic!("{like} is not the record kept"),
                None => panic!("K7 is kept"),
            };
            assert!(matches!(
                index.get_like("K7", &kept).unwrap(),
                Some(Like::Same { id: Some(id) }) if id == "7"
            ));
            let changed = other(&seen("K7", "7", 8).canon);
            assert_eq!((&changed.canon, changed.id.as_deref()), (&kept, Some("7")));
            assert!(changed.native.is_null());
            let reordered = other(&json!({"name": "product K7", "price": 7, "sku": "K7"}));
            assert_eq!(reordered.canon.to_string(), kept.to_string());
            assert!(index.get_like("K100", &kept).unwrap().is_none());
            // Asked, not taken.
            assert!(index.get("K7").unwrap().is_some());
        }
    }

    #[test]
    fn keys_and_extend_cover_memory_and_disk() {
        let mut index = small();
        for i in 0..100 {
            index.keep(seen(&format!("K{i}"), "1", 1), no_stamp);
        }
        let mut keys = index.keys_where(|k| k.ends_with('7')).unwrap();
        keys.sort();
        assert_eq!(
            keys,
            [
                "K17", "K27", "K37", "K47", "K57", "K67", "K7", "K77", "K87", "K97"
            ]
        );

        // A second reading, itself spilled, with one record changed and one new.
        let mut again = small();
        for i in 0..100 {
            again.keep(seen(&format!("K{i}"), "1", 1), no_stamp);
        }
        again.keep(seen("K5", "5", 55), no_stamp);
        again.keep(seen("K100", "100", 100), no_stamp);
        index.extend(again).unwrap();
        assert_eq!(index.get("K5").unwrap().unwrap().canon["price"], json!(55));
        assert_eq!(
            index.get("K100").unwrap().unwrap().id.as_deref(),
            Some("100")
        );
        assert_eq!(index.keys_where(|_| true).unwrap().len(), 101);
    }

    #[test]
    fn a_read_error_says_the_index_could_not_be_read() {
        let e = IndexReadError::from(std::io::Error::other("disk full"));
        assert_eq!(
            e.to_string(),
            "the target index could not be read: disk full"
        );
    }

    #[test]
    fn an_index_under_the_bound_stays_in_memory() {
        let mut index = KeyIndex::default();
        for i in 0..100 {
            index.keep(seen(&format!("K{i}"), "1", 1), no_stamp);
        }
        assert!(!index.spilled());
        assert!(index.get("K99").unwrap().is_some());
        assert!(index.get("K100").unwrap().is_none());
    }

    #[test]
    fn listed_keys_tell_a_key_served_twice() {
        let mut listed = ListedKeys::default();
        let t = DateTime::parse_from_rfc3339("2026-12-04T10:00:00.123456789Z")
            .unwrap()
            .with_timezone(&Utc);
        for i in 0..10_000 {
            assert_eq!(listed.note(&format!("K{i}"), Listed::new(Some(t), i)), None);
        }
        assert_eq!(listed.len(), 10_000);
        assert!(listed.contains("K9999"));
        assert!(!listed.contains("K10000"));
        let first = listed
            .note("K42", Listed::new(None, 1))
            .expect("served before");
        assert!(first.same_reading(&Listed::new(None, 42)));
        assert!(!first.same_reading(&Listed::new(None, 1)));
        assert_eq!(
            first.stamp(),
            Some(
                DateTime::parse_from_rfc3339("2026-12-04T10:00:00.123456Z")
                    .unwrap()
                    .with_timezone(&Utc)
            ),
            "rounded down to the microsecond"
        );
        assert_eq!(
            listed.note("K42", Listed::new(None, 2)).unwrap().stamp(),
            None
        );
        // Taken once, and still taken when the key is served again; never served: `None`.
        assert_eq!(listed.take("K7"), Some(true));
        assert_eq!(listed.take("K7"), Some(false));
        let again = listed.note("K7", Listed::new(None, 7)).unwrap();
        assert!(
            again.same_reading(&Listed::new(Some(t), 7)),
            "the flag is not the reading"
        );
        assert_eq!(listed.take("K7"), Some(false));
        assert_eq!(listed.take("K8"), Some(true));
        assert_eq!(listed.take("not served"), None);
        let mut set = KeySet::default();
        assert!(set.add("not served") && !set.add("not served"));
        let used = listed.shards.iter().filter(|s| !s.is_empty()).count();
        assert_eq!(used, SHARDS, "keys spread over every map");
    }
}
