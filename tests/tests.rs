//! berth's integration suite: the binary, the published schemas and the real
//! engine, registry and broker that `scripts/test-env.sh` starts.

mod broker;
mod rabbitmq;
mod util;

mod agent;
mod api;
mod check;
mod cli_apply;
mod cli_plan;
mod cli_state;
mod cli_upgrade;
mod cli_validate;
mod corpus;
mod corpus_sources;
mod credentials;
mod environment;
mod faults;
mod fleet;
mod fleet_isolation;
mod fleet_rabbitmq;
mod hooks;
mod inspect_cache;
mod jobs;
mod kanto_config;
mod lenient;
mod migrations;
mod policy;
mod runtime_docker;
mod schemas;
mod secrets;
mod tls;
mod undo_log;
mod update_manager;
