//! Every setting in one place: command-line flags, `FLIGHTDECK_*` environment variables, an
//! optional TOML file, and defaults — in that order of precedence. Nothing else reads flags or env.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::http::auth::ApiKeys;
use crate::monitor::{MonitorConfig, RuleConfig};
use crate::store::StoreConfig;
use crate::ws::WsConfig;

pub mod lists;
pub mod settings;

pub use settings::ServeArgs;

/// flightdeck: the state server of a team of AI agents.
#[derive(Parser, Debug)]
#[command(
    name = "flightdeck",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)] // parsed once at start-up
pub enum Command {
    /// Run the server (the default when no command is given).
    Serve(ServeArgs),
    /// Verify every index entry against its record and every record against its index entries.
    /// Exits non-zero on any mismatch. The server must not be running on the directory.
    Check(CheckArgs),
    /// Write a consistent, compact copy of the database to a file (server stopped; while it
    /// runs, use POST /api/v1/admin/backup).
    Backup(BackupArgs),
    /// Put a backup in place as a data directory's database, after checking it.
    Restore(RestoreArgs),
    /// Rewrite the database compactly in place (server stopped): redb files do not shrink alone.
    Compact(CheckArgs),
    /// The load benchmark: workers running the sdlc workflow, status-query clients and WebSocket
    /// subscribers against a fresh server (or `--url`), reported against the service levels.
    /// Hands over to the `flightdeck-bench` executable (`flightdeck bench --help` for its options).
    Bench(BenchHandOff),
}

/// Everything after `bench`, passed to `flightdeck-bench` as it is.
#[derive(Args, Debug)]
#[command(disable_help_flag = true)]
pub struct BenchHandOff {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Directory holding the database [default: ./data]
    #[arg(
        long,
        env = "FLIGHTDECK_DATA_DIR",
        value_name = "DIR",
        default_value = "./data"
    )]
    pub data_dir: PathBuf,
    /// The backup file to write (must not exist)
    #[arg(long, value_name = "FILE")]
    pub to: PathBuf,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The backup file
    #[arg(long, value_name = "FILE")]
    pub from: PathBuf,
    /// Directory to restore into [default: ./data]
    #[arg(
        long,
        env = "FLIGHTDECK_DATA_DIR",
        value_name = "DIR",
        default_value = "./data"
    )]
    pub data_dir: PathBuf,
    /// Replace a database already in the directory
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Directory holding the database [default: ./data]
    #[arg(
        long,
        env = "FLIGHTDECK_DATA_DIR",
        value_name = "DIR",
        default_value = "./data"
    )]
    pub data_dir: PathBuf,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// What protects the server from slow or oversized clients.
#[derive(Clone, Debug)]
pub struct HttpLimits {
    pub header_read_timeout: std::time::Duration,
    pub idle_timeout: std::time::Duration,
    pub body_read_timeout: std::time::Duration,
    /// A response whose bytes make no progress for this long is dropped with its connection.
    pub write_timeout: std::time::Duration,
    pub max_header_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> HttpLimits {
        HttpLimits {
            header_read_timeout: std::time::Duration::from_secs(30),
            idle_timeout: std::time::Duration::from_secs(60),
            body_read_timeout: std::time::Duration::from_secs(30),
            write_timeout: std::time::Duration::from_secs(30),
            max_header_bytes: 16 * 1024,
        }
    }
}

/// The resolved settings the server runs with.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    /// The listen backlog asked of the kernel (which caps it at net.core.somaxconn).
    pub listen_backlog: u32,
    pub log_format: LogFormat,
    pub max_body_bytes: usize,
    pub max_connections: usize,
    /// How often due timers are fired.
    pub timer_tick: std::time::Duration,
    pub api_keys: ApiKeys,
    /// Browser origins allowed to call the API.
    pub cors: crate::http::cors::Cors,
    /// Host names a server without API keys answers to, besides addresses and localhost.
    pub allowed_hosts: crate::http::site::AllowedHosts,
    /// Online backups kept in `DATA_DIR/backups`.
    pub backup_keep: usize,
    /// Failed posts of one event before a webhook gives up on it (`webhooks`).
    pub webhook_max_attempts: u32,
    /// Largest task progress report, encoded (`api::progress`).
    pub max_progress_bytes: usize,
    /// A key may answer an approval about a task it claimed.
    pub allow_self_approval: bool,
    pub limits: HttpLimits,
    pub ws: WsConfig,
    pub monitor: MonitorConfig,
    pub store: StoreConfig,
    /// The config file, re-read for alert rules on SIGHUP.
    pub source: Option<PathBuf>,
    pub webhooks: Vec<crate::webhooks::Webhook>,
    /// Links into the console start with this (no trailing slash).
    pub public_url: Option<String>,
    /// The secret of the replication routes (`--replication-key`).
    pub replication_key: Option<crate::replication::Key>,
}

