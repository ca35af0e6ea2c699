//! Configuration errors, shared by every machine's builder.
//!
//! Configs are validated once, in `XConfig::builder()...build()`; after that `X::new(config,
//! now)` cannot fail and no input can make a machine panic. Each variant names the offending
//! field and says what to change.
//!
//! ```
//! use keel_core::ConfigError;
//!
//! let e = ConfigError::Zero { field: "max_connections" };
//! assert_eq!(e.to_string(), "`max_connections` must be greater than zero");
//! ```

/// A configuration was rejected by its builder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A count, capacity or duration that must be positive was zero.
    #[error("`{field}` must be greater than zero")]
    Zero {
        /// The builder field, e.g. `"max_connections"`.
        field: &'static str,
    },
    /// A lower bound exceeded its upper bound.
    #[error("`{min}` must not exceed `{max}`: lower `{min}` or raise `{max}`")]
    InvertedRange {
        /// The lower-bound field.
        min: &'static str,
        /// The upper-bound field.
        max: &'static str,
    },
    /// A value is outside the range the machine supports.
    #[error("`{field}` is out of range: {expected}")]
    OutOfRange {
        /// The builder field.
        field: &'static str,
        /// What the field must be, e.g. `"a ratio between 0.0 and 1.0"`.
        expected: &'static str,
    },
    /// A combination of values would overflow the machine's arithmetic.
    #[error("`{field}` overflows: {hint}")]
    Overflow {
        /// The builder field.
        field: &'static str,
        /// What to change, e.g. `"use a longer period or a smaller burst"`.
        hint: &'static str,
    },
    /// A setting that has no safe default here must be given.
    #[error("`{field}` must be set: {hint}")]
    Missing {
        /// The builder field.
        field: &'static str,
        /// How to set it.
        hint: &'static str,
    },
    /// Two settings cannot be used together.
    #[error("`{field}` conflicts with `{other}`: {hint}")]
    Conflict {
        /// The field that was set.
        field: &'static str,
        /// The field it conflicts with.
        other: &'static str,
        /// What to change.
        hint: &'static str,
    },
}
