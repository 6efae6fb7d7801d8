//! The names each place of a flow file offers its templates, beyond the record it renders. The
//! checker (`validate`) and the JSON Schema's descriptions both read them from here.

/// What an operation's templates see (its inputs and the system): path, query, headers, body,
/// and a system's headers.
pub const OPERATION: &[&str] = &[
    "record",
    "id",
    "key",
    "since",
    "idempotency_key",
    "system",
    "vars",
];

/// What a step of a multi-step operation sees on top of [`OPERATION`]: `steps.NAME.status`,
/// `.body` and `.record` of the earlier steps.
pub(crate) const STEPS: &str = "steps";

/// What a mapping sees on top of its record's own fields.
pub(crate) const MAPPING: &[&str] = &["system", "vars"];

/// The name of a record's parent in read mappings of a nested listing: `$parent.title`,
/// `{{parent.title}}`.
pub(crate) const PARENT: &str = "parent";

/// The name of the target's current record in write mappings: `$target.note_attributes`,
/// `{{target.note}}`.
pub(crate) const TARGET: &str = "target";

/// What an error rule's `message` sees: the response.
pub(crate) const ERROR_MESSAGE: &[&str] = &["body", "status"];
