//! The live status block of a plan run at a terminal: a line per running step with its elapsed
//! time, and a last line with the run's counts, redrawn in place by `indicatif`. What happens
//! (a step finished, a tool call, a rollback) still scrolls above it as lines, so the terminal's
//! history keeps the whole story.
//!
//! The block is only drawn where it helps: on standard error that is a terminal, without
//! `NO_COLOR`, `TERM=dumb` or `--json`. Otherwise every event is a plain line, as in a log file.
//!
//! Everything else this process writes to standard error goes through [`write_stderr`] (notes,
//! logs) or [`Paused`] (prompts), so no line is drawn over by the block or lost under it.

use agenthelm::{Event, EventKind, StepStatus};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::{HashMap, VecDeque};
use std::io::{IsTerminal, Write};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::render::{self, Palette};

/// At most this many running steps get a line; the others are counted on the last line and
/// take a freed line in the order they started. A wide plan must not fill the screen (nor start
/// a drawing thread per step).
const SHOWN_STEPS: usize = 8;

/// How often the block is redrawn, so elapsed times move while nothing happens.
const TICK: Duration = Duration::from_millis(120);

/// The block on screen now, if any: process-wide, as standard error is.
static ACTIVE: Mutex<Option<Active>> = Mutex::new(None);

/// The drawn block and whether a prompt has it put aside.
struct Active {
    multi: MultiProgress,
    paused: bool,
}

fn active() -> MutexGuard<'static, Option<Active>> {
    ACTIVE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Writes `bytes` (whole lines) to standard error above the block when one is drawn, else
/// straight. Errors are ignored: there is nowhere left to report them.
pub fn write_stderr(bytes: &[u8]) {
    let write = || {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(bytes).and_then(|()| err.flush());
    };
    match active().as_ref() {
        Some(Active {
            multi,
            paused: false,
        }) => multi.suspend(write),
        _ => write(),
    }
}

/// The block cleared away while a person answers a prompt; drawn again when dropped.
pub struct Paused {
    was_drawn: bool,
}

/// Puts the block aside (if one is drawn) until the returned guard is dropped.
pub fn pause() -> Paused {
    let mut active = active();
    let was_drawn = match active.as_mut() {
        Some(block) if !block.paused => {
            let _ = block.multi.clear();
            block.multi.set_draw_target(ProgressDrawTarget::hidden());
            block.paused = true;
            true
        }
        _ => false,
    };
    Paused { was_drawn }
}

impl Drop for Paused {
    fn drop(&mut self) {
        if !self.was_drawn {
            return;
        }
        if let Some(block) = active().as_mut() {
            block.multi.set_draw_target(ProgressDrawTarget::stderr());
            block.paused = false;
        }
    }
}

/// Whether a run's progress may be drawn as a block: standard error is a terminal that takes
/// cursor movement, and nothing asked for plain output.
pub fn block_wanted(json: bool) -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
    !json && !no_color && !dumb && std::io::stderr().is_terminal()
}

/// A run's live progress: the block at a terminal, lines elsewhere.
pub struct Progress {
    palette: Palette,
    block: Option<Block>,
}

impl Progress {
    /// Progress for one run; see [`block_wanted`] for when it is a block.
    pub fn new(json: bool) -> Progress {
        Progress {
            palette: Palette::stderr(),
            block: block_wanted(json).then(Block::default),
        }
    }

    /// Shows what `event` changes.
    pub fn event(&self, event: &Event) {
        let line = render::progress_line(event, self.palette);
        let Some(block) = &self.block else {
            if let Some(line) = line {
                crate::out::note(&line);
            }
            return;
        };
        let mut board = block.board();
        // The block shows a start; the history keeps what ended.
        if !matches!(event.kind, EventKind::StepStarted { .. }) {
            if let Some(line) = line {
                crate::out::note(&line);
            }
        }
        board.apply(event);
        block.draw(&mut board);
    }

