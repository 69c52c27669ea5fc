use serde_json::Value;
use std::fmt::Write;

/// A plan step as handed to an agent: what to do, with the results it depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct StepTask {
    /// The step's id.
    pub id: String,
    /// What to do.
    pub description: String,
    /// The tool the plan suggests, if any.
    pub tool_name: Option<String>,
    /// The step's arguments, with `{{steps.<id>.result}}` references filled in.
    pub args: Value,
    /// Results of the steps this one depends on, in `depends_on` order.
    pub inputs: Vec<(String, Value)>,
}

impl StepTask {
    /// The task as text for a model: the description, the suggested tool and arguments, and the
    /// results of the steps it depends on.
    ///
    /// ```
    /// use agenthelm::StepTask;
    /// use serde_json::json;
    ///
    /// let task = StepTask {
    ///     id: "sum".into(),
    ///     description: "Summarize the findings".into(),
    ///     tool_name: None,
    ///     args: json!({}),
    ///     inputs: vec![("search".into(), json!("Rust is fast"))],
    /// };
    /// assert!(task.prompt().contains("Rust is fast"));
    /// ```
    pub fn prompt(&self) -> String {
        let mut text = self.description.clone();
        let has_args = self.args.as_object().is_some_and(|m| !m.is_empty());
        if let Some(tool) = &self.tool_name {
            let _ = write!(text, "\n\nUse the tool `{tool}`");
            if has_args {
                let _ = write!(text, " with arguments {}", self.args);
            }
            text.push('.');
        } else if has_args {
            let _ = write!(text, "\n\nArguments: {}", self.args);
        }
        if !self.inputs.is_empty() {
            text.push_str("\n\nResults of the steps this one depends on:");
            for (id, result) in &self.inputs {
                text.push_str("\n- ");
                text.push_str(id);
                text.push_str(": ");
                match result {
                    Value::String(s) => text.push_str(s),
                    other => {
                        let _ = write!(text, "{other}");
                    }
                }
            }
        }
        text
    }
}

/// A value as text: strings as they are, anything else as JSON.
pub(crate) fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
