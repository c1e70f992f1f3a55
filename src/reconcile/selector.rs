//! Label selectors, as kubectl writes them, for the verbs that act on several processes at once
//! (`prism-launcher restart -l team=storage`): requirements joined by commas, all of which must
//! hold. `key=value` (or `key==value`), `key!=value` (a process without the label matches, as in
//! Kubernetes), `key` (has the label) and `!key` (lacks it).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use super::limits::{echo, MAX_NAME_BYTES, MAX_VALUE_BYTES};

/// A parsed label selector; see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals { key: String, value: String },
    NotEquals { key: String, value: String },
    Exists { key: String },
    Absent { key: String },
}

/// A selector that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("the label selector is empty; write key=value (e.g. team=storage)")]
    Empty,
    #[error("label selector {}: requirement {} has no key", echo(.selector), echo(.part))]
    NoKey { selector: String, part: String },
    #[error(
        "label selector {}: {} is not a label key (at most {MAX_NAME_BYTES} bytes, no spaces, \
         no '=', '!' or ',')",
        echo(.selector),
        echo(.key)
    )]
    BadKey { selector: String, key: String },
    #[error(
        "label selector {}: {} is not a label value (at most {MAX_VALUE_BYTES} bytes, no spaces \
         or ',')",
        echo(.selector),
        echo(.value)
    )]
    BadValue { selector: String, value: String },
}

impl FromStr for LabelSelector {
    type Err = SelectorError;

    fn from_str(selector: &str) -> Result<LabelSelector, SelectorError> {
        let mut requirements = Vec::new();
        for part in selector.split(',').map(str::trim) {
            if part.is_empty() {
                if selector.trim().is_empty() {
                    return Err(SelectorError::Empty);
                }
                return Err(SelectorError::NoKey {
                    selector: selector.to_string(),
                    part: part.to_string(),
                });
            }
            requirements.push(requirement(selector, part)?);
        }
        Ok(LabelSelector { requirements })
    }
}

/// One requirement of `selector`.
fn requirement(selector: &str, part: &str) -> Result<Requirement, SelectorError> {
    let key_of = |key: &str| -> Result<String, SelectorError> {
        let key = key.trim();
        if key.is_empty() {
            return Err(SelectorError::NoKey {
                selector: selector.to_string(),
                part: part.to_string(),
            });
        }
        let bad = key.len() > MAX_NAME_BYTES
            || key
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '=' | '!' | ','));
        if bad {
            return Err(SelectorError::BadKey {
                selector: selector.to_string(),
                key: key.to_string(),
            });
        }
        Ok(key.to_string())
    };
    let value_of = |value: &str| -> Result<String, SelectorError> {
        let value = value.trim();
        let bad = value.len() > MAX_VALUE_BYTES
            || value
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == ',');
        if bad {
            return Err(SelectorError::BadValue {
                selector: selector.to_string(),
                value: value.to_string(),
            });
        }
        Ok(value.to_string())
    };
    if let Some((key, value)) = part.split_once("!=") {
        return Ok(Requirement::NotEquals {
            key: key_of(key)?,
            value: value_of(value)?,
        });
    }
    if let Some((key, value)) = part.split_once("==").or_else(|| part.split_once('=')) {
        return Ok(Requirement::Equals {
            key: key_of(key)?,
            value: value_of(value)?,
        });
    }
    match part.strip_prefix('!') {
        Some(key) => Ok(Requirement::Absent { key: key_of(key)? }),
        None => Ok(Requirement::Exists { key: key_of(part)? }),
    }
}

/// The selector as kubectl would write it (`team=storage,!canary`).
impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, requirement) in self.requirements.iter().enumerate() {
            if n > 0 {
                f.write_str(",")?;
            }
            match requirement {
                Requirement::Equals { key, value } => write!(f, "{key}={value}")?,
                Requirement::NotEquals { key, value } => write!(f, "{key}!={value}")?,
                Requirement::Exists { key } => f.write_str(key)?,
                Requirement::Absent { key } => write!(f, "!{key}")?,
            }
        }
        Ok(())
    }
}

impl LabelSelector {
    /// Whether a process with `labels` is selected: every requirement holds.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements
            .iter()
            .all(|requirement| match requirement {
                Requirement::Equals { key, value } => labels.get(key) == Some(value),
                Requirement::NotEquals { key, value } => labels.get(key) != Some(value),
                Requirement::Exists { key } => labels.contains_key(key),
                Requirement::Absent { key } => !labels.contains_key(key),
            })
    }
}
