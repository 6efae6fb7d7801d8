//! The file a run's target index moves to past its memory bound (see `index`): records
//! appended in the order they were read to an unnamed temporary file, deleted by the system
//! when it is closed, and found through tables of their offsets kept in memory, 8 bytes a
//! record.
//!
//! It replaced a temporary SQLite table, whose inserts and lookups (a B-tree of 64-bit key
//! hashes beside the table's own) took about 15% of a 100k first sync's CPU
//! (docs/benchmarks.md). Nothing here needs what SQLite gives: the index is private to a
//! run, written once per target record, read once per source record, and gone when the run
//! ends.
//!
//! A table slot holds a record's offset (plus one; 0 is an empty slot) in its low 40 bits and
//! 24 bits of its key's hash above them: a probe reads a record from the file only when those
//! bits match, and a table grows without reading any record again. The top 6 bits of the
//! hash choose one of 64 tables, so no single allocation doubles to a large size at once.
//! Records are read through a window: a lookup in about the order the records were written
//! (a source listing in the target's order) reads the file 64 KB at a time; one elsewhere
//! reads about its own record.

use std::fs::File;
use std::io;

/// A target record as the index keeps it: its id and its canonical record packed
/// (`packed`), read back when the run asks for it (once per record of the source).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Indexed {
    pub(super) id: Option<Box<str>>,
    pub(super) canon: Box<[u8]>,
    /// The native record, packed, only when the read kept it (a write mapping that merges
    /// with what the target holds).
    pub(super) native: Option<Box<[u8]>>,
}

/// A kept record, borrowed from memory or from the bytes read from the file.
#[derive(Debug, Clone, Copy)]
pub(super) struct Kept<'a> {
    pub(super) id: Option<&'a str>,
    pub(super) canon: &'a [u8],
    pub(super) native: Option<&'a [u8]>,
}

impl Indexed {
    pub(super) fn view(&self) -> Kept<'_> {
        Kept {
            id: self.id.as_deref(),
            canon: &self.canon,
            native: self.native.as_deref(),
        }
    }
}

impl Kept<'_> {
    pub(super) fn owned(self) -> Indexed {
        Indexed {
            id: self.id.map(Box::from),
            canon: Box::from(self.canon),
            native: self.native.map(Box::from),
        }
    }
}

/// Bytes appended in memory before they are written to the file.
const WRITE_BUFFER: usize = 256 << 10;
/// Bytes read at once when lookups go through the file in about its order.
const WINDOW: usize = 64 << 10;
/// Bytes read for a record found out of order: most records are smaller; a larger one is
/// completed with a second read.
const GUESS: usize = 1024;
/// Tables the offsets are spread over (by the top bits of the hash).
const TABLES: usize = 64;
const OFFSET_BITS: u32 = 40;
const OFFSET_MASK: u64 = (1 << OFFSET_BITS) - 1;
/// The hash bits a slot keeps (below the table's 6).
const HASH_BITS: u32 = 24;

/// One table: open addressing, linear probing, deletion by shifting back.
#[derive(Default)]
struct Slots {
    slots: Vec<u64>,
    len: usize,
}

impl Slots {
    fn home(&self, slot: u64) -> usize {
        (slot >> OFFSET_BITS) as usize & (self.slots.len() - 1)
    }

    /// Doubles the table (or makes its first one) when another record would fill it past 3/4.
    fn reserve_one(&mut self) {
        if (self.len + 1) * 4 <= self.slots.len() * 3 {
            return;
        }
        let size = (self.slots.len() * 2).max(64);
        let old = std::mem::replace(&mut self.slots, vec![0; size]);
        for slot in old.into_iter().filter(|s| *s != 0) {
            let mut i = self.home(slot);
            while self.slots[i] != 0 {
                i = (i + 1) & (size - 1);
            }
            self.slots[i] = slot;
        }
    }

    /// Empties slot `i`, moving back the slots after it that probed past it.
    fn remove(&mut self, mut i: usize) {
        let mask = self.slots.len() - 1;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let slot = self.slots[j];
            if slot == 0 {
                break;
            }
            let home = self.home(slot);
            // Slot `j` may fill the hole at `i` unless its home lies after `i` and up to `j`
            // (cyclically): it would then be found before reaching `i`.
            let after_hole = if i <= j {
                i < home && home <= j
            } else {
                i < home || home <= j
            };
            if !after_hole {
                self.slots[i] = slot;
                i = j;
            }
        }
        self.slots[i] = 0;
        self.len -= 1;
    }
}

