//! The environment a tool's or server's child process starts with: not this process's whole
//! environment, which may hold API keys meant for other services.

use std::collections::BTreeMap;

/// The environment variables every child program gets from this process (when set): what
/// programs need to run, and nothing that is usually a secret. The official MCP SDKs use a
/// similar list.
pub const BASE_ENV: [&str; 10] = [
    "HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER", "LANG", "LC_ALL", "TMPDIR", "TZ",
];

/// What to set in a child's environment, and whether to clear it first.
///
/// ```
/// use agenthelm::tool::ChildEnv;
/// use std::collections::BTreeMap;
///
/// let env = BTreeMap::from([("MODE".to_owned(), "test".to_owned())]);
/// let child = ChildEnv::new(&env, &["NO_SUCH_VARIABLE_HERE".to_owned()], false);
/// assert!(child.clear, "not this process's whole environment");
/// assert_eq!(child.vars.get("MODE").map(String::as_str), Some("test"));
/// assert!(!child.vars.contains_key("NO_SUCH_VARIABLE_HERE"), "unset variables stay unset");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChildEnv {
    /// Start from an empty environment (else from this process's).
    pub clear: bool,
    /// The variables to set.
    pub vars: BTreeMap<String, String>,
}

impl ChildEnv {
    /// [`BASE_ENV`] and the variables named in `pass_env`, from this process, then `env`; or,
    /// with `inherit`, this process's whole environment and `env`.
    pub fn new(env: &BTreeMap<String, String>, pass_env: &[String], inherit: bool) -> Self {
        if inherit {
            return ChildEnv {
                clear: false,
                vars: env.clone(),
            };
        }
        let mut vars: BTreeMap<String, String> = BASE_ENV
            .iter()
            .copied()
            .chain(pass_env.iter().map(String::as_str))
            .filter_map(|name| Some((name.to_owned(), std::env::var(name).ok()?)))
            .collect();
        vars.extend(env.iter().map(|(k, v)| (k.clone(), v.clone())));
        ChildEnv { clear: true, vars }
    }
}
