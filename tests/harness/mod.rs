//! Shared by the end-to-end tests: locating the build, building test plugins, starting the
//! runtime, and validating messages against the official ASC schemas.

pub mod auditd;
pub mod docker;
pub mod edgehub;
pub mod http;
pub mod module;
pub mod schema;
pub mod utmp;
pub mod workload;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

pub fn repo_root() -> PathBuf {
    // Cargo says where the package is when it runs it; the path compiled in is where it was
    // built, which a build directory shared by two clones (see `target_dir`) may not be.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .parent()
        .expect("tests/ lives in the repository")
        .to_owned()
}

/// The build directory `cargo xtask test` used (CARGO_TARGET_DIR), else `target/`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo_root().join("target"), PathBuf::from)
}

/// The `edgeguard` binary of this build. It is built by `cargo xtask test` before the tests run.
pub fn edgeguard_bin() -> PathBuf {
    let bin = target_dir().join("release/edgeguard");
    assert!(
        bin.exists(),
        "{} is missing: run the suite with `cargo xtask test`",
        bin.display()
    );
    bin
}

/// Builds a plugin crate of this workspace for wasm32-wasip2 (a no-op when up to date) and
/// returns its component. Plugins use their own target directory, so this never waits on the
/// lock `cargo test` holds.
pub fn plugin(package: &str) -> PathBuf {
    static BUILD: Mutex<()> = Mutex::new(());
    let _one_at_a_time = BUILD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let wasm_target = target_dir().join("wasm");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(repo_root())
        .env("CARGO_TARGET_DIR", &wasm_target)
        .args([
            "build",
            "--quiet",
            "--profile",
            "plugin",
            "--target",
            "wasm32-wasip2",
            "-p",
            package,
        ])
        .status()
        .expect("running cargo");
    assert!(status.success(), "building plugin {package} failed");
    let file = wasm_target.join(format!(
        "wasm32-wasip2/plugin/{}.wasm",
        package.replace('-', "_")
    ));
    assert!(file.exists(), "{} was not produced", file.display());
    file
}

/// `<dir>/plugins`, holding the built-in collectors `names` (`process` as `process.wasm`).
pub fn builtin_plugins(dir: &Path, names: &[&str]) -> PathBuf {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).expect("creating the plugin directory");
    for name in names {
        std::fs::copy(
            plugin(&format!("edgeguard-plugin-{name}")),
            plugins.join(format!("{name}.wasm")),
        )
        .expect("copying a plugin");
    }
    plugins
}

/// `edgeguard run --once --config <config>`, which must succeed: every message it printed.
pub fn run_once(config: &Path) -> Vec<serde_json::Value> {
    let out = Command::new(edgeguard_bin())
        .args(["--log", "warn", "run", "--once", "--config"])
        .arg(config)
        .output()
        .expect("running edgeguard");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("UTF-8 messages")
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is a JSON message"))
        .collect()
}

/// The events named `name` in `messages`, in order.
pub fn events_named<'a>(
    messages: &'a [serde_json::Value],
    name: &str,
) -> Vec<&'a serde_json::Value> {
    messages
        .iter()
        .flat_map(|m| m["Events"].as_array().expect("a message has Events"))
        .filter(|e| e["Name"] == name)
        .collect()
}

/// `edgeguard --log info run --config <config>` with its messages into `<dir>/out.jsonl` and
/// its log into `<dir>/log`: the running process, and the two paths.
pub fn run_logged(config: &Path, dir: &Path) -> (std::process::Child, PathBuf, PathBuf) {
    let (out, log) = (dir.join("out.jsonl"), dir.join("log"));
    let child = Command::new(edgeguard_bin())
        .args(["--log", "info", "run", "--config"])
        .arg(config)
        .arg("--output")
        .arg(&out)
        .stderr(std::fs::File::create(&log).expect("creating the log file"))
        .spawn()
        .expect("starting edgeguard");
    (child, out, log)
}

