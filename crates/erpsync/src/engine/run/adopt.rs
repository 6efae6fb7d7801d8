//! Source records adopted as they were read. A first sync finds nearly every record of the
//! source already in the target, alike: read into its canonical values by position and
//! packed, such a record is compared with the target index's packed copy on the bytes (the
//! same bytes, or the same compared fields, as values only where the bytes differ) and
//! bound from those bytes (`Adopted`). No object is built for it, compared by name, or
//! packed again to be stored.
//!
//! Anything else about a record — a binding, a difference, a record the index does not
//! hold, a write of unknown outcome — makes it a `Seen`, decided as every record is; so does
//! any run where adopting is more than linking (filters, triggers, required flows,
//! export-once flows, both ways: `Runner::adopts_alike`). What it is adopted as is what
//! `one_way` adopts it as: the same binding, decision, report and failure cleared. A dry run
//! adopts the same way and stores nothing: it plans the binding where a flow planned after
//! it reads it, as `one_way` plans one.

use super::*;
use crate::config::model::SyncMode;
use crate::state::Adopted;

/// A source record read into its canonical values, in its read mapping's order.
pub(super) struct Positional {
    pub(super) key: String,
    id: Option<String>,
    pub(super) values: Vec<Value>,
    /// The record as its read mapping's object, packed (`packed::pack_object_spans`): what
    /// an adoption stores and its listing's fingerprint is taken from.
    pub(super) packed: Box<[u8]>,
    /// Where each value is in `packed`, in the order of `values`.
    pub(super) spans: Vec<std::ops::Range<usize>>,
    /// The record's text, for a failure's report (as `Seen::text`).
    text: Box<str>,
}

impl Positional {
    /// The record as `seen_read_text` makes it: its values as the mapping's object.
    pub(super) fn into_seen(self, direct: &DirectRead) -> Seen {
        Seen {
            key: self.key,
            id: self.id,
            canon: direct.object_of(self.values),
            native: Value::Null,
            text: Some(self.text),
        }
    }
}

/// A record of a source page: read whole into a `Seen`, or by position.
pub(super) enum Served {
    Whole(Seen),
    Values(Positional),
}

impl Served {
    pub(super) fn key(&self) -> &str {
        match self {
            Served::Whole(seen) => &seen.key,
            Served::Values(read) => &read.key,
        }
    }
}

/// How a listing's records are read by position: the read mapping's direct read, the names
/// of its fields in their order, and where the match key and the modification stamp are
/// among them.
pub(super) struct Positions<'d> {
    pub(super) direct: &'d DirectRead,
    shaped: canonical::Shaped<'d>,
    pub(super) names: Vec<&'d str>,
    key_at: Option<usize>,
    pub(super) stamp_at: Option<usize>,
}

impl<'e> Runner<'e> {
    /// Whether this run adopts source records alike by position (see the module): a
    /// one-way flow (or its dry run), whose records are eligible whatever they hold and
    /// are linked by adopting them (its source must also be read into its members by a
    /// mapping of one shape: `positions`).
    pub(super) fn adopts_alike(&self) -> bool {
        !self.bidirectional()
            && self.flow.filter.is_none()
            && self.flow.on_status.is_none()
            && self.flow.on_transition.is_none()
            && self.flow.requires.is_empty()
            && !self.flow.export_once
    }

