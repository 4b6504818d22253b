//! The rule-based activity classifier (version [`CLASSIFIER_VERSION`]): an
//! org's category rules in ActivityWatch's format, compiled once, and the
//! pure function from an activity (app, title, url) to a category path and a
//! productivity score.
//!
//! Semantics, as in ActivityWatch's categorization (aw-core's `Rule.match`
//! and `_pick_deepest_cat`), which users import their rules from:
//!
//! - A category is a path of names (`["Work", "Programming"]`), an optional
//!   rule and an optional productivity score (our extension, an integer in
//!   `-100..=100`). A category without a rule is a parent that only groups
//!   its children and carries their default score.
//! - A rule is a regex with an optional ignore-case flag. It matches an
//!   activity when the regex finds a match anywhere in the app, the title or
//!   the url (aw-core checks every string value of the event's data).
//! - Of all matching categories the deepest (longest path) wins; among
//!   equally deep ones, the one listed first. When none matches the result is
//!   [`UNCATEGORIZED`] with score 0.
//! - The score of the winner is its own score if set, else the score of the
//!   nearest category up its path that has one (looked up by path among the
//!   defined categories: the full path first, for duplicates of the same
//!   path, then each shorter prefix), else 0.
//!
//! Regexes use the syntax of the `regex` crate, which differs from Python's
//! `re` (aw-server) mostly in having no look-around and no back-references;
//! an import that uses them is rejected with the category named.
//!
//! Architecture invariant: nothing here does I/O, reads a clock or draws
//! randomness. The result is a function of ([`CLASSIFIER_VERSION`], the
//! rules, the input), which is what lets the projection classify each
//! distinct (app, title, url) once per (classifier version, rules version).

mod activitywatch;
mod defaults;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use regex::{RegexBuilder, RegexSet, RegexSetBuilder};

pub use self::activitywatch::{parse_activitywatch, to_activitywatch};

/// Version of the classification semantics implemented by this module.
///
/// Recorded with every classified row. Bump it whenever the same rules and
/// the same input could classify differently: a change to matching (which
/// fields are searched, regex flags, the regex engine's syntax), to the
/// choice among matches, to score inheritance, or to [`UNCATEGORIZED`].
/// Changing [`Rules::default_rules`] changes how orgs without rules of their
/// own are classified, so it needs a bump too. A bump makes the projections
/// rebuild their classified tables at start-up.
///
/// History:
/// - 1: ActivityWatch semantics as described in the module documentation.
pub const CLASSIFIER_VERSION: u32 = 1;

/// The category path of an activity that no rule matches.
pub const UNCATEGORIZED: &str = "Uncategorized";

/// At most this many categories in one rule set (and one import).
pub const MAX_CATEGORIES: usize = crate::categories::MAX_CATEGORIES;

/// At most this many bytes in one category's regex.
pub const MAX_REGEX_LEN: usize = crate::categories::MAX_REGEX_BYTES;

/// Lowest productivity score a category may carry.
pub const MIN_SCORE: i32 = *crate::categories::SCORE_RANGE.start();

/// Highest productivity score a category may carry.
pub const MAX_SCORE: i32 = *crate::categories::SCORE_RANGE.end();

/// Compiled-size limit for one category's regex. Ordinary rules (a few
/// alternated names) compile to a few kilobytes; this stops a short but
/// explosive pattern such as `\w{1000}{1000}` from taking gigabytes.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Compiled-size limit for the set of all an org's regexes together.
const SET_SIZE_LIMIT: usize = 16 << 20;

/// Limit of the lazy DFA cache of the regex set, per thread using it.
const SET_DFA_SIZE_LIMIT: usize = 8 << 20;

/// One category as an org admin defines it; rule events carry it, so the
/// domain owns the type.
pub use crate::categories::CategoryRule;

/// The outcome of classifying one activity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    /// The winning category's path, or `[`[`UNCATEGORIZED`]`]`.
    pub category: Vec<String>,
    /// The productivity score: the category's own or inherited, 0 if none.
    pub score: i32,
}

