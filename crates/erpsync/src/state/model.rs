//! What the state holds, as records: bindings and their scopes, journal entries, failures,
//! runs, leases, nodes, system health; the writes a run makes; and the store's errors.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::lease::Instance;

/// A state operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StateStoreError {
    #[error("state database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("state database error: {}", postgres_message(.0))]
    Postgres(tokio_postgres::Error),
    #[error("state database `{0}` is gone: its connections were closed")]
    Disconnected(String),
    #[error("state call stopped before it answered: {0}")]
    Stopped(String),
    #[error("state data is corrupt: {0}")]
    Corrupt(String),
    /// A state file whose schema has steps this release does not know: what they changed
    /// (how a binding's bases are kept, say) it cannot be trusted to read or write.
    #[error(
        "the state file was written by a later release of erpsync (schema step {found}; this release knows steps up to {known}): run that release, or a later one"
    )]
    LaterRelease { found: i64, known: i64 },
    #[error("unsupported state url `{0}`: expected `sqlite:PATH` or `postgres://…`")]
    Url(String),
    #[error("TLS to the state database: {0}")]
    Tls(super::postgres::TlsSetupError),
    #[error("cannot create state folder `{path}`: {reason}")]
    Folder { path: String, reason: String },
    /// A write of a run whose lease was granted to another holder since: refused, so a node
    /// that lost a flow cannot change its state.
    #[error("lease `{0}` was taken over by another holder; this run writes nothing more")]
    Fenced(String),
}

impl From<tokio_postgres::Error> for StateStoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        StateStoreError::Postgres(e)
    }
}

/// The driver's own message is terse ("error connecting to server"): the cause is in its
/// source, which the message carries (the variant keeps no source, so a chain printer does
/// not repeat it).
fn postgres_message(e: &tokio_postgres::Error) -> String {
    use std::error::Error as _;
    match e.source() {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

pub type Result<T> = std::result::Result<T, StateStoreError>;

/// The records of one entity shared by two systems. Both directions of a pair share one
/// scope, so what one flow wrote is known to the flow going the other way (echo suppression).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    pub entity: String,
    /// The two systems, in name order.
    pub a: String,
    pub b: String,
}

impl Scope {
    pub fn new(entity: &str, x: &str, y: &str) -> Self {
        let (a, b) = if x <= y { (x, y) } else { (y, x) };
        Scope {
            entity: entity.to_string(),
            a: a.to_string(),
            b: b.to_string(),
        }
    }

    /// Which of the pair `system` is: `a` when it is named first, else `b`.
    pub fn side_of(&self, system: &str) -> PairSide {
        if self.a == system {
            PairSide::A
        } else {
            PairSide::B
        }
    }
}

/// One of the two systems of a scope, as bindings keep them: `A` is the system named first,
/// `B` the other. A flow's source may be either, so the engine speaks of its own sides
/// (source, target) and maps them to these through `Scope::side_of`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PairSide {
    A,
    B,
}

/// What erpsync knows of one record on both sides.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Binding {
    pub key: String,
    pub id_a: Option<String>,
    pub id_b: Option<String>,
    /// The canonical record last known to be on side `a` (what was read or written).
    pub base_a: Option<Value>,
    pub base_b: Option<Value>,
    /// When the record was first written to the other side by an export-once flow.
    pub exported_at: Option<DateTime<Utc>>,
    /// Why the record is parked for review, if it is.
    pub parked: Option<String>,
    /// The flow's post-actions (e.g. locking the order in the shop) have run for it.
    pub actions_done: bool,
    /// The two sides' bases are one record, kept on the side that has one and not copied to
    /// the other: a record adopted because both sides hold it alike. Read through `base`,
    /// each side has it; `base_mut` and `settle_bases` make the copy. Stored, it is the one
    /// copy a binding of equal sides keeps anyway (see `StoredBases`).
    #[serde(skip)]
    pub bases_equal: bool,
}

