//! Cost accounting: the price table, overrides from code and files, and costs in results.

use agenthelm::lm::{CompletionRequest, ModelPrice, Pricing};
use agenthelm::prelude::*;
use agenthelm_test_support::TempDir;
use serde_json::json;

#[test]
fn builtin_prices_cover_common_models_and_dated_names() {
    let pricing = Pricing::builtin();
    let usage = TokenUsage::new(1_000_000, 1_000_000);
    assert_eq!(pricing.cost("openai/gpt-4o-mini", usage), Some(0.75));
    // A dated answer name is priced as the model it starts with, not a shorter one.
    assert_eq!(pricing.cost("gpt-4o-mini-2024-07-18", usage), Some(0.75));
    assert_eq!(pricing.cost("gpt-4o-2024-08-06", usage), Some(12.5));
    assert_eq!(
        pricing.cost("anthropic/claude-sonnet-4-5", usage),
        Some(18.0)
    );
    // Local models are free; unknown ones have no price at all (not 0).
    assert_eq!(pricing.cost("ollama/llama3.2", usage), Some(0.0));
    assert_eq!(pricing.cost("openai/smollm2", usage), None);
    assert_eq!(pricing.cost("acme/x", usage), None);
    // A name that only shares letters is not a match.
    assert_eq!(pricing.cost("openai/gpt-4ox", usage), None);
}

#[test]
fn code_overrides_replace_builtin_prices() {
    let pricing = Pricing::builtin().with("openai/gpt-4o-mini", ModelPrice::new(1.0, 1.0));
    assert_eq!(
        pricing.cost("openai/gpt-4o-mini", TokenUsage::new(500_000, 500_000)),
        Some(1.0)
    );
}

#[test]
fn pricing_files_in_yaml_and_json() {
    let dir = TempDir::new("pricing");
    let yaml = dir.join("prices.yaml");
    std::fs::write(&yaml, "# my contract prices\nopenai/gpt-4o:\n  input: 2.0\n  output: 8.0\nmy/local: {input: 0, output: 0}\n").unwrap();
    let pricing = Pricing::from_file(&yaml).unwrap();
    assert_eq!(
        pricing.get("openai/gpt-4o"),
        Some(ModelPrice::new(2.0, 8.0))
    );
    assert_eq!(pricing.len(), 2);

    let mut merged = Pricing::builtin();
    merged.extend(pricing);
    assert_eq!(merged.get("openai/gpt-4o"), Some(ModelPrice::new(2.0, 8.0)));
    assert!(merged.get("openai/gpt-4o-mini").is_some());

    let json_file = dir.join("prices.json");
    std::fs::write(&json_file, r#"{"a/b": {"input": 1.5, "output": 3}}"#).unwrap();
    assert_eq!(
        Pricing::from_file(&json_file).unwrap().get("a/b"),
        Some(ModelPrice::new(1.5, 3.0))
    );

    // Bad files: the error names the file, the line and the field.
    std::fs::write(&yaml, "openai/gpt-4o:\n  input: 2.0\n  outptu: 8.0\n").unwrap();
    let error = Pricing::from_file(&yaml).unwrap_err().to_string();
    assert!(error.contains("prices.yaml"), "{error}");
    assert!(error.contains("line 3"), "{error}");
    assert!(error.contains("outptu"), "{error}");

    std::fs::write(
        &json_file,
        "{\"a/b\": {\"input\": \"cheap\", \"output\": 1}}",
    )
    .unwrap();
    let error = Pricing::from_file(&json_file).unwrap_err().to_string();
    assert!(error.contains("prices.json at line 1"), "{error}");
    assert!(error.contains("a/b.input"), "{error}");

    std::fs::write(&json_file, r#"{"a/b": {"input": -1, "output": 1}}"#).unwrap();
    let error = Pricing::from_file(&json_file).unwrap_err().to_string();
    assert!(error.contains("`a/b.input`"), "{error}");

    let error = Pricing::from_file(dir.join("missing.yaml"))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("missing.yaml") && error.contains("cannot read"),
        "{error}"
    );
}

#[tokio::test]
async fn lm_fills_the_cost_and_leaves_unknown_models_unpriced() {
    let priced = Lm::from_model(
        ScriptedLm::new(vec![ScriptedReply::text("a").with_usage(2_000_000, 0)])
            .with_model_id("openai/gpt-4o-mini"),
    );
    let completion = priced
        .complete(&CompletionRequest::default())
        .await
        .unwrap();
    assert_eq!(completion.cost_usd, Some(0.3));

    let unknown = Lm::from_model(
        ScriptedLm::new(vec![ScriptedReply::text("a").with_usage(10, 10)]).with_model_id("acme/x"),
    );
    let completion = unknown
        .complete(&CompletionRequest::default())
        .await
        .unwrap();
    assert_eq!(completion.cost_usd, None);
    assert_eq!(completion.usage, TokenUsage::new(10, 10));

    // A price the model reports itself is kept.
    let own = Lm::from_model(
        ScriptedLm::new(vec![ScriptedReply::text("a")
            .with_usage(1, 1)
            .with_cost(0.5)])
        .with_model_id("openai/gpt-4o-mini"),
    );
    let completion = own.complete(&CompletionRequest::default()).await.unwrap();
    assert_eq!(completion.cost_usd, Some(0.5));
}

#[tokio::test]
async fn agent_results_sum_costs_and_count_unpriced_calls() {
    /// Echo a word.
    #[tool]
    fn echo(word: String) -> String {
        word
    }

    let model = ScriptedLm::new(vec![
        ScriptedReply::tool_call("echo", json!({"word": "x"})).with_usage(1_000_000, 0),
        ScriptedReply::text("done").with_usage(0, 1_000_000),
    ])
    .with_model_id("acme/metered");
    let lm = Lm::from_model(model)
        .with_pricing(Pricing::new().with("acme/metered", ModelPrice::new(1.0, 4.0)));
    let result = ToolAgent::new("a", lm, tools![echo]).run("go").await;
    assert!(result.success);
    assert_eq!(result.total_cost_usd, 5.0);
    assert_eq!(result.unpriced_calls, 0);
    let costs: Vec<Option<f64>> = result
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::LlmCall {
                cost_usd, model, ..
            } => {
                assert_eq!(model, "acme/metered");
                Some(*cost_usd)
            }
            _ => None,
        })
        .collect();
    assert_eq!(costs, [Some(1.0), Some(4.0)]);

    let unpriced = Lm::from_model(
        ScriptedLm::new(vec![ScriptedReply::text("done").with_usage(7, 3)])
            .with_model_id("acme/free?"),
    );
    let result = ToolAgent::new("b", unpriced, ToolSet::new())
        .run("go")
        .await;
    assert_eq!(result.total_cost_usd, 0.0);
    assert_eq!(result.unpriced_calls, 1);
    assert_eq!(result.token_usage, TokenUsage::new(7, 3));
}
