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

use std::collections::HashMap;

use regex::{RegexBuilder, RegexSet, RegexSetBuilder};
use serde_json::{Map, Value, json};

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

    /// The category tree used when an org has defined none, modelled on
    /// ActivityWatch's defaults: Work (+100) with Programming, Image, Video
    /// and Audio; Comms (+25) with IM, Email and Video; Media (-50) with
    /// Games (-100), Music (-25), Video and Social Media.
    ///
    /// The patterns search the app, the title and the url alike, so short
    /// or common words (`code`, `zoom`, `signal`) are anchored to match only
    /// a whole app name; longer names and web addresses match anywhere.
    pub fn default_rules() -> Vec<CategoryRule> {
        fn parent(name: &[&str], score: Option<i32>) -> CategoryRule {
            CategoryRule {
                name: name.iter().map(|s| (*s).to_owned()).collect(),
                regex: None,
                ignore_case: false,
                score,
            }
        }
        fn rule(name: &[&str], regex: &str, score: Option<i32>) -> CategoryRule {
            CategoryRule {
                name: name.iter().map(|s| (*s).to_owned()).collect(),
                regex: Some(regex.to_owned()),
                ignore_case: true,
                score,
            }
        }
        vec![
            rule(
                &["Work"],
                r"Google (?:Docs|Sheets|Slides)|docs\.google\.com|LibreOffice|^soffice(?:\.bin)?$|Microsoft (?:Word|Excel|PowerPoint)|^(?:WINWORD|EXCEL|POWERPNT)(?:\.EXE)?$|Confluence|Jira|Notion|Obsidian|ReText",
                Some(100),
            ),
            rule(
                &["Work", "Programming"],
                concat!(
                    // Apps whose names are common words: whole app name only.
                    r"^(?:code|code-oss|codium|vscodium|cursor|vim|nvim|gvim|emacs|idea|idea64|pycharm|pycharm64|clion|clion64|goland|goland64|rustrover|rustrover64|webstorm|webstorm64|rider|rider64|studio|studio64|xcode|sublime_text|zed|kate|helix|hx",
                    r"|terminal|iterm2|alacritty|kitty|wezterm|wezterm-gui|ghostty|foot|konsole|gnome-terminal|gnome-terminal-server|xterm|urxvt|windowsterminal|powershell|pwsh|cmd)(?:\.exe|\.app)?$",
                    // Distinctive names and sites: anywhere.
                    r"|Visual Studio|IntelliJ IDEA|PyCharm|CLion|GoLand|RustRover|WebStorm|JetBrains|Android Studio|Sublime Text",
                    r"|GitHub|GitLab|Bitbucket|Stack Overflow|stackoverflow\.com|docs\.rs|crates\.io",
                ),
                None,
            ),
            rule(
                &["Work", "Image"],
                r"GIMP|Inkscape|Krita|Figma|Photoshop|Illustrator|Affinity (?:Photo|Designer)|darktable",
                None,
            ),
            rule(
                &["Work", "Video"],
                r"Kdenlive|DaVinci Resolve|^resolve(?:\.exe)?$|Premiere Pro|Final Cut|Shotcut|OpenShot|OBS Studio|^obs(?:64)?(?:\.exe)?$",
                None,
            ),
            rule(
                &["Work", "Audio"],
                r"Audacity|Ardour|^reaper(?:\.exe)?$|Ableton|FL Studio|Logic Pro|GarageBand|Bitwig",
                None,
            ),
            parent(&["Comms"], Some(25)),
            rule(
                &["Comms", "IM"],
                r"Slack|Discord|Microsoft Teams|^(?:ms-)?teams(?:\.exe)?$|Telegram|^signal(?:-desktop)?(?:\.exe)?$|Signal Desktop|WhatsApp|^element(?:\.exe)?$|Mattermost|Zulip|Rocket\.Chat",
                None,
            ),
            rule(
                &["Comms", "Email"],
                r"Thunderbird|Gmail|mail\.google\.com|Outlook|outlook\.(?:office|office365|live)\.com|^mail(?:\.app)?$|^evolution$|Geary|Proton ?Mail|Fastmail|^(?:neo)?mutt$|^aerc$",
                None,
            ),
            rule(
                &["Comms", "Video"],
                r"^zoom(?:\.us)?(?:\.exe)?$|Zoom Meeting|Zoom Workplace|zoom\.us/|Google Meet|meet\.google\.com|Jitsi|meet\.jit\.si|Webex|Skype|FaceTime|Whereby",
                None,
            ),
            parent(&["Media"], Some(-50)),
            rule(
                &["Media", "Games"],
                r"^steam(?:webhelper)?(?:\.exe)?$|Steam Big Picture|Minecraft|RimWorld|Factorio|Lutris|Heroic Games|Epic Games|Battle\.net|League of Legends|Dota 2|Counter-Strike|chess\.com|lichess",
                Some(-100),
            ),
            // Before Video, so that YouTube Music (equally deep) is music.
            rule(
                &["Media", "Music"],
                r"Spotify|Deezer|TIDAL|Apple Music|YouTube Music|music\.youtube\.com|SoundCloud|Rhythmbox|Amarok|foobar2000",
                Some(-25),
            ),
            rule(
                &["Media", "Video"],
                r"YouTube|youtu\.be|Netflix|Twitch|Prime Video|Disney\+|Hulu|Plex|Vimeo|^vlc(?:\.exe)?$|VLC media player|^mpv(?:\.exe)?$",
                None,
            ),
            rule(
                &["Media", "Social Media"],
                r"reddit|Twitter|//(?:www\.)?x\.com\b| / X$|Facebook|Instagram|LinkedIn|TikTok|Mastodon|Bluesky|bsky\.app",
                None,
            ),
        ]
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

/// Reads an ActivityWatch category export: an object
/// `{"categories": [...]}` (what aw-webui's export writes) or a bare array
/// of categories. Each category needs `name` (a list of strings) and may
/// have `rule` (`{"type": "regex", "regex": ..., "ignore_case": ...}`, or
/// type `"none"` or `null` or no rule at all for a parent) and `data.score`
/// (an integer; ignored when `null`). Other fields (`id`, `depth`,
/// `data.color`, ...) are ignored. A regex rule with an empty regex matches
/// nothing in aw-core and is read as no rule.
///
/// The result is validated as by [`Rules::compile`]; every error names the
/// category by its index in the list and its path.
pub fn parse_activitywatch(json: &str) -> Result<Vec<CategoryRule>, RulesError> {
    let value: Value = serde_json::from_str(json).map_err(|e| RulesError::InvalidExport {
        reason: format!("invalid JSON: {e}"),
    })?;
    let items = match value {
        Value::Array(items) => items,
        Value::Object(mut object) => match object.remove("categories") {
            Some(Value::Array(items)) => items,
            Some(_) => {
                return Err(RulesError::InvalidExport {
                    reason: "\"categories\" is not a list".to_owned(),
                });
            }
            None => {
                return Err(RulesError::InvalidExport {
                    reason: "the object has no \"categories\" list".to_owned(),
                });
            }
        },
        _ => {
            return Err(RulesError::InvalidExport {
                reason: "expected an object with a \"categories\" list, or a list of categories"
                    .to_owned(),
            });
        }
    };
    if items.len() > MAX_CATEGORIES {
        return Err(RulesError::TooManyCategories {
            count: items.len(),
            max: MAX_CATEGORIES,
        });
    }
    let categories = items
        .iter()
        .enumerate()
        .map(|(index, item)| parse_category(index, item))
        .collect::<Result<Vec<_>, _>>()?;
    Rules::compile(&categories)?;
    Ok(categories)
}

/// Reads one category of an ActivityWatch export.
fn parse_category(index: usize, item: &Value) -> Result<CategoryRule, RulesError> {
    let invalid = |name: String, reason: &str| RulesError::InvalidCategory {
        index,
        name,
        reason: reason.to_owned(),
    };
    let Value::Object(object) = item else {
        return Err(invalid(
            "no name".to_owned(),
            "a category must be an object",
        ));
    };
    let name = match object.get("name") {
        Some(Value::Array(segments)) => segments
            .iter()
            .map(|s| s.as_str().map(str::to_owned))
            .collect::<Option<Vec<String>>>()
            .ok_or_else(|| {
                invalid(
                    format!("{segments:?}"),
                    "\"name\" must be a list of strings",
                )
            })?,
        Some(Value::String(single)) => {
            return Err(invalid(
                single.clone(),
                "\"name\" must be a list of strings, such as [\"Work\", \"Programming\"]",
            ));
        }
        _ => return Err(invalid("no name".to_owned(), "\"name\" is missing")),
    };
    validate_name(index, &name)?;
    let shown = display_path(&name);

    let (regex, ignore_case) = match object.get("rule") {
        None | Some(Value::Null) => (None, false),
        Some(Value::Object(rule)) => match rule.get("type") {
            None | Some(Value::Null) => (None, false),
            Some(Value::String(kind)) if kind == "none" => (None, false),
            Some(Value::String(kind)) if kind == "regex" => {
                let regex = match rule.get("regex") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(regex)) if regex.is_empty() => None,
                    Some(Value::String(regex)) => Some(regex.clone()),
                    Some(_) => return Err(invalid(shown, "\"rule.regex\" must be a string")),
                };
                let ignore_case = match rule.get("ignore_case") {
                    None | Some(Value::Null) => false,
                    Some(Value::Bool(b)) => *b,
                    Some(_) => {
                        return Err(invalid(shown, "\"rule.ignore_case\" must be true or false"));
                    }
                };
                if regex.is_some() {
                    (regex, ignore_case)
                } else {
                    (None, false)
                }
            }
            Some(other) => {
                return Err(invalid(
                    shown,
                    &format!("unknown rule type {other}; expected \"regex\" or \"none\""),
                ));
            }
        },
        Some(_) => return Err(invalid(shown, "\"rule\" must be an object")),
    };

    let score = match object.get("data").and_then(|data| data.get("score")) {
        None | Some(Value::Null) => None,
        Some(Value::Number(number)) => {
            if let Some(whole) = number.as_i64() {
                check_score(index, &name, whole)?;
                i32::try_from(whole).ok()
            } else {
                // A float (aw-webui writes what JavaScript has, so `-20.0`
                // may appear) or an integer beyond i64.
                let float = number.as_f64().unwrap_or(f64::NAN);
                if !float.is_finite() || float.fract() != 0.0 {
                    return Err(invalid(
                        shown,
                        &format!("score {number} is not a whole number"),
                    ));
                }
                if !(f64::from(MIN_SCORE)..=f64::from(MAX_SCORE)).contains(&float) {
                    return Err(invalid(
                        shown,
                        &format!("score {number} is outside {MIN_SCORE}..={MAX_SCORE}"),
                    ));
                }
                // Whole and within -100..=100, so the cast is exact.
                Some(float as i32)
            }
        }
        Some(other) => {
            return Err(invalid(shown, &format!("score {other} is not a number")));
        }
    };

    Ok(CategoryRule {
        name,
        regex,
        ignore_case,
        score,
    })
}