/// Why a rule set or an ActivityWatch export was refused. Each message
/// names the offending category by its position in the list (0-based, as in
/// the JSON array) and its path.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// More categories than [`MAX_CATEGORIES`].
    #[error("too many categories: {count}; at most {max} are allowed")]
    TooManyCategories {
        /// How many there were.
        count: usize,
        /// The limit, [`MAX_CATEGORIES`].
        max: usize,
    },
    /// A category whose path has no segment.
    #[error(
        "categories[{index}]: the category has no name; give it a path such as [\"Work\", \"Programming\"]"
    )]
    EmptyName {
        /// Position of the category in the list.
        index: usize,
    },
    /// A path segment that is empty or only whitespace.
    #[error("categories[{index}] ({name}): part {segment} of the name is empty")]
    EmptyNameSegment {
        /// Position of the category in the list.
        index: usize,
        /// The category's path, for display.
        name: String,
        /// Position of the empty segment in the path (0-based).
        segment: usize,
    },
    /// `Some("")` as a regex: it would match every activity.
    #[error(
        "categories[{index}] ({name}): the regex is empty and would match everything; remove the rule to make a parent-only category"
    )]
    EmptyRegex {
        /// Position of the category in the list.
        index: usize,
        /// The category's path, for display.
        name: String,
    },
    /// A regex longer than [`MAX_REGEX_LEN`] bytes.
    #[error(
        "categories[{index}] ({name}): the regex is {len} bytes long; at most {max} are allowed"
    )]
    RegexTooLong {
        /// Position of the category in the list.
        index: usize,
        /// The category's path, for display.
        name: String,
        /// The regex's length in bytes.
        len: usize,
        /// The limit, [`MAX_REGEX_LEN`].
        max: usize,
    },
    /// A regex that does not parse, or compiles to more than the size limit.
    #[error("categories[{index}] ({name}): invalid regex: {reason}")]
    InvalidRegex {
        /// Position of the category in the list.
        index: usize,
        /// The category's path, for display.
        name: String,
        /// The regex engine's explanation.
        reason: String,
    },
    /// A score outside [`MIN_SCORE`]`..=`[`MAX_SCORE`].
    #[error("categories[{index}] ({name}): score {score} is outside {min}..={max}")]
    ScoreOutOfRange {
        /// Position of the category in the list.
        index: usize,
        /// The category's path, for display.
        name: String,
        /// The score given.
        score: i64,
        /// The limit, [`MIN_SCORE`].
        min: i32,
        /// The limit, [`MAX_SCORE`].
        max: i32,
    },
    /// An imported category of the wrong shape (name not a list of strings,
    /// unknown rule type, a score that is not an integer, ...).
    #[error("categories[{index}] ({name}): {reason}")]
    InvalidCategory {
        /// Position of the category in the list.
        index: usize,
        /// The category's path as far as it could be read, for display.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Each regex is acceptable alone but all together exceed the compiled
    /// size limit of the set.
    #[error("the regexes of all categories together are too large: {reason}")]
    RulesTooLarge {
        /// The regex engine's explanation.
        reason: String,
    },
    /// The import is not JSON, or not an object with `categories` nor an
    /// array of categories.
    #[error("not an ActivityWatch category export: {reason}")]
    InvalidExport {
        /// What is wrong with it.
        reason: String,
    },
}

/// A validated, compiled rule set. Compile once per (org, rules version)
/// and share: classification only reads it.
#[derive(Debug, Clone)]
pub struct Rules {
    /// The categories as given, in order: the order breaks ties.
    categories: Vec<CategoryRule>,
    /// Every category rule's regex in one set, so that one scan of a string
    /// finds all the categories it matches.
    set: RegexSet,
    /// For each pattern of `set`, the index of its category.
    set_category: Vec<usize>,
    /// For each category, its effective score (own or inherited).
    scores: Vec<i32>,
}

