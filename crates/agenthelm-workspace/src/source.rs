//! Errors that point into a file the user wrote (workspace or plan file), and finding the line
//! of a key in YAML text so that errors found after parsing can still name a line.

use std::fmt;
use std::path::{Path, PathBuf};

/// A problem in a file: which file, which line, which key, what is wrong.
///
/// Always a mistake in the file (see [`WorkspaceError::is_bad_input`](crate::WorkspaceError::is_bad_input)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// The key, like `agents.researcher.tools`; empty for the whole file.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl SourceError {
    /// An error about the whole file (no line, no key), like one that cannot be read.
    pub fn whole_file(file: &Path, message: impl Into<String>) -> Self {
        SourceError {
            file: file.to_path_buf(),
            line: None,
            key: String::new(),
            message: message.into(),
        }
    }

    /// An error at `key`, with its line looked up in `text`.
    pub fn at_key(file: &Path, text: &str, key: &str, message: impl Into<String>) -> Self {
        SourceError {
            file: file.to_path_buf(),
            line: line_of(text, key),
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": `{}`", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for SourceError {}

/// Several problems in one file, reported together on one line (`; ` between them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceErrors(pub Vec<SourceError>);

impl fmt::Display for SourceErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&items.join("; "))
    }
}

impl std::error::Error for SourceErrors {}

/// The largest input file (plan, workspace file, user settings) that is read: far more than any
/// hand-written or planner-written file, small enough that a wrong path cannot exhaust memory.
pub const MAX_INPUT_BYTES: u64 = 10 * 1024 * 1024;

/// Reads a file the user gave as input (`what`, like "plan file"): it must be a regular file of
/// at most [`MAX_INPUT_BYTES`]. Devices such as `/dev/zero` and FIFOs are refused before they are
/// opened for reading (one would never end, the other could block forever), and the read itself is
/// bounded, so a file that grows while it is read cannot exceed the limit either.
pub fn read_input(file: &Path, what: &str) -> Result<String, SourceError> {
    let fail = |message: String| SourceError::whole_file(file, message);
    let meta = std::fs::metadata(file).map_err(|e| fail(format!("cannot read the {what}: {e}")))?;
    if !meta.is_file() {
        return Err(fail(format!(
            "the {what} is not a regular file (it is {})",
            file_kind(&meta.file_type())
        )));
    }
    let too_big = |size: u64| {
        fail(format!(
            "the {what} is too large: {size} bytes, the limit is {MAX_INPUT_BYTES} bytes"
        ))
    };
    if meta.len() > MAX_INPUT_BYTES {
        return Err(too_big(meta.len()));
    }
    let opened =
        std::fs::File::open(file).map_err(|e| fail(format!("cannot read the {what}: {e}")))?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(opened, MAX_INPUT_BYTES + 1),
        &mut bytes,
    )
    .map_err(|e| fail(format!("cannot read the {what}: {e}")))?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(too_big(bytes.len() as u64));
    }
    String::from_utf8(bytes).map_err(|e| {
        fail(format!(
            "the {what} is not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        ))
    })
}

/// What a file that is not a regular file is, for the error.
fn file_kind(kind: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return "a FIFO";
        }
        if kind.is_char_device() || kind.is_block_device() {
            return "a device";
        }
        if kind.is_socket() {
            return "a socket";
        }
    }
    if kind.is_dir() {
        "a folder"
    } else {
        "a special file"
    }
}

/// Parses YAML `text` from `file` into `T`, naming the file, line and key of the first problem.
pub(crate) fn parse_yaml<T: serde::de::DeserializeOwned>(
    file: &Path,
    text: &str,
) -> Result<T, SourceError> {
    let deserializer = yaml_serde::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let key = if key == "." { String::new() } else { key };
        // The key's own line when it is there: parsers place errors raised while reading a
        // value (a bad number of seconds, say) at the start of the enclosing map.
        let line = exact_line_of(text, &key)
            .or_else(|| inner.location().map(|l| l.line()).filter(|&l| l > 0))
            .or_else(|| line_of(text, &key));
        let message = strip_key_prefix(&strip_location(&inner.to_string()), &key);
        SourceError {
            file: file.to_path_buf(),
            line,
            key,
            message,
        }
    })?;
    // Tags, numbers out of range, `.nan` and keys given twice, which the parser lets through.
    agenthelm::plan::check_yaml(text).map_err(|e| crate::plan_file::self_error(file, text, e))?;
    Ok(value)
}

/// Drops the " at line N column M" that parsers append, since the error shows the line itself.
pub(crate) fn strip_location(message: &str) -> String {
    let cut = message
        .rfind(" at line ")
        .filter(|&i| message[i..].contains("column"))
        .unwrap_or(message.len());
    message[..cut].trim_end().to_owned()
}

/// Drops the `agents.a: ` that YAML errors put before their message, since the error shows the
/// key itself.
pub(crate) fn strip_key_prefix(message: &str, key: &str) -> String {
    match message.split_once(": ") {
        Some((head, rest)) if !head.contains(' ') && key.starts_with(head) => rest.to_owned(),
        _ => message.to_owned(),
    }
}

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// Splits `agents.researcher.tools[0]` into keys and list indexes.
fn segments(path: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Segment::Key(key));
        }
        while let Some(end) = rest.find(']') {
            if let Ok(index) = rest[1..end].parse() {
                out.push(Segment::Index(index));
            }
            rest = &rest[end + 1..];
        }
    }
    out
}

