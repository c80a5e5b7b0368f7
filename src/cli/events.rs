//! `berth events`: follow the running agent's events (feedback and
//! per-container version updates) through its API socket.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;

use super::api::ApiArgs;

const EVENTS_EXAMPLES: &str = "\
Runs until interrupted (or until the agent stops).

Examples:
  berth events --token-file /etc/berth/ui.token
  berth events --json --last-event-id 120 | jq .data";

/// Arguments of `berth events`.
#[derive(Debug, Args)]
#[command(after_help = EVENTS_EXAMPLES)]
pub struct EventsArgs {
    /// One JSON object per line: {"id", "event", "data"}.
    #[arg(long)]
    json: bool,

    /// Resume after this event id (the buffered ones since are sent first).
    #[arg(long, value_name = "ID")]
    last_event_id: Option<String>,

    #[command(flatten)]
    api: ApiArgs,
}

/// One line for people.
fn line(e: &berth::api::client::SseEvent) -> String {
    let data: serde_json::Value = serde_json::from_str(&e.data).unwrap_or_default();
    let id = e.id.as_deref().unwrap_or("-");
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
    match e.event.as_str() {
        "version-update" => format!(
            "{id} {} {} {} {}",
            s(&data["activityId"]),
            s(&data["component"]),
            s(&data["version"]),
            s(&data["phase"])
        ),
        "feedback" => {
            let message = s(&data["payload"]["message"]);
            format!(
                "{id} {} {}{}",
                s(&data["activityId"]),
                s(&data["payload"]["status"]),
                if message.is_empty() {
                    String::new()
                } else {
                    format!(": {message}")
                }
            )
        }
        other => format!("{id} {other} {}", e.data),
    }
}

impl EventsArgs {
    /// Follows the stream.
    pub fn exec(self) -> anyhow::Result<ExitCode> {
        let client = self.api.client()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let json = self.json;
        let mut failed = None;
        runtime.block_on(client.events(self.last_event_id.as_deref(), |e| {
            let mut out = std::io::stdout().lock();
            let text = if json {
                let data: serde_json::Value = serde_json::from_str(&e.data)
                    .unwrap_or(serde_json::Value::String(e.data.clone()));
                serde_json::json!({"id": e.id, "event": e.event, "data": data}).to_string()
            } else {
                line(&e)
            };
            match writeln!(out, "{text}").and_then(|()| out.flush()) {
                Ok(()) => true,
                Err(err) => {
                    failed = Some(err);
                    false
                }
            }
        }))?;
        if let Some(e) = failed {
            // A closed pipe (`| head`) is how a reader says it has enough.
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                return Err(e.into());
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
