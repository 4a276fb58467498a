use serde_json::json;

use super::*;

fn read(v: Value) -> CallContent {
    read_request(&v, DEFAULT_MAX_BYTES)
}

#[test]
fn openai_chat_messages_with_tool_calls_and_results() {
    let c = read(json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "weather?"},
                                         {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "12 C"}
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather"}}]
    }));
    assert_eq!(c.system, None);
    assert_eq!(
        c.input.expect("present"),
        json!([
            {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
            {"role": "user", "parts": [{"type": "text", "content": "weather?"}, {"type": "image_url"}]},
            {"role": "assistant", "parts": [{"type": "tool_call", "id": "call_1", "name": "get_weather", "arguments": {"city": "Oslo"}}]},
            {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_1", "response": "12 C"}]}
        ])
    );
    assert!(!c.truncated);
}

#[test]
fn anthropic_system_blocks_thinking_tool_use_and_results() {
    let c = read(json!({
        "model": "claude-sonnet-4-5",
        "system": [{"type": "text", "text": "you are terse"}],
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "x"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "42"}]},
                {"type": "image", "source": {"type": "base64", "data": "AAAA"}}]}
        ]
    }));
    assert_eq!(
        c.system.expect("present"),
        json!([{"type": "text", "content": "you are terse"}])
    );
    assert_eq!(
        c.input.expect("present"),
        json!([
            {"role": "user", "parts": [{"type": "text", "content": "hi"}]},
            {"role": "assistant", "parts": [
                {"type": "reasoning", "content": "hmm"},
                {"type": "tool_call", "id": "toolu_1", "name": "lookup", "arguments": {"q": "x"}}]},
            {"role": "user", "parts": [
                {"type": "tool_call_response", "id": "toolu_1", "response": "42"},
                {"type": "image"}]}
        ])
    );
}

#[test]
fn gemini_contents_and_system_instruction() {
    let c = read(json!({
        "systemInstruction": {"parts": [{"text": "sys"}]},
        "contents": [
            {"role": "user", "parts": [{"text": "q"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {"a": 1}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"r": 2}}},
                                       {"inlineData": {"mimeType": "image/png", "data": "AAAA"}}]}
        ]
    }));
    assert_eq!(
        c.system.expect("present"),
        json!([{"type": "text", "content": "sys"}])
    );
    assert_eq!(
        c.input.expect("present"),
        json!([
            {"role": "user", "parts": [{"type": "text", "content": "q"}]},
            {"role": "assistant", "parts": [{"type": "tool_call", "name": "f", "arguments": {"a": 1}}]},
            {"role": "user", "parts": [{"type": "tool_call_response", "response": {"r": 2}}, {"type": "inlineData"}]}
        ])
    );
}

#[test]
fn responses_api_items_and_bare_prompts() {
    let c = read(json!({
        "instructions": "be kind",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "go"}]},
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "plan"}]},
            {"type": "function_call", "call_id": "call_9", "name": "run", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_9", "output": "done"}
        ]
    }));
    assert_eq!(
        c.system.expect("present"),
        json!([{"type": "text", "content": "be kind"}])
    );
    assert_eq!(
        c.input.expect("present"),
        json!([
            {"role": "user", "parts": [{"type": "text", "content": "go"}]},
            {"role": "assistant", "parts": [{"type": "reasoning", "content": "plan"}]},
            {"role": "assistant", "parts": [{"type": "tool_call", "id": "call_9", "name": "run", "arguments": {}}]},
            {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_9", "response": "done"}]}
        ])
    );
    let user = |t: &str| json!([{"role": "user", "parts": [{"type": "text", "content": t}]}]);
    assert_eq!(
        read(json!({"input": "plain"})).input.expect("present"),
        user("plain")
    );
    assert_eq!(
        read(json!({"prompt": "complete"})).input.expect("present"),
        user("complete")
    );
    assert_eq!(
        read(json!({"input": {"prompt": "qwen"}}))
            .input
            .expect("present"),
        user("qwen")
    );
    assert_eq!(
        read(json!({"input": {"messages": [{"role": "user", "content": "dashscope"}]}}))
            .input
            .expect("present"),
        user("dashscope")
    );
    assert_eq!(
        read(json!({"query": "dify", "inputs": {}}))
            .input
            .expect("present"),
        user("dify")
    );
    assert_eq!(read(json!([1, 2])), CallContent::default());
    assert_eq!(read(json!({"messages": 5})), CallContent::default());
}

#[test]
fn the_input_keeps_its_newest_messages_within_the_cap() {
    let messages: Vec<Value> = (0..100)
        .map(|i| json!({"role": "user", "content": format!("message {i:03} {}", "x".repeat(90))}))
        .collect();
    // Six whole messages (32 bytes per message and per part, 102 of text), then a cut one.
    let c = read_request(&json!({ "messages": messages }), 1100);
    assert!(c.truncated);
    let input = c.input.expect("present");
    let list = input.as_array().expect("present");
    let last = list.last().expect("present")["parts"][0]["content"]
        .as_str()
        .expect("present");
    assert!(last.starts_with("message 099"), "{last}");
    assert_eq!(list.len(), 7);
    let first = list[0]["parts"][0]["content"].as_str().expect("present");
    // Cut back to the white space before the cut, so no token is left half.
    assert_eq!(first, format!("message 093{CUT_MARKER}"));
    let text: usize = list
        .iter()
        .map(|m| m["parts"][0]["content"].as_str().expect("present").len())
        .sum();
    assert!(text <= 1100, "{text}");
    // A cut never splits a character.
    let c = read_request(
        &json!({"messages": [{"role": "user", "content": "é".repeat(600)}]}),
        301,
    );
    let t = c.input.expect("present")[0]["parts"][0]["content"]
        .as_str()
        .expect("present")
        .to_owned();
    assert!(t.ends_with(CUT_MARKER) && t.len() <= 301 + CUT_MARKER.len());
}

