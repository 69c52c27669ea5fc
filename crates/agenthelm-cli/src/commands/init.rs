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
    if !args.force {
        let existing: Vec<&str> = FILES
            .iter()
            .map(|(name, _)| *name)
            .filter(|name| dir.join(name).exists())
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

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}
