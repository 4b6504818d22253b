//! Classification rules as an organization stores them: a category path, an
//! optional regular expression, and a productivity score (ActivityWatch's
//! rule format plus the score). The projections compile and apply them; the
//! domain only keeps their shape sound.

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

/// Why a rule set is malformed (its shape; whether a regex compiles is
/// checked where regexes are compiled).
pub fn shape_problem(rules: &[CategoryRule]) -> Option<String> {
    if rules.len() > MAX_CATEGORIES {
        return Some(format!("at most {MAX_CATEGORIES} categories"));
    }
    for (index, rule) in rules.iter().enumerate() {
        if rule.name.is_empty() || rule.name.iter().any(|n| n.trim().is_empty()) {
            return Some(format!("category {index}: the name path has an empty part"));
        }
        if rule
            .regex
            .as_ref()
            .is_some_and(|r| r.len() > MAX_REGEX_BYTES)
        {
            return Some(format!(
                "category {index} ({}): the regex is longer than {MAX_REGEX_BYTES} bytes",
                rule.name.join(" > ")
            ));
        }
        if rule.score.is_some_and(|s| !SCORE_RANGE.contains(&s)) {
            return Some(format!(
                "category {index} ({}): the score must be from -100 to 100",
                rule.name.join(" > ")
            ));
        }
    }
    None
}