    /// How the source's records are read by position through `direct`, when this run
    /// adopts them alike.
    pub(super) fn positions<'d>(&self, direct: Option<&'d DirectRead>) -> Option<Positions<'d>>
    where
        'e: 'd,
    {
        let direct = direct.filter(|_| self.adopts_alike())?;
        let shaped = self.src.shaped.clone()?;
        let names: Vec<&str> = direct.names().collect();
        let at = |field: &str| names.iter().position(|n| *n == field);
        let key_at = at(&self.flow.match_key);
        let stamp_at = self.entity.updated_at.as_deref().and_then(at);
        Some(Positions {
            direct,
            shaped,
            names,
            key_at,
            stamp_at,
        })
    }

    /// A source record read into `values` (the members `at.direct` reads), mapped and
    /// normalised where they are: what `seen_read_text` makes of it, failures included,
    /// without the object.
    pub(super) fn positional(
        &self,
        at: &Positions,
        values: Vec<Value>,
        text: Box<str>,
    ) -> Result<Positional, Box<(String, Value, Fail)>> {
        let (id, mapped) = at.direct.read_values(values);
        let mut values = mapped.map_err(|e| unmappable(&id, native_of(&text), e))?;
        if let Err(e) =
            canonical::normalise_values(&at.shaped, at.names.iter().copied(), &mut values)
        {
            crate::json::drop_values(values);
            return Err(unmappable(&id, native_of(&text), e));
        }
        let Some(raw_key) = at.key_at.and_then(|k| key_text(&values[k])) else {
            crate::json::drop_values(values);
            return Err(self.keyless(&id, native_of(&text)));
        };
        let (packed, spans) = packed::pack_object_spans(at.names.iter().copied(), &values);
        Ok(Positional {
            key: normalize_owned(raw_key, &self.flow.normalize),
            id,
            values,
            packed,
            spans,
            text,
        })
    }

    /// A record of a source page read by position: adopted when it can be (see
    /// `adopt_alike`), else decided as a `Seen`.
    pub(super) async fn handle_values(
        &mut self,
        read: Positional,
        at: &Positions<'_>,
    ) -> Result<(), EngineRunError> {
        match self.adopt_alike(read, at).await? {
            None => Ok(()),
            Some(read) => self.handle(read.into_seen(at.direct)).await,
        }
    }

    /// Adopts `read` when the target index holds it alike and nothing is known of it (no
    /// binding, stored or held; no write of unknown outcome); otherwise gives it back.
    async fn adopt_alike(
        &mut self,
        read: Positional,
        at: &Positions<'_>,
    ) -> Result<Option<Positional>, EngineRunError> {
        if let Some(down) = self.system_down() {
            return Err(down);
        }
        if self.in_flight.width > 1 {
            // An update of this key still in flight binds it when answered.
            self.room_for(&read.key).await?;
        }
        let key = &read.key;
        let unbound = matches!(self.listing.page_bindings.get(key), Some(None))
            && !self.held.holds(key)
            && !self.unsettled.in_doubt.contains(key);
        let Some(index) = self.index.records.as_ref().filter(|_| unbound) else {
            return Ok(Some(read));
        };
        let (packed, spans) = (&read.packed, &read.spans);
        // The target's id, and its record and side `b`'s differences when they are not the
        // same bytes; nothing when it is not adopted here (a record the index cannot give
        // is decided as a `Seen`, which reports why).
        let adopted = index.kept(key, |target_id, target| {
            let id = target_id.map(str::to_string);
            if target == &packed[..] {
                return Some((id, None));
            }
            let source: Vec<packed::Member> = (at.names.iter().zip(spans))
                .map(|(name, span)| (name.as_bytes(), &packed[span.clone()]))
                .collect();
            let target_members = packed::members(target)?;
            let source_is_a = self.src.pair_side == PairSide::A;
            let (skip_nulls, compared) = (self.flow.skip_nulls, &self.cmp);
            let (alike, b_delta) = match alike_and_delta(
                &source,
                &target_members,
                source_is_a,
                compared,
                skip_nulls,
            ) {
                Some((alike, delta)) => (alike, Some(delta)),
                None => {
                    let alike = fields_alike(&source, &target_members, compared, skip_nulls)?;
                    let delta = if source_is_a {
                        packed::delta(&source, &target_members)
                    } else {
                        packed::delta(&target_members, &source)
                    };
                    (alike, delta)
                }
            };
            (alike || self.adopts_unlike()).then(|| (id, Some((Box::from(target), b_delta))))
        });
        let Ok(Some(Some((target_id, target)))) = adopted else {
            return Ok(Some(read));
        };
        let Positional {
            key,
            id,
            values,
            packed,
            ..
        } = read;
        crate::json::drop_values(values);
        let (id_a, id_b) = match self.src.pair_side {
            PairSide::A => (id, target_id),
            PairSide::B => (target_id, id),
        };
        let (a, b) = match (self.src.pair_side, target) {
            (_, None) => (packed, None),
            (PairSide::A, Some((target, delta))) => (packed, Some((target, delta))),
            (PairSide::B, Some((target, delta))) => (target, Some((packed, delta))),
        };
        self.hold_adopted(Adopted::new(key.clone(), id_a, id_b, a, b))
            .await?;
        let dst_name = self.dst.name;
        // A reason is made only for a line that shows it (100,000 of them a first sync).
        let reason = self
            .lines(Decision::Adopt)
            .then(|| adopted_reason(dst_name));
        self.record(&key, Decision::Adopt, Some(dst_name), Vec::new(), reason);
        self.succeeded(&key).await.map(|()| None)
    }

    /// Whether an unbound record found in the target is adopted however it differs: a flow
    /// that only creates (`decide::decide`).
    fn adopts_unlike(&self) -> bool {
        matches!(self.flow.mode, SyncMode::Create | SyncMode::CreateMissing)
    }
}

