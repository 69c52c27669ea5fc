use super::*;
use crate::plan::PlanStep;
use serde_json::json;

const KEY: &str = "sk-test-PLANTED-0123456789";

fn everything() -> Redactor {
    Redactor::new()
        .secret("OPENAI_API_KEY", KEY)
        .preset(Preset::Email)
        .preset(Preset::Card)
        .preset(Preset::Iban)
}

#[test]
fn nothing_configured_changes_nothing() {
    let redactor = Redactor::new();
    assert!(redactor.is_empty());
    let text = "ana@example.com 4111 1111 1111 1111";
    assert!(matches!(redactor.redact_str(text), Cow::Borrowed(_)));
    let mut value = json!({"to": "ana@example.com"});
    assert!(!redactor.redact_value(&mut value));
}

#[test]
fn secrets_are_replaced_by_their_name_wherever_they_occur() {
    let redactor = everything();
    assert_eq!(
        redactor.redact_str(&format!("Bearer {KEY}, again:{KEY}.")),
        "Bearer [redacted:OPENAI_API_KEY], again:[redacted:OPENAI_API_KEY]."
    );
}

#[test]
fn the_longer_of_two_secrets_that_share_a_start_wins() {
    let redactor = Redactor::new()
        .secret("SHORT", "abcd1234")
        .secret("LONG", "abcd1234-extended");
    assert_eq!(
        redactor.redact_str("x abcd1234-extended y abcd1234"),
        "x [redacted:LONG] y [redacted:SHORT]"
    );
}

#[test]
fn short_secrets_are_skipped_and_listed() {
    let redactor = Redactor::new().secret("PIN", "123").secret("EMPTY", "");
    assert!(redactor.is_empty());
    assert_eq!(redactor.skipped(), ["PIN", "EMPTY"]);
    assert_eq!(redactor.redact_str("pin 123"), "pin 123");
}

#[test]
fn email_preset() {
    let redactor = Redactor::new().preset(Preset::Email);
    assert_eq!(
        redactor.redact_str("write to ana.maria+news@mail.example.co.uk today"),
        "write to [redacted:email] today"
    );
    assert_eq!(
        redactor.redact_str("not an address: a@b, @home"),
        "not an address: a@b, @home"
    );
}

#[test]
fn card_preset_redacts_only_luhn_valid_numbers() {
    let redactor = Redactor::new().preset(Preset::Card);
    assert_eq!(
        redactor.redact_str("card 4111 1111 1111 1111 ok"),
        "card [redacted:card] ok"
    );
    assert_eq!(
        redactor.redact_str("card 5500-0000-0000-0004"),
        "card [redacted:card]"
    );
    // Long numbers that fail the check (order ids, timestamps) stay.
    assert_eq!(
        redactor.redact_str("order 4111111111111112"),
        "order 4111111111111112"
    );
    assert_eq!(redactor.redact_str("ts 1733040000000"), "ts 1733040000000");
    assert_eq!(
        redactor.redact_str("short 411111111111"),
        "short 411111111111"
    );
}

#[test]
fn iban_preset_redacts_only_mod97_valid_codes() {
    let redactor = Redactor::new().preset(Preset::Iban);
    assert_eq!(
        redactor.redact_str("pay DE89 3704 0044 0532 0130 00 now"),
        "pay [redacted:iban] now"
    );
    assert_eq!(
        redactor.redact_str("GB82WEST12345698765432"),
        "[redacted:iban]"
    );
    assert_eq!(
        redactor.redact_str("DE89 3704 0044 0532 0130 01"),
        "DE89 3704 0044 0532 0130 01"
    );
    // A valid code followed by more capitals: the valid part is found.
    assert_eq!(
        redactor.redact_str("GB82WEST12345698765432 AND"),
        "[redacted:iban] AND"
    );
}

#[test]
fn a_secret_holding_an_email_is_one_marker_named_after_the_secret() {
    let redactor = Redactor::new()
        .preset(Preset::Email)
        .secret("SMTP_LOGIN", "mailer@example.com:pw-123");
    assert_eq!(
        redactor.redact_str("login mailer@example.com:pw-123 ok"),
        "login [redacted:SMTP_LOGIN] ok"
    );
    // An email reaching past the secret is merged into the same marker: nothing shows.
    let redactor = Redactor::new()
        .preset(Preset::Email)
        .secret("USER", "ana.maria");
    assert_eq!(
        redactor.redact_str("ana.maria@example.com"),
        "[redacted:USER]"
    );
}

#[test]
fn redacting_twice_changes_nothing() {
    let redactor = everything().pattern("word", r"[a-z]+").unwrap();
    let once = redactor.redact_str("mail ana@example.com").into_owned();
    assert_eq!(once, "[redacted:word] [redacted:email]");
    assert_eq!(redactor.redact_str(&once), once);
}

