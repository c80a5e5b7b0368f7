//! `berth status`: ask the running agent (through its API socket) whether
//! it is ready and what it runs.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use super::api::ApiArgs;

const STATUS_EXAMPLES: &str = "\
Exit status: 0 when the agent is ready, 3 while it is still starting, 1 on an error.

Examples:
  berth status --token-file /etc/berth/ui.token
  berth status --json --api 127.0.0.1:7070 --token-file ui.token";

/// Arguments of `berth status`.
#[derive(Debug, Args)]
#[command(after_help = STATUS_EXAMPLES)]
pub struct StatusArgs {
    /// Print {"health": ..., "containers": <current state>} as JSON.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    api: ApiArgs,
}

impl StatusArgs {
    /// Asks the agent.
    pub fn exec(self) -> anyhow::Result<ExitCode> {
        let client = self.api.client()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (health, containers) = runtime.block_on(async {
            let health = client.request("GET", "/healthz", &[], None).await?;
            let containers = client
                .request("GET", "/api/v1/containers", &[], None)
                .await?;
            anyhow::Ok((health, containers))
        })?;
        if containers.status != 200 {
            let why = containers.json()["message"]
                .as_str()
                .map_or_else(|| containers.text(), str::to_string);
            anyhow::bail!("the API answered {}: {why}", containers.status);
        }
        let ready = health.status == 200;
        let mut out = std::io::stdout().lock();
        if self.json {
            let v = serde_json::json!({"health": health.json(), "containers": containers.json()});
            serde_json::to_writer_pretty(&mut out, &v)?;
            writeln!(out)?;
        } else {
            writeln!(out, "berth: {}", if ready { "ready" } else { "starting" })?;
            table(&mut out, &containers.json()).context("writing the table")?;
        }
        Ok(if ready {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(3)
        })
    }
}

fn table(out: &mut impl Write, state: &serde_json::Value) -> std::io::Result<()> {
    let mut rows: Vec<[String; 4]> = Vec::new();
    for node in state["payload"]["softwareNodes"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if node["type"] != "CONTAINER" {
            continue;
        }
        let param = |k: &str| {
            node["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["key"] == k)
                .and_then(|p| p["value"].as_str())
                .unwrap_or("-")
                .to_string()
        };
        let id = node["id"].as_str().unwrap_or("");
        rows.push([
            id.split_once(':').map_or(id, |(_, n)| n).to_string(),
            node["version"].as_str().unwrap_or("-").to_string(),
            param("status"),
            param("image"),
        ]);
    }
    rows.sort();
    let header = ["NAME", "VERSION", "STATUS", "IMAGE"].map(String::from);
    let mut widths = [0usize; 4];
    for r in rows.iter().chain(std::iter::once(&header)) {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    for r in std::iter::once(&header).chain(rows.iter()) {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        writeln!(out, "{}", line.join("  ").trim_end())?;
    }
    if rows.is_empty() {
        writeln!(out, "(no containers)")?;
    }
    Ok(())
}