/// The binaries users run, each with its plugin directory: the `release` build of `cargo xtask
/// run`, and the image's static `dist` build when `cargo xtask image` (or `bench`) has staged
/// it (else said on stderr).
pub fn user_binaries() -> Vec<(&'static str, PathBuf, PathBuf)> {
    let release = edgeguard_bin();
    let release_plugins = release.with_file_name("plugins");
    let image = target_dir().join("image");
    let mut binaries = vec![("release", release, release_plugins)];
    if image.join("edgeguard").exists() {
        binaries.push(("dist", image.join("edgeguard"), image.join("plugins")));
    } else {
        eprintln!(
            "no dist binary in {}: run `cargo xtask image` first",
            image.display()
        );
    }
    binaries
}

/// A memory figure of process `pid` from its `/proc/<pid>/status` (`VmRSS`, `VmHWM`,
/// `RssAnon`), in bytes. Panics when it cannot be read: a process already gone must not pass
/// for one that stayed small.
pub fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/status: {e}"));
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    kib << 10
}

/// The fields of `/proc/<pid>/stat` after the command name (which may hold anything): the
/// state first, then the parent. None once the process is gone.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// The processes whose parent is `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("reading /proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| {
            stat_fields(child).and_then(|f| f.get(1)?.parse::<u32>().ok()) == Some(pid)
        })
        .collect()
}

/// Whether `pid` runs: it exists and has not ended (a zombie waits to be reaped).
pub fn is_running(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|f| f.first().is_some_and(|state| state != "Z"))
}

