//! tallinn-bench: not yet built (see the open issues).
#![forbid(unsafe_code)]
