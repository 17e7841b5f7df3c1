//! Integration tests of colony-core.
//!
//! `parsers`: property tests of every parser of outside input (names,
//! references, task ids, durations and sizes, manifests). They run
//! `PROPTEST_CASES` cases each (proptest's default, 256).

mod parsers;