impl Binding {
    /// The record's id on one side, when known.
    pub fn id(&self, side: PairSide) -> Option<&str> {
        match side {
            PairSide::A => self.id_a.as_deref(),
            PairSide::B => self.id_b.as_deref(),
        }
    }
    pub fn set_id(&mut self, side: PairSide, id: String) {
        match side {
            PairSide::A => self.id_a = Some(id),
            PairSide::B => self.id_b = Some(id),
        }
    }
    /// The canonical record last known to be on one side.
    pub fn base(&self, side: PairSide) -> Option<&Value> {
        let (own, other) = match side {
            PairSide::A => (&self.base_a, &self.base_b),
            PairSide::B => (&self.base_b, &self.base_a),
        };
        match own {
            None if self.bases_equal => other.as_ref(),
            own => own.as_ref(),
        }
    }
    pub fn base_mut(&mut self, side: PairSide) -> &mut Option<Value> {
        self.settle_bases();
        match side {
            PairSide::A => &mut self.base_a,
            PairSide::B => &mut self.base_b,
        }
    }
    /// Copies a base kept for both sides (`bases_equal`) to the side without one.
    pub fn settle_bases(&mut self) {
        if std::mem::take(&mut self.bases_equal) {
            match (&self.base_a, &self.base_b) {
                (Some(a), None) => self.base_b = Some(a.clone()),
                (None, Some(b)) => self.base_a = Some(b.clone()),
                _ => {}
            }
        }
    }
}

/// A binding made by adopting a record both sides hold alike, as a first sync makes nearly
/// every one, with each side's record kept packed (`json::packed::pack`, objects): the form
/// the run compared them in, so no object is built for them only to be packed again. It
/// stands for the `Binding` with those records as its bases (`binding`), and is stored as
/// that binding is.
#[derive(Debug, Clone, PartialEq)]
pub struct Adopted {
    pub key: String,
    pub id_a: Option<String>,
    pub id_b: Option<String>,
    a: Box<[u8]>,
    /// Side `b`'s record; `None` when it is side `a`'s, the same bytes (`bases_equal`).
    b: Option<Box<[u8]>>,
    /// Side `b` as its differences from side `a` (`json::packed::delta`), when it has the
    /// same fields in the same order: how it is stored (`StoredBases`).
    b_delta: Option<Box<[u8]>>,
}

/// Side `b` of an adoption whose sides differ: its record packed, and its differences from
/// side `a` packed (`json::packed::delta`; `None` when it makes none).
pub(crate) type PackedOther = (Box<[u8]>, Option<Vec<u8>>);

impl Adopted {
    /// An adoption of the records `a` and `b` (`None`: the same as `a`), each what
    /// `json::packed::pack` (or `pack_object`) made of an object, and `b_delta`, what
    /// `json::packed::delta` makes of their members (`None` when it makes nothing).
    pub(crate) fn new(
        key: String,
        id_a: Option<String>,
        id_b: Option<String>,
        a: Box<[u8]>,
        b: Option<PackedOther>,
    ) -> Self {
        let (b, b_delta) = match b {
            Some((b, delta)) => (Some(b), delta.map(Vec::into_boxed_slice)),
            None => (None, None),
        };
        Adopted {
            key,
            id_a,
            id_b,
            a,
            b,
            b_delta,
        }
    }

    /// The adoption of the records `a` and `b` (`None`: the same as `a`), packed here.
    pub fn of(
        key: String,
        id_a: Option<String>,
        id_b: Option<String>,
        a: &Value,
        b: Option<&Value>,
    ) -> Self {
        use crate::json::packed::{delta, members, pack};
        let a = pack(a);
        let b = b.map(|b| {
            let b = pack(b);
            let delta = members(&a)
                .zip(members(&b))
                .and_then(|(a, b)| delta(&a, &b));
            (b, delta)
        });
        Adopted::new(key, id_a, id_b, a, b)
    }

