use std::fmt;

/// Why a plan cannot be read, changed or run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// The text is not a plan.
    #[error("{format} plan{}{}: {message}", location(*line, *column), field_hint(path))]
    Parse {
        /// `"YAML"` or `"JSON"`.
        format: &'static str,
        /// 1-based line of the problem, when known.
        line: Option<usize>,
        /// 1-based column of the problem, when known.
        column: Option<usize>,
        /// The field, like `steps[2].depends_on`, when known.
        path: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// The plan's structure (or its fit with the agents and tools) is wrong.
    #[error("invalid plan: {}", list(.0))]
    Invalid(Vec<PlanProblem>),
    /// No step has that id.
    #[error("no step with id `{0}`")]
    UnknownStep(String),
    /// The plan could not be written out.
    #[error("could not serialize the plan: {0}")]
    Serialize(String),
}

impl PlanError {
    /// The problems, for an invalid plan.
    pub fn problems(&self) -> &[PlanProblem] {
        match self {
            PlanError::Invalid(problems) => problems,
            _ => &[],
        }
    }
}

fn location(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(" at line {l}, column {c}"),
        (Some(l), None) => format!(" at line {l}"),
        _ => String::new(),
    }
}

fn field_hint(path: &Option<String>) -> String {
    match path.as_deref() {
        Some(p) if !p.is_empty() && p != "." => format!(", field `{p}`"),
        _ => String::new(),
    }
}

fn list(problems: &[PlanProblem]) -> String {
    let items: Vec<String> = problems.iter().map(ToString::to_string).collect();
    if items.len() == 1 {
        items.concat()
    } else {
        format!("{} problems: {}", items.len(), items.join("; "))
    }
}

/// One thing wrong with a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanProblem {
    /// The plan has no steps: running it would do nothing and report success.
    NoSteps,
    /// A step has an empty id.
    EmptyId {
        /// Its position in the plan (0-based).
        index: usize,
    },
    /// Two or more steps share an id.
    DuplicateId {
        /// The id.
        id: String,
    },
    /// A step depends on an id that no step has.
    UnknownDependency {
        /// The step.
        step: String,
        /// The missing id.
        dependency: String,
    },
    /// Steps depend on each other in a circle.
    Cycle {
        /// The steps of the circle: each depends on the next, and the last on the first.
        steps: Vec<String>,
    },
    /// A step's `args` or `compensate_args` is not a JSON object.
    ArgsNotObject {
        /// The step.
        step: String,
        /// `args` or `compensate_args`.
        field: &'static str,
    },
    /// A step names an agent that is not registered.
    UnknownAgent {
        /// The step.
        step: String,
        /// The agent name.
        agent: String,
    },
    /// A step names no agent and there is no default agent.
    NoAgent {
        /// The step.
        step: String,
    },
    /// A step names a tool its agent does not have.
    UnknownTool {
        /// The step.
        step: String,
        /// The agent, if any.
        agent: Option<String>,
        /// The tool.
        tool: String,
    },
    /// A step goes to an agent whose model has no price, and the run has a cost budget that
    /// refuses unpriced models.
    UnpricedModel {
        /// The step.
        step: String,
        /// The agent.
        agent: String,
        /// Its model.
        model: String,
    },
    /// A step refers to the result of a step that does not finish before it starts.
    BadReference {
        /// The step.
        step: String,
        /// The step id in `{{steps.<id>.result}}`.
        reference: String,
    },
    /// A step (or its tool's contract) names a compensating tool that cannot be found.
    UnknownCompensatingTool {
        /// The step.
        step: String,
        /// The compensating tool.
        tool: String,
    },
    /// A step's `args` do not fit its tool's schema (checked only where arguments must fit,
    /// as when planning: the orchestrator hands such a step to its agent instead).
    InvalidArgs {
        /// The step.
        step: String,
        /// The tool.
        tool: String,
        /// Where in `args`, like `items[2].name`; empty for `args` as a whole.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A step reads `{{env.NAME}}` of a variable the orchestrator does not let plans read (a
    /// workspace lists them under `redact.env`), or of one that is not set.
    BadEnvReference {
        /// The step.
        step: String,
        /// `args` or `compensate_args`.
        field: &'static str,
        /// The variable.
        name: String,
        /// Whether it is allowed (and so only unset).
        allowed: bool,
    },
}

impl fmt::Display for PlanProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanProblem::NoSteps => f.write_str("the plan has no steps"),
            PlanProblem::EmptyId { index } => write!(f, "step #{} has an empty id", index + 1),
            PlanProblem::DuplicateId { id } => write!(f, "step id `{id}` is used more than once"),
            PlanProblem::UnknownDependency { step, dependency } => {
                write!(
                    f,
                    "step `{step}` depends on `{dependency}`, which is not a step of the plan"
                )
            }
            PlanProblem::Cycle { steps } => {
                let mut path = steps.clone();
                if let Some(first) = steps.first() {
                    path.push(first.clone());
                }
                write!(f, "dependency cycle: {}", path.join(" -> "))
            }
            PlanProblem::ArgsNotObject { step, field } => {
                write!(f, "step `{step}`: `{field}` must be a JSON object")
            }
            PlanProblem::UnknownAgent { step, agent } => {
                write!(
                    f,
                    "step `{step}` names agent `{agent}`, which is not registered"
                )
            }
            PlanProblem::NoAgent { step } => write!(
                f,
                "step `{step}` names no agent and there is no default agent"
            ),
            PlanProblem::UnknownTool { step, agent, tool } => match agent {
                Some(agent) => write!(f, "step `{step}`: agent `{agent}` has no tool `{tool}`"),
                None => write!(f, "step `{step}`: no tool `{tool}` is available"),
            },
            PlanProblem::UnpricedModel { step, agent, model } => write!(
                f,
                "step `{step}` goes to agent `{agent}`, whose model `{model}` has no price, and the run has a cost budget (add the model to the price table, or set `budget.unpriced: allow` to count it as free)"
            ),
            PlanProblem::BadReference { step, reference } => write!(
                f,
                "step `{step}` uses the result of `{reference}`, but does not depend on it"
            ),
            PlanProblem::UnknownCompensatingTool { step, tool } => write!(
                f,
                "step `{step}`: compensating tool `{tool}` is not available to its agent"
            ),
            PlanProblem::InvalidArgs {
                step,
                tool,
                path,
                message,
            } => match path.as_str() {
                "" => write!(f, "step `{step}`: arguments for `{tool}`: {message}"),
                _ => write!(
                    f,
                    "step `{step}`: arguments for `{tool}`: `{path}`: {message}"
                ),
            },
            PlanProblem::BadEnvReference {
                step,
                field,
                name,
                allowed: false,
            } => write!(
                f,
                "step `{step}`: `{field}` reads `{{{{env.{name}}}}}`, but plans may read only \
                 the environment variables listed under `redact.env`"
            ),
            PlanProblem::BadEnvReference {
                step, field, name, ..
            } => write!(
                f,
                "step `{step}`: `{field}` reads `{{{{env.{name}}}}}`, but the environment \
                 variable `{name}` is not set"
            ),
        }
    }
}
