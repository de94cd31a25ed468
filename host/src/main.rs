//! The `edgeguard` command line.

use clap::{Parser, Subcommand};
use edgeguard::app::{self, RunOptions};
use edgeguard::capabilities::Capability;
use edgeguard::config::{Config, Overrides};
use edgeguard::fleet::trust::signing;
use edgeguard::runtime::{CompileBounds, Compiler, Runtime};
use edgeguard::sandbox::LoadedPlugin;
use std::path::PathBuf;
use std::process::ExitCode;

/// On-device security collector for Linux IoT Edge devices, with sandboxed WebAssembly collectors.
#[derive(Parser)]
#[command(name = "edgeguard", version, about, propagate_version = true)]
struct Cli {
    /// Log filter (e.g. `info`, `debug`, `edgeguard=debug,plugin=trace`); default from EDGEGUARD_LOG, else `info`.
    #[arg(long, global = true, value_name = "FILTER")]
    log: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the collectors and write security messages (JSON lines).
    Run {
        /// Configuration file (TOML); default: the embedded configuration with every built-in plugin.
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Collect every plugin once, send everything queued (whatever the send frequencies) and exit.
        #[arg(long)]
        once: bool,
        /// Append messages to FILE instead of writing them to stdout.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Directory of plugin files (overrides agent.plugin_dir).
        #[arg(long, value_name = "DIR")]
        plugin_dir: Option<PathBuf>,
        /// Where the host's / is visible (overrides agent.host_root).
        #[arg(long, value_name = "DIR")]
        host_root: Option<PathBuf>,
        /// The Docker daemon's socket (overrides agent.docker_socket).
        #[arg(long, value_name = "PATH")]
        docker_socket: Option<PathBuf>,
        /// Compiled-plugin cache directory (overrides agent.cache_dir).
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
        /// Queued events and pipeline state (overrides pipeline.state_dir).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Run as an IoT Edge module: messages to edgeHub, configuration from the module twin.
        /// The default when the IOTEDGE_* variables are set and output.sink is `auto`.
        #[arg(long, conflicts_with = "output")]
        edge: bool,
    },
    /// Inspect plugin components.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Analyse IoT Edge deployments for security findings: manifests, templates, layered
    /// deployments and the `az iot edge deployment` JSON.
    #[command(after_help = "\
Each input is analysed alone; with --merge, all of them as the deployments of one device: the
base deployment of highest priority with the layered ones applied over it by priority.
A part that cannot be read (a createOptions that is not JSON, a route that does not parse, a
module without an image) is a finding of its own (manifest-error, Medium); a template's
placeholder is one too (template-placeholder, Low). JSON files in a directory that are no
deployment (a package.json) are left aside, and said so on stderr.

Exit codes:
  0  no finding at or above --fail-on (or no --fail-on)
  1  a finding at or above --fail-on
  2  an input could not be read, is not JSON, or is not a deployment at all (named inputs);
     the findings of the other inputs are still printed
")]
    CheckManifest {
        /// Deployment files, directories (their *.json files, recursively), or - for stdin.
        #[arg(required = true, value_name = "FILE")]
        inputs: Vec<PathBuf>,
        /// How to print the findings.
        #[arg(long, value_enum, default_value = "table")]
        format: edgeguard::cli::check_manifest::Format,
        /// The same as --format json.
        #[arg(long, conflicts_with = "format")]
        json: bool,
        /// Analyse the inputs as one device's deployments, merged by priority.
        #[arg(long)]
        merge: bool,
        /// Exit with 1 when a finding is at least this severe (low, medium, high).
        #[arg(long, value_name = "SEVERITY", value_parser = parse_severity)]
        fail_on: Option<edgeguard_manifest::Severity>,
    },
    /// Check configuration files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Sigma rules.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Internal: compiles the component on stdin into an artifact on stdout, in the child
    /// process edgeguard bounds in time and memory.
    #[command(name = "compile-plugin", hide = true)]
    CompilePlugin,
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Make an ed25519 signing key: the private key goes to FILE, the public key (for
    /// `[remote] signing_keys`) to stdout.
    Keygen {
        /// Where to write the private key (created with mode 0600; never overwritten).
        private_key: PathBuf,
    },
    /// Sign a plugin component: prints its sha256 and signature as the twin's collector entry takes them.
    Sign {
        file: PathBuf,
        /// The private key file made by `plugin keygen`.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The name the devices know the key by (in `[remote] signing_keys`).
        #[arg(long, value_name = "NAME")]
        key_name: String,
    },
    /// Show a plugin's self-description, WIT version, imports and size.
    Inspect {
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Compiled-plugin cache directory.
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Load every rule (`*.yml`, `*.yaml`) under DIR and say, rule by rule, whether edgeguard
    /// evaluates it, skips it (and what it needs that edgeguard lacks) or refuses it (and why).
    /// Exits 0 when none is refused, 1 when one is, 2 when DIR holds no rule file.
    Check {
        dir: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file; exits 0 when it is valid.
    Check { file: PathBuf },
    /// Print the embedded default configuration.
    Default,
}

/// Exit codes: 0 success, 1 runtime failure, 2 bad input (usage, configuration, plugin).
const EXIT_FAILURE: u8 = 1;
const EXIT_BAD_INPUT: u8 = 2;

fn main() -> ExitCode {
    edgeguard::footprint::limit_heap_arenas();
    let cli = Cli::parse();
    let filter = cli
        .log
        .clone()
        .or_else(|| std::env::var("EDGEGUARD_LOG").ok())
        .unwrap_or_else(|| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Command::CompilePlugin = cli.command {
        return edgeguard::runtime::compiler::serve();
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("starting the tokio runtime");
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("edgeguard: {message}");
            ExitCode::from(code)
        }
    }
}

async fn dispatch(command: Command) -> Result<(), (u8, String)> {
    let bad_input = |e: &dyn std::fmt::Display| (EXIT_BAD_INPUT, e.to_string());
    match command {
        Command::Run {
            config: config_file,
            once,
            output,
            plugin_dir,
            host_root,
            docker_socket,
            cache_dir,
            state_dir,
            edge,
        } => {
            let mut config = match &config_file {
                Some(path) => Config::load(path).map_err(|e| bad_input(&e))?,
                None => Config::embedded_default(),
            };
            let overrides = Overrides {
                plugin_dir,
                host_root,
                docker_socket,
                cache_dir,
                state_dir,
            };
            overrides.apply(&mut config);
            app::run(RunOptions {
                config,
                config_file,
                overrides,
                once,
                output,
                edge,
                compile_in_children: true,
            })
            .await
            .map_err(|e| (EXIT_FAILURE, format!("{e:#}")))
        }
        Command::Plugin {
            command: PluginCommand::Keygen { private_key },
        } => {
            let seed = signing::new_seed()
                .map_err(|e| (EXIT_FAILURE, format!("cannot read random bytes: {e}")))?;
            let key =
                signing::key_from_text(&signing::encode(&seed)).map_err(|e| (EXIT_FAILURE, e))?;
            write_private(&private_key, &signing::encode(&seed))
                .map_err(|e| bad_input(&format!("{}: {e}", private_key.display())))?;
            eprintln!(
                "private key written to {} (keep it off the devices)",
                private_key.display()
            );
            println!("{}", signing::encode(key.verifying_key().as_bytes()));
            Ok(())
        }
        Command::Plugin {
            command:
                PluginCommand::Sign {
                    file,
                    key,
                    key_name,
                },
        } => {
            let text = std::fs::read_to_string(&key)
                .map_err(|e| bad_input(&format!("{}: {e}", key.display())))?;
            let key = signing::key_from_text(&text)
                .map_err(|e| bad_input(&format!("{}: {e}", key.display())))?;
            let bytes =
                std::fs::read(&file).map_err(|e| bad_input(&format!("{}: {e}", file.display())))?;
            let signature = serde_json::json!({
                "sha256": edgeguard::runtime::artifact_cache::sha256_hex(&bytes),
                "signature": { "key": key_name, "ed25519": signing::sign(&key, &bytes) },
            });
            println!(
                "{}",
                serde_json::to_string_pretty(&signature).expect("JSON")
            );
            Ok(())
        }
        Command::Plugin {
            command:
                PluginCommand::Inspect {
                    file,
                    json,
                    cache_dir,
                },
        } => {
            let cache_dir = cache_dir.unwrap_or_else(|| Config::default().cache_dir());
            let compiler = Compiler::this_binary(CompileBounds::DEFAULT);
            let runtime = Runtime::with_compiler(&cache_dir, compiler)
                .map_err(|e| (EXIT_FAILURE, format!("{e:#}")))?;
            let name = file
                .file_stem()
                .map_or_else(|| "plugin".into(), |s| s.to_string_lossy().into_owned());
            // Inspection grants every capability (no directories): describe() must not use them anyway.
            let loaded = LoadedPlugin::load_file(&runtime, &name, &file, Capability::ALL, &[])
                .await
                .map_err(|e| bad_input(&e))?;
            print_inspection(&loaded, json);
            Ok(())
        }
        Command::Config {
            command: ConfigCommand::Check { file },
        } => {
            let config = Config::load(&file).map_err(|e| bad_input(&e))?;
            let enabled = config.plugins.iter().filter(|p| p.enabled).count();
            println!(
                "{}: valid ({} plugins, {enabled} enabled)",
                file.display(),
                config.plugins.len()
            );
            let settings = config
                .pipeline_settings()
                .map_err(|invalid| (EXIT_BAD_INPUT, invalid.to_string()))?;
            for issue in settings.asc.check() {
                println!("  warning: asc.{issue}");
            }
            for p in &config.plugins {
                let path = config.plugin_path(p);
                if !path.exists() {
                    println!(
                        "  note: plugin `{}`: {} does not exist here",
                        p.name,
                        path.display()
                    );
                }
            }
            Ok(())
        }
        // Served by `main` before the runtime starts.
        Command::CompilePlugin => unreachable!("compile-plugin is served before dispatch"),
        Command::CheckManifest {
            inputs,
            format,
            json,
            merge,
            fail_on,
        } => {
            use edgeguard::cli::check_manifest::{self as check, Format, Options};
            let options = Options {
                inputs,
                format: if json { Format::Json } else { format },
                merge,
                fail_on,
            };
            let (text, code, report) = check::run(&options);
            for name in &report.skipped {
                eprintln!("edgeguard: {name}: not a deployment, left aside");
            }
            for (name, why) in &report.failures {
                eprintln!("edgeguard: {name}: {why}");
            }
            edgeguard::cli::print_quietly(&text)
                .map_err(|e| (EXIT_FAILURE, format!("writing the report: {e}")))?;
            match code {
                check::EXIT_OK => Ok(()),
                check::EXIT_FINDINGS => Err((
                    code,
                    format!("findings at or above {}", fail_on.expect("a threshold")),
                )),
                _ => Err((
                    code,
                    format!("{} inputs could not be analysed", report.failures.len()),
                )),
            }
        }
        Command::Rules {
            command: RulesCommand::Check { dir, json },
        } => rules_check(&dir, json),
        Command::Config {
            command: ConfigCommand::Default,
        } => {
            print!("{}", edgeguard::config::EMBEDDED_DEFAULT);
            Ok(())
        }
    }
}

/// Rule files under `dir` (depth-first, sorted), at most `MAX_RULE_FILES`, 32 levels deep.
fn rule_files(dir: &std::path::Path) -> std::io::Result<Vec<PathBuf>> {
    const MAX_RULE_FILES: usize = 100_000;
    edgeguard::cli::files_under(dir, &["yml", "yaml"], MAX_RULE_FILES).map(|(files, _)| files)
}

fn rules_check(dir: &std::path::Path, json: bool) -> Result<(), (u8, String)> {
    use edgeguard_sigma::{MAX_RULE_BYTES, Rule, edgeguard::source_of};
    use std::io::Write;
    let files = rule_files(dir).map_err(|e| (EXIT_BAD_INPUT, format!("{}: {e}", dir.display())))?;
    if files.is_empty() {
        return Err((
            EXIT_BAD_INPUT,
            format!("{}: no rule file (*.yml, *.yaml)", dir.display()),
        ));
    }
    // (file, title, status, event or reason)
    let mut rows: Vec<(String, String, &str, String)> = Vec::new();
    for file in &files {
        let shown = file.strip_prefix(dir).unwrap_or(file).display().to_string();
        let text = match std::fs::metadata(file) {
            Ok(m) if m.len() > MAX_RULE_BYTES as u64 => Err(format!(
                "{} bytes, more than the {MAX_RULE_BYTES} a rule file may have",
                m.len()
            )),
            _ => std::fs::read_to_string(file).map_err(|e| e.to_string()),
        };
        let text = match text {
            Ok(t) => t,
            Err(e) => {
                rows.push((shown, String::new(), "refused", e));
                continue;
            }
        };
        for loaded in Rule::load_all(&text) {
            rows.push(match loaded {
                Ok(rule) => match source_of(&rule) {
                    Ok(source) => (
                        shown.clone(),
                        rule.title,
                        "loaded",
                        source.event().to_owned(),
                    ),
                    Err(why) => (shown.clone(), rule.title, "skipped", why),
                },
                Err(e) => (
                    shown.clone(),
                    e.title.unwrap_or_default(),
                    "refused",
                    e.reason,
                ),
            });
        }
    }
    let count = |status: &str| rows.iter().filter(|r| r.2 == status).count();
    let (loaded, skipped, refused) = (count("loaded"), count("skipped"), count("refused"));
    let mut out = std::io::stdout().lock();
    // A closed stdout (`| head`) ends the listing quietly.
    let _ = (|| -> std::io::Result<()> {
        if json {
            let list: Vec<serde_json::Value> = rows
                .iter()
                .map(|(file, title, status, what)| {
                    let mut v = serde_json::json!({"file": file, "title": title, "status": status});
                    v[if *status == "loaded" {
                        "event"
                    } else {
                        "reason"
                    }] = what.clone().into();
                    v
                })
                .collect();
            writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&list).expect("JSON")
            )?;
        } else {
            for (file, title, status, what) in &rows {
                writeln!(out, "{status:<8} {file}: {title}: {what}")?;
            }
            writeln!(
                out,
                "{} rules in {} files: {loaded} evaluated, {skipped} skipped, {refused} refused",
                rows.len(),
                files.len()
            )?;
        }
        out.flush()
    })();
    if refused > 0 {
        return Err((EXIT_FAILURE, format!("{refused} rules refused")));
    }
    Ok(())
}

/// Creates `path` readable by its owner only; refuses to replace an existing key.
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    writeln!(file, "{text}")
}