    /// Side `a`'s record; side `b`'s (`None`: the same); side `b` as its differences from
    /// side `a`, when it has the same fields in the same order. Packed.
    pub(crate) fn packed(&self) -> (&[u8], Option<&[u8]>, Option<&[u8]>) {
        (&self.a, self.b.as_deref(), self.b_delta.as_deref())
    }

    /// The binding it stands for.
    pub fn binding(&self) -> Result<Binding> {
        let record = |bytes: &[u8]| {
            crate::json::packed::unpack(bytes)
                .filter(Value::is_object)
                .ok_or_else(|| {
                    StateStoreError::Corrupt(format!(
                        "the adoption of `{}` holds no packed record",
                        self.key
                    ))
                })
        };
        Ok(Binding {
            key: self.key.clone(),
            id_a: self.id_a.clone(),
            id_b: self.id_b.clone(),
            base_a: Some(record(&self.a)?),
            base_b: self.b.as_deref().map(record).transpose()?,
            bases_equal: self.b.is_none(),
            ..Default::default()
        })
    }
}

/// State of a journaled write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JournalState {
    /// Intent recorded, request not yet answered.
    Pending,
    /// The target accepted it.
    Done,
    /// It failed for sure; nothing was written.
    Failed,
}

/// A write erpsync intends to make, recorded before it is sent.
#[derive(Debug, Clone, Serialize)]
pub struct JournalEntry {
    pub id: i64,
    pub flow: String,
    pub key: String,
    pub target: String,
    pub operation: String,
    pub idempotency_key: String,
    pub payload: Value,
    pub state: JournalState,
    pub created_at: DateTime<Utc>,
}

/// A record that could not be synced, kept for retry.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub id: i64,
    pub flow: String,
    pub key: String,
    pub source_record: Value,
    pub payload: Option<Value>,
    pub error: String,
    pub status: Option<u16>,
    pub response: Option<Value>,
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One run of a flow.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub id: i64,
    pub flow: String,
    pub kind: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub status: String,
    pub counts: Value,
    pub error: Option<String>,
    /// The node (its `daemon.node_id` label) that ran it.
    pub node: Option<String>,
    /// The process that ran it (see `Instance`).
    pub instance: Option<String>,
}

/// A process that shares the state, as it last said it was alive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeRecord {
    pub instance: String,
    pub node: String,
    pub started_at: DateTime<Utc>,
    pub seen_at: DateTime<Utc>,
}

/// Rows deleted by `Coordination::prune`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Pruned {
    pub runs: usize,
    pub nodes: usize,
}

/// What was last seen of a system's reachability (its circuit breaker), by a run or a probe
/// of any process sharing the state, so `erpsync status` can show a system that is down.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct SystemHealth {
    pub system: String,
    /// Taken as down: runs stop calling it until a probe gets an answer.
    pub down: bool,
    pub down_since: Option<DateTime<Utc>>,
    /// Requests in a row that got no response.
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    /// When it may be probed next (while down).
    pub next_probe: Option<DateTime<Utc>>,
    /// When this was seen.
    pub checked_at: DateTime<Utc>,
}

/// A lease as the store keeps it. An expired lease stays until its holder releases it or
/// another holder takes it over, so `held_at` tells whether anyone holds it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lease {
    pub name: String,
    /// The holding process (see `Instance::id`).
    pub holder: String,
    /// The holder's node label.
    pub node: String,
    /// The fencing token of the grant: larger for every later grant.
    pub token: i64,
    pub expires_at: DateTime<Utc>,
}

impl Lease {
    /// The name of a flow's lease.
    pub fn of_flow(flow: &str) -> String {
        format!("flow:{flow}")
    }

    /// The flow this lease is for, when it is a flow's lease.
    pub fn flow(&self) -> Option<&str> {
        self.name.strip_prefix("flow:")
    }

    /// Whether its holder holds it at `now`: once expired, any holder may take it.
    pub fn held_at(&self, now: DateTime<Utc>) -> bool {
        self.expires_at > now
    }
}

