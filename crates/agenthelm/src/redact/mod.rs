//! Redaction: secrets and personal data replaced by `[redacted:<name>]` before anything is
//! journaled, exported or shown.
//!
//! A [`Redactor`] knows three kinds of things to hide, each under a name:
//!
//! - **secrets**: literal values (API keys, tokens), found wherever they occur;
//! - **patterns**: regular expressions;
//! - **presets**: e-mail addresses, payment card numbers (Luhn-checked) and IBANs
//!   (mod-97-checked), see [`Preset`].
//!
//! It also holds the variables a plan may read as `{{env.NAME}}` (see
//! [`env_var`](Redactor::env_var)): their values are secrets, and they are filled in only in
//! memory, when a tool is called ([`Redactor::reveal`]).
//!
//! ```
//! use agenthelm::redact::{Preset, Redactor};
//!
//! let redactor = Redactor::new()
//!     .secret("OPENAI_API_KEY", "sk-live-0123456789")
//!     .pattern("ticket", r"TCK-\d+")?
//!     .preset(Preset::Email);
//! assert_eq!(
//!     redactor.redact_str("key sk-live-0123456789 for ana@example.com on TCK-42"),
//!     "key [redacted:OPENAI_API_KEY] for [redacted:email] on [redacted:ticket]"
//! );
//! # Ok::<(), agenthelm::redact::RedactError>(())
//! ```

mod preset;
mod reveal;

pub use preset::{Preset, UnknownPreset};
pub use reveal::HiddenArgument;

use crate::plan::Plan;
use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

/// The shortest secret that is redacted: shorter values (`""`, `"1"`, `"abc"`) would turn
/// every occurrence of common text into a marker, so they are skipped (and listed by
/// [`Redactor::skipped`]).
pub const MIN_SECRET_LEN: usize = 4;

const MARKER_OPEN: &str = "[redacted:";

/// A rule that could not be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedactError {
    /// A pattern is not a valid regular expression.
    #[error("redaction pattern `{name}` is not a valid regular expression: {message}")]
    BadPattern {
        /// The pattern's name.
        name: String,
        /// What the regex parser said.
        message: String,
    },
    /// A name that cannot go in a marker.
    #[error("redaction name `{0}` must be letters, digits, `_`, `-` or `.` (1 to 64 of them)")]
    BadName(String),
}

/// A named regular expression, with the check a preset adds.
#[derive(Clone)]
struct Rule {
    name: Arc<str>,
    regex: Regex,
    preset: Option<Preset>,
}

/// Replaces secrets, patterns and presets with `[redacted:<name>]`; see the [module
/// docs](self). Cheap to clone (the compiled patterns are shared).
#[derive(Clone, Default)]
pub struct Redactor {
    /// Literal secrets: value → name. The first name given for a value wins.
    secrets: BTreeMap<String, Arc<str>>,
    rules: Vec<Rule>,
    /// Variables plans may read as `{{env.NAME}}`, with their values (`None`: not set).
    env: BTreeMap<String, Option<String>>,
    /// Names of secrets too short to redact, and presets that could not be compiled.
    skipped: Vec<String>,
    compiled: Option<Arc<Compiled>>,
}

/// Everything matched at once: one alternation of the secrets (longest first), then the rules.
struct Compiled {
    /// `None` only if the alternation were too big to compile: then each secret is looked
    /// for on its own.
    secrets: Option<Regex>,
    /// Every secret and rule: a string that matches none is left alone without more work.
    /// (`None`, as above: every string gets the full search.)
    any: Option<RegexSet>,
}

impl Redactor {
    /// A redactor that redacts nothing until told what to.
    pub fn new() -> Self {
        Self::default()
    }

    /// Redacts `value` wherever it occurs, as `[redacted:<name>]`. Values shorter than
    /// [`MIN_SECRET_LEN`] are skipped (see [`skipped`](Self::skipped)).
    pub fn secret(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let (name, value) = (name.into(), value.into());
        if value.chars().count() < MIN_SECRET_LEN {
            self.skipped.push(name);
            return self;
        }
        self.secrets.entry(value).or_insert_with(|| Arc::from(name));
        self.compile()
    }