fn parse_severity(text: &str) -> Result<edgeguard_manifest::Severity, String> {
    edgeguard_manifest::Severity::parse(text)
        .ok_or_else(|| format!("`{text}`: expected low, medium or high"))
}

fn print_inspection(p: &LoadedPlugin, json: bool) {
    use edgeguard::sandbox::instance::Role;
    let group = edgeguard::scheduler::PluginSpec::group_for(p, None).name();
    let (kind, wants) = match &p.role {
        Role::Collector => ("collector", None),
        Role::Analyzer { wants } => ("analyzer", Some(wants)),
    };
    if json {
        let value = serde_json::json!({
            "name": p.info.name,
            "version": p.info.version,
            "kind": kind,
            "wants": wants,
            "description": p.info.description,
            "events": p.info.events,
            "capabilities": p.info.capabilities,
            "default_group": group,
            "wit": p.wit_version,
            "imports": p.imports,
            "size": p.size,
            "sha256": p.sha256,
        });
        println!("{}", serde_json::to_string_pretty(&value).expect("JSON"));
        return;
    }
    println!("name:          {}", p.info.name);
    println!("version:       {}", p.info.version);
    println!("kind:          {kind}");
    if let Some(wants) = wants {
        println!("wants:         {}", wants.join(", "));
    }
    println!("description:   {}", p.info.description);
    println!("events:        {}", p.info.events.join(", "));
    println!("capabilities:  {}", p.info.capabilities.join(", "));
    println!("default group: {group}");
    println!("wit:           {}", p.wit_version);
    println!("size:          {} bytes", p.size);
    println!("sha256:        {}", p.sha256);
    println!("imports:");
    for import in &p.imports {
        println!("  {import}");
    }
}
