//! ActivityWatch's category export: reading one (what users import) and
//! writing one (what aw-webui and [`parse_activitywatch`] read back).

use serde_json::{Map, Value, json};

use super::{
    CategoryRule, MAX_CATEGORIES, MAX_SCORE, MIN_SCORE, Rules, RulesError, check_score,
    display_path, validate_name,
};

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
