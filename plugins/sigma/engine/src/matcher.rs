//! One field's test: its value patterns and modifiers (`Field|contains|all: [...]`).

use std::net::IpAddr;

/// Patterns a field test holds, at most, after expansion (base64 offsets, windash variants).
const MAX_PATTERNS: usize = 4096;
/// A regular expression compiles to at most this many bytes (linear-time matching always).
const MAX_REGEX: usize = 1 << 20;

/// How the values of a field test are compared.
#[derive(Clone, Debug)]
pub enum Test {
    /// Text patterns (with `*` and `?`), any or all of them.
    Text { patterns: Vec<Pattern>, all: bool },
    /// Regular expressions.
    Regex {
        regexes: Vec<regex::Regex>,
        all: bool,
    },
    /// Address blocks.
    Cidr(Vec<(IpAddr, u8)>),
    /// Numbers compared.
    Compare(Vec<(Ordering, f64)>),
    /// The field is there (or not).
    Exists(bool),
    /// The field is absent or empty (a `null` value).
    Null,
    /// Another field's value.
    FieldRef {
        fields: Vec<String>,
        how: Position,
        cased: bool,
    },
}

/// Where a pattern is anchored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Position {
    /// The whole value.
    Whole,
    /// Anywhere in it.
    Contains,
    /// At its start.
    Start,
    /// At its end.
    End,
}

/// Numeric comparisons.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ordering {
    /// `gt`.
    Greater,
    /// `gte`.
    GreaterOrEqual,
    /// `lt`.
    Less,
    /// `lte`.
    LessOrEqual,
}

/// One text pattern, compiled: its parts between wildcards, compared case-insensitively unless
/// `cased`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    parts: Vec<Part>,
    cased: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    /// `*`.
    Any,
    /// `?`.
    One,
}

impl Pattern {
    /// A Sigma string value with its wildcards (`\*`, `\?` and `\\` escape them), anchored at
    /// `position`.
    pub fn new(value: &str, position: Position, cased: bool) -> Pattern {
        let mut parts = Vec::new();
        if matches!(position, Position::Contains | Position::End) {
            parts.push(Part::Any);
        }
        let mut text = String::new();
        let mut chars = value.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' if matches!(chars.peek(), Some('*' | '?' | '\\')) => {
                    text.push(chars.next().expect("peeked"));
                }
                '*' | '?' => {
                    if !text.is_empty() {
                        parts.push(Part::Text(fold(&std::mem::take(&mut text), cased)));
                    }
                    parts.push(if c == '*' { Part::Any } else { Part::One });
                }
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(fold(&text, cased)));
        }
        if matches!(position, Position::Contains | Position::Start) {
            parts.push(Part::Any);
        }
        parts.dedup_by(|a, b| *a == Part::Any && *b == Part::Any);
        Pattern { parts, cased }
    }

    /// Whether `value` (and its lower-case form `lower`) matches.
    pub fn matches(&self, value: &str, lower: &str) -> bool {
        let text = if self.cased { value } else { lower };
        // The common shapes without backtracking.
        match self.parts.as_slice() {
            [Part::Text(t)] => return text == t,
            [Part::Any, Part::Text(t), Part::Any] => return text.contains(t.as_str()),
            [Part::Text(t), Part::Any] => return text.starts_with(t.as_str()),
            [Part::Any, Part::Text(t)] => return text.ends_with(t.as_str()),
            [Part::Any] => return true,
            _ => {}
        }
        glob(&self.parts, text)
    }
}

fn fold(text: &str, cased: bool) -> String {
    if cased {
        text.to_owned()
    } else {
        text.to_lowercase()
    }
}

/// Matches with `*` as any run and `?` as one character: greedy with one backtrack point, so
/// linear in practice and quadratic at worst.
fn glob(parts: &[Part], text: &str) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    let bytes_at = |t: usize| &text[t..];
    loop {
        if p == parts.len() {
            if t == text.len() {
                return true;
            }
        } else {
            match &parts[p] {
                Part::Any => {
                    star = Some((p, t));
                    p += 1;
                    continue;
                }
                Part::One => {
                    if let Some(c) = bytes_at(t).chars().next() {
                        p += 1;
                        t += c.len_utf8();
                        continue;
                    }
                }
                Part::Text(s) => {
                    if bytes_at(t).starts_with(s.as_str()) {
                        p += 1;
                        t += s.len();
                        continue;
                    }
                }
            }
        }
        // Backtrack: the last `*` takes one more character.
        match star {
            Some((sp, st)) if st < text.len() => {
                let next = st + bytes_at(st).chars().next().map_or(1, char::len_utf8);
                star = Some((sp, next));
                p = sp + 1;
                t = next;
            }
            _ => return false,
        }
    }
}

