//! Shared helpers for the criterion benches (fixture loading).