/// Whether the packed records of members `source` and `target` hold the same values in
/// `compared` (with `skip_nulls`, in those of them the source holds): what `decide::same`
/// answers for the fields `decide::fields_for` gives, a field missing counting as null.
/// `None` when a value cannot be read.
fn fields_alike(
    source: &[packed::Member],
    target: &[packed::Member],
    compared: &[String],
    skip_nulls: bool,
) -> Option<bool> {
    const NULL: &[u8] = &[0];
    let (mut s, mut t) = (InOrder(source, 0), InOrder(target, 0));
    for field in compared {
        let x = s.get(field).unwrap_or(NULL);
        if skip_nulls && x == NULL {
            continue;
        }
        let y = t.get(field).unwrap_or(NULL);
        if !packed::same_value(x, y)? {
            return Some(false);
        }
    }
    Some(true)
}

/// `fields_alike` of `source` and `target`, and `packed::delta` of side `b` from side `a`
/// (`source_is_a` tells which is which), at once: for records of the same names in the same
/// order (both sides' read mappings make the entity's fields), each member's bytes compared
/// once and only those that differ looked at. `None` when the names do not line up (or a
/// value cannot be read): `fields_alike` and `packed::delta` then answer apart.
fn alike_and_delta(
    source: &[packed::Member],
    target: &[packed::Member],
    source_is_a: bool,
    compared: &[String],
    skip_nulls: bool,
) -> Option<(bool, Vec<u8>)> {
    const NULL: &[u8] = &[0];
    let differ = packed::differing(source, target)?;
    // A differing field is compared unless, with `skip_nulls`, the source holds none
    // (`decide::fields_for`).
    let alike = !differ.iter().any(|&(name, x, _)| {
        !(skip_nulls && x == NULL) && compared.iter().any(|c| c.as_bytes() == name)
    });
    let side_b: Vec<packed::Member> = differ
        .iter()
        .map(|&(name, x, y)| (name, if source_is_a { y } else { x }))
        .collect();
    Some((alike, packed::object_of(&side_b)))
}

/// A packed record's members looked up in the order they are asked for: the next one held
/// is checked first (records and compared fields are both in name order), then all.
struct InOrder<'m, 'b>(&'m [packed::Member<'b>], usize);

impl<'b> InOrder<'_, 'b> {
    fn get(&mut self, name: &str) -> Option<&'b [u8]> {
        let name = name.as_bytes();
        let ahead = self.0[self.1..].iter().position(|(n, _)| *n == name);
        let at = match ahead {
            Some(i) => self.1 + i,
            None => self.0.iter().position(|(n, _)| *n == name)?,
        };
        self.1 = at + 1;
        Some(self.0[at].1)
    }
}

