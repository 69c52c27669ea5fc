//! User defaults in `~/.agenthelm/config.yaml`, used where the workspace file says nothing.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use crate::exit::BadInput;
use crate::source::{strip_key_prefix, strip_location, SourceError};

/// Settings that apply to every workspace of this user.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// Model when neither the workspace nor `--model` names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Default for `execute --max-parallel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<usize>,
}

/// The keys `config set` knows.
pub const KEYS: [&str; 2] = ["model", "max_parallel"];

/// `~/.agenthelm/config.yaml`.
pub fn path() -> anyhow::Result<PathBuf> {
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| BadInput("HOME is not set, so there is no ~/.agenthelm".into()))?;
    Ok(Path::new(&home).join(".agenthelm").join("config.yaml"))
}

impl UserConfig {
    /// Reads the user defaults; a missing file means no defaults.
    pub fn load() -> anyhow::Result<UserConfig> {
        let file = path()?;
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
        };
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let deserializer = yaml_serde::Deserializer::from_str(&text);
        serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let key = if key == "." { String::new() } else { key };
            let message = strip_key_prefix(&strip_location(&inner.to_string()), &key);
            SourceError {
                file: file.clone(),
                line: inner.location().map(|l| l.line()),
                key,
                message,
            }
            .into()
        })
    }

    /// Sets `key` to `value` (checked), for `config set`.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), BadInput> {
        match key {
            "model" => {
                if !value.contains('/') {
                    return Err(BadInput(format!(
                        "model `{value}` is not a `provider/model` id, like openai/gpt-4o-mini"
                    )));
                }
                self.model = Some(value.to_owned());
            }
            "max_parallel" => {
                let n: usize = value.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                    BadInput(format!(
                        "max_parallel must be a whole number of at least 1, not `{value}`"
                    ))
                })?;
                self.max_parallel = Some(n);
            }
            other => {
                return Err(BadInput(format!(
                    "unknown setting `{other}` (known: {})",
                    KEYS.join(", ")
                )))
            }
        }
        Ok(())
    }

    /// Writes the user defaults, creating `~/.agenthelm` if needed.
    pub fn save(&self) -> anyhow::Result<PathBuf> {
        let file = path()?;
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let text = yaml_serde::to_string(self).context("cannot write the settings as YAML")?;
        std::fs::write(&file, text).with_context(|| format!("cannot write {}", file.display()))?;
        Ok(file)
    }
}
