//! The bodies of webhook posts: the event frame as it is (`json`), or a message for a
//! Slack-compatible incoming webhook (`slack`): `{"text": …}` in Slack's mrkdwn, with `&`, `<` and
//! `>` escaped as Slack asks, text that agents or people wrote kept from forging anything (`inert`),
//! and a link into the console when `public_url` is set.

use serde_json::Value;

/// Slack's escaping of message text: `&`, `<` and `>` (everything else is literal).
pub fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Text someone else wrote, made inert in Slack's mrkdwn: one line (a newline would let it forge
/// a message line of its own), its formatting marks (`*` `_` `~` and the backtick, which mrkdwn has
/// no escape for) as their full-width look-alikes, and URLs defanged (`http[:]//…`) so Slack
/// does not turn them into links. `&`, `<` and `>` are escaped with the whole message.
pub fn inert(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' | '\r' | '\t' | '\u{2028}' | '\u{2029}' => out.push(' '),
            '*' => out.push('\u{FF0A}'),
            '_' => out.push('\u{FF3F}'),
            '~' => out.push('\u{FF5E}'),
            '`' => out.push('\u{FF40}'),
            c => out.push(c),
        }
    }
    out.replace("://", "[:]//")
}

/// At most `max` characters of `text`, with an ellipsis when cut.
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max).collect();
    out.push('…');
    out
}

