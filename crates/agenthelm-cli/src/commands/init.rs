//! `agenthelm init [DIR]`: a starter workspace whose tools and plan work offline.

use anyhow::Context;
use std::path::Path;

use crate::cli::InitArgs;
use crate::exit::BadInput;

/// The starter files, relative to the workspace folder.
const FILES: [(&str, &str); 3] = [
    (
        "agenthelm.yaml",
        include_str!("../../templates/init/agenthelm.yaml"),
    ),
    (
        "tools/notes.py",
        include_str!("../../templates/init/tools/notes.py"),
    ),
    ("plan.yaml", include_str!("../../templates/init/plan.yaml")),
];

/// Runs `agenthelm init`.
pub fn run(args: &InitArgs) -> anyhow::Result<()> {
    let dir = &args.dir;
    if dir.exists() && !dir.is_dir() {
        return Err(BadInput(format!("{} is not a folder", dir.display())).into());
    }
    if !args.force {
        // A link counts as there even when it points nowhere: writing would create its target.
        let existing: Vec<&str> = FILES
            .iter()
            .map(|(name, _)| *name)
            .filter(|name| dir.join(name).symlink_metadata().is_ok())
            .collect();
        if !existing.is_empty() {
            return Err(BadInput(format!(
                "{} already has {}: pass --force to overwrite",
                dir.display(),
                existing.join(", ")
            ))
            .into());
        }
    }
    for (name, text) in FILES {
        write(&dir.join(name), text)?;
    }
    crate::out::line(&format!("Created a workspace in {}:", dir.display()))?;
    for (name, _) in FILES {
        crate::out::line(&format!("  {name}"))?;
    }
    crate::out::line(&format!(
        "Next: cd {} && agenthelm execute plan.yaml",
        dir.display()
    ))?;
    Ok(())
}

/// Writes a starter file in place of whatever is at `path`. A symbolic link there is replaced
/// itself, never written through: `--force` must not overwrite a file elsewhere.
fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| path_error("create", parent, e))?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(path_error("replace", path, e))
        }
        _ => {}
    }
    // `create_new` (O_EXCL) does not follow a link that appeared since.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| path_error("write", path, e))?;
    std::io::Write::write_all(&mut file, text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// A path in the way (a file where a folder must be, a folder where a file must be) is bad input;
/// anything else is a failure to write.
fn path_error(action: &str, path: &Path, error: std::io::Error) -> anyhow::Error {
    use std::io::ErrorKind::{AlreadyExists, IsADirectory, NotADirectory};
    let message = format!("cannot {action} {}: {error}", path.display());
    match error.kind() {
        NotADirectory | IsADirectory | AlreadyExists => BadInput(message).into(),
        _ => anyhow::Error::msg(message),
    }
}
