//! Plan files: reading them, and turning plan problems into errors that name file, line and key.

use agenthelm::plan::PlanProblem;
use agenthelm::{Plan, PlanError};
use std::path::{Path, PathBuf};

use crate::source::{line_of, read_input, strip_key_prefix, SourceError, SourceErrors};

/// A plan read from a file, with the text kept to find lines for later errors.
#[derive(Debug, Clone)]
pub struct PlanFile {
    /// Where it was read from.
    pub file: PathBuf,
    /// The file's text.
    pub text: String,
    /// The plan.
    pub plan: Plan,
}

impl PlanFile {
    /// Reads and parses a plan file (YAML; JSON is read as YAML too).
    pub fn load(file: &Path) -> Result<PlanFile, SourceError> {
        let text = read_input(file, "plan file")?;
        let plan = Plan::from_yaml(&text).map_err(|e| self_error(file, &text, e))?;
        Ok(PlanFile {
            file: file.to_path_buf(),
            text,
            plan,
        })
    }

    /// Turns a validation error of this plan (from [`Plan::validate`] or
    /// `Orchestrator::check`) into errors naming line and key.
    pub fn problems(&self, error: PlanError) -> SourceErrors {
        match error {
            PlanError::Invalid(problems) => SourceErrors(
                problems
                    .iter()
                    .map(|p| {
                        let key = self.key_of(p);
                        SourceError::at_key(&self.file, &self.text, &key, p.to_string())
                    })
                    .collect(),
            ),
            other => SourceErrors(vec![self_error(&self.file, &self.text, other)]),
        }
    }

    /// The key a problem is about, like `steps[2].agent`.
    fn key_of(&self, problem: &PlanProblem) -> String {
        key_of(&self.plan, problem, |step, short| {
            self.spelling(step, short)
        })
    }

    /// `agent` or `agent_name` (and `tool` or `tool_name`), whichever the file uses.
    fn spelling(&self, step: &str, short: &'static str) -> &'static str {
        let long = if short == "agent" {
            "agent_name"
        } else {
            "tool_name"
        };
        let Some(index) = self.plan.steps.iter().position(|s| s.id == step) else {
            return short;
        };
        let long_line = line_of(&self.text, &format!("steps[{index}].{long}"));
        let item_line = line_of(&self.text, &format!("steps[{index}]"));
        if long_line.is_some() && long_line != item_line {
            long
        } else {
            short
        }
    }
}

/// A plan error (or a [`agenthelm::plan::check_yaml`] error of any file) as an error naming the
/// file, line and key.
pub(crate) fn self_error(file: &Path, text: &str, error: PlanError) -> SourceError {
    match error {
        PlanError::Parse {
            line,
            path,
            message,
            ..
        } => {
            let key = path.unwrap_or_default();
            SourceError {
                file: file.to_path_buf(),
                line: line.or_else(|| line_of(text, &key)),
                message: strip_key_prefix(&message, &key),
                key,
            }
        }
        other => SourceError {
            file: file.to_path_buf(),
            line: None,
            key: String::new(),
            message: other.to_string(),
        },
    }
}

/// The key of `plan` a problem is about, like `steps[2].agent`: where to show it.
pub fn problem_key(plan: &Plan, problem: &PlanProblem) -> String {
    key_of(plan, problem, |_, short| short)
}

fn key_of(
    plan: &Plan,
    problem: &PlanProblem,
    spelling: impl Fn(&str, &'static str) -> &'static str,
) -> String {
    let (step, field) = match problem {
        PlanProblem::NoSteps => return "steps".to_owned(),
        PlanProblem::EmptyId { index } => return format!("steps[{index}].id"),
        PlanProblem::DuplicateId { id } => (id, "id"),
        PlanProblem::UnknownDependency { step, .. } => (step, "depends_on"),
        PlanProblem::Cycle { steps } => match steps.first() {
            Some(first) => (first, "depends_on"),
            None => return "steps".to_owned(),
        },
        PlanProblem::ArgsNotObject { step, field } => (step, *field),
        PlanProblem::UnknownAgent { step, .. } => (step, spelling(step, "agent")),
        PlanProblem::NoAgent { step } => (step, "id"),
        PlanProblem::UnpricedModel { step, .. } => (step, spelling(step, "agent")),
        PlanProblem::UnknownTool { step, .. } => (step, spelling(step, "tool")),
        PlanProblem::BadReference { step, .. } | PlanProblem::InvalidArgs { step, .. } => {
            (step, "args")
        }
        PlanProblem::BadEnvReference { step, field, .. } => (step, *field),
        PlanProblem::UnknownCompensatingTool { step, .. } => {
            let has_own = plan
                .get_step(step)
                .is_some_and(|s| s.compensate_tool.is_some());
            if has_own {
                (step, "compensate_tool")
            } else {
                (step, spelling(step, "tool"))
            }
        }
    };
    match plan.steps.iter().rposition(|s| &s.id == step) {
        Some(index) => format!("steps[{index}].{field}"),
        None => "steps".to_owned(),
    }
}