impl Config {
    /// Defaults only, with data in `data_dir`: what tests start from.
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            listen_backlog: 4096,
            log_format: LogFormat::Text,
            max_body_bytes: 1024 * 1024,
            max_connections: 10_000,
            timer_tick: std::time::Duration::from_millis(100),
            api_keys: ApiKeys::default(),
            cors: crate::http::cors::Cors::default(),
            allowed_hosts: crate::http::site::AllowedHosts::default(),
            backup_keep: 7,
            webhook_max_attempts: 20,
            max_progress_bytes: 65536,
            allow_self_approval: false,
            limits: HttpLimits::default(),
            ws: WsConfig::default(),
            monitor: MonitorConfig::default(),
            store: StoreConfig::new(data_dir),
            source: None,
            webhooks: Vec::new(),
            public_url: None,
            replication_key: None,
        }
    }

    /// Flags and environment over the config file over the defaults: every row of
    /// `settings!`, then the file's tables (webhooks, alert rules, workflows).
    pub fn resolve(args: &ServeArgs) -> Result<Config, String> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => ServeArgs::default(),
        };
        let s = settings::overlay(file, args);
        let mut config = Config::for_data_dir("./data");
        settings::apply(&s, &mut config)?;
        #[cfg(feature = "conformance")]
        {
            config.ws.echo = s.ws_echo.unwrap_or(false);
        }
        let mut names = std::collections::HashSet::new();
        for entry in &s.webhooks {
            let hook = crate::webhooks::Webhook::parse(entry)?;
            if !names.insert(hook.name.clone()) {
                return Err(format!(
                    "webhooks: the name {} is used twice (name them with `name`)",
                    hook.name
                ));
            }
            config.webhooks.push(hook);
        }
        for (i, price) in s.prices.iter().enumerate() {
            let rule = price.check(&format!("prices[{i}]"))?;
            if config
                .store
                .prices
                .iter()
                .any(|p| p.model == rule.model && p.since == rule.since)
            {
                return Err(format!(
                    "prices[{i}]: {} has two prices from the same date",
                    rule.model
                ));
            }
            config.store.prices.push(rule);
        }
        config.monitor.rules = merge_rules(config.monitor.rules, s.alert_rules.clone())?;
        for workflow in s.workflows {
            let workflow = workflow.parse().map_err(|e| format!("config file: {e}"))?;
            workflow
                .check_allowed(&config.store.agent_types, &config.store.artifact_types)
                .map_err(|e| format!("config file: {e}"))?;
            // A gate for (or escalating to) a key this server does not have waits for nobody.
            if config.api_keys.enabled() {
                for (i, phase) in workflow.phases.iter().enumerate() {
                    let escalate_to = phase.gate_timeout.iter().flat_map(|t| &t.escalate_to);
                    if let Some(name) = phase
                        .gate_assignees
                        .iter()
                        .chain(escalate_to)
                        .find(|n| !config.api_keys.has_name(n))
                    {
                        return Err(format!(
                            "config file: workflows.{}.phases[{i}]: no API key is named `{name}`",
                            workflow.name
                        ));
                    }
                }
            }
            match config
                .store
                .workflows
                .iter_mut()
                .find(|w| w.name == workflow.name)
            {
                Some(existing) => *existing = workflow,
                None => config.store.workflows.push(workflow),
            }
        }
        Ok(config)
    }
}

impl Config {
    /// The alert rules as the config file says now: the defaults, overridden by its `alert_rules`.
    pub fn reload_rules(&self) -> Result<Vec<RuleConfig>, String> {
        let defaults = crate::monitor::alerts::default_rules(self.monitor.min_free_disk_bytes);
        match &self.source {
            Some(path) => merge_rules(defaults, read_file(path)?.alert_rules),
            None => Ok(defaults),
        }
    }
}

/// Rules from the file replace the default of the same name, or are added.
fn merge_rules(
    mut rules: Vec<RuleConfig>,
    overrides: Vec<RuleConfig>,
) -> Result<Vec<RuleConfig>, String> {
    for rule in overrides {
        if rule.name.trim().is_empty() {
            return Err("alert_rules: every rule needs a name".into());
        }
        match rules.iter_mut().find(|r| r.name == rule.name) {
            Some(existing) => *existing = rule,
            None => rules.push(rule),
        }
    }
    Ok(rules)
}