/// A one-line account of an event, from its frame.
fn summary(frame: &Value) -> String {
    let event_type = frame["event_type"].as_str().unwrap_or("event");
    let data = &frame["data"];
    let text = |v: &Value| v.as_str().map(|s| inert(&cut(s, 300)));
    let agent = frame["agent_type"].as_str();
    match event_type {
        "hitl_request_created" => format!(
            "Approval needed: {}",
            text(&data["question"]).unwrap_or_else(|| "(no question)".into())
        ),
        "hitl_response" => format!(
            "Approval answered: {}{}{}",
            data["status"].as_str().unwrap_or("answered"),
            text(&data["responded_by"])
                .map(|b| format!(" by {b}"))
                .unwrap_or_default(),
            text(&data["comment"])
                .map(|c| format!(" — {c}"))
                .unwrap_or_default()
        ),
        "hitl_expired" => "Approval expired unanswered".into(),
        "hitl_timed_out" => format!(
            "Approval timed out unanswered: {}",
            data["action"].as_str().unwrap_or("expire")
        ),
        "hitl_escalated" => format!(
            "Approval escalated to {}",
            data["assignees"]
                .as_array()
                .map(|names| names
                    .iter()
                    .filter_map(&text)
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default()
        ),
        "workflow_event"
            if matches!(
                data["action"].as_str(),
                Some("workflow_failed" | "workflow_cancelled")
            ) =>
        {
            format!(
                "Workflow {} {}: {}",
                text(&data["workflow"]).unwrap_or_default(),
                if data["action"] == "workflow_failed" {
                    "failed"
                } else {
                    "cancelled"
                },
                text(&data["reason"]).unwrap_or_default()
            )
        }
        "alert_firing" | "alert_resolved" => format!(
            "Alert {}: {}{}",
            if event_type == "alert_firing" {
                "firing"
            } else {
                "resolved"
            },
            text(&data["rule"])
                .or_else(|| text(&data["name"]))
                .unwrap_or_else(|| "?".into()),
            text(&data["summary"])
                .map(|s| format!(" — {s}"))
                .unwrap_or_default()
        ),
        "task_failed" => format!(
            "Task failed ({}): {}",
            agent.unwrap_or("?"),
            text(&data["error_message"]).unwrap_or_else(|| "no message".into())
        ),
        "project_created" => format!(
            "Project created: {}",
            text(&data["name"]).unwrap_or_default()
        ),
        other => match agent {
            Some(a) => format!("{other} ({a})"),
            None => other.to_string(),
        },
    }
}

/// The Slack message for an event frame. `public_url` (no trailing slash) links the project's
/// page, or the console's home for an event without a project.
pub fn slack(frame_json: &str, public_url: Option<&str>) -> Vec<u8> {
    let frame: Value = serde_json::from_str(frame_json).unwrap_or(Value::Null);
    let mut text = format!("*flightdeck* · {}", slack_escape(&summary(&frame)));
    if let Some(project) = frame["project_id"].as_str() {
        text.push_str(&format!(
            " · project `{}`",
            &project[..project.len().min(8)]
        ));
    }
    if let Some(base) = public_url {
        let link = match frame["project_id"].as_str() {
            Some(p) => format!("{base}/#/project/{p}"),
            None => format!("{base}/"),
        };
        // Inside <…|…> only the delimiters would break the link; the URL is ours.
        text.push_str(&format!(" · <{}|Open in flightdeck>", slack_escape(&link)));
    }
    serde_json::to_vec(&serde_json::json!({
        "text": text,
        "unfurl_links": false,
    }))
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slack_message_escapes_text_and_links_the_project() {
        let frame = r#"{"seq":7,"event_type":"hitl_request_created","project_id":"0190b5c2-0000-7000-8000-000000000000","task_id":null,"agent_type":null,"data":{"question":"Ship <b>it</b> & more?"},"timestamp":"2026-12-01T00:00:00Z"}"#;
        let body: Value =
            serde_json::from_slice(&slack(frame, Some("https://fd.example"))).unwrap();
        let text = body["text"].as_str().unwrap();
        assert!(
            text.contains("Approval needed: Ship &lt;b&gt;it&lt;/b&gt; &amp; more?"),
            "{text}"
        );
        assert!(text.ends_with(
            "<https://fd.example/#/project/0190b5c2-0000-7000-8000-000000000000|Open in flightdeck>"
        ), "{text}");
        let without: Value = serde_json::from_slice(&slack(frame, None)).unwrap();
        assert!(!without["text"].as_str().unwrap().contains("Open in"));
        let answered = r#"{"seq":8,"event_type":"hitl_response","project_id":null,"data":{"status":"rejected","responded_by":"alice","comment":"not yet"}}"#;
        let body: Value = serde_json::from_slice(&slack(answered, Some("http://h"))).unwrap();
        assert_eq!(
            body["text"],
            "*flightdeck* · Approval answered: rejected by alice — not yet · <http://h/|Open in flightdeck>"
        );
        assert_eq!(cut("abcdef", 3), "abc…");
        let escalated = r#"{"seq":9,"event_type":"hitl_escalated","project_id":null,"data":{"assignees":["lead","<b>"]}}"#;
        let body: Value = serde_json::from_slice(&slack(escalated, None)).unwrap();
        assert_eq!(
            body["text"],
            "*flightdeck* · Approval escalated to lead, &lt;b&gt;"
        );
        let failed = r#"{"seq":10,"event_type":"workflow_event","project_id":null,"data":{"workflow":"essay","action":"workflow_failed","reason":"no sources"}}"#;
        let body: Value = serde_json::from_slice(&slack(failed, None)).unwrap();
        assert_eq!(
            body["text"],
            "*flightdeck* · Workflow essay failed: no sources"
        );
    }

    #[test]
    fn text_written_by_others_cannot_forge_lines_formatting_or_links() {
        let question =
            "Ship it?\n*URGENT* _now_ ~x~ `rm -rf` see http://evil.example <!channel> & more";
        let frame = serde_json::json!({
            "seq": 9, "event_type": "hitl_request_created", "project_id": null,
            "data": {"question": question},
        })
        .to_string();
        let body: Value = serde_json::from_slice(&slack(&frame, None)).unwrap();
        let text = body["text"].as_str().unwrap();
        assert_eq!(
            text,
            "*flightdeck* · Approval needed: Ship it? ＊URGENT＊ ＿now＿ ～x～ ｀rm -rf｀ see \
             http[:]//evil.example &lt;!channel&gt; &amp; more"
        );
        // Only the server's own marks remain: its bold name, nothing else.
        assert_eq!(text.matches('*').count(), 2);
        assert!(!text.contains('\n') && !text.contains("://"));
    }
}