/// The moment before which remembered deliveries are forgotten. Never before 1970: both
/// stores take that as "the beginning", and SQLite's text timestamps only sort by time for
/// positive years.
pub(crate) fn keep_since(at: DateTime<Utc>, keep: std::time::Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(keep)
        .ok()
        .and_then(|k| at.checked_sub_signed(k))
        .unwrap_or(DateTime::UNIX_EPOCH)
        .max(DateTime::UNIX_EPOCH)
}

/// A JSON column stored as text (both stores keep JSON as text so key order is kept).
pub(crate) fn json_column(s: Option<String>) -> Result<Option<serde_json::Value>> {
    s.as_deref().map(json_text).transpose()
}

/// JSON text read from a column.
pub(crate) fn json_text(text: &str) -> Result<Value> {
    crate::json::from_str(text).map_err(|e| StateStoreError::Corrupt(e.to_string()))
}

/// A state write, owned so a store may hand it to another thread.
#[derive(Debug, Clone)]
pub enum StateWrite {
    PutBindings(Scope, Vec<Binding>),
    /// Bindings, and records adopted alike (see `Adopted`) stored as `PutBindings` stores
    /// the bindings they stand for, in one write.
    PutHeld(Scope, Vec<Binding>, Vec<Adopted>),
    SetCursor(String, DateTime<Utc>),
    JournalBegin(JournalEntry),
    JournalFinish(i64, JournalState, Option<(Scope, Binding)>),
    /// A pending write's payload, rewritten (the steps of a multi-step write done so far).
    JournalProgress(i64, Value),
    /// The pending writes of one record settled by hand (see `Journal::journal_settle`).
    JournalSettle {
        flow: String,
        key: String,
        binding: Option<(Scope, Binding)>,
    },
    PutFailure(Failure),
    ClearFailure {
        flow: String,
        key: String,
    },
    RunStart {
        flow: String,
        kind: String,
        at: DateTime<Utc>,
        instance: Instance,
    },
    RunFinish {
        id: i64,
        at: DateTime<Utc>,
        status: String,
        counts: Value,
        error: Option<String>,
    },
}

/// How a store keeps one base (a record) in a column.
pub(crate) trait KeepBase: Sized {
    fn keep(record: &Value) -> Self;
}

/// A base as read from its column: `load` gives back the record `KeepBase::keep` was given.
pub(crate) trait LoadBase: Sized {
    fn load(self) -> Result<Value>;
}

/// JSON text: PostgreSQL's columns, and SQLite's rows written before `Packed`.
impl KeepBase for String {
    fn keep(record: &Value) -> Self {
        crate::json::to_text(record)
    }
}

impl LoadBase for String {
    fn load(self) -> Result<Value> {
        json_text(&self)
    }
}

/// A base kept packed (`json::packed::pack_stored`), read.
pub(crate) fn base_of_packed(bytes: &[u8]) -> Result<Value> {
    crate::json::packed::unpack_stored(bytes).ok_or_else(|| {
        StateStoreError::Corrupt(format!(
            "a binding base of {} bytes is not a packed record",
            bytes.len()
        ))
    })
}

/// A base already read (where its column was, without a copy of the column kept).
impl LoadBase for Result<Value> {
    fn load(self) -> Result<Value> {
        self
    }
}

/// A base as SQLite writes it: packed (`json::packed::pack_stored`, a blob), which costs a
/// run storing 100,000 bindings less than writing them as JSON text. SQLite's rows written
/// before hold text; a column is read as what it holds (`sqlite::ReadBase`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PackedBase(pub Vec<u8>);

impl KeepBase for PackedBase {
    fn keep(record: &Value) -> Self {
        PackedBase(crate::json::packed::pack_stored(record))
    }
}

