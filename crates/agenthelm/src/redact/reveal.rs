//! Filling in what the journal does not keep, in memory, just before a tool is called:
//! `{{env.NAME}}` and `[redacted:NAME]` for the variables a plan may read. Any other marker
//! stops the call: a tool must never get `[redacted:...]` in place of a value.

use serde_json::Value;
use std::borrow::Cow;

use super::{marker_spans, Redactor, MARKER_OPEN};
use crate::plan::{env_references_in, fill_env};

/// An argument the journal does not hold: the call cannot be made with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HiddenArgument {
    /// The argument holds a value redaction removed from the journal (a resumed run, or a
    /// rollback, rebuilds arguments from it).
    #[error(
        "argument `{path}` held a value redacted from the journal (`{name}`), so the call cannot \
         be made with it: the journal never keeps such values. Pass secrets as `{{{{env.NAME}}}}` \
         with NAME listed under `redact.env` (filled in again at each call), or run the plan anew"
    )]
    Redacted {
        /// Where in the arguments (`to`, `items[0].email`).
        path: String,
        /// The marker's name: what was redacted.
        name: String,
    },
    /// The argument reads an allowed environment variable that is not set.
    #[error("argument `{path}` reads `{{{{env.{name}}}}}`, but the environment variable `{name}` is not set")]
    Unset {
        /// Where in the arguments.
        path: String,
        /// The variable.
        name: String,
    },
}

impl Redactor {
    /// `args` as the tool must get them: each `{{env.NAME}}` and `[redacted:NAME]` of a variable
    /// plans may read ([`env_var`](Self::env_var)) replaced by its value. Borrowed when there
    /// was nothing to fill in.
    ///
    /// An error names the argument when it holds any other marker (the value is not on record
    /// anywhere) or reads a variable that is not set.
    ///
    /// ```
    /// use agenthelm::redact::Redactor;
    /// use serde_json::json;
    ///
    /// let redactor = Redactor::new().env_value("DB_PASSWORD", Some("hunter2-long".into()));
    /// let args = json!({"dsn": "postgres://app:{{env.DB_PASSWORD}}@db"});
    /// assert_eq!(*redactor.reveal(&args)?, json!({"dsn": "postgres://app:hunter2-long@db"}));
    /// let lost = json!({"to": "[redacted:email]"});
    /// assert!(redactor.reveal(&lost).unwrap_err().to_string().contains("argument `to`"));
    /// # Ok::<(), agenthelm::redact::HiddenArgument>(())
    /// ```
    pub fn reveal<'a>(&self, args: &'a Value) -> Result<Cow<'a, Value>, HiddenArgument> {
        if self.is_empty() && self.env.is_empty() {
            return Ok(Cow::Borrowed(args));
        }
        let lookup = |name: &str| self.env.get(name).cloned().flatten();
        let mut filled = match fill_env(args, &lookup) {
            Some(filled) => Cow::Owned(filled),
            None => Cow::Borrowed(args),
        };
        let unset = env_references_in(&filled)
            .into_iter()
            .find(|name| self.env.contains_key(*name))
            .map(str::to_owned);
        if let Some(name) = unset {
            let path = path_of(&filled, &format!("{{{{env.{name}}}}}"));
            return Err(HiddenArgument::Unset { path, name });
        }
        if has_marker(&filled) {
            let mut value = filled.into_owned();
            self.fill_markers(&mut value, &mut String::new())?;
            filled = Cow::Owned(value);
        }
        Ok(filled)
    }

    /// Replaces the markers of readable variables in `value` (at `path`), or names the first
    /// other one.
    fn fill_markers(&self, value: &mut Value, path: &mut String) -> Result<(), HiddenArgument> {
        match value {
            Value::String(text) => {
                if let Some(filled) = self.fill_text_markers(text, path)? {
                    *text = filled;
                }
                Ok(())
            }
            Value::Array(items) => items.iter_mut().enumerate().try_for_each(|(i, item)| {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                let done = self.fill_markers(item, path);
                path.truncate(len);
                done
            }),
            Value::Object(map) => map.iter_mut().try_for_each(|(key, item)| {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                let done = self.fill_markers(item, path);
                path.truncate(len);
                done
            }),
            _ => Ok(()),
        }
    }

    fn fill_text_markers(&self, text: &str, path: &str) -> Result<Option<String>, HiddenArgument> {
        let spans = marker_spans(text);
        if spans.is_empty() {
            return Ok(None);
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for (start, end) in spans {
            let name = &text[start + MARKER_OPEN.len()..end - 1];
            let Some(Some(value)) = self.env.get(name) else {
                let path = if path.is_empty() {
                    "(the arguments)"
                } else {
                    path
                };
                return Err(HiddenArgument::Redacted {
                    path: path.to_owned(),
                    name: name.to_owned(),
                });
            };
            out.push_str(&text[at..start]);
            out.push_str(value);
            at = end;
        }
        out.push_str(&text[at..]);
        Ok(Some(out))
    }
}

fn has_marker(value: &Value) -> bool {
    match value {
        Value::String(text) => text.contains(MARKER_OPEN),
        Value::Array(items) => items.iter().any(has_marker),
        Value::Object(map) => map.values().any(has_marker),
        _ => false,
    }
}

/// The path of the first string in `value` that contains `needle` (for messages).
fn path_of(value: &Value, needle: &str) -> String {
    fn find(value: &Value, needle: &str, path: &str) -> Option<String> {
        match value {
            Value::String(text) => text.contains(needle).then(|| path.to_owned()),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .find_map(|(i, item)| find(item, needle, &format!("{path}[{i}]"))),
            Value::Object(map) => map.iter().find_map(|(key, item)| {
                let inner = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                find(item, needle, &inner)
            }),
            _ => None,
        }
    }
    find(value, needle, "").unwrap_or_else(|| "(the arguments)".to_owned())
}
