//! Who may use the server: users with tokens from environment variables (`server: {users:
//! {alice: {token_env: ALICE_TOKEN}}}`), or one owner token made on the first start and kept
//! in a file only its owner can read.
//!
//! Tokens are compared in constant time and never logged; what the rest of the server sees of
//! a request is the user's name.

use agenthelm_workspace::ServerConfig;
use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The name of the owner token file, in the run store's folder.
pub const OWNER_TOKEN_FILE: &str = "server-token";

/// The name the owner token signs in as.
pub const OWNER: &str = "owner";

/// Why the users could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A user's variable is not set (or empty).
    #[error("server user `{user}`: the environment variable `{var}` holding the token is not set")]
    MissingToken {
        /// The user.
        user: String,
        /// The variable.
        var: String,
    },
    /// A token too short to be safe.
    #[error("server user `{user}`: the token in `{var}` is shorter than 16 characters")]
    WeakToken {
        /// The user.
        user: String,
        /// The variable.
        var: String,
    },
    /// The owner token file could not be read or written.
    #[error("owner token file {}: {message}", path.display())]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// The users and their tokens.
#[derive(Clone)]
pub struct Users {
    users: Vec<(String, String)>,
    /// Set when the owner token was made by this start: show how to sign in.
    pub created_owner_token: bool,
}

impl fmt::Debug for Users {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the tokens.
        let names: Vec<&str> = self.users.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("Users").field("names", &names).finish()
    }
}

impl Users {
    /// The users of `config`, with tokens read from the environment; with none configured, the
    /// owner token kept in `dir` (made, `0600`, when missing).
    pub fn load(config: Option<&ServerConfig>, dir: &Path) -> Result<Users, AuthError> {
        let configured = config.map(|c| &c.users).filter(|users| !users.is_empty());
        let Some(configured) = configured else {
            return owner_token(dir);
        };
        let mut users = Vec::new();
        for (name, user) in configured {
            let token = std::env::var(&user.token_env).unwrap_or_default();
            if token.is_empty() {
                return Err(AuthError::MissingToken {
                    user: name.clone(),
                    var: user.token_env.clone(),
                });
            }
            if token.chars().count() < 16 {
                return Err(AuthError::WeakToken {
                    user: name.clone(),
                    var: user.token_env.clone(),
                });
            }
            users.push((name.clone(), token));
        }
        Ok(Users {
            users,
            created_owner_token: false,
        })
    }

    /// Users with these (name, token) pairs, for tests and embedding.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Users {
        Users {
            users: pairs.into_iter().collect(),
            created_owner_token: false,
        }
    }

    /// The user whose token `presented` is. Every token is compared, each in constant time, so
    /// the time taken tells nothing about how much of a token matched.
    pub fn who(&self, presented: &str) -> Option<&str> {
        let mut found = None;
        for (name, token) in &self.users {
            if constant_time_eq(token.as_bytes(), presented.as_bytes()) {
                found = Some(name.as_str());
            }
        }
        found
    }

    /// The owner's token, when the server signs in with one (to print the sign-in link).
    pub fn owner_token(&self) -> Option<&str> {
        match self.users.as_slice() {
            [(name, token)] if name == OWNER => Some(token),
            _ => None,
        }
    }
}

/// Equal bytes, in a time that depends only on the lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads the owner token from `dir`, making it on the first start.
fn owner_token(dir: &Path) -> Result<Users, AuthError> {
    let path = dir.join(OWNER_TOKEN_FILE);
    let fail = |message: String| AuthError::TokenFile {
        path: path.clone(),
        message,
    };
    let (token, created) = match std::fs::read_to_string(&path) {
        Ok(text) => (text.trim().to_owned(), false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = random_token().map_err(|e| fail(format!("no randomness: {e}")))?;
            write_private(&path, &token).map_err(|e| fail(e.to_string()))?;
            (token, true)
        }
        Err(e) => return Err(fail(e.to_string())),
    };
    if token.len() < 16 {
        return Err(fail(
            "the token in it is shorter than 16 characters; delete the file to make a new one"
                .into(),
        ));
    }
    Ok(Users {
        users: vec![(OWNER.to_owned(), token)],
        created_owner_token: created,
    })
}

/// 32 random bytes from the system, as hex.
fn random_token() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_whole_and_exactly() {
        let users = Users::from_pairs([
            ("al".to_owned(), "token-of-al-0123456789".to_owned()),
            ("bo".to_owned(), "token-of-bo-0123456789".to_owned()),
        ]);
        assert_eq!(users.who("token-of-bo-0123456789"), Some("bo"));
        assert_eq!(users.who("token-of-bo-012345678"), None);
        assert_eq!(users.who("token-of-bo-01234567890"), None);
        assert_eq!(users.who(""), None);
        assert!(
            !format!("{users:?}").contains("token-of"),
            "tokens never in Debug"
        );
    }
}