/// A binding's two bases as both stores keep them: side `a` whole, side `b` whole or, when
/// it has the same fields in the same order as `a` (the common case: both are the same
/// entity's canonical record), as the fields where it differs from `a` only — `{}` when
/// both sides hold the same record. Lossless: `load` gives back the same two records.
/// Rows written before the delta column existed hold `b` whole and still read as they did.
pub(crate) struct StoredBases<C = String> {
    pub base_a: Option<C>,
    /// Side `b` whole (`None` when it is kept as a delta or there is none).
    pub base_b: Option<C>,
    /// Side `b` as its differences from side `a`.
    pub b_delta: Option<C>,
}

impl<C: KeepBase> StoredBases<C> {
    pub(crate) fn of(b: &Binding) -> Self {
        if b.bases_equal
            && let (Some(one), None) | (None, Some(one)) = (&b.base_a, &b.base_b)
        {
            // One record for both sides: what two equal records are kept as below.
            return match one {
                Value::Object(_) => StoredBases {
                    base_a: Some(C::keep(one)),
                    base_b: None,
                    b_delta: Some(C::keep(&Value::Object(Default::default()))),
                },
                _ => StoredBases {
                    base_a: Some(C::keep(one)),
                    base_b: Some(C::keep(one)),
                    b_delta: None,
                },
            };
        }
        let base_a = b.base_a.as_ref().map(C::keep);
        match (&b.base_a, &b.base_b) {
            (Some(Value::Object(a)), Some(Value::Object(other)))
                if a.len() == other.len() && a.keys().eq(other.keys()) =>
            {
                let delta: serde_json::Map<String, Value> = a
                    .iter()
                    .zip(other.iter())
                    .filter(|((_, x), (_, y))| x != y)
                    .map(|(_, (k, y))| (k.clone(), y.clone()))
                    .collect();
                StoredBases {
                    base_a,
                    base_b: None,
                    b_delta: Some(C::keep(&Value::Object(delta))),
                }
            }
            (_, base_b) => StoredBases {
                base_a,
                base_b: base_b.as_ref().map(C::keep),
                b_delta: None,
            },
        }
    }
}

impl StoredBases<PackedBase> {
    /// `of` the binding `adopted` stands for, from its packed records as they are.
    pub(crate) fn adopted(adopted: &Adopted) -> Self {
        use crate::json::packed::stored_of_packed;
        let (a, b, b_delta) = adopted.packed();
        let base_a = Some(PackedBase(stored_of_packed(a)));
        match (b, b_delta) {
            // One record for both sides, as `of` keeps two equal ones.
            (None, _) => StoredBases {
                base_a,
                base_b: None,
                b_delta: Some(PackedBase::keep(&Value::Object(Default::default()))),
            },
            (Some(_), Some(delta)) => StoredBases {
                base_a,
                base_b: None,
                b_delta: Some(PackedBase(stored_of_packed(delta))),
            },
            (Some(b), None) => StoredBases {
                base_a,
                base_b: Some(PackedBase(stored_of_packed(b))),
                b_delta: None,
            },
        }
    }
}

