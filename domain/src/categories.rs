//! Classification rules as an organization stores them: a category path, an
//! optional regular expression, and a productivity score (ActivityWatch's
//! rule format plus the score). `classifier::Rules::compile` is the one check
//! of a rule set, made by the organization aggregate when rules are set.

use serde::{Deserialize, Serialize};

/// Most categories an organization may define.
pub const MAX_CATEGORIES: usize = 1000;
/// Longest regular expression, in bytes.
pub const MAX_REGEX_BYTES: usize = 4096;
/// Productivity scores run from -100 to 100.
pub const SCORE_RANGE: std::ops::RangeInclusive<i32> = -100..=100;

/// One category and the rule that puts activity into it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CategoryRule {
    /// The category path, e.g. `["Work", "Programming"]`.
    pub name: Vec<String>,
    /// The regular expression matched against app, title and URL; None for a
    /// category that only groups its children.
    pub regex: Option<String>,
    /// Whether the expression ignores case.
    #[serde(default)]
    pub ignore_case: bool,
    /// Productivity score; None inherits the nearest ancestor's.
    #[serde(default)]
    pub score: Option<i32>,
}