    /// Allows plans to read the environment variable `name` as `{{env.NAME}}` (filled in in
    /// memory when a tool is called, never stored) and redacts its value, read now.
    pub fn env_var(self, name: impl Into<String>) -> Self {
        let name = name.into();
        let value = std::env::var(&name).ok();
        self.env_value(name, value)
    }

    /// Like [`env_var`](Self::env_var) with the value given (`None`: the variable is not
    /// set), for callers that read their environment their own way.
    pub fn env_value(mut self, name: impl Into<String>, value: Option<String>) -> Self {
        let name = name.into();
        if let Some(value) = &value {
            self = self.secret(name.clone(), value.clone());
        }
        self.env.insert(name, value);
        self
    }

    /// Redacts every match of the regular expression `regex` as `[redacted:<name>]`.
    pub fn pattern(mut self, name: impl Into<String>, regex: &str) -> Result<Self, RedactError> {
        let name = checked_name(name.into())?;
        let regex = Regex::new(regex).map_err(|e| RedactError::BadPattern {
            name: name.to_string(),
            message: e.to_string(),
        })?;
        self.rules.push(Rule {
            name,
            regex,
            preset: None,
        });
        Ok(self.compile())
    }

    /// Redacts what a built-in [`Preset`] finds, as `[redacted:<preset>]`.
    pub fn preset(mut self, preset: Preset) -> Self {
        if self.rules.iter().any(|r| r.preset == Some(preset)) {
            return self;
        }
        match Regex::new(preset.pattern()) {
            Ok(regex) => self.rules.push(Rule {
                name: Arc::from(preset.name()),
                regex,
                preset: Some(preset),
            }),
            // The presets' patterns are constants checked by the tests; never reached.
            Err(_) => self.skipped.push(preset.name().to_owned()),
        }
        self.compile()
    }

    /// Whether nothing is redacted: then events and plans are passed on as they are, at no
    /// cost.
    pub fn is_empty(&self) -> bool {
        self.compiled.is_none()
    }

