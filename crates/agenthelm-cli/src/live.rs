//! Model text shown as it is written, on standard output when it is a terminal.
//!
//! Only at a terminal: there a person watches, and every turn's text (what the model says
//! before it calls tools, too) shows as it comes. Piped or redirected, standard output keeps
//! carrying the final answer alone, once, as scripts expect.
//!
//! The answer printed at the end is left out when it is the text just shown, so it never
//! appears twice; when it differs (a failed turn, an answer put together otherwise) it is
//! printed as before.

use agenthelm::agent::TextDelta;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex, PoisonError};

use crate::render::Palette;

/// What was shown of the model calls so far.
#[derive(Default)]
struct Shown {
    /// The text of the call being written.
    current: String,
    /// The texts of the finished calls.
    finished: Vec<String>,
    /// The cursor is not at the start of a line on standard output.
    open_line: bool,
}

/// The live view of model text: shared by the text observer and the event observer.
#[derive(Default)]
pub struct LiveText {
    shown: Mutex<Shown>,
}

impl LiveText {
    /// A live view when standard output is a terminal; `None` otherwise.
    pub fn for_stdout() -> Option<Arc<LiveText>> {
        std::io::stdout()
            .is_terminal()
            .then(|| Arc::new(LiveText::default()))
    }

    fn shown(&self) -> std::sync::MutexGuard<'_, Shown> {
        self.shown.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Shows a piece of text (control characters escaped, like every line for people).
    pub fn text(&self, delta: &TextDelta) {
        let mut shown = self.shown();
        let clean = Palette::stdout().clean(&delta.text);
        // A closed pipe or a full disk: the final answer reports the problem, if any.
        let _ = crate::out::raw(clean.as_bytes());
        shown.current.push_str(&delta.text);
        shown.open_line = !delta.text.ends_with('\n');
    }

    /// A model call is over: its text is done, and the next output starts on a new line.
    pub fn call_ended(&self) {
        let mut shown = self.shown();
        end_line(&mut shown);
        let text = std::mem::take(&mut shown.current);
        shown.finished.push(text);
    }

    /// Something else is about to be printed: it starts on a new line.
    pub fn interrupt(&self) {
        end_line(&mut self.shown());
    }

    /// Whether `answer` was shown already, as the text of a model call.
    pub fn showed(&self, answer: &str) -> bool {
        let mut shown = self.shown();
        end_line(&mut shown);
        let answer = answer.trim();
        !answer.is_empty()
            && std::iter::once(&shown.current)
                .chain(&shown.finished)
                .any(|text| text.trim() == answer)
    }
}

fn end_line(shown: &mut Shown) {
    if shown.open_line {
        let _ = crate::out::raw(b"\n");
        shown.open_line = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_calls_text_counts_as_shown() {
        let live = LiveText::default();
        assert!(!live.showed("hi"));
        live.shown().current = "Hello there".into();
        assert!(live.showed("Hello there\n"));
        live.call_ended();
        assert!(live.showed("Hello there"));
        live.shown().current = "Next".into();
        live.call_ended();
        assert!(live.showed("Hello there") && live.showed("Next"));
        assert!(!live.showed("Something else"));
        assert!(!live.showed(""));
    }
}
