//! Compiled expressions: JSONPath queries and Handlebars templates, parsed once at load and
//! evaluated many times.

mod helpers;
mod path;
pub mod scope;
mod template;

pub(crate) use helpers::is_canonical_moment;
pub use helpers::parse_datetime;
pub use path::{JsonPath, JsonPathParseError, Predicate};
pub use template::{
    Template, TemplateParseError, TemplateRenderError, Templates, helper_arities, helper_names,
};

/// Joins the parts of a composite id; `ref`'s `part` and the `part` helper split on it.
pub const COMPOSITE_ID_SEPARATOR: char = '/';
