//! Tests of [`super`]: kept beside it so that the module itself reads on one screen.

use super::*;

#[test]
fn token_param_follows_upstream_rule_unless_configured() {
    assert_eq!(
        TokenParam::upstream_default("claude-3-7-sonnet"),
        TokenParam::MaxTokens
    );
    assert_eq!(
        TokenParam::upstream_default("gpt-4o"),
        TokenParam::MaxCompletionTokens
    );
    let mut c = OpenAiConfig::new("http://x/v1", "claude-opus");
    assert_eq!(c.effective_token_param(), TokenParam::MaxTokens);
    c.token_param = Some(TokenParam::MaxCompletionTokens);
    assert_eq!(c.effective_token_param(), TokenParam::MaxCompletionTokens);
}

#[test]
fn url_joins_base_with_or_without_slash() {
    assert_eq!(
        OpenAiConfig::new("http://h:1/v1/", "m").chat_completions_url(),
        "http://h:1/v1/chat/completions"
    );
    assert_eq!(
        OpenAiConfig::new("http://h:1/v1", "m").chat_completions_url(),
        "http://h:1/v1/chat/completions"
    );
}

#[test]
fn body_carries_messages_limits_and_extras() {
    let mut c = OpenAiConfig::new("http://x/v1", "gpt-x");
    c.max_gen_token = 123;
    c.temperature = Some(0.5);
    c.extra_body
        .insert("reasoning_effort".into(), Value::from("high"));
    let client = OpenAiClient::with_key(c, None).unwrap();
    let b = client.request_body(&ChatPrompt {
        system: "sys".into(),
        user: "usr".into(),
    });
    assert_eq!(b["model"], "gpt-x");
    assert_eq!(b["messages"][0]["role"], "system");
    assert_eq!(b["messages"][0]["content"], "sys");
    assert_eq!(b["messages"][1]["role"], "user");
    assert_eq!(b["messages"][1]["content"], "usr");
    assert_eq!(b["max_completion_tokens"], 123);
    assert!(b.get("max_tokens").is_none());
    assert_eq!(b["temperature"], 0.5);
    assert!(b.get("top_p").is_none());
    assert_eq!(b["reasoning_effort"], "high");
}

#[test]
fn config_rejects_extras_that_clash() {
    for key in ["model", "messages", "stream", "max_completion_tokens"] {
        let mut c = OpenAiConfig::new("http://x/v1", "gpt-x");
        c.extra_body.insert(key.into(), Value::from(1));
        let e = OpenAiClient::with_key(c, None).unwrap_err();
        assert!(e.to_string().contains(key), "{e}");
    }
    // `max_tokens` is free when the client sends `max_completion_tokens`.
    let mut c = OpenAiConfig::new("http://x/v1", "gpt-x");
    c.extra_body.insert("max_tokens".into(), Value::from(1));
    assert!(OpenAiClient::with_key(c, None).is_ok());
    let mut c = OpenAiConfig::new("ftp://x", "gpt-x");
    assert!(OpenAiClient::with_key(c.clone(), None).is_err());
    c.base_url = "http://x".into();
    c.retry.max_attempts = 0;
    assert!(OpenAiClient::with_key(c, None).is_err());
}