impl Rules {
    /// Validates `categories` and compiles their regexes.
    ///
    /// Refuses, naming the category: more than [`MAX_CATEGORIES`]; an empty
    /// path or path segment; an empty regex; a regex longer than
    /// [`MAX_REGEX_LEN`], invalid, or too large once compiled; a score
    /// outside [`MIN_SCORE`]`..=`[`MAX_SCORE`]. Duplicate paths are allowed
    /// (ActivityWatch allows them); the first listed wins ties.
    pub fn compile(categories: &[CategoryRule]) -> Result<Rules, RulesError> {
        if categories.len() > MAX_CATEGORIES {
            return Err(RulesError::TooManyCategories {
                count: categories.len(),
                max: MAX_CATEGORIES,
            });
        }
        let mut patterns = Vec::new();
        let mut set_category = Vec::new();
        for (index, category) in categories.iter().enumerate() {
            validate_name(index, &category.name)?;
            if let Some(score) = category.score {
                check_score(index, &category.name, i64::from(score))?;
            }
            let Some(regex) = &category.regex else {
                continue;
            };
            if regex.is_empty() {
                return Err(RulesError::EmptyRegex {
                    index,
                    name: display_path(&category.name),
                });
            }
            if regex.len() > MAX_REGEX_LEN {
                return Err(RulesError::RegexTooLong {
                    index,
                    name: display_path(&category.name),
                    len: regex.len(),
                    max: MAX_REGEX_LEN,
                });
            }
            // Compiled alone first so that an error names its category; the
            // set below would only say that some pattern failed.
            RegexBuilder::new(regex)
                .case_insensitive(category.ignore_case)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| RulesError::InvalidRegex {
                    index,
                    name: display_path(&category.name),
                    reason: e.to_string(),
                })?;
            // A leading `(?i)` sets the flag for the whole pattern; the set
            // has only one case-insensitive switch for all its patterns.
            patterns.push(if category.ignore_case {
                format!("(?i){regex}")
            } else {
                regex.clone()
            });
            set_category.push(index);
        }
        let set = RegexSetBuilder::new(&patterns)
            .size_limit(SET_SIZE_LIMIT)
            .dfa_size_limit(SET_DFA_SIZE_LIMIT)
            .build()
            .map_err(|e| RulesError::RulesTooLarge {
                reason: e.to_string(),
            })?;
        Ok(Rules {
            scores: effective_scores(categories),
            categories: categories.to_vec(),
            set,
            set_category,
        })
    }

    /// The rules an org's stored rules stand for: the default rules while
    /// it has set none (an empty list).
    pub fn in_force(rules: &[CategoryRule]) -> Vec<CategoryRule> {
        if rules.is_empty() {
            Self::default_rules()
        } else {
            rules.to_vec()
        }
    }

    /// Classifies one activity: the deepest category whose regex matches the
    /// app, the title or the url (first listed among equals), or
    /// [`UNCATEGORIZED`]. Deterministic, never fails.
    pub fn classify(&self, app: &str, title: &str, url: Option<&str>) -> Classification {
        let mut best: Option<usize> = None;
        for haystack in [Some(app), Some(title), url].into_iter().flatten() {
            for pattern in self.set.matches(haystack).iter() {
                let candidate = self.set_category[pattern];
                best = Some(match best {
                    Some(current) if !self.better(candidate, current) => current,
                    _ => candidate,
                });
            }
        }
        match best {
            Some(index) => Classification {
                category: self.categories[index].name.clone(),
                score: self.scores[index],
            },
            None => Classification {
                category: vec![UNCATEGORIZED.to_owned()],
                score: 0,
            },
        }
    }

    /// The categories this set was compiled from, in their order.
    pub fn categories(&self) -> &[CategoryRule] {
        &self.categories
    }

    /// Whether category `a` beats category `b`: deeper, or as deep and
    /// listed first.
    fn better(&self, a: usize, b: usize) -> bool {
        let (depth_a, depth_b) = (self.categories[a].name.len(), self.categories[b].name.len());
        depth_a > depth_b || (depth_a == depth_b && a < b)
    }
}

/// Each category's effective score: its own, else that of the first listed
/// category with a score at the nearest path up (its own path first, for
/// duplicates, then each shorter prefix), else 0.
fn effective_scores(categories: &[CategoryRule]) -> Vec<i32> {
    let mut by_path: HashMap<&[String], i32> = HashMap::new();
    for category in categories {
        if let Some(score) = category.score {
            by_path.entry(category.name.as_slice()).or_insert(score);
        }
    }
    categories
        .iter()
        .map(|category| {
            category.score.unwrap_or_else(|| {
                (1..=category.name.len())
                    .rev()
                    .find_map(|len| by_path.get(&category.name[..len]).copied())
                    .unwrap_or(0)
            })
        })
        .collect()
}

fn validate_name(index: usize, name: &[String]) -> Result<(), RulesError> {
    if name.is_empty() {
        return Err(RulesError::EmptyName { index });
    }
    if let Some(segment) = name.iter().position(|s| s.trim().is_empty()) {
        return Err(RulesError::EmptyNameSegment {
            index,
            name: display_path(name),
            segment,
        });
    }
    Ok(())
}

fn check_score(index: usize, name: &[String], score: i64) -> Result<(), RulesError> {
    if (i64::from(MIN_SCORE)..=i64::from(MAX_SCORE)).contains(&score) {
        Ok(())
    } else {
        Err(RulesError::ScoreOutOfRange {
            index,
            name: display_path(name),
            score,
            min: MIN_SCORE,
            max: MAX_SCORE,
        })
    }
}

/// A path for messages: `Work > Programming`, with empty segments shown as
/// `""` so that they can be seen.
fn display_path<S: AsRef<str>>(name: &[S]) -> String {
    if name.is_empty() {
        return "no name".to_owned();
    }
    name.iter()
        .map(|s| {
            let s = s.as_ref();
            if s.trim().is_empty() {
                format!("{s:?}")
            } else {
                s.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" > ")
}