#[test]
fn patterns_are_named_and_a_bad_one_is_a_clear_error() {
    let redactor = Redactor::new().pattern("ticket", r"TCK-\d+").unwrap();
    assert_eq!(redactor.redact_str("see TCK-1234"), "see [redacted:ticket]");
    let err = Redactor::new().pattern("broken", "(unclosed").unwrap_err();
    assert!(matches!(&err, RedactError::BadPattern { name, .. } if name == "broken"));
    assert!(err.to_string().contains("`broken`"), "{err}");
    let err = Redactor::new().pattern("has space", "x").unwrap_err();
    assert_eq!(err, RedactError::BadName("has space".into()));
}

#[test]
fn every_preset_compiles() {
    let redactor = Preset::ALL
        .into_iter()
        .fold(Redactor::new(), Redactor::preset);
    assert!(redactor.skipped().is_empty());
    assert_eq!(redactor.rules.len(), 3);
}

#[test]
fn values_are_redacted_at_any_depth_keys_included() {
    let redactor = everything();
    let mut value = json!({"to": ["ana@example.com"], "ana@example.com": {"key": KEY}, "n": 4});
    assert!(redactor.redact_value(&mut value));
    assert_eq!(
        value,
        json!({"to": ["[redacted:email]"], "[redacted:email]": {"key": "[redacted:OPENAI_API_KEY]"}, "n": 4})
    );
}

#[test]
fn kept_keys_are_left_alone() {
    let redactor = Redactor::new().preset(Preset::Email);
    let mut value = json!({"step_id": "ana@example.com", "error": "ana@example.com"});
    assert!(redactor.redact_value_except(&mut value, &["step_id"]));
    assert_eq!(
        value,
        json!({"step_id": "ana@example.com", "error": "[redacted:email]"})
    );
}

#[test]
fn plans_keep_ids_and_names_and_lose_secrets() {
    let redactor = everything();
    let mut plan = Plan::new(format!("mail ana@example.com with {KEY}"));
    plan.steps.push(
        PlanStep::new("send", "send to ana@example.com")
            .tool("send")
            .args(json!({"to": "ana@example.com", "token": "{{env.TOKEN}}"})),
    );
    redactor.redact_plan(&mut plan);
    assert_eq!(
        plan.goal,
        "mail [redacted:email] with [redacted:OPENAI_API_KEY]"
    );
    let step = &plan.steps[0];
    assert_eq!(
        (step.id.as_str(), step.tool_name.as_deref()),
        ("send", Some("send"))
    );
    assert_eq!(step.description, "send to [redacted:email]");
    assert_eq!(
        step.args,
        json!({"to": "[redacted:email]", "token": "{{env.TOKEN}}"})
    );
}

#[test]
fn debug_shows_names_never_values() {
    let shown = format!(
        "{:?}",
        everything().env_value("DB_PASSWORD", Some("hunter2-long".into()))
    );
    assert!(
        shown.contains("OPENAI_API_KEY") && shown.contains("DB_PASSWORD"),
        "{shown}"
    );
    assert!(
        !shown.contains(KEY) && !shown.contains("hunter2"),
        "{shown}"
    );
}

#[test]
fn reveal_fills_env_references_and_their_markers() {
    let redactor = Redactor::new().env_value("TOKEN", Some("tok-secret-1".into()));
    let args = json!({"auth": "Bearer {{env.TOKEN}}", "again": ["[redacted:TOKEN]"], "n": 1});
    assert_eq!(
        *redactor.reveal(&args).unwrap(),
        json!({"auth": "Bearer tok-secret-1", "again": ["tok-secret-1"], "n": 1})
    );
    // Unlisted variables are never read.
    let args = json!({"home": "{{env.HOME}}"});
    assert!(matches!(redactor.reveal(&args).unwrap(), Cow::Borrowed(_)));
}

#[test]
fn reveal_refuses_other_markers_naming_the_argument() {
    let redactor = Redactor::new().preset(Preset::Email);
    let err = redactor
        .reveal(&json!({"mail": {"to": ["x", "[redacted:email]"]}}))
        .unwrap_err();
    assert_eq!(
        err,
        HiddenArgument::Redacted {
            path: "mail.to[1]".into(),
            name: "email".into()
        }
    );
    assert!(err.to_string().contains("argument `mail.to[1]`"), "{err}");
    assert!(err.to_string().contains("redact.env"), "{err}");
}

#[test]
fn reveal_names_an_allowed_variable_that_is_not_set() {
    let redactor = Redactor::new().env_value("TOKEN", None);
    let err = redactor
        .reveal(&json!({"auth": "{{env.TOKEN}}"}))
        .unwrap_err();
    assert_eq!(
        err,
        HiddenArgument::Unset {
            path: "auth".into(),
            name: "TOKEN".into()
        }
    );
    assert!(err.to_string().contains("`{{env.TOKEN}}`"), "{err}");
}