/// Where a key is: its table and slot, and the record's offset; or the empty slot of its
/// table it would take.
enum Found {
    At { table: usize, slot: usize, at: u64 },
    Free { table: usize, slot: usize },
}

/// The spilled records (see the module's documentation).
pub(super) struct Spill {
    file: File,
    /// Bytes written to the file; `pending` follows them.
    written: u64,
    pending: Vec<u8>,
    /// Bytes of the file read last, from `window_at`.
    window: Vec<u8>,
    window_at: u64,
    tables: Vec<Slots>,
    /// Writes to the file fail (a full disk), in tests.
    #[cfg(test)]
    fail_writes: bool,
}

impl Spill {
    pub(super) fn new() -> io::Result<Spill> {
        Ok(Spill {
            file: tempfile::tempfile()?,
            written: 0,
            pending: Vec::with_capacity(WRITE_BUFFER),
            window: Vec::new(),
            window_at: 0,
            tables: (0..TABLES).map(|_| Slots::default()).collect(),
            #[cfg(test)]
            fail_writes: false,
        })
    }

    /// Where the end of the file is, bytes not yet written included.
    fn end(&self) -> u64 {
        self.written + self.pending.len() as u64
    }

    /// The record at `at` (its key is `key_at`'s).
    fn stored(&mut self, at: u64) -> io::Result<Kept<'_>> {
        let body = self.body(at)?;
        decode(body)
            .map(|(_, kept)| kept)
            .ok_or_else(|| corrupt(at))
    }

    /// The key of the record at `at`, read without the rest of the record: what a probe
    /// compares, once per lookup, before the record itself is decoded.
    fn key_at(&mut self, at: u64) -> io::Result<&str> {
        let body = self.body(at)?;
        framed(body, 0)
            .and_then(|key| std::str::from_utf8(key).ok())
            .ok_or_else(|| corrupt(at))
    }

    /// The bytes of the record at `at`, after its length.
    fn body(&mut self, at: u64) -> io::Result<&[u8]> {
        if at >= self.written {
            let start = usize::try_from(at - self.written).map_err(|_| corrupt(at))?;
            return framed(&self.pending, start).ok_or_else(|| corrupt(at));
        }
        if at >= self.window_at
            && let Ok(start) = usize::try_from(at - self.window_at)
            && framed(&self.window, start).is_some()
        {
            return framed(&self.window, start).ok_or_else(|| corrupt(at));
        }
        let ahead = self.window_at + (self.window.len() + WINDOW) as u64;
        let want = if at >= self.window_at && at <= ahead {
            WINDOW
        } else {
            GUESS
        };
        let n = usize::try_from(self.written - at)
            .unwrap_or(usize::MAX)
            .min(want);
        self.window.resize(n, 0);
        read_exact_at(&self.file, &mut self.window, at)?;
        self.window_at = at;
        let len = length(&self.window, 0).ok_or_else(|| corrupt(at))?;
        if 4 + len > n {
            if at + (4 + len) as u64 > self.written {
                return Err(corrupt(at));
            }
            self.window.resize(4 + len, 0);
            read_exact_at(&self.file, &mut self.window[n..], at + n as u64)?;
        }
        Ok(&self.window[4..4 + len])
    }

    /// Where `key` is held, or the slot it would take (in a table with room for it only when
    /// the caller made that room: `put`).
    fn locate(&mut self, hash: u64, key: &str) -> io::Result<Found> {
        let (table, bits) = (table_of(hash), bits_of(hash));
        if self.tables[table].slots.is_empty() {
            return Ok(Found::Free { table, slot: 0 });
        }
        let mask = self.tables[table].slots.len() - 1;
        let mut slot = bits as usize & mask;
        loop {
            let s = self.tables[table].slots[slot];
            if s == 0 {
                return Ok(Found::Free { table, slot });
            }
            if s >> OFFSET_BITS == bits {
                let at = (s & OFFSET_MASK) - 1;
                if self.key_at(at)? == key {
                    return Ok(Found::At { table, slot, at });
                }
            }
            slot = (slot + 1) & mask;
        }
    }

    /// Appends a record; its offset.
    fn append(&mut self, key: &str, kept: Kept<'_>) -> io::Result<u64> {
        let at = self.end();
        if at + 1 > OFFSET_MASK {
            return Err(io::Error::other("the target index's file passed 1 TB"));
        }
        let before = self.pending.len();
        encode(key, kept, &mut self.pending);
        if self.pending.len() >= WRITE_BUFFER
            && let Err(e) = self.flush()
        {
            // This record goes elsewhere (the index keeps it in memory); those before it are
            // still found in the buffer, and written with the next flush that succeeds.
            self.pending.truncate(before);
            return Err(e);
        }
        Ok(at)
    }

    fn flush(&mut self) -> io::Result<()> {
        #[cfg(test)]
        if self.fail_writes {
            return Err(io::Error::other("no space left on device (test)"));
        }
        write_all_at(&self.file, &self.pending, self.written)?;
        self.written += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }

    /// Stores a record under `key` (hashed `hash`); what it replaced.
    pub(super) fn put(
        &mut self,
        hash: u64,
        key: &str,
        kept: Kept<'_>,
    ) -> io::Result<Option<Indexed>> {
        self.tables[table_of(hash)].reserve_one();
        let found = self.locate(hash, key)?;
        let before = match found {
            Found::At { at, .. } => Some(self.stored(at)?.owned()),
            Found::Free { .. } => None,
        };
        let at = self.append(key, kept)?;
        let slot = (bits_of(hash) << OFFSET_BITS) | (at + 1);
        match found {
            Found::At { table, slot: i, .. } => self.tables[table].slots[i] = slot,
            Found::Free { table, slot: i } => {
                self.tables[table].slots[i] = slot;
                self.tables[table].len += 1;
            }
        }
        Ok(before)
    }

    /// What `read` makes of the record held under `key`.
    pub(super) fn get<R>(
        &mut self,
        hash: u64,
        key: &str,
        read: impl FnOnce(Kept<'_>) -> R,
    ) -> io::Result<Option<R>> {
        match self.locate(hash, key)? {
            Found::At { at, .. } => Ok(Some(read(self.stored(at)?))),
            Found::Free { .. } => Ok(None),
        }
    }

    /// Takes the record held under `key` out.
    pub(super) fn take(&mut self, hash: u64, key: &str) -> io::Result<Option<Indexed>> {
        match self.locate(hash, key)? {
            Found::At { table, slot, at } => {
                let kept = self.stored(at)?.owned();
                self.tables[table].remove(slot);
                Ok(Some(kept))
            }
            Found::Free { .. } => Ok(None),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.tables.iter().map(|t| t.len).sum()
    }

    /// Calls `each` with every record held from offset `from` on, in the order they were
    /// written, until it says stop (`false`); the offset after the last record it was called
    /// with, or the end. `hash` is the index's hash of a key: a record is held when its key
    /// leads to it (a later reading of a key, or a taken one, leaves an earlier copy in the
    /// file that no key leads to).
    pub(super) fn each(
        &mut self,
        from: u64,
        hash: fn(&str) -> i64,
        mut each: impl FnMut(&mut Spill, &str, u64) -> io::Result<bool>,
    ) -> io::Result<u64> {
        let mut at = from;
        while at < self.end() {
            let next = at + 4 + self.body(at)?.len() as u64;
            let key = self.key_at(at)?.to_owned();
            let held = matches!(
                self.locate(hash(&key) as u64, &key)?,
                Found::At { at: found, .. } if found == at
            );
            if held && !each(self, &key, at)? {
                return Ok(next);
            }
            at = next;
        }
        Ok(at)
    }

    /// The record at `at` (an offset `each` gave), owned.
    pub(super) fn kept_at(&mut self, at: u64) -> io::Result<Indexed> {
        Ok(self.stored(at)?.owned())
    }
}

/// The table a key's hash falls in: its top 6 bits.
fn table_of(hash: u64) -> usize {
    (hash >> (64 - 6)) as usize % TABLES
}

/// The hash bits a slot keeps: the 24 below the table's.
fn bits_of(hash: u64) -> u64 {
    (hash >> (64 - 6 - HASH_BITS)) & ((1 << HASH_BITS) - 1)
}

/// The framed record starting at `start` of `bytes`: its bytes after the length, when they
/// are all there.
fn framed(bytes: &[u8], start: usize) -> Option<&[u8]> {
    let len = length(bytes, start)?;
    bytes.get(start + 4..start.checked_add(4 + len)?)
}

fn length(bytes: &[u8], at: usize) -> Option<usize> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    usize::try_from(u32::from_le_bytes(b.try_into().ok()?)).ok()
}

