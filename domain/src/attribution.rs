//! Attribution rules: which project (and task) observed activity is for,
//! until a member assigns a stretch of it otherwise. The match shape is the
//! category rules': a regular expression, optionally ignoring case, found
//! anywhere in the app, the title or the URL. Rules are ordered: the first
//! rule that matches wins, and activity no rule matches is unattributed.
//!
//! The organization aggregate checks a rule set with [`Attribution::compile`]
//! when it is set (the use case checks that the projects and tasks named
//! exist); the projections compile each version once and share it.
//!
//! Architecture invariant: pure, as the classifier.

use regex::{RegexBuilder, RegexSet, RegexSetBuilder};
use serde::{Deserialize, Serialize};

use crate::ids::Token;

/// At most this many rules in a set.
pub const MAX_RULES: usize = 1000;

/// Compiled-size limit of one rule's expression (as the classifier's).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Compiled-size limit of a whole set.
const SET_SIZE_LIMIT: usize = 16 << 20;

/// One rule: activity matching `regex` is for `project` (and `task`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttributionRule {
    /// The project the activity is for.
    pub project: Token,
    /// The task inside it, if the rule names one.
    #[serde(default)]
    pub task: Option<Token>,
    /// The regular expression matched against app, title and URL.
    pub regex: String,
    /// Whether the expression ignores case.
    #[serde(default)]
    pub ignore_case: bool,
}

/// What activity is attributed to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    /// The project.
    pub project: Token,
    /// The task, if the rule names one.
    pub task: Option<Token>,
}

/// Why a rule set was refused; each message names the rule by its position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttributionError {
    /// More rules than [`MAX_RULES`].
    #[error("too many attribution rules: {0}; at most {MAX_RULES} are allowed")]
    TooMany(usize),
    /// An empty expression (it would match everything).
    #[error("rules[{0}]: the expression is empty")]
    Empty(usize),
    /// An expression longer than the classifier allows.
    #[error("rules[{index}]: the expression is {len} bytes; at most {max} are allowed")]
    TooLong {
        /// Position of the rule.
        index: usize,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An expression that does not compile.
    #[error("rules[{index}]: invalid expression: {reason}")]
    Invalid {
        /// Position of the rule.
        index: usize,
        /// The regex engine's reason.
        reason: String,
    },
    /// The whole set is too large once compiled.
    #[error("the rules are too large together: {0}")]
    TooLarge(String),
}

/// A checked, compiled rule set.
#[derive(Debug, Clone)]
pub struct Attribution {
    set: RegexSet,
    targets: Vec<Target>,
}

impl Attribution {
    /// Checks and compiles `rules`.
    pub fn compile(rules: &[AttributionRule]) -> Result<Self, AttributionError> {
        if rules.len() > MAX_RULES {
            return Err(AttributionError::TooMany(rules.len()));
        }
        let max = crate::categories::MAX_REGEX_BYTES;
        let mut patterns = Vec::with_capacity(rules.len());
        for (index, rule) in rules.iter().enumerate() {
            if rule.regex.is_empty() {
                return Err(AttributionError::Empty(index));
            }
            if rule.regex.contains('\0') {
                return Err(AttributionError::Invalid {
                    index,
                    reason: "a NUL character".into(),
                });
            }
            if rule.regex.len() > max {
                return Err(AttributionError::TooLong {
                    index,
                    len: rule.regex.len(),
                    max,
                });
            }
            RegexBuilder::new(&rule.regex)
                .case_insensitive(rule.ignore_case)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| AttributionError::Invalid {
                    index,
                    reason: e.to_string(),
                })?;
            patterns.push(if rule.ignore_case {
                format!("(?i){}", rule.regex)
            } else {
                rule.regex.clone()
            });
        }
        let set = RegexSetBuilder::new(&patterns)
            .size_limit(SET_SIZE_LIMIT)
            .build()
            .map_err(|e| AttributionError::TooLarge(e.to_string()))?;
        Ok(Self {
            set,
            targets: rules
                .iter()
                .map(|r| Target {
                    project: r.project.clone(),
                    task: r.task.clone(),
                })
                .collect(),
        })
    }

    /// What the first rule matching the app, the title or the URL
    /// attributes the activity to; `None` when no rule matches.
    pub fn attribute(&self, app: &str, title: &str, url: Option<&str>) -> Option<&Target> {
        [Some(app), Some(title), url]
            .into_iter()
            .flatten()
            .filter_map(|haystack| self.set.matches(haystack).iter().next())
            .min()
            .map(|index| &self.targets[index])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(project: &str, task: Option<&str>, regex: &str, ignore_case: bool) -> AttributionRule {
        AttributionRule {
            project: Token::new(project).unwrap(),
            task: task.map(|t| Token::new(t).unwrap()),
            regex: regex.into(),
            ignore_case,
        }
    }

    #[test]
    fn the_first_matching_rule_wins_across_app_title_and_url() {
        let rules = Attribution::compile(&[
            rule("web", Some("frontend"), "localhost:3000", false),
            rule("web", None, "(?:^|/)acme-web", false),
            rule("ops", None, "grafana", true),
        ])
        .unwrap();
        let target = |app, title, url| rules.attribute(app, title, url).cloned();
        let web_frontend = Some(Target {
            project: Token::new("web").unwrap(),
            task: Some(Token::new("frontend").unwrap()),
        });
        // The URL matches rule 0, the title rule 1: rule 0 wins.
        assert_eq!(
            target("Firefox", "acme-web", Some("http://localhost:3000/")),
            web_frontend
        );
        assert_eq!(
            target("Code", "acme-web — main.rs", None).map(|t| t.task),
            Some(None)
        );
        assert_eq!(
            target("GRAFANA", "", None).map(|t| t.project.to_string()),
            Some("ops".into())
        );
        assert_eq!(target("Slack", "general", None), None);
    }

    #[test]
    fn bad_rules_are_refused_naming_the_rule() {
        assert_eq!(
            Attribution::compile(&[rule("p", None, "ok", false), rule("p", None, "", false)])
                .unwrap_err(),
            AttributionError::Empty(1)
        );
        let invalid = Attribution::compile(&[rule("p", None, "(unclosed", false)]).unwrap_err();
        assert!(
            invalid
                .to_string()
                .starts_with("rules[0]: invalid expression"),
            "{invalid}"
        );
        let long = "a".repeat(crate::categories::MAX_REGEX_BYTES + 1);
        assert!(matches!(
            Attribution::compile(&[rule("p", None, &long, false)]),
            Err(AttributionError::TooLong { index: 0, .. })
        ));
        let many = vec![rule("p", None, "x", false); MAX_RULES + 1];
        assert_eq!(
            Attribution::compile(&many).unwrap_err(),
            AttributionError::TooMany(MAX_RULES + 1)
        );
        assert!(matches!(
            Attribution::compile(&[rule("p", None, "a\0b", false)]),
            Err(AttributionError::Invalid { index: 0, .. })
        ));
        assert!(Attribution::compile(&[]).is_ok());
    }
}
