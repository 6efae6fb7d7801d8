//! The names the state keys its rows by, each a type of its own: a flow's id, a record's match
//! key, a record's id in one system. All three are text, and several calls take two of them;
//! as types they cannot be passed one for another. They borrow: a call names a row, it does
//! not keep the name.

use std::fmt;

/// A flow as the state knows it, by its id: its name in the flow file, or `NAME.SYSTEM` for
/// a `for_each` copy. Cursors, the journal, failures and runs are kept by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowName<'a>(&'a str);

/// A record's match key: the value of the flow's `match_key` field, the same on both systems.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordKey<'a>(&'a str);

/// A record's id in one system (what that system's API names it by), as a binding keeps it
/// for one side of its pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NativeId<'a>(&'a str);

macro_rules! borrowed_name {
    ($name:ident) => {
        impl<'a> $name<'a> {
            pub const fn new(text: &'a str) -> Self {
                $name(text)
            }

            pub const fn as_str(self) -> &'a str {
                self.0
            }
        }

        impl<'a> From<&'a str> for $name<'a> {
            fn from(text: &'a str) -> Self {
                $name(text)
            }
        }

        impl fmt::Display for $name<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.0)
            }
        }
    };
}

borrowed_name!(FlowName);
borrowed_name!(RecordKey);
borrowed_name!(NativeId);
