//! Compiled expressions: JSONPath queries and Handlebars templates, parsed once at load and
//! evaluated many times.

mod helpers;
mod path;
mod template;

pub use helpers::parse_datetime;
pub use path::{JsonPath, JsonPathParseError, Predicate};
pub use template::{Template, TemplateParseError, TemplateRenderError, Templates};

/// Joins the parts of a composite id; `ref`'s `part` and the `part` helper split on it.
pub const COMPOSITE_ID_SEPARATOR: char = '/';
