//! User defaults in `~/.agenthelm/config.yaml`, used where the workspace file says nothing.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use crate::error::WorkspaceError;
use crate::source::{parse_yaml, read_input};

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

/// The keys [`UserConfig::set`] knows.
pub const KEYS: [&str; 2] = ["model", "max_parallel"];

/// `~/.agenthelm/config.yaml`.
pub fn path() -> Result<PathBuf, WorkspaceError> {
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or(WorkspaceError::NoHome)?;
    Ok(Path::new(&home).join(".agenthelm").join("config.yaml"))
}

impl UserConfig {
    /// Reads the user defaults; a missing file means no defaults.
    pub fn load() -> Result<UserConfig, WorkspaceError> {
        Self::load_from(&path()?)
    }

    /// Reads user defaults from `file`; a missing file means no defaults. A mistake in it names
    /// the file, line and key.
    pub fn load_from(file: &Path) -> Result<UserConfig, WorkspaceError> {
        if matches!(file.try_exists(), Ok(false)) {
            return Ok(Self::default());
        }
        let text = read_input(file, "user settings file")?;
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        Ok(parse_yaml(file, &text)?)
    }

    /// Sets `key` to `value` (checked), for `config set`.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), WorkspaceError> {
        match key {
            "model" => {
                if !value.contains('/') {
                    return Err(WorkspaceError::InvalidSetting(format!(
                        "model `{value}` is not a `provider/model` id, like openai/gpt-4o-mini"
                    )));
                }
                self.model = Some(value.to_owned());
            }
            "max_parallel" => {
                let n: usize = value.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                    WorkspaceError::InvalidSetting(format!(
                        "max_parallel must be a whole number of at least 1, not `{value}`"
                    ))
                })?;
                self.max_parallel = Some(n);
            }
            other => {
                return Err(WorkspaceError::InvalidSetting(format!(
                    "unknown setting `{other}` (known: {})",
                    KEYS.join(", ")
                )))
            }
        }
        Ok(())
    }

    /// Writes the user defaults to `~/.agenthelm/config.yaml`, creating `~/.agenthelm` if
    /// needed; returns the file.
    pub fn save(&self) -> Result<PathBuf, WorkspaceError> {
        let file = path()?;
        self.save_to(&file)?;
        Ok(file)
    }

    /// Writes the user defaults to `file`, creating its folder if needed.
    pub fn save_to(&self, file: &Path) -> Result<(), WorkspaceError> {
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).map_err(|e| WorkspaceError::io("create", dir, e))?;
        }
        let text = yaml_serde::to_string(self).map_err(WorkspaceError::Yaml)?;
        std::fs::write(file, text).map_err(|e| WorkspaceError::io("write", file, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_saved_and_read_back() {
        let dir = std::env::temp_dir().join(format!("agenthelm-user-{}", std::process::id()));
        let file = dir.join("config.yaml");
        let mut config = UserConfig::default();
        config.set("model", "openai/gpt-4o-mini").unwrap();
        config.set("max_parallel", "3").unwrap();
        assert!(config.set("model", "gpt").is_err());
        assert!(config.set("max_parallel", "0").is_err());
        assert!(config
            .set("colour", "red")
            .unwrap_err()
            .to_string()
            .contains("known: model, max_parallel"));
        config.save_to(&file).unwrap();
        assert_eq!(UserConfig::load_from(&file).unwrap(), config);
        std::fs::write(&file, "model: a/b\nmax_paralel: 2\n").unwrap();
        let error = UserConfig::load_from(&file).unwrap_err().to_string();
        assert!(
            error.contains("config.yaml:2: `max_paralel`: unknown field"),
            "{error}"
        );
        assert_eq!(
            UserConfig::load_from(&dir.join("absent.yaml")).unwrap(),
            UserConfig::default()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
