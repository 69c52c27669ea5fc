//! What model calls cost: a table of USD prices per million input and output tokens.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use super::TokenUsage;

/// The price of one model, in USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    /// USD per million input (prompt) tokens.
    pub input: f64,
    /// USD per million output (answer) tokens.
    pub output: f64,
}

impl ModelPrice {
    /// A price of `input` and `output` USD per million tokens.
    pub fn new(input: f64, output: f64) -> Self {
        ModelPrice { input, output }
    }

    /// The price of `usage`.
    pub fn cost(&self, usage: TokenUsage) -> f64 {
        (usage.input_tokens as f64 * self.input + usage.output_tokens as f64 * self.output) / 1e6
    }
}

/// Prices of models by id, used to fill [`Completion::cost_usd`](super::Completion::cost_usd).
///
/// Keys are `provider/model` ids (`openai/gpt-4o-mini`), bare model names (`gpt-4o-mini`) or a
/// whole provider (`ollama/*`). A dated or versioned name finds the entry it starts with
/// (`gpt-4o-mini-2024-07-18` is priced as `gpt-4o-mini`). A model found nowhere has no price:
/// its cost is unknown (`None`), never 0.
///
/// [`Pricing::builtin`] holds list prices of common hosted models (late 2025); override or add
/// entries in code or from a YAML/JSON file:
///
/// ```
/// use agenthelm::lm::{ModelPrice, Pricing};
/// use agenthelm::TokenUsage;
///
/// let pricing = Pricing::builtin().with("acme/fast-1", ModelPrice::new(0.5, 1.5));
/// let cost = pricing.cost("acme/fast-1", TokenUsage::new(1_000_000, 1_000_000));
/// assert_eq!(cost, Some(2.0));
/// assert_eq!(pricing.cost("acme/unknown", TokenUsage::new(10, 10)), None);
///
/// let from_yaml = Pricing::from_yaml("acme/fast-1: {input: 1.0, output: 2.0}\n").unwrap();
/// assert_eq!(from_yaml.get("acme/fast-1"), Some(ModelPrice::new(1.0, 2.0)));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Pricing {
    prices: HashMap<String, ModelPrice>,
}

/// Why a pricing file could not be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("pricing {source_name}{}: {message}", location(*.line, *.column))]
pub struct PricingError {
    /// The file, or `YAML`/`JSON` for text.
    pub source_name: String,
    /// 1-based line of the problem, when known.
    pub line: Option<usize>,
    /// 1-based column of the problem, when known.
    pub column: Option<usize>,
    /// What is wrong (naming the field when known).
    pub message: String,
}

fn location(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(" at line {l}, column {c}"),
        (Some(l), None) => format!(" at line {l}"),
        _ => String::new(),
    }
}

/// List prices in USD per million tokens (input, output).
const BUILTIN: &[(&str, f64, f64)] = &[
    ("openai/gpt-4o", 2.50, 10.00),
    ("openai/gpt-4o-mini", 0.15, 0.60),
    ("openai/gpt-4.1", 2.00, 8.00),
    ("openai/gpt-4.1-mini", 0.40, 1.60),
    ("openai/gpt-4.1-nano", 0.10, 0.40),
    ("openai/gpt-5", 1.25, 10.00),
    ("openai/gpt-5-mini", 0.25, 2.00),
    ("openai/gpt-5-nano", 0.05, 0.40),
    ("openai/o3", 2.00, 8.00),
    ("openai/o3-mini", 1.10, 4.40),
    ("openai/o4-mini", 1.10, 4.40),
    ("openai/gpt-3.5-turbo", 0.50, 1.50),
    ("anthropic/claude-opus-4-5", 5.00, 25.00),
    ("anthropic/claude-opus-4-1", 15.00, 75.00),
    ("anthropic/claude-opus-4", 15.00, 75.00),
    ("anthropic/claude-sonnet-4-5", 3.00, 15.00),
    ("anthropic/claude-sonnet-4", 3.00, 15.00),
    ("anthropic/claude-3-7-sonnet", 3.00, 15.00),
    ("anthropic/claude-3-5-sonnet", 3.00, 15.00),
    ("anthropic/claude-haiku-4-5", 1.00, 5.00),
    ("anthropic/claude-3-5-haiku", 0.80, 4.00),
    ("anthropic/claude-3-haiku", 0.25, 1.25),
    ("mistral/mistral-large-latest", 2.00, 6.00),
    ("mistral/mistral-medium-latest", 0.40, 2.00),
    ("mistral/mistral-small-latest", 0.10, 0.30),
    ("mistral/codestral-latest", 0.30, 0.90),
    ("groq/llama-3.1-8b-instant", 0.05, 0.08),
    ("groq/llama-3.3-70b-versatile", 0.59, 0.79),
    ("deepseek/deepseek-chat", 0.27, 1.10),
    ("deepseek/deepseek-reasoner", 0.55, 2.19),
    // Local servers cost nothing per token.
    ("ollama/*", 0.0, 0.0),
];

impl Pricing {
    /// An empty table: every model unpriced.
    pub fn new() -> Self {
        Self::default()
    }

    /// The built-in list prices of common hosted models.
    pub fn builtin() -> Self {
        Pricing {
            prices: BUILTIN
                .iter()
                .map(|&(id, input, output)| (id.to_owned(), ModelPrice::new(input, output)))
                .collect(),
        }
    }