fn read_file(path: &Path) -> Result<ServeArgs, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        let first = e.to_string().lines().next().unwrap_or("").to_string();
        format!("config file {}: {}: {first}", path.display(), e.message())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Durability;

    /// The defaults the rows declare are the ones the settings' owners start from
    /// (`Config::for_data_dir`, `StoreConfig::new`, `WsConfig`, `MonitorConfig`, `HttpLimits`).
    #[test]
    fn the_declared_defaults_are_the_owners_defaults() {
        let resolved = Config::resolve(&ServeArgs::default()).unwrap();
        let owners = Config::for_data_dir("./data");
        assert_eq!(format!("{resolved:?}"), format!("{owners:?}"));
    }

    /// A value other than the default, for each setting, from what clap knows of its flag.
    fn another_value(arg: &clap::Arg, default: Option<&str>, dir: &Path) -> String {
        let possible: Vec<String> = arg
            .get_possible_values()
            .iter()
            .map(|v| v.get_name().to_string())
            .collect();
        if let Some(other) = possible.iter().find(|v| Some(v.as_str()) != default) {
            return other.clone();
        }
        let value_name = arg
            .get_value_names()
            .and_then(|n| n.first())
            .map(|n| n.as_str())
            .unwrap_or("");
        match (value_name, default) {
            ("BOOL", Some(d)) => (d != "true").to_string(),
            ("ADDR", _) => "127.0.0.1:9".into(),
            ("DIR", _) => dir.join("elsewhere").display().to_string(),
            ("FILE", _) => {
                let file = dir.join("empty.toml");
                std::fs::write(&file, "").unwrap();
                file.display().to_string()
            }
            ("URL", _) => "http://flightdeck.test".into(),
            ("ORIGINS", _) => "http://a.example".into(),
            ("HOSTS", _) => "flightdeck.internal".into(),
            ("NAMES", _) => "coder,researcher".into(),
            ("KEY", _) => "someone:rw:0123456789abcdef".into(),
            (_, Some(number)) => {
                let n: u64 = number
                    .parse()
                    .unwrap_or_else(|_| panic!("{value_name} {number}"));
                (n * 2 + 1).to_string()
            }
            other => panic!("no sample value for {other:?}"),
        }
    }

    /// Every declared setting reaches `Config`: given by its flag, a value other than its default
    /// changes what the server runs with.
    #[test]
    fn every_declared_setting_reaches_the_config() {
        use clap::CommandFactory;
        let dir = tempfile::tempdir().unwrap();
        let defaults = format!("{:?}", Config::resolve(&ServeArgs::default()).unwrap());
        let command = Cli::command();
        for doc in settings::DOCS {
            let arg = command
                .get_arguments()
                .find(|a| a.get_id() == doc.key)
                .unwrap();
            let value = another_value(arg, doc.default, dir.path());
            let flag = format!("--{}={value}", arg.get_long().unwrap());
            let cli = Cli::try_parse_from(["flightdeck", flag.as_str()])
                .unwrap_or_else(|e| panic!("{flag}: {e}"));
            let config = Config::resolve(&cli.serve).unwrap_or_else(|e| panic!("{flag}: {e}"));
            assert_ne!(format!("{config:?}"), defaults, "{flag} changed nothing");
        }
        // Every flag of the server with a variable is a row (the conformance build's aside).
        let flags = command
            .get_arguments()
            .filter(|a| a.get_env().is_some() && a.get_id() != "ws_echo")
            .count();
        assert_eq!(flags, settings::DOCS.len());
    }

    /// The README's settings table is the one the rows make.
    #[test]
    fn the_readme_table_is_the_declared_settings() {
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
        let start = "<!-- settings: generated from src/config/settings.rs -->\n";
        let end = "<!-- settings: end -->";
        let from = readme.find(start).expect("the table's start marker") + start.len();
        let to = readme.find(end).expect("the table's end marker");
        let table = settings::markdown_table();
        if std::env::var_os("FLIGHTDECK_BLESS").is_some() {
            let updated = format!("{}{table}{}", &readme[..from], &readme[to..]);
            std::fs::write(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"), updated).unwrap();
            return;
        }
        assert_eq!(
            readme[from..to],
            table,
            "README.md's settings table differs from the rows; FLIGHTDECK_BLESS=1 cargo test \
             the_readme_table rewrites it"
        );
    }

    #[test]
    fn flags_win_over_the_file_which_wins_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\ndurability = \"none\"\nmax_body_bytes = 10\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(file),
            max_body_bytes: Some(20),
            ..Default::default()
        };
        let c = Config::resolve(&args).unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.store.durability, Durability::None);
        assert_eq!(c.max_body_bytes, 20);
        assert_eq!(c.store.data_dir, PathBuf::from("./data"));
    }

    #[test]
    fn socket_and_websocket_budget_settings_from_the_file_with_their_defaults() {
        let defaults = Config::resolve(&ServeArgs::default()).unwrap();
        assert_eq!(defaults.listen_backlog, 4096);
        assert_eq!(defaults.ws.total_queue_bytes, 512 << 20);
        assert_eq!(defaults.ws.socket_send_buffer, 256 << 10);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.toml");
        std::fs::write(
            &file,
            "listen_backlog = 77\nws_total_queue_mib = 3\nsocket_send_buffer_kib = 0\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(file.clone()),
            ..Default::default()
        };
        let c = Config::resolve(&args).unwrap();
        assert_eq!(c.listen_backlog, 77);
        assert_eq!(c.ws.total_queue_bytes, 3 << 20);
        assert_eq!(c.ws.socket_send_buffer, 0, "0: the kernel's autotuning");
        std::fs::write(&file, "listen_backlog = 0\n").unwrap();
        let err = Config::resolve(&args).unwrap_err();
        assert!(err.contains("listen_backlog"), "{err}");
    }

    #[test]
    fn boolean_flags_override_the_file_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.toml");
        std::fs::write(&file, "protect_metrics = true\n").unwrap();
        let path = file.to_str().unwrap();
        let resolve = |extra: &[&str]| {
            let mut argv = vec!["flightdeck", "--config", path];
            argv.extend_from_slice(extra);
            let cli = Cli::try_parse_from(argv).unwrap();
            Config::resolve(&cli.serve)
                .unwrap()
                .api_keys
                .protect_metrics
        };
        assert!(resolve(&[]), "the file's true");
        assert!(
            !resolve(&["--protect-metrics=false"]),
            "the flag's false wins"
        );
        assert!(resolve(&["--protect-metrics"]), "a bare flag is true");
        std::fs::write(&file, "protect_metrics = false\n").unwrap();
        assert!(resolve(&["--protect-metrics=true"]));
        assert!(!resolve(&[]));
    }

    #[test]
    fn lists_from_flags_replace_the_files_and_the_file_takes_both_spellings() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.toml");
        std::fs::write(
            &file,
            "cors_origins = \"http://a.example, http://b.example\"\n\
             api_keys = [\"ro:file-key-0123456789\"]\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let resolve = |extra: &[&str]| {
            let mut argv = vec!["flightdeck", "--config", path];
            argv.extend_from_slice(extra);
            Config::resolve(&Cli::try_parse_from(argv).unwrap().serve).unwrap()
        };
        let c = resolve(&[]);
        assert!(c.cors.allows("http://b.example") && !c.cors.allows("http://c.example"));
        // The file's read-only key: it reads, it may not write.
        let write = |c: &Config, key: &str| {
            c.api_keys
                .authorize(
                    crate::http::Route::ProjectsCreate,
                    crate::http::auth::Credentials {
                        header: Some(&format!("Bearer {key}")),
                        query: None,
                    },
                )
                .map(|_| ())
                .map_err(|e| e.status.as_u16())
        };
        assert_eq!(write(&c, "file-key-0123456789"), Err(403));
        let c = resolve(&[
            "--cors-origins",
            "http://c.example",
            "--api-key",
            "flag-key-0123456789",
        ]);
        assert!(c.cors.allows("http://c.example") && !c.cors.allows("http://a.example"));
        assert_eq!(write(&c, "file-key-0123456789"), Err(401));
        assert_eq!(write(&c, "flag-key-0123456789"), Ok(()));
        std::fs::write(&file, "cors_origins = [\"http://d.example\"]\n").unwrap();
        assert!(resolve(&[]).cors.allows("http://d.example"));
    }

    #[test]
    fn unknown_keys_and_zero_limits_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.toml");
        std::fs::write(&file, "listn = \"x\"\n").unwrap();
        let err = Config::resolve(&ServeArgs {
            config: Some(file),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.contains("listn"), "{err}");
        let err = Config::resolve(&ServeArgs {
            writer_queue: Some(0),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.contains("writer_queue"), "{err}");
    }
}
