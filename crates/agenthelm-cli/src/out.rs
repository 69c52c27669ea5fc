//! Where text leaves the program. Every line for people goes through [`line`] or [`note`], which
//! show control characters escaped ([`Palette::clean`]), so text from tools, models and plan
//! files cannot move the cursor, clear the screen or retitle the window. Machine output goes
//! through [`json`]. A closed pipe (`agenthelm ... | head -1`) ends the output quietly, as
//! ripgrep does: later writes to that stream are skipped and the command keeps its exit code.

use crate::exit::BadInput;
use crate::render::Palette;
use anyhow::Context;
use serde::Serialize;
use std::fs::{OpenOptions, Permissions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once a reader closed standard output; nothing more is written there.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// `text` and a line break on standard output, control characters escaped.
pub fn line(text: &str) -> anyhow::Result<()> {
    let clean = Palette::stdout().clean(text.trim_end_matches('\n'));
    write_stdout(format!("{clean}\n").as_bytes())
}

/// `value` as pretty JSON on standard output. JSON escapes C0 controls itself; DEL and the C1
/// controls it leaves raw are escaped here too (they only occur inside strings, where `\u00XX`
/// is valid JSON).
pub fn json(value: &impl Serialize) -> anyhow::Result<()> {
    json_text(&serde_json::to_string_pretty(value)?)
}

/// JSON already serialized, on standard output, escaped like [`json`].
pub fn json_text(text: &str) -> anyhow::Result<()> {
    let mut escaped = escape_json_controls(text.trim_end());
    escaped.push('\n');
    write_stdout(escaped.as_bytes())
}

/// Bytes made by a trusted generator (a completion script) on standard output, as they are.
pub fn raw(bytes: &[u8]) -> anyhow::Result<()> {
    write_stdout(bytes)
}

/// `text` and a line break on standard error (above a run's live block, if one is drawn),
/// control characters escaped. Errors are ignored: there is nowhere left to report them.
pub fn note(text: &str) {
    let clean = Palette::stderr().clean(text.trim_end_matches('\n'));
    crate::progress::write_stderr(format!("{clean}\n").as_bytes());
}

/// `text` on standard error without a line break (a prompt), control characters escaped.
pub fn prompt(text: &str) {
    let clean = Palette::stderr().clean(text);
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(clean.as_bytes()).and_then(|()| err.flush());
}

/// Standard error for log lines: their messages may quote tools and models, so control
/// characters are escaped here too.
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let clean = escape_controls(&String::from_utf8_lossy(buf), &[]);
        crate::progress::write_stderr(clean.as_bytes());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Writes `contents` to the file `path` (reports, exports: run data) readable by its owner only,
/// like the run store it comes from. A file that already exists is narrowed to owner-only too.
/// A path that cannot be opened for writing is bad input (exit 2); a write that fails after is
/// not.
pub fn private_file(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|file| {
            file.set_permissions(Permissions::from_mode(0o600))?;
            Ok(file)
        })
        .map_err(|e| BadInput(format!("cannot write {}: {e}", path.display())))?;
    file.write_all(contents)
        .and_then(|()| file.flush())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Writes to standard output unless a reader closed it; a closed pipe is a quiet end.
fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == ErrorKind::BrokenPipe => {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
            Ok(())
        }
        other => other.context("cannot write to standard output"),
    }
}

/// DEL and C1 controls as JSON `\u00XX` escapes; everything else as it is.
fn escape_json_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '\u{7f}' || ('\u{80}'..='\u{9f}').contains(&c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// `text` with every control character (C0, DEL, C1) except line breaks and tabs written as
/// `\xNN`, keeping the sequences in `keep` (the palette's own colours) as they are.
pub fn escape_controls(text: &str, keep: &[&str]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if let Some(sequence) = keep.iter().find(|k| rest.starts_with(**k)) {
            out.push_str(sequence);
            rest = &rest[sequence.len()..];
            continue;
        }
        if is_control(c) {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// A control character that could act on a terminal; `\n` and `\t` are layout.
fn is_control(c: char) -> bool {
    c.is_control() && c != '\n' && c != '\t'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped_and_layout_kept() {
        let text = "a\x1b]0;pwned\x07\x1b[2J\r\u{9b}31m\u{7f}\tb\nc é";
        assert_eq!(
            escape_controls(text, &[]),
            "a\\x1b]0;pwned\\x07\\x1b[2J\\x0d\\x9b31m\\x7f\tb\nc é"
        );
    }

    #[test]
    fn kept_sequences_stay_and_others_next_to_them_do_not() {
        assert_eq!(
            escape_controls("\x1b[31mred\x1b[0m\x1b[2J", &["\x1b[31m", "\x1b[0m"]),
            "\x1b[31mred\x1b[0m\\x1b[2J"
        );
    }

    #[test]
    fn escaping_twice_changes_nothing_more() {
        let once = escape_controls("\x1b[2J\u{85}", &[]);
        assert_eq!(escape_controls(&once, &[]), once);
    }

    #[test]
    fn json_keeps_c1_and_del_escaped_and_stays_json() {
        let value = serde_json::json!({"s": "\u{9b}2J\u{7f}\x1b"});
        let text = escape_json_controls(&serde_json::to_string(&value).unwrap());
        assert!(!text.contains(['\u{9b}', '\u{7f}', '\x1b']), "{text}");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).unwrap(),
            value
        );
    }
}