    /// The built-in table, shared.
    pub(crate) fn shared_builtin() -> Arc<Pricing> {
        static BUILTIN_TABLE: OnceLock<Arc<Pricing>> = OnceLock::new();
        Arc::clone(BUILTIN_TABLE.get_or_init(|| Arc::new(Pricing::builtin())))
    }

    /// Sets the price of `model` (builder style).
    pub fn with(mut self, model: impl Into<String>, price: ModelPrice) -> Self {
        self.set(model, price);
        self
    }

    /// Sets the price of `model`.
    pub fn set(&mut self, model: impl Into<String>, price: ModelPrice) {
        self.prices.insert(model.into(), price);
    }

    /// Adds every entry of `other`, replacing entries with the same key.
    pub fn extend(&mut self, other: Pricing) {
        self.prices.extend(other.prices);
    }

    /// The entry stored under exactly this key.
    pub fn get(&self, key: &str) -> Option<ModelPrice> {
        self.prices.get(key).copied()
    }

    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.prices.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.prices.is_empty()
    }

    /// The price that applies to `model`: a `provider/model` id, or a bare model name (which
    /// also finds entries stored under `provider/name`).
    pub fn lookup(&self, model: &str) -> Option<ModelPrice> {
        let full = |key: &str| key.to_owned();
        match model.split_once('/') {
            Some((provider, bare)) => self
                .find(model, full)
                .or_else(|| self.find(bare, full))
                .or_else(|| self.get(&format!("{provider}/*"))),
            None => self
                .find(model, full)
                .or_else(|| self.find(model, |key| bare_name(key).to_owned())),
        }
    }

    /// The cost of `usage` on `model`, or `None` when its price is unknown.
    pub fn cost(&self, model: &str, usage: TokenUsage) -> Option<f64> {
        self.lookup(model).map(|price| price.cost(usage))
    }

    /// The entry whose key (seen through `form`) is `name`, else the longest one that `name`
    /// starts with followed by `-`, `@` or `:` (a date or version suffix).
    fn find(&self, name: &str, form: impl Fn(&str) -> String) -> Option<ModelPrice> {
        let mut best: Option<(usize, ModelPrice)> = None;
        for (key, price) in &self.prices {
            if key.ends_with("/*") {
                continue;
            }
            let key = form(key);
            if key == name {
                return Some(*price);
            }
            let extends = name
                .strip_prefix(key.as_str())
                .is_some_and(|rest| rest.starts_with(['-', '@', ':']));
            if extends && best.is_none_or(|(len, _)| key.len() > len) {
                best = Some((key.len(), *price));
            }
        }
        best.map(|(_, price)| price)
    }

    /// Reads a table from YAML: a mapping from model id to `{input, output}`.
    pub fn from_yaml(text: &str) -> Result<Pricing, PricingError> {
        Self::parse_yaml(text, "YAML")
    }

    /// Reads a table from JSON: an object from model id to `{"input", "output"}`.
    pub fn from_json(text: &str) -> Result<Pricing, PricingError> {
        Self::parse_json(text, "JSON")
    }

    /// Reads a table from a `.json`, `.yaml` or `.yml` file. Errors name the file, line and
    /// field.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Pricing, PricingError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| PricingError {
            source_name: name.clone(),
            line: None,
            column: None,
            message: format!("cannot read the file: {e}"),
        })?;
        let is_json = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        if is_json {
            Self::parse_json(&text, &name)
        } else {
            Self::parse_yaml(&text, &name)
        }
    }

    fn parse_yaml(text: &str, source: &str) -> Result<Pricing, PricingError> {
        let deserializer = yaml_serde::Deserializer::from_str(text);
        let pricing: Pricing = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let location = inner.location();
            PricingError {
                source_name: source.to_owned(),
                line: location.as_ref().map(|l| l.line()),
                column: location.as_ref().map(|l| l.column()),
                message: with_field(&path, &inner.to_string()),
            }
        })?;
        pricing.checked(source)
    }

    fn parse_json(text: &str, source: &str) -> Result<Pricing, PricingError> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let pricing: Pricing =
            serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                PricingError {
                    source_name: source.to_owned(),
                    line: Some(inner.line()).filter(|&l| l > 0),
                    column: Some(inner.column()).filter(|&c| c > 0),
                    message: with_field(&path, &inner.to_string()),
                }
            })?;
        pricing.checked(source)
    }

    /// Prices must be finite and not negative.
    fn checked(self, source: &str) -> Result<Pricing, PricingError> {
        let mut keys: Vec<&String> = self.prices.keys().collect();
        keys.sort();
        for key in keys {
            let price = self.prices[key];
            for (field, value) in [("input", price.input), ("output", price.output)] {
                if !value.is_finite() || value < 0.0 {
                    return Err(PricingError {
                        source_name: source.to_owned(),
                        line: None,
                        column: None,
                        message: format!(
                            "field `{key}.{field}`: {value} is not a price (USD per million tokens, 0 or more)"
                        ),
                    });
                }
            }
        }
        Ok(self)
    }
}

fn with_field(path: &str, message: &str) -> String {
    // The parsers add " at line N column M"; the error shows the location separately.
    let message = match message.rfind(" at line ") {
        Some(i) => &message[..i],
        None => message,
    };
    if path.is_empty() || path == "." {
        message.to_owned()
    } else {
        format!("field `{path}`: {message}")
    }
}

/// `model` of `provider/model`.
fn bare_name(key: &str) -> &str {
    key.split_once('/').map_or(key, |(_, model)| model)
}