#[test]
fn parses_content_usage_and_failures() {
    let ok = br#"{"choices":[{"message":{"content":"  hi\n"},"finish_reason":"stop"}],
                      "usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}}"#;
    let (a, u) = parse_completion(ok).unwrap();
    // Byte for byte (issue 11 #4): a trailing newline or context line is part of a diff.
    assert_eq!(a, "  hi\n");
    assert_eq!(
        u,
        Some(TokenUsage {
            prompt_tokens: 10,
            completion_tokens: 5,
            total_tokens: 15
        })
    );
    let parts = br#"{"choices":[{"message":{"content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}}]}"#;
    assert_eq!(parse_completion(parts).unwrap().0, "ab");

    let empty = br#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":0}}"#;
    let (f, u) = parse_completion(empty).unwrap_err();
    assert_eq!(f, ModelFailure::EmptyChoices);
    assert_eq!(u.unwrap().total_tokens, 3);

    let null = br#"{"choices":[{"message":{"content":null},"finish_reason":"length"}]}"#;
    assert_eq!(
        parse_completion(null).unwrap_err().0,
        ModelFailure::EmptyContent {
            finish_reason: Some("length".into())
        }
    );
    let blank = br#"{"choices":[{"message":{"content":" \n "}}]}"#;
    assert!(matches!(
        parse_completion(blank).unwrap_err().0,
        ModelFailure::EmptyContent { .. }
    ));
    assert!(matches!(
        parse_completion(b"<html>bad gateway</html>").unwrap_err().0,
        ModelFailure::MalformedResponse { .. }
    ));
    assert!(matches!(
        parse_completion(br#"{"choices":[{"message":{"content":7}}]}"#)
            .unwrap_err()
            .0,
        ModelFailure::MalformedResponse { .. }
    ));
    let err = parse_completion(br#"{"error":{"message":"overloaded"}}"#)
        .unwrap_err()
        .0;
    assert!(err.to_string().contains("overloaded"), "{err}");
    assert!(matches!(
        parse_completion(b"[1,2]").unwrap_err().0,
        ModelFailure::MalformedResponse { .. }
    ));
}

#[test]
fn status_classes() {
    let c = |s: u16| classify_status(StatusCode::from_u16(s).unwrap(), "m".into(), None);
    for s in [429, 408, 500, 502, 503, 504] {
        let f = c(s);
        assert!(f.retryable, "{s}");
        assert!(f.reason.is_retryable(), "{s}");
    }
    for s in [400, 413, 422] {
        let f = c(s);
        assert!(!f.retryable, "{s}");
        assert!(matches!(
            f.reason,
            FailureReason::Model(ModelFailure::RequestRejected { .. })
        ));
    }
    for s in [401, 403, 404, 409] {
        let f = c(s);
        assert!(!f.retryable, "{s}");
        assert!(matches!(
            f.reason,
            FailureReason::Infrastructure(InfraFailure::ClientError { .. })
        ));
    }
}

#[test]
fn quota_is_told_apart_from_a_rate_limit() {
    let code = error_body_code(
            br#"{"error": {"message": "You exceeded your current quota", "type": "insufficient_quota", "code": "insufficient_quota"}}"#,
        );
    assert_eq!(code.as_deref(), Some("insufficient_quota"));
    assert!(quota_exhausted(
        StatusCode::TOO_MANY_REQUESTS,
        code.as_deref()
    ));
    assert!(quota_exhausted(StatusCode::PAYMENT_REQUIRED, None));
    let limited = error_body_code(br#"{"error": {"code": "rate_limit_exceeded"}}"#);
    assert!(!quota_exhausted(
        StatusCode::TOO_MANY_REQUESTS,
        limited.as_deref()
    ));
    assert!(!quota_exhausted(StatusCode::TOO_MANY_REQUESTS, None));
}

#[test]
fn cost_uses_prices_per_million() {
    let p = Pricing {
        input_per_million_usd: 2.0,
        output_per_million_usd: 8.0,
    };
    let u = TokenUsage {
        prompt_tokens: 1_000_000,
        completion_tokens: 500_000,
        total_tokens: 1_500_000,
    };
    assert!((p.cost_usd(&u) - 6.0).abs() < 1e-9);
}

#[test]
fn key_is_trimmed_and_checked() {
    assert_eq!(ApiKey::new(" sk-1\n").unwrap().expose(), "sk-1");
    assert!(matches!(ApiKey::new("\n"), Err(OpenAiError::EmptyKey)));
    let e = ApiKey::new("sk-se\x01cret").unwrap_err();
    assert!(!e.to_string().contains("sk-se"));
}

#[test]
fn error_messages_are_short() {
    let long = "x".repeat(5000);
    assert_eq!(error_body_message(long.as_bytes()).chars().count(), 503);
    assert_eq!(
        error_body_message(br#"{"error":{"message":"bad model","type":"x"}}"#),
        "bad model"
    );
}