/// One meaningful line of block-style YAML.
struct Line<'a> {
    number: usize,
    /// Spaces before the first character (the `-` of a list item).
    indent: usize,
    /// The line starts a list item.
    dash: bool,
    /// Column of the key, after any `- `.
    key_indent: usize,
    key: Option<&'a str>,
}

fn parse_lines(text: &str) -> Vec<Line<'_>> {
    let mut lines = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with("---") {
            continue;
        }
        let indent = raw.len() - trimmed.len();
        let (dash, body) = match trimmed.strip_prefix('-') {
            Some(rest) if rest.is_empty() || rest.starts_with(' ') => (true, rest.trim_start()),
            _ => (false, trimmed),
        };
        let key_indent = raw.len() - body.len();
        let key = body.find(':').and_then(|colon| {
            let after = &body[colon + 1..];
            let key = body[..colon].trim().trim_matches(|c| c == '"' || c == '\'');
            let plain = !key.is_empty() && !key.contains(['{', '[', ' ', ',']);
            (plain && (after.is_empty() || after.starts_with(' '))).then_some(key)
        });
        lines.push(Line {
            number: i + 1,
            indent,
            dash,
            key_indent,
            key,
        });
    }
    lines
}

/// The 1-based line of `path` (like `steps[1].agent` or `tools.x.parameters.type`) in block-style
/// YAML: the line of the deepest part of the path that can be found.
pub fn line_of(text: &str, path: &str) -> Option<usize> {
    find_line(text, path).map(|(line, _)| line)
}

/// The 1-based line of `path`, only when every part of it is found.
pub(crate) fn exact_line_of(text: &str, path: &str) -> Option<usize> {
    find_line(text, path).and_then(|(line, exact)| exact.then_some(line))
}

/// The line of the deepest part of `path` that can be found, and whether that was all of it.
fn find_line(text: &str, path: &str) -> Option<(usize, bool)> {
    let lines = parse_lines(text);
    let (mut from, mut end) = (0, lines.len());
    let mut best = None;
    let segments = segments(path);
    let mut found = 0;
    for segment in &segments {
        let block = &lines[from..end];
        match segment {
            Segment::Key(key) => {
                let Some(level) = block.iter().find(|l| l.key.is_some()).map(|l| l.key_indent)
                else {
                    break;
                };
                let Some(pos) = block
                    .iter()
                    .position(|l| l.key_indent == level && l.key == Some(*key))
                else {
                    break;
                };
                let at = from + pos;
                best = Some(lines[at].number);
                let own = lines[at].key_indent;
                from = at + 1;
                end = from
                    + lines[from..end]
                        .iter()
                        .position(|l| l.indent < own || (l.indent == own && !l.dash))
                        .unwrap_or(end - from);
            }
            Segment::Index(index) => {
                let Some(dash_indent) = block.iter().filter(|l| l.dash).map(|l| l.indent).min()
                else {
                    break;
                };
                let items: Vec<usize> = (from..end)
                    .filter(|&i| lines[i].dash && lines[i].indent == dash_indent)
                    .collect();
                let Some(&at) = items.get(*index) else { break };
                best = Some(lines[at].number);
                from = at;
                end = items.get(index + 1).copied().unwrap_or(end);
            }
        }
        found += 1;
    }
    best.map(|line| (line, found == segments.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORKSPACE: &str = "\
model: m
agents:
  a:
    tools: [x]
  b:
    # comment
    tools:
      - y
tools:
  x:
    command: [echo]
    parameters:
      type: object
      properties:
        path: { type: strin }
";

    #[test]
    fn finds_nested_keys() {
        assert_eq!(line_of(WORKSPACE, "model"), Some(1));
        assert_eq!(line_of(WORKSPACE, "agents.a.tools"), Some(4));
        assert_eq!(line_of(WORKSPACE, "agents.b.tools[0]"), Some(8));
        assert_eq!(
            line_of(WORKSPACE, "tools.x.parameters.properties.path"),
            Some(15)
        );
        // Deeper than the text goes: the deepest key found.
        assert_eq!(
            line_of(WORKSPACE, "tools.x.parameters.properties.path.type"),
            Some(15)
        );
        assert_eq!(line_of(WORKSPACE, "agents.c"), Some(2));
        assert_eq!(line_of(WORKSPACE, "nothing"), None);
    }

    #[test]
    fn finds_keys_in_list_items() {
        let plan = "goal: g\nsteps:\n- id: a\n  agent: x\n- id: b\n  tool: t\n  agent: y\n";
        assert_eq!(line_of(plan, "steps[0].agent"), Some(4));
        assert_eq!(line_of(plan, "steps[1].agent"), Some(7));
        assert_eq!(line_of(plan, "steps[1].id"), Some(5));
        let indented = "steps:\n  - id: a\n    args:\n      n: 1\n  - id: b\n";
        assert_eq!(line_of(indented, "steps[0].args.n"), Some(4));
        assert_eq!(line_of(indented, "steps[1]"), Some(5));
    }
}