/// The values a field test is given, as YAML has them.
#[derive(Clone, Debug, PartialEq)]
pub enum Raw {
    /// A string (or a number, as its text).
    Text(String),
    /// A number.
    Number(f64),
    /// `true`/`false`.
    Bool(bool),
    /// `null`.
    Null,
}

impl Raw {
    fn text(&self) -> Option<String> {
        match self {
            Raw::Text(t) => Some(t.clone()),
            Raw::Number(n) => Some(if n.fract() == 0.0 && n.abs() < 1e15 {
                format!("{}", *n as i64)
            } else {
                n.to_string()
            }),
            Raw::Bool(b) => Some(b.to_string()),
            Raw::Null => None,
        }
    }
}

/// The modifiers edgeguard evaluates.
pub const MODIFIERS: [&str; 23] = [
    "contains",
    "startswith",
    "endswith",
    "all",
    "re",
    "i",
    "m",
    "s",
    "base64",
    "base64offset",
    "cidr",
    "windash",
    "exists",
    "cased",
    "gt",
    "gte",
    "lt",
    "lte",
    "wide",
    "utf16le",
    "utf16be",
    "utf16",
    "fieldref",
];

/// Builds the test of `modifiers` over `values`.
pub fn compile(modifiers: &[&str], values: &[Raw]) -> Result<Test, String> {
    if let Some(m) = modifiers.iter().find(|m| !MODIFIERS.contains(m)) {
        return Err(match *m {
            "expand" => {
                "the `expand` modifier needs placeholders, which edgeguard has none of".into()
            }
            other => format!("unknown modifier `{other}`"),
        });
    }
    let has = |m: &str| modifiers.contains(&m);
    let all = has("all");
    let cased = has("cased");
    let position = if has("contains") {
        Position::Contains
    } else if has("startswith") {
        Position::Start
    } else if has("endswith") {
        Position::End
    } else {
        Position::Whole
    };
    if values.contains(&Raw::Null) {
        if values.len() == 1 && modifiers.is_empty() {
            return Ok(Test::Null);
        }
        return Err("a null value goes alone and without modifiers".into());
    }
    let texts = || -> Result<Vec<String>, String> {
        values
            .iter()
            .map(|v| v.text().ok_or_else(|| "a value is missing".to_owned()))
            .collect()
    };
    if has("exists") {
        return match values {
            [Raw::Bool(b)] => Ok(Test::Exists(*b)),
            _ => Err("`exists` takes true or false".into()),
        };
    }
    if has("fieldref") {
        return Ok(Test::FieldRef {
            fields: texts()?,
            how: position,
            cased,
        });
    }
    if let Some(order) = [
        ("gt", Ordering::Greater),
        ("gte", Ordering::GreaterOrEqual),
        ("lt", Ordering::Less),
        ("lte", Ordering::LessOrEqual),
    ]
    .iter()
    .find(|(m, _)| has(m))
    .map(|(_, o)| *o)
    {
        let numbers = values
            .iter()
            .map(|v| match v {
                Raw::Number(n) => Ok((order, *n)),
                Raw::Text(t) => t
                    .trim()
                    .parse()
                    .map(|n| (order, n))
                    .map_err(|_| format!("`{t}` is not a number")),
                _ => Err("a comparison takes numbers".to_owned()),
            })
            .collect::<Result<_, _>>()?;
        return Ok(Test::Compare(numbers));
    }
    if has("cidr") {
        let blocks = texts()?
            .iter()
            .map(|t| parse_cidr(t).ok_or_else(|| format!("`{t}` is not an address block")))
            .collect::<Result<_, _>>()?;
        return Ok(Test::Cidr(blocks));
    }
    if has("re") {
        let regexes = texts()?
            .iter()
            .map(|t| {
                regex::RegexBuilder::new(t)
                    .case_insensitive(has("i"))
                    .multi_line(has("m"))
                    .dot_matches_new_line(has("s"))
                    .size_limit(MAX_REGEX)
                    .build()
                    .map_err(|e| format!("the regular expression `{t}` does not compile: {e}"))
            })
            .collect::<Result<_, _>>()?;
        return Ok(Test::Regex { regexes, all });
    }
    // Transformations of the values, in order: wide (UTF-16), base64 (or its offsets), windash.
    let mut variants: Vec<Vec<String>> = texts()?.into_iter().map(|t| vec![t]).collect();
    let wide = if has("wide") || has("utf16le") || has("utf16") {
        Some(false)
    } else if has("utf16be") {
        Some(true)
    } else {
        None
    };
    if has("base64") || has("base64offset") {
        for group in &mut variants {
            *group = group
                .iter()
                .flat_map(|v| {
                    let bytes = match wide {
                        Some(big) => utf16(v, big),
                        None => v.as_bytes().to_vec(),
                    };
                    if has("base64offset") {
                        base64_offsets(&bytes)
                    } else {
                        vec![base64(&bytes)]
                    }
                })
                .collect();
        }
    } else if wide.is_some() {
        return Err("`wide`/`utf16` go with `base64` or `base64offset`".into());
    }
    if has("windash") {
        for group in &mut variants {
            *group = group.iter().flat_map(|v| windash(v)).collect();
        }
    }
    let cased = cased || has("base64") || has("base64offset");
    let count: usize = variants.iter().map(Vec::len).sum();
    if count > MAX_PATTERNS {
        return Err(format!(
            "{count} patterns after expansion, more than {MAX_PATTERNS}"
        ));
    }
    if all && variants.iter().any(|g| g.len() > 1) {
        // `all` over expanded values: each value must match one of its variants; kept as one
        // pattern per variant group by requiring every group (see `Test::Text` with groups).
        return Err("`all` with `base64offset` or `windash` is not supported".into());
    }
    Ok(Test::Text {
        patterns: variants
            .into_iter()
            .flatten()
            .map(|v| Pattern::new(&v, position, cased))
            .collect(),
        all,
    })
}

