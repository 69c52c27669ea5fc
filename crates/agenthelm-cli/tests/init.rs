//! `init` on paths that are in the way: links are replaced, never written through; a file where
//! the folder should be is bad input.

mod common;
use common::*;

#[cfg(unix)]
#[test]
fn init_force_replaces_a_link_and_keeps_its_target() {
    let dir = TempDir::new("cli-init");
    let elsewhere = dir.write("precious.txt", "keep me\n");
    std::fs::create_dir_all(dir.path().join("ws")).unwrap();
    let link = dir.path().join("ws/plan.yaml");
    std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
    // A link that points nowhere counts as there, too: writing would create its target.
    let dangling_target = dir.path().join("created-through-link.yaml");
    std::os::unix::fs::symlink(&dangling_target, dir.path().join("ws/agenthelm.yaml")).unwrap();

    let refused = run(dir.path(), &["init", "ws"]);
    assert_eq!(refused.code, 2, "{}", refused.all());
    assert!(
        refused.stderr.contains("agenthelm.yaml, plan.yaml"),
        "{}",
        refused.stderr
    );

    let forced = run(dir.path(), &["init", "ws", "--force"]);
    assert_eq!(forced.code, 0, "{}", forced.all());
    assert_eq!(dir.read("precious.txt"), "keep me\n");
    assert!(!dangling_target.exists());
    let plan = std::fs::symlink_metadata(&link).unwrap();
    assert!(plan.file_type().is_file(), "the link itself is replaced");
    assert!(dir.read("ws/plan.yaml").contains("steps:"));
}

#[test]
fn init_on_a_file_is_bad_input() {
    let dir = TempDir::new("cli-init");
    dir.write("taken", "a file\n");
    let run = run(dir.path(), &["init", "taken"]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr.contains("taken is not a folder"),
        "{}",
        run.stderr
    );
    let below = common::run(dir.path(), &["init", "taken/ws"]);
    assert_eq!(below.code, 2, "{}", below.all());
    assert!(below.stderr.contains("taken"), "{}", below.stderr);
}
