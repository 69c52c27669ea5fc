//! `agenthelm chat`: a conversation with one agent; earlier turns are part of each new task.

use agenthelm::Agent;
use std::io::{BufRead, IsTerminal};

use super::Session;
use crate::cli::ChatArgs;
use crate::render::{self, Palette};
use agenthelm_workspace::Assembly;

/// Runs `agenthelm chat` until end of input or `/exit`.
pub async fn run(session: &Session, args: &ChatArgs) -> anyhow::Result<()> {
    let workspace = session.workspace(None)?;
    let assembly = Assembly::new(&workspace, session.user(), args.model.as_deref());
    let outcome = chat(&assembly, args).await;
    assembly.shutdown().await;
    outcome
}

async fn chat(assembly: &Assembly<'_>, args: &ChatArgs) -> anyhow::Result<()> {
    let name = super::run::pick_agent(assembly, args.agent.as_deref())?;
    let (agent, live) = super::run::live_agent(assembly, &name, args.approve_tools).await?;
    let palette = Palette::stderr();
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        crate::out::note(&palette.dim(&format!(
            "Chatting with `{name}` ({}). /exit or Ctrl-D to leave.",
            agent.lm().model_id()
        )));
    }
    let mut history: Vec<(String, String)> = Vec::new();
    let mut lines = std::io::stdin().lock().lines();
    loop {
        if interactive {
            crate::out::prompt(&format!("{} ", palette.bold("you>")));
        }
        let Some(line) = lines.next().transpose()? else {
            break;
        };
        let message = line.trim();
        if message.is_empty() {
            continue;
        }
        if message == "/exit" || message == "/quit" {
            break;
        }
        let result = crate::interrupt::or_ctrl_c(agent.run(&transcript(&history, message))).await?;
        match (&result.answer, result.success) {
            (Some(answer), true) => {
                if !live.as_ref().is_some_and(|live| live.showed(answer)) {
                    crate::out::line(answer)?;
                }
                history.push((message.to_owned(), answer.trim_end().to_owned()));
            }
            _ => crate::out::note(&format!(
                "{} {}",
                palette.bad("error:"),
                result.error.as_deref().unwrap_or("no answer")
            )),
        }
        crate::out::note(&palette.dim(&render::usage_line(&result.usage())));
    }
    Ok(())
}

/// The task for the next turn: the conversation so far, then the new message.
fn transcript(history: &[(String, String)], message: &str) -> String {
    if history.is_empty() {
        return message.to_owned();
    }
    let mut text = String::from("The conversation so far:\n");
    for (user, answer) in history {
        text.push_str(&format!("User: {user}\nYou: {answer}\n"));
    }
    text.push_str(&format!("\nReply to the user's new message: {message}"));
    text
}

#[cfg(test)]
mod tests {
    use super::transcript;

    #[test]
    fn earlier_turns_are_part_of_the_task() {
        assert_eq!(transcript(&[], "hi"), "hi");
        let text = transcript(&[("hi".into(), "hello".into())], "and you?");
        assert!(text.contains("User: hi\nYou: hello\n"));
        assert!(text.ends_with("new message: and you?"));
    }
}
