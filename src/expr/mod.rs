//! Compiled expressions: JSONPath queries and Handlebars templates, parsed once at load and
//! evaluated many times.

mod helpers;
mod path;
mod template;

pub use helpers::parse_datetime;
pub use path::{JsonPath, JsonPathParseError, Predicate};
pub use template::{Template, TemplateParseError, TemplateRenderError, Templates};
