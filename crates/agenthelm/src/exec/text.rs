//! Model text as it is written: [`TextDelta`]s for whoever shows it live (a terminal, a web
//! page). They are not events: the journal keeps each model call's final answer and usage (the
//! `LlmCall` event), never its pieces.

use std::sync::Arc;

use crate::redact::Redactor;

/// A piece of a model's answer, as the model writes it, with where it comes from.
///
/// Pieces of one model call arrive in order; the call's `LlmCall` event follows its last
/// piece. When the run redacts, pieces are redacted too: a piece is held back until what
/// follows cannot turn it into part of a secret (see [`Redactor::shown_len`]), so a piece
/// may carry several tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TextDelta {
    /// The plan run, if any.
    pub run_id: Option<Arc<str>>,
    /// The plan step, if any.
    pub step_id: Option<Arc<str>>,
    /// The agent whose model writes.
    pub agent: Option<Arc<str>>,
    /// The text.
    pub text: String,
}

/// A function that sees model text as it is written (see [`TextDelta`]).
///
/// It is called on the task making the model call, between reads of the stream: keep it
/// quick.
pub type TextObserver = Arc<dyn Fn(&TextDelta) + Send + Sync>;

/// Hands one model call's text to the observers, redacted when the run redacts.
pub(crate) struct TextForwarder<'a> {
    observers: &'a [TextObserver],
    redactor: Option<&'a Redactor>,
    /// Where the text comes from (its `text` is left empty).
    origin: TextDelta,
    /// Text received but not shown yet (it may still become part of a secret).
    pending: String,
}

impl<'a> TextForwarder<'a> {
    pub(crate) fn new(
        observers: &'a [TextObserver],
        redactor: Option<&'a Redactor>,
        run_id: Option<Arc<str>>,
        step_id: Option<Arc<str>>,
        agent: Option<Arc<str>>,
    ) -> Self {
        TextForwarder {
            observers,
            redactor: redactor.filter(|r| !r.is_empty()),
            origin: TextDelta {
                run_id,
                step_id,
                agent,
                text: String::new(),
            },
            pending: String::new(),
        }
    }

    /// Takes more text, and shows what can be shown.
    pub(crate) fn push(&mut self, text: &str) {
        let Some(redactor) = self.redactor else {
            self.show(text.to_owned());
            return;
        };
        self.pending.push_str(text);
        let ready = redactor.shown_len(&self.pending);
        if ready > 0 {
            let rest = self.pending.split_off(ready);
            let shown = std::mem::replace(&mut self.pending, rest);
            self.show(redactor.redact_str(&shown).into_owned());
        }
    }

    /// The call is over: shows what was held back.
    pub(crate) fn finish(&mut self) {
        let rest = std::mem::take(&mut self.pending);
        let rest = match self.redactor {
            Some(redactor) => redactor.redact_str(&rest).into_owned(),
            None => rest,
        };
        self.show(rest);
    }

    fn show(&self, text: String) {
        if text.is_empty() {
            return;
        }
        let delta = TextDelta {
            text,
            ..self.origin.clone()
        };
        for observer in self.observers {
            observer(&delta);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn collect(redactor: Option<&Redactor>, pieces: &[&str]) -> Vec<String> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let observers: Vec<TextObserver> = vec![Arc::new(move |d: &TextDelta| {
            sink.lock().unwrap().push(d.text.clone())
        })];
        let mut forwarder = TextForwarder::new(&observers, redactor, None, None, None);
        for piece in pieces {
            forwarder.push(piece);
        }
        forwarder.finish();
        let seen = seen.lock().unwrap().clone();
        seen
    }

    #[test]
    fn without_redaction_pieces_pass_as_they_are() {
        assert_eq!(collect(None, &["a", "b", ""]), vec!["a", "b"]);
    }

    #[test]
    fn a_secret_split_across_pieces_never_shows() {
        let redactor = Redactor::new().secret("KEY", "sk-live-123456");
        let pieces = ["your key: s", "k-li", "ve-12", "3456 and", " more"];
        let seen = collect(Some(&redactor), &pieces);
        let all: String = seen.concat();
        assert_eq!(all, "your key: [redacted:KEY] and more");
        for shown in &seen {
            assert!(
                !shown.contains("sk-") && !shown.contains("live"),
                "{seen:?}"
            );
        }
        // Text that cannot be part of the key is not held back.
        assert_eq!(seen[0], "your key: ");
    }

    #[test]
    fn patterns_are_shown_by_line() {
        let redactor = Redactor::new().pattern("ticket", r"TCK-\d+").unwrap();
        let seen = collect(Some(&redactor), &["see TCK-1", "2\nnext ", "line"]);
        assert_eq!(seen, vec!["see [redacted:ticket]\n", "next line"]);
    }
}