#[test]
fn the_answer_is_reassembled_from_deltas() {
    let mut o = OutputContent::new(DEFAULT_MAX_BYTES);
    o.reasoning("think ");
    o.reasoning("more");
    o.text("Hel");
    o.text("lo");
    // Two streamed tool calls, their argument pieces interleaved by index.
    o.tool_call(Some(0), Some("call_a"), Some("get_weather"));
    o.tool_args(Some(0), "{\"city\":");
    o.tool_call(Some(1), Some("call_b"), Some("get_time"));
    o.tool_args(Some(1), "{}");
    o.tool_call(Some(0), None, None);
    o.tool_args(Some(0), "\"Oslo\"}");
    // Anthropic: no index, the arguments follow their call.
    o.tool_call(None, Some("toolu_1"), Some("lookup"));
    o.tool_args(None, "{\"q\":1");
    let v = o.into_messages(Some("tool_calls")).expect("present");
    assert_eq!(
        v,
        json!([{"role": "assistant", "finish_reason": "tool_calls", "parts": [
            {"type": "reasoning", "content": "think more"},
            {"type": "text", "content": "Hello"},
            {"type": "tool_call", "id": "call_a", "name": "get_weather", "arguments": {"city": "Oslo"}},
            {"type": "tool_call", "id": "call_b", "name": "get_time", "arguments": {}},
            {"type": "tool_call", "id": "toolu_1", "name": "lookup", "arguments": "{\"q\":1"}
        ]}])
    );
    assert_eq!(OutputContent::new(10).into_messages(Some("stop")), None);
}

#[test]
fn the_answer_is_bounded() {
    // 32 bytes per part, then the text.
    let mut o = OutputContent::new(75);
    o.text("0123456");
    o.reasoning("789abc");
    o.text("never");
    assert!(o.truncated());
    let v = o.into_messages(None).expect("present");
    assert_eq!(
        v[0]["parts"],
        json!([{"type": "text", "content": "0123456"}, {"type": "reasoning", "content": format!("789a{CUT_MARKER}")}])
    );
    let mut o = OutputContent::new(1 << 20);
    for i in 0..(MAX_OUT_PARTS + 10) {
        o.tool_call(None, None, Some(&format!("t{i}")));
    }
    assert!(o.truncated());
    assert_eq!(
        o.into_messages(None).expect("present")[0]["parts"]
            .as_array()
            .expect("present")
            .len(),
        MAX_OUT_PARTS
    );
}

#[test]
fn selection_by_process_and_model() {
    let all = ContentPolicy::default();
    assert!(all.selects("python3", None, None));
    let p = ContentPolicy {
        comms: vec!["agent".into()],
        models: vec!["gpt-4o*".into(), "deepseek-chat".into()],
        ..Default::default()
    };
    assert!(p.selects("agent", Some("gpt-4o-mini"), None));
    assert!(p.selects("agent", None, Some("deepseek-chat")));
    assert!(!p.selects("agent", Some("deepseek-chat-v2"), None));
    assert!(!p.selects("other", Some("gpt-4o"), None));
    assert!(!p.selects("agent", None, None));
}

#[test]
fn render_redacts_content_but_not_structure() {
    let mut r = Render::new(
        redact::Redactor::new(&[]).expect("present"),
        DEFAULT_MAX_BYTES,
    );
    let mut call = LlmCall::default();
    call.detail.content = Some(Box::new(CallContent {
        system: Some(json!([{"type": "text", "content": "mail ops@example.com"}])),
        input: Some(json!([{"role": "user", "parts": [{"type": "text", "content": "hi"}]}])),
        output: None,
        truncated: false,
        heap: 0,
    }));
    assert!(!r.render(&mut call));
    assert!(call.detail.content.is_none());
    assert!(call.output_messages.is_none());
    let input: Value =
        serde_json::from_str(&call.input_messages.as_ref().expect("present").0).expect("present");
    assert_eq!(input[0]["role"], "user");
    let sys = &call.system_instructions.as_ref().expect("present").0;
    assert!(!sys.contains("ops@example.com"), "{sys}");
    assert!(sys.contains("[REDACTED:email]"), "{sys}");
    // Written into JSON lines as JSON, not as a string.
    let line = serde_json::to_value(&call).expect("present");
    assert_eq!(line["input_messages"][0]["parts"][0]["content"], "hi");
    assert_eq!(line["output_messages"], Value::Null);
}

#[test]
fn flags_need_capture_content_and_sane_values() {
    let none = ContentArgs::default();
    assert!(none.build().expect("present").is_none());
    let stray = ContentArgs {
        capture_content_model: vec!["m".into()],
        ..Default::default()
    };
    let e = stray.build().expect_err("an error").to_string();
    assert!(e.contains("--capture-content"), "{e}");
    let small = ContentArgs {
        capture_content: true,
        content_max_bytes: 10,
        ..Default::default()
    };
    assert!(small.build().is_err());
    let ok = ContentArgs {
        capture_content: true,
        content_max_bytes: DEFAULT_MAX_BYTES,
        capture_content_comm: vec!["app".into()],
        ..Default::default()
    };
    let (policy, _) = ok.build().expect("present").expect("present");
    assert_eq!(policy.comms, ["app"]);
}