fn parse_cidr(text: &str) -> Option<(IpAddr, u8)> {
    let (addr, bits) = match text.split_once('/') {
        Some((a, b)) => (a, Some(b.parse::<u8>().ok()?)),
        None => (text, None),
    };
    let addr: IpAddr = addr.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let bits = bits.unwrap_or(max);
    (bits <= max).then_some((addr, bits))
}

fn in_cidr(block: (IpAddr, u8), addr: IpAddr) -> bool {
    let addr = match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    };
    let mask = |bits: u8, width: u32| -> u128 {
        if bits == 0 {
            0
        } else {
            (!0u128 << (width - u32::from(bits))) & (!0u128 >> (128 - width))
        }
    };
    match (block.0, addr) {
        (IpAddr::V4(b), IpAddr::V4(a)) => {
            let m = mask(block.1, 32);
            u128::from(u32::from(b)) & m == u128::from(u32::from(a)) & m
        }
        (IpAddr::V6(b), IpAddr::V6(a)) => {
            let m = mask(block.1, 128);
            u128::from(b) & m == u128::from(a) & m
        }
        _ => false,
    }
}

fn utf16(text: &str, big_endian: bool) -> Vec<u8> {
    text.encode_utf16()
        .flat_map(|u| {
            if big_endian {
                u.to_be_bytes()
            } else {
                u.to_le_bytes()
            }
        })
        .collect()
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The three encodings of `bytes` as they appear inside a longer base64 text, whatever its
/// offset modulo 3: the parts that do not depend on the neighbouring bytes (pySigma's rule).
fn base64_offsets(bytes: &[u8]) -> Vec<String> {
    (0..3)
        .map(|i| {
            let mut shifted = vec![b' '; i];
            shifted.extend_from_slice(bytes);
            let encoded = base64(&shifted);
            let start = [0, 2, 3][i];
            let end = encoded.len() - [0, 3, 2][(bytes.len() + i) % 3];
            encoded[start.min(end)..end].to_owned()
        })
        .collect()
}

/// The value with each `-` that starts an option also as `/`, `–`, `—` and `―`.
fn windash(value: &str) -> Vec<String> {
    let dashes = ['-', '/', '\u{2013}', '\u{2014}', '\u{2015}'];
    let mut out = vec![String::new()];
    let mut prev: Option<char> = None;
    for c in value.chars() {
        let option_start = c == '-' && prev.is_none_or(char::is_whitespace);
        if option_start {
            out = out
                .into_iter()
                .flat_map(|s| dashes.iter().map(move |d| format!("{s}{d}")))
                .take(MAX_PATTERNS)
                .collect();
        } else {
            for s in &mut out {
                s.push(c);
            }
        }
        prev = Some(c);
    }
    out
}

impl Test {
    /// Whether the field's value (`None`: the event lacks it) passes; `other` reads another
    /// field of the same event, for `fieldref`.
    pub fn matches(
        &self,
        value: Option<(&str, &str)>,
        other: &dyn Fn(&str) -> Option<String>,
    ) -> bool {
        match self {
            Test::Null => value.is_none_or(|(v, _)| v.is_empty()),
            Test::Exists(want) => value.is_some() == *want,
            Test::Text { patterns, all } => {
                let Some((v, lower)) = value else {
                    return false;
                };
                if *all {
                    patterns.iter().all(|p| p.matches(v, lower))
                } else {
                    patterns.iter().any(|p| p.matches(v, lower))
                }
            }
            Test::Regex { regexes, all } => {
                let Some((v, _)) = value else { return false };
                if *all {
                    regexes.iter().all(|r| r.is_match(v))
                } else {
                    regexes.iter().any(|r| r.is_match(v))
                }
            }
            Test::Cidr(blocks) => value
                .and_then(|(v, _)| v.parse::<IpAddr>().ok())
                .is_some_and(|a| blocks.iter().any(|b| in_cidr(*b, a))),
            Test::Compare(numbers) => value
                .and_then(|(v, _)| v.trim().parse::<f64>().ok())
                .is_some_and(|n| {
                    numbers.iter().any(|(o, x)| match o {
                        Ordering::Greater => n > *x,
                        Ordering::GreaterOrEqual => n >= *x,
                        Ordering::Less => n < *x,
                        Ordering::LessOrEqual => n <= *x,
                    })
                }),
            Test::FieldRef { fields, how, cased } => {
                let Some((v, lower)) = value else {
                    return false;
                };
                fields.iter().any(|f| {
                    other(f).is_some_and(|o| {
                        let p = Pattern::new(
                            &o.replace('\\', "\\\\")
                                .replace('*', "\\*")
                                .replace('?', "\\?"),
                            *how,
                            *cased,
                        );
                        p.matches(v, lower)
                    })
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(v: &str) -> Raw {
        Raw::Text(v.to_owned())
    }

    fn test(modifiers: &[&str], values: &[Raw]) -> Test {
        compile(modifiers, values).unwrap()
    }

    fn is(t: &Test, value: &str) -> bool {
        t.matches(Some((value, &value.to_lowercase())), &|_| None)
    }

    #[test]
    fn wildcards_escapes_and_case() {
        let p = |v: &str| Pattern::new(v, Position::Whole, false);
        let m = |pat: &Pattern, v: &str| pat.matches(v, &v.to_lowercase());
        assert!(m(&p("/usr/bin/*"), "/usr/bin/NC"));
        assert!(m(&p("*/nc"), "/bin/nc") && !m(&p("*/nc"), "/bin/ncat"));
        assert!(m(&p("a?c"), "abc") && !m(&p("a?c"), "ac"));
        assert!(m(&p("*a*b*c*"), "xxaxxbxxcxx") && !m(&p("*a*b*c*"), "cba"));
        assert!(m(&p(r"\*literal"), "*literal") && !m(&p(r"\*literal"), "xliteral"));
        assert!(m(&p(r"C:\\Windows"), r"c:\windows"));
        assert!(m(&p("ÉTÉ*"), "été chaud"), "Unicode case folding");
        let cased = Pattern::new("Foo", Position::Contains, true);
        assert!(cased.matches("a Foo b", "a foo b") && !cased.matches("a foo b", "a foo b"));
    }

    #[test]
    fn modifiers() {
        assert!(is(&test(&["contains"], &[text(" -e ")]), "nc -e /bin/sh"));
        assert!(is(&test(&["startswith"], &[text("/tmp/")]), "/tmp/x"));
        assert!(is(
            &test(&["endswith"], &[text("/bash"), text("/sh")]),
            "/bin/sh"
        ));
        let all = test(&["contains", "all"], &[text("curl"), text("| sh")]);
        assert!(is(&all, "curl x | sh") && !is(&all, "curl x"));
        let re = test(&["re"], &[text(r"^/dev/(tcp|udp)/")]);
        assert!(is(&re, "/dev/tcp/1.2.3.4/80") && !is(&re, "/DEV/tcp/x"));
        assert!(is(&test(&["re", "i"], &[text("^/dev/TCP")]), "/dev/tcp/x"));
        let cidr = test(&["cidr"], &[text("10.0.0.0/8"), text("fd00::/8")]);
        assert!(
            is(&cidr, "10.2.3.4")
                && is(&cidr, "fd12::1")
                && !is(&cidr, "11.0.0.1")
                && !is(&cidr, "not-an-ip")
        );
        let gt = test(&["gt"], &[Raw::Number(1024.0)]);
        assert!(is(&gt, "8080") && !is(&gt, "22"));
        let exists = test(&["exists"], &[Raw::Bool(true)]);
        assert!(is(&exists, "") && !exists.matches(None, &|_| None));
        assert!(test(&[], &[Raw::Null]).matches(None, &|_| None));
        assert!(is(&test(&[], &[Raw::Number(4444.0)]), "4444"));
        let fieldref = test(&["fieldref"], &[text("Image")]);
        assert!(fieldref.matches(Some(("/bin/x", "/bin/x")), &|f| {
            (f == "Image").then(|| "/bin/x".to_owned())
        }));
    }

    #[test]
    fn base64_and_its_offsets_match_what_encoders_produce() {
        assert_eq!(base64(b"ping"), "cGluZw==");
        let t = test(&["base64"], &[text("ping")]);
        assert!(is(&t, "cGluZw=="));
        let offsets = base64_offsets(b"/bin/sh");
        // The command inside any longer encoded text shows one of the three.
        for prefix in ["", "x", "xy", "xyz"] {
            let encoded = base64(format!("{prefix}/bin/sh -i").as_bytes());
            assert!(
                offsets.iter().any(|o| encoded.contains(o.as_str())),
                "{prefix}: {encoded} {offsets:?}"
            );
        }
        let t = test(&["base64offset", "contains"], &[text("/bin/sh")]);
        assert!(is(
            &t,
            &format!("echo {} | base64 -d | sh", base64(b"exec /bin/sh -i"))
        ));
        let wide = test(&["wide", "base64"], &[text("a")]);
        assert!(is(&wide, "YQA="));
    }

    #[test]
    fn windash_variants() {
        let v = windash("-enc x -nop");
        assert_eq!(v.len(), 25);
        assert!(
            v.contains(&"/enc x /nop".to_owned()) && v.contains(&"\u{2013}enc x -nop".to_owned())
        );
        assert_eq!(windash("a-b"), ["a-b"]);
    }

    #[test]
    fn what_cannot_be_evaluated_is_named() {
        assert!(
            compile(&["expand"], &[text("%x%")])
                .unwrap_err()
                .contains("placeholders")
        );
        assert!(
            compile(&["contanis"], &[text("x")])
                .unwrap_err()
                .contains("contanis")
        );
        assert!(
            compile(&["re"], &[text("(")])
                .unwrap_err()
                .contains("does not compile")
        );
        assert!(
            compile(&["cidr"], &[text("10.0.0.0/40")])
                .unwrap_err()
                .contains("block")
        );
        assert!(
            compile(&["gt"], &[text("many")])
                .unwrap_err()
                .contains("number")
        );
        assert!(
            compile(&["re"], &[text(&"a{1000}".repeat(1000))]).is_err(),
            "too big"
        );
    }
}