    /// Clears the block away (the run ended); later lines are plain.
    pub fn finish(&self) {
        if let Some(block) = &self.block {
            block.close(&mut block.board());
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The block's bars and the board they show.
#[derive(Default)]
struct Block {
    board: Mutex<Board>,
}

impl Block {
    fn board(&self) -> MutexGuard<'_, Board> {
        self.board.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Brings the bars in line with the board: opens the block on the first step, a line for
    /// each shown step, the counts on the last line, and closes it when the run ended.
    fn draw(&self, board: &mut Board) {
        if board.ended {
            return self.close(board);
        }
        if board.bars.is_none() && (board.started.is_some() || !board.running.is_empty()) {
            board.bars = Some(Bars::open());
        }
        let counts = board.counts();
        let Some(bars) = &mut board.bars else {
            return;
        };
        bars.sync(&board.running);
        bars.status.set_message(counts);
    }

    fn close(&self, board: &mut Board) {
        if let Some(bars) = board.bars.take() {
            bars.close();
        }
    }
}

/// What the block shows, kept from the run's events.
#[derive(Default)]
struct Board {
    /// When this process saw the run start or resume.
    started: Option<Instant>,
    total: Option<usize>,
    done: usize,
    failed: usize,
    /// Skipped, compensated or cancelled.
    other: usize,
    /// Running steps in the order they started: id, label, start.
    running: VecDeque<(String, String, Instant)>,
    rolling_back: bool,
    ended: bool,
    bars: Option<Bars>,
}

impl Board {
    fn apply(&mut self, event: &Event) {
        let step = || render::safe(event.step_id.as_deref().unwrap_or("-"));
        match &event.kind {
            EventKind::RunStarted { steps, .. } => {
                self.started = Some(Instant::now());
                self.total = Some(*steps);
            }
            EventKind::RunResumed { .. } => self.started = Some(Instant::now()),
            EventKind::StepStarted { direct_tool } => {
                let by = match direct_tool {
                    Some(tool) => format!("tool {}", render::safe(tool)),
                    None => format!(
                        "agent {}",
                        render::safe(event.agent.as_deref().unwrap_or("-"))
                    ),
                };
                let id = step();
                self.running.retain(|(running, ..)| *running != id);
                self.running
                    .push_back((id.clone(), format!("{id} ({by})"), Instant::now()));
            }
            EventKind::StepFinished { status, .. } => {
                let id = step();
                self.running.retain(|(running, ..)| *running != id);
                match status {
                    StepStatus::Completed => self.done += 1,
                    StepStatus::Failed => self.failed += 1,
                    _ => self.other += 1,
                }
            }
            EventKind::RollbackStarted { steps } if !steps.is_empty() => self.rolling_back = true,
            EventKind::RunFinished { .. } => self.ended = true,
            _ => {}
        }
    }

    /// The last line: `3 of 12 done · 1 failed · 2 running`, and the rollback once it began.
    fn counts(&self) -> String {
        let mut parts = vec![match self.total {
            Some(total) => format!("{} of {total} done", self.done),
            None => format!("{} done", self.done),
        }];
        if self.failed > 0 {
            parts.push(format!("{} failed", self.failed));
        }
        if self.other > 0 {
            parts.push(format!("{} skipped or undone", self.other));
        }
        parts.push(format!("{} running", self.running.len()));
        let hidden = self.running.len().saturating_sub(SHOWN_STEPS);
        if hidden > 0 {
            parts.push(format!("{hidden} not shown"));
        }
        if self.rolling_back {
            parts.push("rolling back".into());
        }
        parts.join(" · ")
    }
}

/// The drawn lines: one per shown step, and the counts last.
struct Bars {
    multi: MultiProgress,
    status: ProgressBar,
    steps: HashMap<String, ProgressBar>,
}

impl Bars {
    /// Starts drawing, and makes this the block other writers go around.
    fn open() -> Bars {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let status = multi.add(spinner("{spinner} {msg} · {elapsed}", String::new()));
        status.enable_steady_tick(TICK);
        *active() = Some(Active {
            multi: multi.clone(),
            paused: false,
        });
        Bars {
            multi,
            status,
            steps: HashMap::new(),
        }
    }

    /// A line for each of the first [`SHOWN_STEPS`] running steps, none for the others.
    fn sync(&mut self, running: &VecDeque<(String, String, Instant)>) {
        let shown: Vec<&(String, String, Instant)> = running.iter().take(SHOWN_STEPS).collect();
        self.steps.retain(|id, bar| {
            let keep = shown.iter().any(|(shown, ..)| shown == id);
            if !keep {
                bar.finish_and_clear();
                self.multi.remove(bar);
            }
            keep
        });
        for (id, label, since) in shown {
            if self.steps.contains_key(id) {
                continue;
            }
            let bar = spinner("  {spinner} {msg} {elapsed}", label.clone());
            let bar = self
                .multi
                .insert_before(&self.status, bar.with_elapsed(since.elapsed()));
            bar.enable_steady_tick(TICK);
            self.steps.insert(id.clone(), bar);
        }
    }

    fn close(self) {
        for bar in self.steps.values() {
            bar.finish_and_clear();
        }
        self.status.finish_and_clear();
        let _ = self.multi.clear();
        *active() = None;
    }
}

/// A spinner showing `message` with `template`; it ticks once it has its place in the block.
fn spinner(template: &str, message: String) -> ProgressBar {
    let bar = ProgressBar::new_spinner().with_message(message);
    // The templates are ours and fixed; a bad one would show as the default spinner.
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(step: Option<&str>, kind: EventKind) -> Event {
        let mut event = Event::new(kind);
        event.step_id = step.map(Into::into);
        event.agent = Some("worker".into());
        event
    }

    fn started(step: &str, tool: Option<&str>) -> Event {
        let direct_tool = tool.map(str::to_owned);
        at(Some(step), EventKind::StepStarted { direct_tool })
    }

    fn finished(step: &str, status: StepStatus) -> Event {
        let kind = EventKind::StepFinished {
            status,
            result: None,
            result_call: None,
            duration_ms: 1.0,
            error: None,
        };
        at(Some(step), kind)
    }

    #[test]
    fn the_board_counts_what_ended_and_lists_what_runs_in_start_order() {
        let mut board = Board::default();
        let goal = "g".to_owned();
        board.apply(&at(
            None,
            EventKind::RunStarted {
                goal,
                steps: 12,
                budget: None,
            },
        ));
        for id in ["a", "b", "c"] {
            board.apply(&started(id, None));
        }
        board.apply(&finished("b", StepStatus::Completed));
        board.apply(&finished("c", StepStatus::Failed));
        let running: Vec<&str> = board.running.iter().map(|(id, ..)| id.as_str()).collect();
        assert_eq!(running, ["a"]);
        assert_eq!(board.running[0].1, "a (agent worker)");
        assert_eq!(board.counts(), "1 of 12 done · 1 failed · 1 running");
        let steps = vec!["b".to_owned()];
        board.apply(&at(None, EventKind::RollbackStarted { steps }));
        assert!(
            board.counts().ends_with("· rolling back"),
            "{}",
            board.counts()
        );
    }

    #[test]
    fn steps_past_the_shown_ones_are_counted_not_drawn() {
        let mut board = Board::default();
        for i in 0..SHOWN_STEPS + 3 {
            board.apply(&started(&format!("s{i}"), Some("t")));
        }
        assert_eq!(
            board.counts(),
            format!("0 done · {} running · 3 not shown", SHOWN_STEPS + 3)
        );
    }

    #[test]
    fn a_step_id_cannot_steer_the_terminal() {
        let mut board = Board::default();
        board.apply(&started("a\x1b[2J", Some("t\x07")));
        assert_eq!(board.running[0].1, "a\\x1b[2J (tool t\\x07)");
    }
}
