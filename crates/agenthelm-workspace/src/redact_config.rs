//! The `redact:` section of `agenthelm.yaml`, and the workspace's [`Redactor`]: provider API
//! keys, the server's user tokens, the variables plans may read, patterns and presets.
//!
//! ```yaml
//! redact:
//!   env: [CRM_TOKEN]               # redacted, and readable by plans as {{env.CRM_TOKEN}}
//!   patterns: {ticket: 'TCK-\d+'}  # redacted as [redacted:ticket]
//!   presets: [email, card, iban]
//! ```

use agenthelm::lm::provider_key_variables;
use agenthelm::redact::{Preset, Redactor};
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::fmt;

use crate::workspace::{null_as_default, WorkspaceConfig};

/// What to redact besides the providers' API keys: `redact: {env: [VAR, ...], patterns: {name:
/// regex, ...}, presets: [email, card, iban]}`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactConfig {
    /// Environment variables whose values are redacted, and which plans may read as
    /// `{{env.NAME}}` in arguments (filled in when a tool is called, never stored).
    #[serde(default, deserialize_with = "variable_names")]
    pub env: Vec<String>,
    /// Regular expressions by name, redacted as `[redacted:<name>]`; checked when the file is
    /// read.
    #[serde(default, deserialize_with = "checked_patterns")]
    pub patterns: BTreeMap<String, String>,
    /// Built-in patterns: `email`, `card` (Luhn-checked), `iban` (mod-97-checked).
    #[serde(default, deserialize_with = "null_as_default")]
    pub presets: Vec<Preset>,
}

/// A list of variable names: letters, digits and `_`, not starting with a digit.
fn variable_names<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let names: Vec<String> = null_as_default(d)?;
    for name in &names {
        let mut chars = name.chars();
        let valid = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(serde::de::Error::custom(format_args!(
                "`{name}` is not an environment variable name (letters, digits and `_`)"
            )));
        }
    }
    Ok(names)
}

/// `patterns:`, each compiled as it is read so that a bad one is reported at its line.
fn checked_patterns<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    struct Patterns;
    impl<'de> Visitor<'de> for Patterns {
        type Value = BTreeMap<String, String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a map of names to regular expressions")
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(BTreeMap::new())
        }
        fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
            let mut patterns = BTreeMap::new();
            while let Some(name) = map.next_key::<String>()? {
                let regex: String = map.next_value()?;
                Redactor::new()
                    .pattern(name.as_str(), &regex)
                    .map_err(serde::de::Error::custom)?;
                if patterns.insert(name.clone(), regex).is_some() {
                    return Err(serde::de::Error::custom(format_args!(
                        "pattern `{name}` is given twice"
                    )));
                }
            }
            Ok(patterns)
        }
    }
    d.deserialize_any(Patterns)
}

/// The workspace's redactor, with the environment read through `var`: the API key of every
/// provider AgentHelm knows (when set; models can be switched with `--model`, so not only the
/// workspace's), the server users' tokens, the `redact.env` variables (readable by plans as
/// `{{env.NAME}}`), the patterns and the presets.
pub(crate) fn redactor_of(
    config: &WorkspaceConfig,
    var: impl Fn(&str) -> Option<String>,
) -> Result<Redactor, agenthelm::redact::RedactError> {
    let mut redactor = Redactor::new();
    let keys = provider_key_variables().map(str::to_owned);
    let tokens = config
        .server
        .iter()
        .flat_map(|s| s.users.values().map(|u| u.token_env.clone()));
    for name in keys.chain(tokens) {
        if let Some(value) = var(&name) {
            redactor = redactor.secret(name, value);
        }
    }
    let Some(redact) = &config.redact else {
        return Ok(redactor);
    };
    for name in &redact.env {
        redactor = redactor.env_value(name.as_str(), var(name));
    }
    for (name, regex) in &redact.patterns {
        redactor = redactor.pattern(name.as_str(), regex)?;
    }
    Ok(redact.presets.iter().fold(redactor, |r, p| r.preset(*p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> Result<WorkspaceConfig, String> {
        yaml_serde::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn the_section_reads_its_exact_keys() {
        let config = config(
            "redact:\n  env: [CRM_TOKEN]\n  patterns: {ticket: 'TCK-\\d+'}\n  presets: [email, card, iban]\n",
        )
        .unwrap();
        let redact = config.redact.clone().unwrap();
        assert_eq!(redact.env, ["CRM_TOKEN"]);
        assert_eq!(redact.patterns["ticket"], r"TCK-\d+");
        assert_eq!(redact.presets, [Preset::Email, Preset::Card, Preset::Iban]);
        let env = |name: &str| match name {
            "CRM_TOKEN" => Some("crm-secret-value".to_owned()),
            "OPENAI_API_KEY" => Some("sk-test-key-123".to_owned()),
            _ => None,
        };
        let redactor = redactor_of(&config, env).unwrap();
        assert_eq!(
            redactor.redact_str("sk-test-key-123 crm-secret-value TCK-7 a@b.io 4111 1111 1111 1111"),
            "[redacted:OPENAI_API_KEY] [redacted:CRM_TOKEN] [redacted:ticket] [redacted:email] [redacted:card]"
        );
        assert_eq!(redactor.env_status("CRM_TOKEN"), Some(true));
    }

    #[test]
    fn server_user_tokens_are_redacted() {
        let config = config("server:\n  users:\n    alice: {token_env: ALICE_TOKEN}\n").unwrap();
        let env = |name: &str| (name == "ALICE_TOKEN").then(|| "alice-token-0042".to_owned());
        let redactor = redactor_of(&config, env).unwrap();
        assert_eq!(
            redactor.redact_str("Bearer alice-token-0042"),
            "Bearer [redacted:ALICE_TOKEN]"
        );
    }

    #[test]
    fn mistakes_are_errors_naming_the_key_and_line() {
        let bad_regex =
            config("model: x\nredact:\n  patterns:\n    ticket: 'TCK-(\\d+'\n").unwrap_err();
        assert!(
            bad_regex.contains("redaction pattern `ticket` is not a valid regular expression"),
            "{bad_regex}"
        );
        assert!(bad_regex.contains("line 4"), "{bad_regex}");
        let preset = config("redact: {presets: [phone]}\n").unwrap_err();
        assert!(preset.contains("unknown variant `phone`"), "{preset}");
        let key = config("redact: {environment: [X]}\n").unwrap_err();
        assert!(key.contains("unknown field `environment`"), "{key}");
        let name = config("redact: {env: [BAD-NAME]}\n").unwrap_err();
        assert!(
            name.contains("`BAD-NAME` is not an environment variable name"),
            "{name}"
        );
    }
}
