//! Plugin runtime costs: compile, cached load, instantiation, an empty call, per-event cost
//! across the WIT boundary, and the process collector against a native scan of the same fields.
//!
//! Needs the plugins built (`cargo xtask bench` does it).

use criterion::{Criterion, criterion_group, criterion_main};
use edgeguard::capabilities::{Capability, HostContext, read_processes};
use edgeguard::config::Limits;
use edgeguard::runtime::Runtime;
use edgeguard::sandbox::LoadedPlugin;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn plugin_file(package: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    let file = target.join(format!(
        "wasm/wasm32-wasip2/plugin/{}.wasm",
        package.replace('-', "_")
    ));
    assert!(
        file.exists(),
        "{} is missing: run `cargo xtask bench`",
        file.display()
    );
    file
}

fn benches(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let cache = tempfile_dir();
    let rt = Runtime::new(&cache).unwrap();
    let process_bytes = std::fs::read(plugin_file("edgeguard-plugin-process")).unwrap();
    let process_grants = [Capability::Processes, Capability::Log];
    let host = HostContext::new(Path::new("/"));

    c.bench_function("compile process plugin (cold, Cranelift)", |b| {
        b.iter(|| wasmtime::component::Component::new(&rt.engine, &process_bytes).unwrap());
    });

    // Warm the cache once, then measure the full load path users see on a restart.
    tokio
        .block_on(LoadedPlugin::load(
            &rt,
            "process",
            process_bytes.clone(),
            &process_grants,
            &[],
        ))
        .unwrap();
    c.bench_function(
        "load process plugin (cached artifact, checks, describe)",
        |b| {
            b.iter(|| {
                tokio
                    .block_on(LoadedPlugin::load(
                        &rt,
                        "process",
                        process_bytes.clone(),
                        &process_grants,
                        &[],
                    ))
                    .unwrap()
            });
        },
    );

    let process = tokio
        .block_on(LoadedPlugin::load(
            &rt,
            "process",
            process_bytes.clone(),
            &process_grants,
            &[],
        ))
        .unwrap();
    c.bench_function("instantiate process plugin (InstancePre + init)", |b| {
        b.iter(|| {
            tokio
                .block_on(process.instantiate(host.clone(), &Limits::default(), "{}"))
                .unwrap()
        });
    });

    let synthetic = tokio
        .block_on(LoadedPlugin::load_file(
            &rt,
            "synthetic",
            &plugin_file("edgeguard-fault-plugin"),
            &[Capability::Processes, Capability::Log],
            &[],
        ))
        .unwrap();
    for count in [0u32, 1000] {
        let config = format!(r#"{{"mode":"synthetic","count":{count}}}"#);
        let mut instance = tokio
            .block_on(synthetic.instantiate(host.clone(), &Limits::default(), &config))
            .unwrap();
        let name = if count == 0 {
            "collect() round trip, no events".to_string()
        } else {
            format!("collect() returning {count} ProcessCreate")
        };
        c.bench_function(&name, |b| {
            b.iter(|| tokio.block_on(instance.collect()).unwrap().unwrap());
        });
    }

    // The process collector's cycle: snapshot through the capability, diff in the plugin.
    let mut collector = tokio
        .block_on(process.instantiate(
            host.clone(),
            &Limits::default(),
            r#"{"report_existing":false}"#,
        ))
        .unwrap();
    c.bench_function("process collector cycle (plugin)", |b| {
        b.iter(|| tokio.block_on(collector.collect()).unwrap().unwrap());
    });

    // The same work natively: the same procfs reads, keyed and diffed the same way.
    let mut previous: Option<HashMap<(u32, u64), _>> = None;
    c.bench_function("process scan and diff (native Rust)", |b| {
        b.iter(|| {
            let now: HashMap<(u32, u64), _> = read_processes(&host)
                .unwrap()
                .into_iter()
                .map(|p| ((p.pid, p.start_time), p))
                .collect();
            let changed = previous.as_ref().map(|before| {
                now.keys().filter(|k| !before.contains_key(k)).count()
                    + before.keys().filter(|k| !now.contains_key(k)).count()
            });
            previous = Some(now);
            changed
        });
    });
}

/// The network collector's full cycle with 10,000 open TCP sockets on loopback (5,000
/// connections, both ends in this process), against `ss -tanp` listing the same table with owners.
fn network(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let cache = tempfile_dir();
    let rt = Runtime::new(&cache).unwrap();
    let host = HostContext::new(Path::new("/"));
    let limit = libc::rlimit {
        rlim_cur: 65536,
        rlim_max: 65536,
    };
    // SAFETY: setrlimit with a valid struct; failure only leaves the old limit.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit) };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut open = Vec::new();
    for _ in 0..5000 {
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        open.push((client, listener.accept().unwrap().0));
    }
    let grants = [Capability::Sockets, Capability::Log];
    let network = tokio
        .block_on(LoadedPlugin::load_file(
            &rt,
            "network",
            &plugin_file("edgeguard-plugin-network"),
            &grants,
            &[],
        ))
        .unwrap();
    let mut collector = tokio
        .block_on(network.instantiate(
            host.clone(),
            &Limits::default(),
            r#"{"report_existing":false}"#,
        ))
        .unwrap();
    tokio.block_on(collector.collect()).unwrap().unwrap();
    c.bench_function("network collector cycle, 10,000 sockets (plugin)", |b| {
        b.iter(|| tokio.block_on(collector.collect()).unwrap().unwrap());
    });
    c.bench_function("ss -tanp, 10,000 sockets", |b| {
        b.iter(|| {
            let out = std::process::Command::new("ss")
                .arg("-tanp")
                .output()
                .expect("ss (iproute2) is installed");
            assert!(out.status.success());
            out.stdout.len()
        });
    });
    drop(open);
}

/// The login collector reading a wtmp of 100,000 records from the start, through the host's
/// `logins` capability, in collections of the default cap (`Limits::default()`, 1,024 events).
fn logins(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile_dir();
    let rt = Runtime::new(&dir.join("cache")).unwrap();
    let wtmp = dir.join("wtmp");
    let mut bytes = Vec::new();
    for i in 0..100_000u32 {
        // SAFETY: utmpx is plain data; all-zero is a valid empty record.
        let mut u: libc::utmpx = unsafe { std::mem::zeroed() };
        u.ut_type = libc::USER_PROCESS;
        u.ut_pid = 1_000_000 + i as i32;
        for (d, b) in u.ut_user.iter_mut().zip(b"fleet") {
            *d = *b as libc::c_char;
        }
        for (d, b) in u
            .ut_host
            .iter_mut()
            .zip(format!("10.0.{}.{}", i / 250, i % 250).bytes())
        {
            *d = b as libc::c_char;
        }
        // SAFETY: viewing a plain-data struct as its bytes, as the C library writes it.
        bytes.extend_from_slice(unsafe {
            std::slice::from_raw_parts(
                (&raw const u).cast::<u8>(),
                std::mem::size_of::<libc::utmpx>(),
            )
        });
    }
    std::fs::write(&wtmp, bytes).unwrap();
    let grants = [Capability::Logins, Capability::Log];
    let login = tokio
        .block_on(LoadedPlugin::load_file(
            &rt,
            "login",
            &plugin_file("edgeguard-plugin-login"),
            &grants,
            &[],
        ))
        .unwrap();
    let config = serde_json::json!({"wtmp": wtmp, "btmp": "", "auth_log": "", "from_start": true})
        .to_string();
    let host = HostContext::new(Path::new("/"));
    let mut group = c.benchmark_group("login");
    group.throughput(criterion::Throughput::Elements(100_000));
    group.bench_function("read and convert 100,000 wtmp records", |b| {
        b.iter(|| {
            let mut instance = tokio
                .block_on(login.instantiate(host.clone(), &Limits::default(), &config))
                .unwrap();
            let mut total = 0;
            loop {
                let n = tokio.block_on(instance.collect()).unwrap().unwrap().len();
                if n == 0 {
                    break total;
                }
                total += n;
            }
        });
    });
    group.finish();
}

/// The deployment-manifest analyzer on the reference example (4 modules, 5 findings) and on a
/// manifest with chunked createOptions.
fn manifests(c: &mut Criterion) {
    for name in ["02-reference-example", "07-chunked-createoptions"] {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../tests/manifests/{name}.json")),
        )
        .unwrap();
        c.bench_function(&format!("analyse manifest {name}"), |b| {
            b.iter(|| edgeguard_manifest::analyze_text(&text).unwrap());
        });
    }
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("edgeguard-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

criterion_group! {
    name = runtime;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = benches, network, logins, manifests
}
criterion_main!(runtime);