/// What a report says of a record adopted into `target`.
pub(super) fn adopted_reason(target: &str) -> String {
    format!("already in `{target}`; linked")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Records of a few fields in name order, each field missing or one of a few values
    /// (null, zeros of both signs, an integer and its float, strings, a nested value).
    fn records() -> Vec<Value> {
        let values = [
            json!(null),
            json!(0.0),
            json!(-0.0),
            json!(1),
            json!(1.0),
            json!("1"),
            json!(""),
            json!({"a": [1, null]}),
        ];
        let mut out = Vec::new();
        let mut n = 7u64;
        for _ in 0..400 {
            let mut record = serde_json::Map::new();
            for field in ["active", "name", "price", "sku"] {
                n = n
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let pick = (n >> 33) as usize % (values.len() + 2);
                if let Some(v) = values.get(pick) {
                    record.insert(field.to_string(), v.clone());
                }
            }
            out.push(Value::Object(record));
        }
        out
    }

    /// `fields_alike` of two packed records answers as comparing them as values does, for
    /// every pair of records, with and without `skip_nulls`, for fields held or not.
    #[test]
    fn packed_records_are_alike_as_their_values_are_the_same() {
        let records = records();
        let compared: Vec<String> = ["name", "price", "missing", "sku"]
            .map(String::from)
            .to_vec();
        let (mut alike, mut unlike) = (0, 0);
        for (i, pair) in records.chunks(2).enumerate() {
            // Half the pairs a record and a copy of it with one field from the other.
            let (x, mut y) = (&pair[0], pair[1].clone());
            if i % 2 == 0 {
                let field = ["name", "price", "sku", "active"][i / 2 % 4];
                let mut copy = x.clone();
                match y.get(field) {
                    Some(v) => copy[field] = v.clone(),
                    None => drop(copy.as_object_mut().and_then(|m| m.remove(field))),
                }
                y = copy;
            }
            let y = &y;
            for skip_nulls in [false, true] {
                let (fields, _) = decide::fields_for(skip_nulls, &compared, &[], x);
                let want = canonical::same(Some(x), Some(y), &fields);
                let got = alike_packed(x, y, &compared, skip_nulls);
                assert_eq!(got, Some(want), "{x} / {y}, skip_nulls {skip_nulls}");
                if want { alike += 1 } else { unlike += 1 }
            }
            // A record is alike itself.
            let own = alike_packed(x, x, &compared, false);
            assert_eq!(own, Some(true));
        }
        assert!(alike > 20 && unlike > 20, "{alike} alike, {unlike} not");
    }

    /// For records of the same names in the same order, `alike_and_delta` answers what
    /// `fields_alike` and `packed::delta` answer apart, either side the source.
    #[test]
    fn alike_and_delta_at_once_answer_as_apart() {
        let full: Vec<Value> = records()
            .into_iter()
            .map(|r| {
                let fields = ["active", "name", "price", "sku"];
                let held = fields.map(|f| (f.to_string(), r.get(f).cloned().unwrap_or(json!("x"))));
                Value::Object(held.into_iter().collect())
            })
            .collect();
        let compared: Vec<String> = ["name", "price", "sku"].map(String::from).to_vec();
        let mut differing = 0;
        let mut skipped = 0;
        for (i, pair) in full.chunks(2).enumerate() {
            // Most pairs a record and a copy of it with one field from the other.
            let mut other = pair[0].clone();
            let field = ["active", "name", "price", "sku"][i % 4];
            other[field] = pair[1][field].clone();
            let pair = if i % 5 == 0 {
                [pair[0].clone(), pair[1].clone()]
            } else {
                [pair[0].clone(), other]
            };
            skipped += usize::from(
                pair[0][field].is_null() && !pair[1][field].is_null() && field != "active",
            );
            let (x, y) = (packed::pack(&pair[0]), packed::pack(&pair[1]));
            let (x, y) = (packed::members(&x).unwrap(), packed::members(&y).unwrap());
            for (skip_nulls, source_is_a) in [(false, true), (true, true), (false, false)] {
                let (a, b) = if source_is_a { (&x, &y) } else { (&y, &x) };
                let apart = (
                    fields_alike(&x, &y, &compared, skip_nulls).unwrap(),
                    packed::delta(a, b).unwrap(),
                );
                let at_once = alike_and_delta(&x, &y, source_is_a, &compared, skip_nulls);
                assert_eq!(at_once, Some(apart), "{:?} / {:?}", pair[0], pair[1]);
            }
            differing += usize::from(pair[0]["active"] != pair[1]["active"]);
        }
        assert!(
            differing > 20 && skipped > 5,
            "{differing} differing, {skipped} skipped"
        );
        // Names that do not line up: answered apart.
        let (x, y) = (
            packed::pack(&json!({"a": 1})),
            packed::pack(&json!({"b": 1})),
        );
        let (x, y) = (packed::members(&x).unwrap(), packed::members(&y).unwrap());
        assert_eq!(alike_and_delta(&x, &y, true, &compared, false), None);
    }

    /// `fields_alike` of the records `x` and `y`, packed.
    fn alike_packed(x: &Value, y: &Value, compared: &[String], skip_nulls: bool) -> Option<bool> {
        let (x, y) = (packed::pack(x), packed::pack(y));
        let (x, y) = (packed::members(&x)?, packed::members(&y)?);
        fields_alike(&x, &y, compared, skip_nulls)
    }
}