    /// Names of secrets that were not redacted because their values are shorter than
    /// [`MIN_SECRET_LEN`] characters.
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }

    /// The variables plans may read as `{{env.NAME}}`, in name order.
    pub fn env_names(&self) -> impl Iterator<Item = &str> {
        self.env.keys().map(String::as_str)
    }

    /// Whether plans may read `name` as `{{env.NAME}}`, and whether it is set: `None` when
    /// it is not allowed, `Some(false)` when allowed but not set.
    pub fn env_status(&self, name: &str) -> Option<bool> {
        self.env.get(name).map(Option::is_some)
    }

    fn compile(mut self) -> Self {
        let mut literals: Vec<&String> = self.secrets.keys().collect();
        // Longest first: a secret that contains another is replaced whole.
        literals.sort_by_key(|s| std::cmp::Reverse(s.len()));
        let alternation = (!literals.is_empty()).then(|| {
            let escaped: Vec<String> = literals.iter().map(|s| regex::escape(s)).collect();
            escaped.join("|")
        });
        let mut all: Vec<&str> = alternation.iter().map(String::as_str).collect();
        all.extend(self.rules.iter().map(|r| r.regex.as_str()));
        if all.is_empty() {
            self.compiled = None;
            return self;
        }
        // Escaped literals and patterns that compiled one by one compile together too; the
        // size limits are raised for long lists of secrets.
        let secrets = alternation
            .as_deref()
            .and_then(|a| RegexBuilder::new(a).size_limit(1 << 26).build().ok());
        let any = RegexSetBuilder::new(&all).size_limit(1 << 26).build().ok();
        self.compiled = Some(Arc::new(Compiled { secrets, any }));
        self
    }

    /// `text` with every secret and match replaced by its marker. Markers already in the text
    /// are kept as they are (redacting twice changes nothing), and overlapping finds become one
    /// marker, named after the secret if one is among them, else after the first rule.
    pub fn redact_str<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let finds = self.finds(text);
        if finds.is_empty() {
            return Cow::Borrowed(text);
        }
        Cow::Owned(replace(text, finds))
    }

    /// For a text that is still growing (a model's answer as it streams): how many of its
    /// first bytes can be redacted and shown now, because nothing that may follow could change
    /// how they are redacted. The rest waits for more text (or the end).
    ///
    /// Held back are: an end of the text that could be the start of a secret, a find that may
    /// still grow, and, when there are patterns or presets, the current line (patterns are
    /// taken not to match across line breaks).
    ///
    /// ```
    /// use agenthelm::redact::Redactor;
    ///
    /// let redactor = Redactor::new().secret("KEY", "sk-12345");
    /// assert_eq!(redactor.shown_len("the key is sk-12"), 11); // "sk-12" may be the key
    /// assert_eq!(redactor.shown_len("the key is here"), 15);
    /// assert_eq!(Redactor::new().shown_len("anything"), 8);
    /// ```
    pub fn shown_len(&self, text: &str) -> usize {
        if self.compiled.is_none() {
            return text.len();
        }
        let mut len = text.len();
        for secret in self.secrets.keys() {
            // The longest end of `text` that a secret begins with.
            let partial = secret
                .char_indices()
                .map(|(i, _)| i)
                .filter(|&i| i > 0 && text.ends_with(&secret[..i]))
                .max();
            if let Some(partial) = partial {
                len = len.min(text.len() - partial);
            }
        }
        if !self.rules.is_empty() {
            len = len.min(text.rfind('\n').map_or(0, |i| i + 1));
        }
        // A find running into the held-back part may grow (or fuse with another): hold it too.
        let mut finds = self.finds(text);
        // From the last: holding one back may bring the cut into an earlier one.
        finds.sort_by_key(|f| std::cmp::Reverse(f.start));
        for find in finds {
            if (find.start < len && find.end > len) || find.end == text.len() {
                len = len.min(find.start);
            }
        }
        len
    }

    /// What in `text` is to be hidden.
    fn finds(&self, text: &str) -> Vec<Find> {
        let Some(compiled) = &self.compiled else {
            return Vec::new();
        };
        if compiled.any.as_ref().is_some_and(|any| !any.is_match(text)) {
            return Vec::new();
        }
        let markers = marker_spans(text);
        let mut finds: Vec<Find> = Vec::new();
        let mut add = |start: usize, end: usize, rank: usize, name: &Arc<str>| {
            let inside_marker = markers.iter().any(|&(s, e)| start < e && s < end);
            if start < end && !inside_marker {
                finds.push(Find {
                    start,
                    end,
                    rank,
                    name: Arc::clone(name),
                });
            }
        };
        match &compiled.secrets {
            Some(secrets) => {
                for found in secrets.find_iter(text) {
                    if let Some(name) = self.secrets.get(found.as_str()) {
                        add(found.start(), found.end(), 0, name);
                    }
                }
            }
            None => {
                for (secret, name) in &self.secrets {
                    for (start, _) in text.match_indices(secret.as_str()) {
                        add(start, start + secret.len(), 0, name);
                    }
                }
            }
        }
        for (rank, rule) in self.rules.iter().enumerate() {
            for found in rule.regex.find_iter(text) {
                let len = match rule.preset {
                    Some(preset) => preset.valid_len(found.as_str()),
                    None => Some(found.len()),
                };
                if let Some(len) = len {
                    add(found.start(), found.start() + len, rank + 1, &rule.name);
                }
            }
        }
        finds
    }

    /// Redacts every string of `value` (object keys too) in place; `true` when something
    /// changed.
    pub fn redact_value(&self, value: &mut Value) -> bool {
        if self.compiled.is_none() {
            return false;
        }
        match value {
            Value::String(text) => match self.redact_str(text) {
                Cow::Owned(redacted) => {
                    *text = redacted;
                    true
                }
                Cow::Borrowed(_) => false,
            },
            Value::Array(items) => items
                .iter_mut()
                .fold(false, |changed, item| self.redact_value(item) | changed),
            Value::Object(map) => self.redact_map(map),
            _ => false,
        }
    }

    fn redact_map(&self, map: &mut Map<String, Value>) -> bool {
        let mut changed = map
            .values_mut()
            .fold(false, |changed, item| self.redact_value(item) | changed);
        if map
            .keys()
            .any(|k| matches!(self.redact_str(k), Cow::Owned(_)))
        {
            let entries = std::mem::take(map);
            *map = entries
                .into_iter()
                .map(|(k, v)| (self.redact_str(&k).into_owned(), v))
                .collect();
            changed = true;
        }
        changed
    }

    /// Redacts the strings of a JSON object except the values of the top-level keys in
    /// `keep` (identifiers: names, ids, kinds); `true` when something changed. For a value
    /// that is not an object, [`redact_value`](Self::redact_value).
    pub fn redact_value_except(&self, value: &mut Value, keep: &[&str]) -> bool {
        match value {
            Value::Object(map) if self.compiled.is_some() => map
                .iter_mut()
                .filter(|(key, _)| !keep.contains(&key.as_str()))
                .fold(false, |changed, (_, item)| {
                    self.redact_value(item) | changed
                }),
            other => self.redact_value(other),
        }
    }

    /// Redacts `plan` in place, as it may be stored: its goal and reasoning, and each step's
    /// description, arguments, compensation arguments, result and error. Ids and the names of
    /// agents and tools are kept as they are: they tie the journal to the plan.
    pub fn redact_plan(&self, plan: &mut Plan) {
        if self.is_empty() {
            return;
        }
        self.redact_string(&mut plan.goal);
        self.redact_string(&mut plan.reasoning);
        for step in &mut plan.steps {
            self.redact_string(&mut step.description);
            self.redact_value(&mut step.args);
            for value in [&mut step.compensate_args, &mut step.result]
                .into_iter()
                .flatten()
            {
                self.redact_value(value);
            }
            if let Some(error) = &mut step.error {
                self.redact_string(error);
            }
        }
    }

    /// `text` redacted, for optional texts (errors, answers).
    pub fn redact_string(&self, text: &mut String) {
        if let Cow::Owned(redacted) = self.redact_str(text) {
            *text = redacted;
        }
    }
}

