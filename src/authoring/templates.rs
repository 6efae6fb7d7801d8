//! Project templates of `erpsync init`.