/// Polls `done` every 20 ms until it holds or `within` has passed; whether it held.
pub fn poll_until(within: std::time::Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + within;
    loop {
        if done() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `program` run by `wrapper` (`unshare --net`, say; nothing: directly).
pub fn command_under(wrapper: &[&str], program: &Path) -> Command {
    match wrapper.split_first() {
        Some((wrapper, args)) => {
            let mut command = Command::new(wrapper);
            command.args(args).arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// `edgeguard run --once` under `wrapper` (`unshare --net`, say) with the one built-in
/// collector `name` granted `grants` (`"processes", "log"`), messages into `<dir>/out.jsonl`:
/// the directory and the log. It must succeed.
pub fn run_once_under(wrapper: &[&str], name: &str, grants: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let plugins = builtin_plugins(dir.path(), &[name]);
    let config = write_config(
        dir.path(),
        "edgeguard.toml",
        &plugins,
        &format!("[[plugin]]\nname = \"{name}\"\nfile = \"{name}.wasm\"\ngrants = [{grants}]\n"),
    );
    let output = command_under(wrapper, &edgeguard_bin())
        .args(["run", "--once", "--config"])
        .arg(&config)
        .arg("--output")
        .arg(dir.path().join("out.jsonl"))
        .output()
        .expect("running edgeguard");
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{log}");
    (dir, log)
}

/// `count` processes started one after the other (`/bin/true {tag}-{i}`), each reaped at once:
/// their pids.
pub fn short_lived_processes(tag: &str, count: usize) -> Vec<u32> {
    (0..count)
        .map(|i| {
            let mut child = Command::new("/bin/true")
                .arg(format!("{tag}-{i}"))
                .spawn()
                .expect("starting /bin/true");
            let pid = child.id();
            assert!(child.wait().expect("reaping /bin/true").success());
            pid
        })
        .collect()
}

/// `count` TCP connections to `listener`, one byte each, closed by both sides at once: the
/// client ports.
pub fn short_connections(listener: &std::net::TcpListener, count: usize) -> Vec<u16> {
    use std::io::Write;
    (0..count)
        .map(|_| {
            let mut client =
                std::net::TcpStream::connect(listener.local_addr().expect("listening"))
                    .expect("connecting");
            let (server, _) = listener.accept().expect("accepting");
            client.write_all(b"x").expect("writing");
            let port = client.local_addr().expect("connected").port();
            drop(client);
            drop(server);
            port
        })
        .collect()
}

/// Both ways to compile: in this process, and in children of the release binary (as
/// `edgeguard run` does).
pub fn compilers() -> [edgeguard::runtime::Compiler; 2] {
    use edgeguard::runtime::{CompileBounds, Compiler};
    [
        Compiler::InProcess {
            time: CompileBounds::DEFAULT.time,
        },
        Compiler::Child {
            exe: edgeguard_bin(),
            bounds: CompileBounds::DEFAULT,
        },
    ]
}

/// A runtime compiling with `compiler`, with a fresh, private artifact cache.
pub fn runtime_with(
    compiler: edgeguard::runtime::Compiler,
) -> (edgeguard::runtime::Runtime, tempfile::TempDir) {
    let cache = tempfile::tempdir().expect("temporary directory");
    let runtime = edgeguard::runtime::Runtime::with_compiler(cache.path(), compiler);
    (runtime.expect("runtime"), cache)
}

/// A runtime with a fresh, private artifact cache.
pub fn runtime() -> (edgeguard::runtime::Runtime, tempfile::TempDir) {
    let cache = tempfile::tempdir().expect("temporary directory");
    (
        edgeguard::runtime::Runtime::new(cache.path()).expect("runtime"),
        cache,
    )
}

/// Limits for tests: defaults with a short deadline, so a looping plugin is caught quickly.
pub fn test_limits() -> edgeguard::config::Limits {
    edgeguard::config::Limits {
        call_timeout: edgeguard::units::Span(std::time::Duration::from_millis(300)),
        restart_backoff: edgeguard::units::Span(std::time::Duration::from_millis(100)),
        restart_backoff_max: edgeguard::units::Span(std::time::Duration::from_millis(400)),
        ..Default::default()
    }
}

/// The effective user id of the test process.
pub fn euid() -> u32 {
    unsafe extern "C" {
        fn geteuid() -> u32;
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { geteuid() }
}

/// A sink that keeps what it is sent, for tests of the pipeline. It acknowledges each message
/// at once, or refuses the next `fail_next` ones, as a broker that is down would.
#[derive(Clone, Default)]
pub struct MemorySink {
    pub messages: std::sync::Arc<Mutex<Vec<serde_json::Value>>>,
    pub sizes: std::sync::Arc<Mutex<Vec<usize>>>,
    pub fail_next: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl MemorySink {
    pub fn taken(&self) -> Vec<serde_json::Value> {
        std::mem::take(&mut self.messages.lock().unwrap())
    }

    /// Every event of every message received so far.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .flat_map(|m| m["Events"].as_array().unwrap().clone())
            .collect()
    }
}

impl edgeguard::output::Sink for MemorySink {
    fn describe(&self) -> String {
        "memory".into()
    }

    fn send(&mut self, message: edgeguard::output::Message) -> edgeguard::output::Sending<'_> {
        use std::sync::atomic::Ordering;
        let fail = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if !fail {
            self.sizes.lock().unwrap().push(message.body.len());
            self.messages
                .lock()
                .unwrap()
                .push(serde_json::from_slice(&message.body).expect("a message is JSON"));
        }
        Box::pin(async move {
            let ack: edgeguard::output::Acknowledgement = if fail {
                Box::pin(async {
                    Err(edgeguard::output::SinkError::Refused(
                        "the test broker is down".into(),
                    ))
                })
            } else {
                edgeguard::output::acknowledged()
            };
            Ok(ack)
        })
    }
}

/// A ProcessCreate as the process plugin reports it.
pub fn process_create(pid: u32, command_line: &str) -> edgeguard::events::SecurityEvent {
    use edgeguard::events::{Category, EventType, SecurityEvent};
    SecurityEvent::new(
        "ProcessCreate",
        Category::Triggered,
        EventType::Security,
        vec![serde_json::json!({
            "Executable": "/usr/bin/python3.11",
            "ProcessId": pid,
            "ParentProcessId": 1,
            "UserId": "1000",
            "UserName": "edge",
            "CommandLine": command_line,
        })],
    )
}

/// A custom event of the project's own family.
pub fn custom_event(name: &str, item: serde_json::Value) -> edgeguard::events::SecurityEvent {
    use edgeguard::events::{Category, EventType, Family, SecurityEvent};
    SecurityEvent {
        family: Family::Edgeguard,
        ..SecurityEvent::new(name, Category::Triggered, EventType::Security, vec![item])
    }
}

/// Events wrapped in a message envelope of their family, as the pipeline sends them.
pub fn message_of(events: &[edgeguard::events::SecurityEvent]) -> serde_json::Value {
    let family = events
        .first()
        .map_or(edgeguard::events::Family::Asc, |e| e.family);
    let mut bytes = edgeguard::output::envelope::prefix(AGENT_ID, family);
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            bytes.push(b',');
        }
        bytes.extend_from_slice(&e.to_bytes());
    }
    bytes.extend_from_slice(edgeguard::output::envelope::SUFFIX);
    serde_json::from_slice(&bytes).expect("a message is JSON")
}

/// The AgentId of the test configurations and messages.
pub const AGENT_ID: &str = "9c647395-b913-4997-a732-a7fe7303b649";

/// Writes `dir/name`, a configuration for a run on private directories: plugins from
/// `plugin_dir`, compiled cache and pipeline state under `dir`, a fixed AgentId; then `rest`
/// (more tables: `[asc]`, `[[plugin]]`, ...).
pub fn write_config(dir: &Path, name: &str, plugin_dir: &Path, rest: &str) -> PathBuf {
    write_config_with_agent(dir, name, plugin_dir, "", rest)
}

/// As [`write_config`], with `agent` (TOML keys) added to the `[agent]` section.
pub fn write_config_with_agent(
    dir: &Path,
    name: &str,
    plugin_dir: &Path,
    agent: &str,
    rest: &str,
) -> PathBuf {
    let text = format!(
        "[agent]\nid = \"{AGENT_ID}\"\nplugin_dir = {plugin_dir:?}\ncache_dir = {:?}\n{agent}\n[pipeline]\nstate_dir = {:?}\n{rest}",
        dir.join("cache"),
        dir.join("state")
    );
    let path = dir.join(name);
    std::fs::write(&path, text).expect("writing a test configuration");
    path
}

/// Asserts that the plugin `package` is refused when loaded with only `grants`, naming `import`.
pub async fn assert_refused(
    package: &str,
    grants: &[edgeguard::capabilities::Capability],
    import: &str,
) {
    let (rt, _cache) = runtime();
    let err =
        edgeguard::sandbox::LoadedPlugin::load_file(&rt, package, &plugin(package), grants, &[])
            .await
            .err()
            .expect("refused");
    assert!(
        matches!(err, edgeguard::sandbox::LoadError::NotGranted { .. }),
        "{err}"
    );
    assert!(err.to_string().contains(import), "{err}");
}

/// One collection, as (event name, payload item) pairs.
pub async fn collect_items(
    instance: &mut edgeguard::sandbox::PluginInstance,
) -> Vec<(String, serde_json::Value)> {
    let events = instance
        .collect()
        .await
        .expect("no fault")
        .expect("no plugin error");
    events
        .into_iter()
        .flat_map(|e| {
            let e = edgeguard::events::from_plugin(e).unwrap();
            e.payload
                .into_iter()
                .map(move |item| (e.name.clone(), item))
        })
        .collect()
}

/// The payload items of the events named `name` that satisfy `pred`.
pub fn find_items<'a>(
    items: &'a [(String, serde_json::Value)],
    name: &str,
    mut pred: impl FnMut(&serde_json::Value) -> bool,
) -> Vec<&'a serde_json::Value> {
    items
        .iter()
        .filter(|(n, item)| n == name && pred(item))
        .map(|(_, item)| item)
        .collect()
}

/// Appends `n` as unsigned LEB128, the integers of the WebAssembly binary format.
pub fn leb128(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// A component around one core module with `memories` memories of one page and a function of
/// type `[] -> []` for each of `bodies` (each a function body: locals, code, `end`).
pub fn component_of(memories: usize, bodies: &[Vec<u8>]) -> Vec<u8> {
    fn section(out: &mut Vec<u8>, id: u8, content: &[u8]) {
        out.push(id);
        leb128(content.len(), out);
        out.extend_from_slice(content);
    }
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    section(&mut module, 1, &[1, 0x60, 0, 0]);
    let mut functions = Vec::new();
    leb128(bodies.len(), &mut functions);
    functions.extend(std::iter::repeat_n(0, bodies.len()));
    section(&mut module, 3, &functions);
    let mut mems = Vec::new();
    leb128(memories, &mut mems);
    (0..memories).for_each(|_| mems.extend_from_slice(&[0, 1]));
    section(&mut module, 5, &mems);
    let mut code = Vec::new();
    leb128(bodies.len(), &mut code);
    for body in bodies {
        leb128(body.len(), &mut code);
        code.extend_from_slice(body);
    }
    section(&mut module, 10, &code);
    let mut component = b"\0asm\x0d\0\x01\0".to_vec();
    section(&mut component, 1, &module);
    component
}

/// A function body of about `size` bytes that Cranelift takes long over: fifty locals, and
/// for each step an `if` on one of them that updates another.
pub fn branchy_body(size: usize) -> Vec<u8> {
    let mut f = vec![1];
    leb128(50, &mut f);
    f.push(0x7f); // i32 locals
    let mut i = 0usize;
    while f.len() < size {
        f.push(0x20); // local.get
        leb128(i % 50, &mut f);
        f.extend_from_slice(&[0x04, 0x40]); // if (no result)
        f.push(0x20);
        leb128((i + 1) % 50, &mut f);
        f.extend_from_slice(&[0x41, 1, 0x6a]); // i32.const 1, i32.add
        f.push(0x21); // local.set
        leb128((i * 3) % 50, &mut f);
        f.push(0x0b); // end (if)
        i += 1;
    }
    f.push(0x0b);
    f
}

/// `component` with a custom section appended: the same plugin, other bytes (another build of
/// one version, as a rebuild with other metadata gives).
pub fn with_custom_section(component: &[u8], name: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    leb128(name.len(), &mut body);
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(payload);
    let mut out = component.to_vec();
    out.push(0); // custom section id
    leb128(body.len(), &mut out);
    out.extend_from_slice(&body);
    out
}

/// `component` as if built against another version of the `edgeguard:collector` package: every
/// `edgeguard:collector/<interface>@<from>` name it imports or exports now says `@<to>` (same
/// length, so the binary stays well-formed).
pub fn with_wit_version(component: &[u8], from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let prefix = b"edgeguard:collector/";
    let mut out = component.to_vec();
    let mut i = 0;
    let mut renamed = 0;
    while let Some(at) = out[i..].windows(prefix.len()).position(|w| w == prefix) {
        let start = i + at + prefix.len();
        let name_end = start
            + out[start..]
                .iter()
                .take_while(|b| b.is_ascii_lowercase() || **b == b'-')
                .count();
        let version = name_end + 1..name_end + 1 + from.len();
        if out.get(name_end) == Some(&b'@') && out.get(version.clone()) == Some(from.as_bytes()) {
            out[version].copy_from_slice(to.as_bytes());
            renamed += 1;
        }
        i = name_end;
    }
    assert!(renamed > 0, "no edgeguard:collector name at version {from}");
    out
}