impl<C: LoadBase> StoredBases<C> {
    /// The two bases back, as `of` was given them.
    pub(crate) fn load(self) -> Result<(Option<Value>, Option<Value>)> {
        let base_a = self.base_a.map(C::load).transpose()?;
        let base_b = match (self.b_delta.map(C::load).transpose()?, &base_a) {
            (Some(Value::Object(delta)), Some(Value::Object(a))) => {
                let mut b = a.clone();
                for (k, v) in delta {
                    match b.get_mut(&k) {
                        Some(slot) => *slot = v,
                        None => {
                            return Err(StateStoreError::Corrupt(format!(
                                "binding delta names `{k}`, which its base lacks"
                            )));
                        }
                    }
                }
                Some(Value::Object(b))
            }
            (Some(_), _) => {
                return Err(StateStoreError::Corrupt(
                    "binding delta without a base to apply it to".into(),
                ));
            }
            (None, _) => self.base_b.map(C::load).transpose()?,
        };
        Ok((base_a, base_b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round_trip(a: Option<Value>, b: Option<Value>) -> (StoredBases, Binding) {
        let binding = Binding {
            key: "K".into(),
            base_a: a,
            base_b: b,
            ..Default::default()
        };
        // SQLite's packed columns give back the same records as text.
        let packed: StoredBases<PackedBase> = StoredBases::of(&binding);
        let read = |c: Option<PackedBase>| c.map(|p| base_of_packed(&p.0));
        let (base_a, base_b) = StoredBases {
            base_a: read(packed.base_a),
            base_b: read(packed.base_b),
            b_delta: read(packed.b_delta),
        }
        .load()
        .unwrap();
        assert_eq!(
            (base_a.map(|v| v.to_string()), base_b.map(|v| v.to_string())),
            (
                binding.base_a.as_ref().map(Value::to_string),
                binding.base_b.as_ref().map(Value::to_string)
            )
        );
        let stored = StoredBases::of(&binding);
        let kept = StoredBases {
            base_a: stored.base_a.clone(),
            base_b: stored.base_b.clone(),
            b_delta: stored.b_delta.clone(),
        };
        let (base_a, base_b) = kept.load().unwrap();
        assert_eq!(base_a, binding.base_a);
        assert_eq!(base_b, binding.base_b);
        // Same text, so the fields keep their order too.
        assert_eq!(
            base_b.as_ref().map(Value::to_string),
            binding.base_b.as_ref().map(Value::to_string)
        );
        (stored, binding)
    }

    #[test]
    fn equal_sides_keep_one_copy() {
        let rec = json!({"sku": "A-1", "name": "Cana", "price": 10.5, "tags": ["x"]});
        let (stored, _) = round_trip(Some(rec.clone()), Some(rec));
        assert_eq!(stored.base_b, None);
        assert_eq!(stored.b_delta.as_deref(), Some("{}"));
    }

    #[test]
    fn sides_differing_in_a_field_keep_that_field_only() {
        let a = json!({"sku": "A-1", "price": 10.5, "updated_at": "2026-03-01T08:00:00Z"});
        let b = json!({"sku": "A-1", "price": 11.0, "updated_at": "2026-03-02T09:00:00Z"});
        let (stored, _) = round_trip(Some(a), Some(b));
        let delta: Value = serde_json::from_str(stored.b_delta.as_deref().unwrap()).unwrap();
        assert_eq!(
            delta,
            json!({"price": 11.0, "updated_at": "2026-03-02T09:00:00Z"})
        );
    }

    #[test]
    fn other_shapes_are_kept_whole() {
        // Other fields, other order, a missing side, a non-object: no delta.
        let cases = [
            (json!({"sku": "A"}), Some(json!({"sku": "A", "price": 1}))),
            (
                json!({"sku": "A", "price": 1}),
                Some(json!({"price": 1, "sku": "A"})),
            ),
            (json!({"sku": "A"}), None),
            (json!({"sku": "A"}), Some(json!("A"))),
        ];
        for (a, b) in cases {
            let (stored, _) = round_trip(Some(a), b.clone());
            assert_eq!(stored.b_delta, None);
            assert_eq!(stored.base_b, b.map(|b| b.to_string()));
        }
        let (stored, _) = round_trip(None, Some(json!({"sku": "A"})));
        assert_eq!(stored.b_delta, None);
        round_trip(None, None);
    }

    /// A binding whose sides share one base is stored, and read through `base`, as the
    /// binding with the base copied to both sides: kept on either side, object or not, and
    /// copied by `base_mut` before a side is changed.
    /// An adoption is stored, from its packed records, as the binding it stands for is:
    /// records the same, differing in fields (a zero of either sign the same value), of
    /// other shapes; and it reads back as that binding.
    #[test]
    fn an_adoption_is_stored_as_the_binding_it_stands_for() {
        let a = json!({"sku": "A-1", "name": "Cana", "price": 10.5, "zero": 0.0, "at": "x"});
        let others = [
            None,
            Some(a.clone()),
            Some(json!({"sku": "A-1", "name": "Cana", "price": 10.5, "zero": -0.0, "at": "y"})),
            Some(json!({"sku": "A-1", "name": "Ceas", "price": 11, "zero": 0.0, "at": "x"})),
            Some(json!({"sku": "A-1", "price": 10.5})),
            Some(json!({"name": "Cana", "sku": "A-1", "price": 10.5, "zero": 0.0, "at": "x"})),
            Some(json!({})),
        ];
        for b in &others {
            let adopted = Adopted::of("K".into(), Some("1".into()), None, &a, b.as_ref());
            let binding = adopted.binding().unwrap();
            assert_eq!(binding.base(PairSide::A), Some(&a));
            assert_eq!(binding.base(PairSide::B), Some(b.as_ref().unwrap_or(&a)));
            let (packed, of_binding): (StoredBases<PackedBase>, StoredBases<PackedBase>) =
                (StoredBases::adopted(&adopted), StoredBases::of(&binding));
            assert_eq!(packed.base_a, of_binding.base_a, "{b:?}");
            assert_eq!(packed.base_b, of_binding.base_b, "{b:?}");
            assert_eq!(packed.b_delta, of_binding.b_delta, "{b:?}");
        }
    }

    #[test]
    fn bases_kept_once_for_both_sides_are_those_of_both_sides() {
        let records = [
            json!({"sku": "A-1", "name": "Cana", "price": 10.5, "tags": ["x"]}),
            json!({}),
            json!("A-1"),
        ];
        for rec in records {
            let copied = Binding {
                key: "K".into(),
                base_a: Some(rec.clone()),
                base_b: Some(rec.clone()),
                ..Default::default()
            };
            for (a, b) in [(Some(rec.clone()), None), (None, Some(rec.clone()))] {
                let mut once = Binding {
                    key: "K".into(),
                    base_a: a,
                    base_b: b,
                    bases_equal: true,
                    ..Default::default()
                };
                let (stored, of_copied): (StoredBases, StoredBases) =
                    (StoredBases::of(&once), StoredBases::of(&copied));
                assert_eq!(stored.base_a, of_copied.base_a, "{rec}");
                assert_eq!(stored.base_b, of_copied.base_b, "{rec}");
                assert_eq!(stored.b_delta, of_copied.b_delta, "{rec}");
                for side in [PairSide::A, PairSide::B] {
                    assert_eq!(once.base(side), Some(&rec));
                }
                *once.base_mut(PairSide::A) = Some(json!({"changed": true}));
                assert_eq!(once.base(PairSide::B), Some(&rec), "{rec}");
                assert!(!once.bases_equal);
            }
        }
        // Without the mark, a side without a base has none.
        let one_side = Binding {
            base_a: Some(json!({"sku": "A"})),
            ..Default::default()
        };
        assert_eq!(one_side.base(PairSide::B), None);
    }

    #[test]
    fn a_row_without_a_delta_reads_as_before() {
        let old: StoredBases = StoredBases {
            base_a: Some(r#"{"sku":"A","price":1}"#.into()),
            base_b: Some(r#"{"sku":"A","price":2}"#.into()),
            b_delta: None,
        };
        let (a, b) = old.load().unwrap();
        assert_eq!(a, Some(json!({"sku": "A", "price": 1})));
        assert_eq!(b, Some(json!({"sku": "A", "price": 2})));
    }

    #[test]
    fn a_damaged_packed_base_is_an_error() {
        let mut bytes = crate::json::packed::pack_stored(&json!({"sku": "A", "price": 1}));
        assert_eq!(
            base_of_packed(&bytes).unwrap(),
            json!({"sku": "A", "price": 1})
        );
        bytes.truncate(bytes.len() - 1);
        let damaged: StoredBases<Result<Value>> = StoredBases {
            base_a: Some(base_of_packed(&bytes)),
            base_b: None,
            b_delta: None,
        };
        let err = damaged.load().unwrap_err().to_string();
        assert!(err.contains("is not a packed record"), "{err}");
    }
}