/// Writes categories as an ActivityWatch category export
/// (`{"categories": [...]}`, pretty-printed), which aw-webui and
/// [`parse_activitywatch`] read back. Each category gets `id` (its index),
/// `name`, `rule` (`{"type": "regex", "regex": ..., "ignore_case": ...}` or
/// `{"type": "none"}`), `data` (with `score` when set) and `depth`.
/// `ignore_case` of a category without a regex is not written.
pub fn to_activitywatch(categories: &[CategoryRule]) -> String {
    let items: Vec<Value> = categories
        .iter()
        .enumerate()
        .map(|(id, category)| {
            let rule = match &category.regex {
                Some(regex) => json!({
                    "type": "regex",
                    "regex": regex,
                    "ignore_case": category.ignore_case,
                }),
                None => json!({ "type": "none" }),
            };
            let mut data = Map::new();
            if let Some(score) = category.score {
                data.insert("score".to_owned(), json!(score));
            }
            json!({
                "id": id,
                "name": category.name,
                "rule": rule,
                "data": data,
                "depth": category.name.len().saturating_sub(1),
            })
        })
        .collect();
    // `{:#}` is serde_json's infallible pretty printer for a `Value`.
    format!("{:#}", json!({ "categories": items }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cat(
        name: &[&str],
        regex: Option<&str>,
        ignore_case: bool,
        score: Option<i32>,
    ) -> CategoryRule {
        CategoryRule {
            name: name.iter().map(|s| (*s).to_owned()).collect(),
            regex: regex.map(str::to_owned),
            ignore_case,
            score,
        }
    }

    fn path(name: &[&str]) -> Vec<String> {
        name.iter().map(|s| (*s).to_owned()).collect()
    }

    fn compile(categories: &[CategoryRule]) -> Rules {
        match Rules::compile(categories) {
            Ok(rules) => rules,
            Err(e) => panic!("rules should compile: {e}"),
        }
    }

    fn defaults() -> Rules {
        compile(&Rules::default_rules())
    }

    // Given/when/then: given rules, when an activity is classified, then
    // this category and score.

    #[test]
    fn deepest_match_wins_over_a_shallower_one_listed_first() {
        let rules = compile(&[
            cat(&["Work"], Some("GitHub"), false, Some(50)),
            cat(&["Work", "Programming"], Some("GitHub"), false, Some(90)),
        ]);
        let c = rules.classify("firefox", "trackhrs - GitHub", None);
        assert_eq!(c.category, path(&["Work", "Programming"]));
        assert_eq!(c.score, 90);
    }

    #[test]
    fn deepest_match_wins_across_fields() {
        // The shallow rule matches the app, the deep one only the title.
        let rules = compile(&[
            cat(&["Browsing"], Some("firefox"), false, None),
            cat(
                &["Work", "Programming", "Rust"],
                Some(r"\.rs\b"),
                false,
                None,
            ),
        ]);
        let c = rules.classify("firefox", "docs.rs - serde", None);
        assert_eq!(c.category, path(&["Work", "Programming", "Rust"]));
    }

    #[test]
    fn a_tie_goes_to_the_first_listed() {
        let rules = compile(&[
            cat(&["Comms", "IM"], Some("Slack"), false, None),
            cat(&["Work", "Chat"], Some("Slack"), false, None),
        ]);
        assert_eq!(
            rules.classify("Slack", "", None).category,
            path(&["Comms", "IM"])
        );
        let reversed = compile(&[
            cat(&["Work", "Chat"], Some("Slack"), false, None),
            cat(&["Comms", "IM"], Some("Slack"), false, None),
        ]);
        assert_eq!(
            reversed.classify("Slack", "", None).category,
            path(&["Work", "Chat"])
        );
    }

    #[test]
    fn ignore_case_on_and_off() {
        let sensitive = compile(&[cat(&["Media", "Music"], Some("Spotify"), false, None)]);
        assert_eq!(
            sensitive.classify("spotify", "", None).category,
            path(&[UNCATEGORIZED])
        );
        assert_eq!(
            sensitive.classify("Spotify", "", None).category,
            path(&["Media", "Music"])
        );

        let insensitive = compile(&[cat(&["Media", "Music"], Some("Spotify"), true, None)]);
        assert_eq!(
            insensitive.classify("SPOTIFY", "", None).category,
            path(&["Media", "Music"])
        );
        assert_eq!(
            insensitive.classify("spotify", "", None).category,
            path(&["Media", "Music"])
        );
    }

    #[test]
    fn ignore_case_of_one_rule_does_not_leak_into_another() {
        let rules = compile(&[
            cat(&["A"], Some("alpha"), true, None),
            cat(&["B"], Some("Beta"), false, None),
        ]);
        assert_eq!(rules.classify("ALPHA", "", None).category, path(&["A"]));
        assert_eq!(
            rules.classify("BETA", "", None).category,
            path(&[UNCATEGORIZED])
        );
    }

    #[test]
    fn a_rule_can_match_on_the_url_only() {
        let rules = compile(&[cat(
            &["Work", "Tickets"],
            Some(r"linear\.app/"),
            false,
            Some(80),
        )]);
        let c = rules.classify(
            "firefox",
            "TRK-12 Fix login",
            Some("https://linear.app/acme/issue/TRK-12"),
        );
        assert_eq!(c.category, path(&["Work", "Tickets"]));
        assert_eq!(c.score, 80);
        let without_url = rules.classify("firefox", "TRK-12 Fix login", None);
        assert_eq!(without_url.category, path(&[UNCATEGORIZED]));
    }

    #[test]
    fn no_match_is_uncategorized_with_score_zero() {
        let rules = compile(&[cat(&["Work"], Some("GitHub"), false, Some(100))]);
        let c = rules.classify("calculator", "Calculator", None);
        assert_eq!(
            c,
            Classification {
                category: path(&[UNCATEGORIZED]),
                score: 0
            }
        );
        let empty = compile(&[]);
        assert_eq!(
            empty.classify("GitHub", "GitHub", Some("GitHub")).category,
            path(&[UNCATEGORIZED])
        );
    }

    #[test]
    fn a_parent_without_a_rule_matches_nothing() {
        let rules = compile(&[cat(&["Media"], None, false, Some(-50))]);
        assert_eq!(
            rules.classify("Media", "Media", Some("Media")).category,
            path(&[UNCATEGORIZED])
        );
    }

    #[test]
    fn score_is_inherited_from_the_nearest_ancestor_with_one() {
        let rules = compile(&[
            cat(&["Work"], None, false, Some(100)),
            cat(&["Work", "Programming"], None, false, Some(90)),
            cat(&["Work", "Programming", "Rust"], Some("rust"), false, None),
            cat(&["Work", "Meetings"], Some("standup"), false, None),
            cat(
                &["Work", "Meetings", "Retro"],
                Some("retro"),
                false,
                Some(-10),
            ),
            cat(&["Other", "Deep", "Thing"], Some("thing"), false, None),
        ]);
        assert_eq!(rules.classify("", "rust", None).score, 90);
        assert_eq!(rules.classify("", "standup", None).score, 100);
        assert_eq!(rules.classify("", "retro", None).score, -10);
        // No ancestor defines a score: 0.
        assert_eq!(rules.classify("", "thing", None).score, 0);
    }

    #[test]
    fn the_score_of_a_duplicate_path_counts_as_the_categorys_own() {
        let rules = compile(&[
            cat(&["Work"], None, false, Some(100)),
            cat(&["Work", "Docs"], Some("Docs"), false, None),
            cat(&["Work", "Docs"], None, false, Some(40)),
        ]);
        assert_eq!(rules.classify("", "Google Docs", None).score, 40);
    }

    #[test]
    fn the_default_rules_compile_and_are_valid() {
        let rules = defaults();
        assert_eq!(rules.categories().len(), Rules::default_rules().len());
        assert!(Rules::default_rules().iter().all(|c| c.name.len() <= 2));
    }

    /// app, title, url, expected category, expected score.
    type Case = (
        &'static str,
        &'static str,
        Option<&'static str>,
        &'static [&'static str],
        i32,
    );

    #[test]
    fn the_default_rules_classify_realistic_activity() {
        let rules = defaults();
        let cases: &[Case] = &[
            (
                "code",
                "main.rs - trackhrs",
                None,
                &["Work", "Programming"],
                100,
            ),
            (
                "Code.exe",
                "lib.rs - trackhrs - Visual Studio Code",
                None,
                &["Work", "Programming"],
                100,
            ),
            (
                "jetbrains-idea",
                "trackhrs – Main.java",
                None,
                &["Work", "Programming"],
                100,
            ),
            (
                "Alacritty",
                "cargo test",
                None,
                &["Work", "Programming"],
                100,
            ),
            (
                "firefox",
                "rust - How do I borrow? - Stack Overflow",
                Some("https://stackoverflow.com/questions/1"),
                &["Work", "Programming"],
                100,
            ),
            (
                "firefox",
                "Pull requests · acme/trackhrs · GitHub",
                None,
                &["Work", "Programming"],
                100,
            ),
            (
                "soffice.bin",
                "budget.ods - LibreOffice Calc",
                None,
                &["Work"],
                100,
            ),
            (
                "gimp-2.10",
                "[logo] (imported)-1.0 (RGB color 8-bit gamma integer) – GIMP",
                None,
                &["Work", "Image"],
                100,
            ),
            (
                "Slack",
                "#general - Acme - Slack",
                None,
                &["Comms", "IM"],
                25,
            ),
            ("signal-desktop", "Signal", None, &["Comms", "IM"], 25),
            (
                "thunderbird",
                "Inbox - Mozilla Thunderbird",
                None,
                &["Comms", "Email"],
                25,
            ),
            (
                "chrome",
                "Inbox (3) - me@example.com - Gmail",
                Some("https://mail.google.com/mail/u/0/"),
                &["Comms", "Email"],
                25,
            ),
            ("zoom.us", "Zoom Meeting", None, &["Comms", "Video"], 25),
            (
                "firefox",
                "Weekly sync",
                Some("https://meet.google.com/abc-defg-hij"),
                &["Comms", "Video"],
                25,
            ),
            ("firefox", "YouTube - cats", None, &["Media", "Video"], -50),
            (
                "vlc",
                "holiday.mkv - VLC media player",
                None,
                &["Media", "Video"],
                -50,
            ),
            (
                "firefox",
                "Home / X",
                Some("https://x.com/home"),
                &["Media", "Social Media"],
                -50,
            ),
            (
                "firefox",
                "r/rust - reddit",
                None,
                &["Media", "Social Media"],
                -50,
            ),
            ("Spotify", "Spotify Premium", None, &["Media", "Music"], -25),
            (
                "firefox",
                "YouTube Music",
                Some("https://music.youtube.com/"),
                &["Media", "Music"],
                -25,
            ),
            ("steam", "Steam", None, &["Media", "Games"], -100),
            ("gnome-calculator", "Calculator", None, &[UNCATEGORIZED], 0),
            // Common words in a title do not trip the anchored app names.
            (
                "firefox",
                "Enter the code you received",
                None,
                &[UNCATEGORIZED],
                0,
            ),
            (
                "firefox",
                "How to zoom in on a photo",
                None,
                &[UNCATEGORIZED],
                0,
            ),
        ];
        for (app, title, url, expected, score) in cases {
            let c = rules.classify(app, title, *url);
            assert_eq!(
                c.category,
                path(expected),
                "app {app:?}, title {title:?}, url {url:?}"
            );
            assert_eq!(c.score, *score, "app {app:?}, title {title:?}, url {url:?}");
        }
    }

    /// Modelled on what aw-webui's "Export categories" writes for its default
    /// categories, with a score added to some, `"type": "none"` parents, the
    /// `"type": null` Uncategorized entry and the fields we ignore.
    const AW_EXPORT: &str = r##"{
      "categories": [
        {"id": 0, "name": ["Work"], "name_pretty": "Work", "subname": "Work", "depth": 0, "parent": null,
         "rule": {"type": "regex", "regex": "Google Docs|libreoffice|ReText", "ignore_case": true},
         "data": {"color": "#0F0", "score": 10}},
        {"id": 1, "name": ["Work", "Programming"], "name_pretty": "Work > Programming", "subname": "Programming", "depth": 1, "parent": ["Work"],
         "rule": {"type": "regex", "regex": "GitHub|Stack Overflow|BitBucket|Gitlab|vim|Spyder|kate|Ghidra|Scite"},
         "data": {"color": "#00F"}},
        {"id": 2, "name": ["Work", "Programming", "ActivityWatch"], "depth": 2,
         "rule": {"type": "regex", "regex": "ActivityWatch|aw-", "ignore_case": true}},
        {"id": 3, "name": ["Work", "Image"], "depth": 1, "rule": {"type": "regex", "regex": "Gimp|Inkscape"}},
        {"id": 4, "name": ["Work", "Video"], "depth": 1, "rule": {"type": "regex", "regex": "Kdenlive"}},
        {"id": 5, "name": ["Work", "Audio"], "depth": 1, "rule": {"type": "regex", "regex": "Audacity"}},
        {"id": 6, "name": ["Work", "3D"], "depth": 1, "rule": {"type": "regex", "regex": "Blender"}},
        {"id": 7, "name": ["Media"], "depth": 0, "rule": {"type": "none"}, "data": {"color": "#F00", "score": -50}},
        {"id": 8, "name": ["Media", "Games"], "depth": 1, "rule": {"type": "regex", "regex": "Minecraft|RimWorld"}, "data": {"color": "#0FF"}},
        {"id": 9, "name": ["Media", "Video"], "depth": 1, "rule": {"type": "regex", "regex": "YouTube|Plex|VLC"}, "data": {"color": "#F33"}},
        {"id": 10, "name": ["Media", "Social Media"], "depth": 1,
         "rule": {"type": "regex", "regex": "reddit|Facebook|Twitter|Instagram|devRant", "ignore_case": true}, "data": {"color": "#FCF"}},
        {"id": 11, "name": ["Media", "Music"], "depth": 1,
         "rule": {"type": "regex", "regex": "Spotify|Deezer", "ignore_case": true}, "data": {"color": "#A8FC83", "score": -20.0}},
        {"id": 12, "name": ["Comms"], "depth": 0, "rule": {"type": "none"}, "data": {"color": "#5FA", "score": 5}},
        {"id": 13, "name": ["Comms", "IM"], "depth": 1,
         "rule": {"type": "regex", "regex": "Messenger|Telegram|Signal|WhatsApp|Rambox|Slack|Riot|Element|Discord|Nheko|NeoChat|Mattermost"}},
        {"id": 14, "name": ["Comms", "Email"], "depth": 1, "rule": {"type": "regex", "regex": "Gmail|Thunderbird|mutt|alpine"}},
        {"id": 15, "name": ["Uncategorized"], "depth": 0, "rule": {"type": null}, "data": {"color": "#CCC"}}
      ]
    }"##;

    #[test]
    fn parses_a_realistic_activitywatch_export() {
        let categories = match parse_activitywatch(AW_EXPORT) {
            Ok(categories) => categories,
            Err(e) => panic!("export should parse: {e}"),
        };
        assert_eq!(categories.len(), 16);
        assert_eq!(
            categories[0],
            cat(
                &["Work"],
                Some("Google Docs|libreoffice|ReText"),
                true,
                Some(10)
            )
        );
        assert_eq!(
            categories[2],
            cat(
                &["Work", "Programming", "ActivityWatch"],
                Some("ActivityWatch|aw-"),
                true,
                None
            )
        );
        assert_eq!(categories[7], cat(&["Media"], None, false, Some(-50)));
        assert_eq!(categories[11].score, Some(-20));
        assert_eq!(categories[15], cat(&["Uncategorized"], None, false, None));

        let rules = compile(&categories);
        let c = rules.classify("aw-qt", "ActivityWatch", None);
        assert_eq!(c.category, path(&["Work", "Programming", "ActivityWatch"]));
        assert_eq!(c.score, 10);
        let c = rules.classify("firefox", "YouTube - cats", None);
        assert_eq!((c.category, c.score), (path(&["Media", "Video"]), -50));
        let c = rules.classify("Slack", "general", None);
        assert_eq!((c.category, c.score), (path(&["Comms", "IM"]), 5));
    }

    #[test]
    fn parses_a_bare_array_and_reads_an_empty_regex_as_no_rule() {
        let json = r#"[
            {"name": ["Work"], "rule": {"type": "regex", "regex": ""}, "data": {"score": 70}},
            {"name": ["Work", "Docs"], "rule": {"type": "regex", "regex": "Docs"}, "extra": [1, 2]},
            {"name": ["Parent"]}
        ]"#;
        let categories = match parse_activitywatch(json) {
            Ok(categories) => categories,
            Err(e) => panic!("array should parse: {e}"),
        };
        assert_eq!(
            categories,
            vec![
                cat(&["Work"], None, false, Some(70)),
                cat(&["Work", "Docs"], Some("Docs"), false, None),
                cat(&["Parent"], None, false, None),
            ]
        );
    }

    #[test]
    fn export_then_import_is_the_identity() {
        let mut categories = Rules::default_rules();
        categories.push(cat(
            &["Work", "Tickets"],
            Some(r#"linear\.app/"quoted"#),
            false,
            Some(-7),
        ));
        let json = to_activitywatch(&categories);
        match parse_activitywatch(&json) {
            Ok(back) => assert_eq!(back, categories),
            Err(e) => panic!("our own export should parse: {e}\n{json}"),
        }
        // And an imported export, written again, reads back the same.
        let imported = parse_activitywatch(AW_EXPORT).unwrap_or_default();
        assert_eq!(
            parse_activitywatch(&to_activitywatch(&imported)).ok(),
            Some(imported)
        );
    }

    #[test]
    fn export_has_activitywatchs_shape() {
        let json = to_activitywatch(&[
            cat(&["Media"], None, false, Some(-50)),
            cat(&["Media", "Video"], Some("YouTube"), true, None),
        ]);
        let value: Value = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(
            value,
            json!({"categories": [
                {"id": 0, "name": ["Media"], "rule": {"type": "none"}, "data": {"score": -50}, "depth": 0},
                {"id": 1, "name": ["Media", "Video"],
                 "rule": {"type": "regex", "regex": "YouTube", "ignore_case": true}, "data": {}, "depth": 1},
            ]})
        );
    }

    /// Asserts that `result` is an error whose message contains every one
    /// of `needles`.
    fn assert_rejected<T: std::fmt::Debug>(result: Result<T, RulesError>, needles: &[&str]) {
        match result {
            Ok(value) => panic!("expected a rejection, got {value:?}"),
            Err(e) => {
                let message = e.to_string();
                for needle in needles {
                    assert!(
                        message.contains(needle),
                        "{message:?} should mention {needle:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn compile_rejections_name_the_category() {
        let ok = cat(&["Work"], Some("GitHub"), false, None);
        let with = |bad: CategoryRule| vec![ok.clone(), bad];

        assert_rejected(
            Rules::compile(&with(cat(
                &["Work", "Broken"],
                Some("(unclosed"),
                false,
                None,
            ))),
            &["categories[1]", "Work > Broken", "invalid regex"],
        );
        assert_rejected(
            Rules::compile(&with(cat(&[], Some("x"), false, None))),
            &["categories[1]", "no name"],
        );
        assert_rejected(
            Rules::compile(&with(cat(&["Work", ""], Some("x"), false, None))),
            &[
                "categories[1]",
                "Work > \"\"",
                "part 1 of the name is empty",
            ],
        );
        assert_rejected(
            Rules::compile(&with(cat(&["  ", "X"], Some("x"), false, None))),
            &["categories[1]", "part 0"],
        );
        assert_rejected(
            Rules::compile(&with(cat(
                &["Work", "Long"],
                Some(&"a".repeat(MAX_REGEX_LEN + 1)),
                false,
                None,
            ))),
            &["categories[1]", "Work > Long", "4097 bytes", "4096"],
        );
        assert_rejected(
            Rules::compile(&with(cat(&["Work", "Empty"], Some(""), false, None))),
            &["categories[1]", "Work > Empty", "empty"],
        );
        assert_rejected(
            Rules::compile(&with(cat(
                &["Work", "Too good"],
                Some("x"),
                false,
                Some(101),
            ))),
            &["categories[1]", "Work > Too good", "101", "-100..=100"],
        );
        assert_rejected(
            Rules::compile(&with(cat(&["Work", "Too bad"], None, false, Some(-101)))),
            &["categories[1]", "Work > Too bad", "-101"],
        );
        // Short to write, huge to compile: refused by the size limit.
        assert_rejected(
            Rules::compile(&with(cat(
                &["Work", "Explosive"],
                Some(r"\w{1000}{1000}"),
                false,
                None,
            ))),
            &["categories[1]", "Work > Explosive", "invalid regex"],
        );
        // Look-around is not in the regex crate's syntax.
        assert_rejected(
            Rules::compile(&with(cat(
                &["Work", "Lookahead"],
                Some("foo(?=bar)"),
                false,
                None,
            ))),
            &["categories[1]", "Work > Lookahead"],
        );
        let many = vec![ok; MAX_CATEGORIES + 1];
        assert_rejected(Rules::compile(&many), &["1001", "1000"]);
        assert!(Rules::compile(&many[..MAX_CATEGORIES]).is_ok());
    }

    #[test]
    fn import_rejections_name_the_category() {
        let import = |bad: &str| {
            parse_activitywatch(&format!(
                r#"{{"categories": [{{"name": ["Work"], "rule": {{"type": "regex", "regex": "GitHub"}}}}, {bad}]}}"#
            ))
        };
        assert_rejected(
            import(r#"{"name": ["Work", "Broken"], "rule": {"type": "regex", "regex": "a)"}}"#),
            &["categories[1]", "Work > Broken", "invalid regex"],
        );
        assert_rejected(
            import(r#"{"name": [], "rule": {"type": "none"}}"#),
            &["categories[1]", "no name"],
        );
        assert_rejected(
            import(r#"{"rule": {"type": "none"}}"#),
            &["categories[1]", "missing"],
        );
        assert_rejected(
            import(r#"{"name": ["Work", ""]}"#),
            &["categories[1]", "Work > \"\"", "empty"],
        );
        assert_rejected(
            import(r#"{"name": "Work"}"#),
            &["categories[1]", "Work", "list of strings"],
        );
        assert_rejected(
            import(r#"{"name": ["Work", 3]}"#),
            &["categories[1]", "list of strings"],
        );
        assert_rejected(
            import(&format!(
                r#"{{"name": ["Work", "Long"], "rule": {{"type": "regex", "regex": "{}"}}}}"#,
                "a".repeat(5000)
            )),
            &["categories[1]", "Work > Long", "5000 bytes"],
        );
        assert_rejected(
            import(r#"{"name": ["Media"], "rule": {"type": "none"}, "data": {"score": 1000}}"#),
            &["categories[1]", "Media", "1000", "-100..=100"],
        );
        assert_rejected(
            import(r#"{"name": ["Media"], "data": {"score": 1e300}}"#),
            &["categories[1]", "Media", "score 1e", "-100..=100"],
        );
        assert_rejected(
            import(r#"{"name": ["Media"], "data": {"score": 18446744073709551615}}"#),
            &[
                "categories[1]",
                "Media",
                "18446744073709551615",
                "-100..=100",
            ],
        );
        assert_rejected(
            import(r#"{"name": ["Media"], "data": {"score": 2.5}}"#),
            &["categories[1]", "Media", "2.5", "whole number"],
        );
        assert_rejected(
            import(r#"{"name": ["Media"], "data": {"score": "high"}}"#),
            &["categories[1]", "Media", "not a number"],
        );
        assert_rejected(
            import(r#"{"name": ["Media"], "rule": {"type": "glob", "regex": "*"}}"#),
            &["categories[1]", "Media", "unknown rule type \"glob\""],
        );
        assert_rejected(
            import(
                r#"{"name": ["Media"], "rule": {"type": "regex", "regex": "x", "ignore_case": "yes"}}"#,
            ),
            &["categories[1]", "Media", "ignore_case"],
        );
        assert_rejected(import("42"), &["categories[1]", "object"]);

        let many = format!(
            "[{}]",
            vec![r#"{"name": ["A"]}"#; MAX_CATEGORIES + 1].join(",")
        );
        assert_rejected(parse_activitywatch(&many), &["too many categories", "1001"]);

        assert_rejected(
            parse_activitywatch("not json"),
            &["not an ActivityWatch category export"],
        );
        assert_rejected(
            parse_activitywatch(r#"{"classes": []}"#),
            &["\"categories\""],
        );
        assert_rejected(parse_activitywatch(r#""Work""#), &["list of categories"]);
    }

    /// The obvious implementation, one regex at a time in list order, to
    /// check the regex-set one against.
    fn classify_naively(
        categories: &[CategoryRule],
        app: &str,
        title: &str,
        url: Option<&str>,
    ) -> Vec<String> {
        let mut best: Option<&CategoryRule> = None;
        for category in categories {
            let Some(regex) = &category.regex else {
                continue;
            };
            let Ok(regex) = RegexBuilder::new(regex)
                .case_insensitive(category.ignore_case)
                .build()
            else {
                continue;
            };
            let matched = [Some(app), Some(title), url]
                .into_iter()
                .flatten()
                .any(|s| regex.is_match(s));
            if matched && best.is_none_or(|b| category.name.len() > b.name.len()) {
                best = Some(category);
            }
        }
        best.map_or_else(|| vec![UNCATEGORIZED.to_owned()], |c| c.name.clone())
    }

    fn arb_category() -> impl Strategy<Value = CategoryRule> {
        (
            prop::collection::vec(
                prop::sample::select(vec!["Work", "Media", "Comms", "Code", "Video"]),
                1..4,
            ),
            prop::option::of(prop::sample::select(vec![
                "a", "ab", "^a", "b$", "[a-c]+", "(?:x|yz)", "A", r"\d", "é", ".",
            ])),
            any::<bool>(),
            prop::option::of(MIN_SCORE..=MAX_SCORE),
        )
            .prop_map(|(name, regex, ignore_case, score)| CategoryRule {
                name: name.into_iter().map(str::to_owned).collect(),
                regex: regex.map(str::to_owned),
                ignore_case,
                score,
            })
    }

    proptest! {
        #[test]
        fn classify_returns_uncategorized_or_a_defined_category(
            categories in prop::collection::vec(arb_category(), 0..12),
            app in "[a-zA-Z0-9é ]{0,8}",
            title in "\\PC{0,16}",
            url in prop::option::of("[a-z:/.]{0,12}"),
        ) {
            let rules = compile(&categories);
            let c = rules.classify(&app, &title, url.as_deref());
            let defined = categories.iter().any(|cat| cat.name == c.category);
            prop_assert!(defined || c.category == [UNCATEGORIZED]);
            prop_assert!((MIN_SCORE..=MAX_SCORE).contains(&c.score));
            if c.category == [UNCATEGORIZED] && !defined {
                prop_assert_eq!(c.score, 0);
            }
            // Deterministic, and the same as the one-regex-at-a-time reading.
            prop_assert_eq!(&rules.classify(&app, &title, url.as_deref()), &c);
            prop_assert_eq!(classify_naively(&categories, &app, &title, url.as_deref()), c.category);
        }

        #[test]
        fn compiling_and_importing_arbitrary_input_never_panics(
            regex in "\\PC{0,24}",
            ignore_case in any::<bool>(),
            json in "\\PC{0,64}",
            input in "\\PC{0,32}",
        ) {
            let categories = [CategoryRule { name: vec!["X".to_owned()], regex: Some(regex), ignore_case, score: None }];
            if let Ok(rules) = Rules::compile(&categories) {
                let c = rules.classify(&input, &input, Some(&input));
                prop_assert!(c.category == ["X"] || c.category == [UNCATEGORIZED]);
            }
            let _ = parse_activitywatch(&json);
        }
    }
}
