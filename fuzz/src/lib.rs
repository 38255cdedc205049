//! Shared fixtures of the fuzz targets (`fuzz_targets/`).
#![forbid(unsafe_code)]

pub mod world;