/// A record's frame: its length, then the key, the id (a length plus one, 0 for none), the
/// packed canonical record and the packed native record (as the id).
fn encode(key: &str, kept: Kept<'_>, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    let mut part = |bytes: Option<&[u8]>, optional: bool| {
        let len = bytes.map_or(0, |b| b.len() + usize::from(optional));
        out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(bytes.unwrap_or_default());
    };
    part(Some(key.as_bytes()), false);
    part(kept.id.map(str::as_bytes), true);
    part(Some(kept.canon), false);
    part(kept.native, true);
    let len = u32::try_from(out.len() - start - 4).unwrap_or(u32::MAX);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
}

/// A record's frame read back: its key and what is kept under it.
fn decode(body: &[u8]) -> Option<(&str, Kept<'_>)> {
    let mut at = 0;
    let mut part = |optional: bool| -> Option<Option<&[u8]>> {
        let len = length(body, at)?;
        at += 4;
        let len = if optional {
            match len.checked_sub(1) {
                None => return Some(None),
                Some(len) => len,
            }
        } else {
            len
        };
        let bytes = body.get(at..at.checked_add(len)?)?;
        at += len;
        Some(Some(bytes))
    };
    let key = std::str::from_utf8(part(false)??).ok()?;
    let id = match part(true)? {
        Some(id) => Some(std::str::from_utf8(id).ok()?),
        None => None,
    };
    let canon = part(false)??;
    let native = part(true)?;
    (at == body.len()).then_some((key, Kept { id, canon, native }))
}