/// One thing to hide: its byte span, the rank of what found it (0: a secret) and its name.
struct Find {
    start: usize,
    end: usize,
    rank: usize,
    name: Arc<str>,
}

/// `text` with the finds (overlapping ones merged, the best-ranked name kept) replaced by
/// markers.
fn replace(text: &str, mut finds: Vec<Find>) -> String {
    finds.sort_by_key(|f| (f.start, f.rank));
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    let mut finds = finds.into_iter().peekable();
    while let Some(first) = finds.next() {
        let (start, mut end, mut best) = (first.start, first.end, first);
        while let Some(next) = finds.next_if(|f| f.start < end) {
            end = end.max(next.end);
            if next.rank < best.rank {
                best = next;
            }
        }
        out.push_str(&text[at..start]);
        out.push_str(MARKER_OPEN);
        out.push_str(&best.name);
        out.push(']');
        at = end;
    }
    out.push_str(&text[at..]);
    out
}

/// Byte spans of the `[redacted:<name>]` markers in `text`.
fn marker_spans(text: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut from = 0;
    while let Some(open) = text[from..].find(MARKER_OPEN).map(|i| from + i) {
        let name_start = open + MARKER_OPEN.len();
        match marker_name(&text[name_start..]) {
            Some(name) => {
                let end = name_start + name.len() + 1;
                spans.push((open, end));
                from = end;
            }
            None => from = name_start,
        }
    }
    spans
}

/// The marker name at the start of `rest` when a `]` closes it.
fn marker_name(rest: &str) -> Option<&str> {
    let close = rest.find(']')?;
    let name = &rest[..close];
    valid_name(name).then_some(name)
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn checked_name(name: String) -> Result<Arc<str>, RedactError> {
    if valid_name(&name) {
        Ok(Arc::from(name))
    } else {
        Err(RedactError::BadName(name))
    }
}

impl fmt::Debug for Redactor {
    // Never the secrets' values: only their names.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: HashMap<&str, ()> = self.secrets.values().map(|n| (&**n, ())).collect();
        let mut secrets: Vec<&str> = names.into_keys().collect();
        secrets.sort_unstable();
        f.debug_struct("Redactor")
            .field("secrets", &secrets)
            .field(
                "rules",
                &self.rules.iter().map(|r| &*r.name).collect::<Vec<_>>(),
            )
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("skipped", &self.skipped)
            .finish()
    }
}

#[cfg(test)]
mod tests;