fn corrupt(at: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the record at byte {at} of the index's file is not as it was written"),
    )
}

#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], at: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, at)
}

#[cfg(unix)]
fn write_all_at(file: &File, buf: &[u8], at: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, buf, at)
}

#[cfg(not(unix))]
fn read_exact_at(mut file: &File, buf: &mut [u8], at: u64) -> io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    file.seek(SeekFrom::Start(at))?;
    file.read_exact(buf)
}

#[cfg(not(unix))]
fn write_all_at(mut file: &File, buf: &[u8], at: u64) -> io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    file.seek(SeekFrom::Start(at))?;
    file.write_all(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept<'a>(id: Option<&'a str>, canon: &'a [u8], native: Option<&'a [u8]>) -> Kept<'a> {
        Kept { id, canon, native }
    }

    #[test]
    fn a_frame_reads_back_as_it_was_written() {
        for (key, id, canon, native) in [
            ("K1", Some("17"), &b"\x08\x00"[..], None),
            ("", None, &b""[..], Some(&b""[..])),
            ("ȘURUB-1", Some(""), &[7u8; 300][..], Some(&[1u8, 2, 3][..])),
        ] {
            let mut out = vec![9, 9];
            encode(key, kept(id, canon, native), &mut out);
            let body = framed(&out, 2).expect("framed");
            let (stored_key, stored) = decode(body).expect("decoded");
            assert_eq!(stored_key, key);
            assert_eq!(
                framed(body, 0),
                Some(key.as_bytes()),
                "the key first, as key_at reads it"
            );
            assert_eq!(stored.id, id);
            assert_eq!(stored.canon, canon);
            assert_eq!(stored.native, native);
            assert!(decode(&body[..body.len() - 1]).is_none(), "cut short");
        }
    }

    /// A write that fails (a full disk) refuses the record that needed it and loses none
    /// before it: they are found in the buffer, and written once writing works again.
    #[test]
    fn a_failed_write_refuses_its_record_and_keeps_the_others() {
        let mut spill = Spill::new().unwrap();
        let canon = [b'c'; 500];
        let hash = |key: &str| {
            use std::hash::BuildHasher;
            foldhash::quality::FixedState::with_seed(2).hash_one(key)
        };
        let mut i = 0;
        spill.fail_writes = true;
        let refused = loop {
            let key = format!("K{i}");
            match spill.put(hash(&key), &key, kept(None, &canon, None)) {
                Ok(_) => i += 1,
                Err(_) => break key,
            }
        };
        assert!(i > 100, "the buffer held {i} records first");
        assert_eq!(spill.written, 0);
        let mut kept_bytes = Vec::new();
        for n in 0..i {
            encode(&format!("K{n}"), kept(None, &canon, None), &mut kept_bytes);
        }
        assert_eq!(
            spill.pending, kept_bytes,
            "nothing of the refused record left behind"
        );
        let held = |spill: &mut Spill, key: &str| spill.get(hash(key), key, |_| ()).unwrap();
        assert!(held(&mut spill, &refused).is_none(), "refused");
        for n in 0..i {
            assert!(held(&mut spill, &format!("K{n}")).is_some(), "K{n} kept");
        }
        spill.fail_writes = false;
        spill
            .put(hash("again"), "again", kept(None, &canon, None))
            .unwrap();
        assert!(spill.written > 0, "written now");
        for n in 0..i {
            assert!(held(&mut spill, &format!("K{n}")).is_some(), "K{n} written");
        }
        assert!(held(&mut spill, &refused).is_none());
        assert_eq!(spill.len(), i + 1);
    }

    /// Many records through the file: past the write buffer, read in order (the window) and
    /// out of it (single reads), replaced, taken out and walked; with hashes that all share
    /// one table and one home slot, and with real ones.
    #[test]
    fn records_are_found_replaced_taken_and_walked() {
        fn same(_: &str) -> i64 {
            7 << 40
        }
        fn spread(key: &str) -> i64 {
            use std::hash::BuildHasher;
            foldhash::quality::FixedState::with_seed(1).hash_one(key) as i64
        }
        for (hash, n) in [(same as fn(&str) -> i64, 300), (spread, 5_000)] {
            let mut spill = Spill::new().unwrap();
            let canon = |i: usize| vec![b'c'; i % 700];
            for i in 0..n {
                let key = format!("K{i}");
                let c = canon(i);
                let id = i.to_string();
                let before = spill
                    .put(hash(&key) as u64, &key, kept(Some(&id), &c, None))
                    .unwrap();
                assert!(before.is_none());
            }
            assert_eq!(spill.len(), n);
            assert_eq!(spill.written > 0, n > 1000, "past the write buffer");
            for order in [
                (0..n).collect::<Vec<_>>(),
                (0..n).rev().step_by(7).collect(),
            ] {
                for i in order {
                    let key = format!("K{i}");
                    let found = spill
                        .get(hash(&key) as u64, &key, |k| {
                            (k.id.map(str::to_owned), k.canon.len())
                        })
                        .unwrap();
                    assert_eq!(found, Some((Some(i.to_string()), i % 700)), "{key}");
                }
            }
            assert!(
                spill
                    .get(hash("K-1") as u64, "K-1", |_| ())
                    .unwrap()
                    .is_none()
            );
            let before = spill
                .put(hash("K3") as u64, "K3", kept(None, b"new", Some(b"n")))
                .unwrap()
                .expect("replaced");
            assert_eq!(before.view().id, Some("3"));
            let taken = spill.take(hash("K3") as u64, "K3").unwrap().expect("held");
            assert_eq!(
                (taken.view().canon, taken.view().native),
                (&b"new"[..], Some(&b"n"[..]))
            );
            assert!(spill.take(hash("K3") as u64, "K3").unwrap().is_none());
            for i in (10..n).step_by(3) {
                let key = format!("K{i}");
                assert!(spill.take(hash(&key) as u64, &key).unwrap().is_some());
            }
            // What is left is found still, after the slots moved back.
            let mut left = 0;
            for i in 0..n {
                let key = format!("K{i}");
                let held = spill
                    .get(hash(&key) as u64, &key, |_| ())
                    .unwrap()
                    .is_some();
                assert_eq!(held, i != 3 && (i < 10 || (i - 10) % 3 != 0), "{key}");
                left += usize::from(held);
            }
            assert_eq!(spill.len(), left);
            let mut walked = Vec::new();
            spill
                .each(0, hash, |s, key, at| {
                    assert_eq!(
                        s.kept_at(at)?.view().canon.len(),
                        key[1..].parse::<usize>().unwrap() % 700
                    );
                    walked.push(key.to_owned());
                    Ok(true)
                })
                .unwrap();
            assert_eq!(walked.len(), left, "each held record once");
        }
    }
}
