//! Aggregation: identical events within a window become one, with a hit count and the times of
//! the first and last hit in ExtraDetails (the ASC agents' `HitCount`, `StartTime*`, `EndTime*`).
//!
//! "Identical" is a rule per event name: the payload fields that make up its identity. Fields
//! outside the identity vary between hits, so the merged event shows them neutralised (numbers
//! 0, strings "*"), as the agents show aggregated process ids as 0.
//!
//! The open windows are journaled to disk (one append per batch), so a crash loses no hit: on
//! restart the journal is replayed and each merged event keeps the Id it was given at its
//! first hit, which makes a re-send after a crash recognisable as a duplicate.
//!
//! Windows are bounded in distinct events and in bytes together ([`Bounds`]): events that would
//! pass the bytes close the largest window early, so what a window holds never exceeds what
//! the cache could take once it closes. The journal is rewritten when it grows past a few times
//! that, and a journal larger than any bound allowed is replayed only as far as the bound.

use crate::events::{Category, EventType, Family, PROVENANCE_KEYS, SecurityEvent};
use chrono::{DateTime, Local, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One field of an identity: a payload field, or `ExtraDetails.<key>`, optionally only when
/// another field has a given value (`LocalPort when Direction=In`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityField {
    /// The field (`ExtraDetails.Key` for an extra detail's key).
    pub field: String,
    /// A key of `ExtraDetails` rather than a payload field.
    pub extra: bool,
    /// Only when another field has this value.
    pub when: Option<(String, String)>,
}

impl IdentityField {
    /// Parses `Field`, `ExtraDetails.Key` or `Field when Other=Value`.
    pub fn parse(spec: &str) -> Result<IdentityField, String> {
        let (field, when) = match spec.split_once(" when ") {
            Some((f, cond)) => {
                let (k, v) = cond
                    .split_once('=')
                    .ok_or_else(|| format!("`{spec}`: the condition must read `Field=Value`"))?;
                (f.trim(), Some((k.trim().to_owned(), v.trim().to_owned())))
            }
            None => (spec.trim(), None),
        };
        let (field, extra) = match field.strip_prefix("ExtraDetails.") {
            Some(key) => (key, true),
            None => (field, false),
        };
        let valid =
            |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid(field) || when.as_ref().is_some_and(|(k, _)| !valid(k)) {
            return Err(format!(
                "`{spec}` is not a field name (e.g. `CommandLine`, `ExtraDetails.Key`, `LocalPort when Direction=In`)"
            ));
        }
        Ok(IdentityField {
            field: field.to_owned(),
            extra,
            when,
        })
    }

    fn applies(&self, item: &Map<String, Value>) -> bool {
        match &self.when {
            None => true,
            Some((k, v)) => item.get(k).and_then(Value::as_str) == Some(v.as_str()),
        }
    }

    fn value<'a>(&self, item: &'a Map<String, Value>) -> Option<&'a Value> {
        if self.extra {
            item.get("ExtraDetails")?.get(&self.field)
        } else {
            item.get(&self.field)
        }
    }
}

/// Which payload fields make two events of a name identical.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The fields that make two events the same.
    pub identity: Vec<IdentityField>,
}

impl Rule {
    /// Parses each spec as an [`IdentityField`]; the plugin an event came from
    /// ([`PROVENANCE_KEYS`]) is always part of the identity, and so is a field a condition
    /// reads (`Direction` of `LocalPort when Direction=In`): a merged event keeps it, so its
    /// identity reads the same from it as from its first hit.
    pub fn parse(specs: &[impl AsRef<str>]) -> Result<Rule, String> {
        if specs.is_empty() {
            return Err("an identity needs at least one field".into());
        }
        let mut identity: Vec<IdentityField> = specs
            .iter()
            .map(|s| IdentityField::parse(s.as_ref()))
            .collect::<Result<_, _>>()?;
        let conditions: Vec<String> = identity
            .iter()
            .filter_map(|f| f.when.as_ref().map(|(k, _)| k.clone()))
            .collect();
        for field in conditions {
            let field = IdentityField {
                field,
                extra: false,
                when: None,
            };
            if !identity.contains(&field) {
                identity.push(field);
            }
        }
        for key in PROVENANCE_KEYS {
            let field = IdentityField {
                field: key.to_owned(),
                extra: true,
                when: None,
            };
            if !identity.contains(&field) {
                identity.push(field);
            }
        }
        Ok(Rule { identity })
    }

    /// The reference agents' identities ([CS] comparers; ExtraDetails.Existing keeps processes
    /// found at start apart from new ones). `None` for names with no built-in rule.
    pub fn builtin(event: &str) -> Option<Rule> {
        let specs: &[&str] = match event {
            "ProcessCreate" => &[
                "Executable",
                "CommandLine",
                "UserId",
                "UserName",
                "ExtraDetails.Existing",
            ],
            "ConnectionCreate" => &[
                "CommandLine",
                "Executable",
                "UserId",
                "Direction",
                "LocalAddress",
                "RemoteAddress",
                "Protocol",
                "LocalPort when Direction=In",
                "RemotePort when Direction=Out",
            ],
            "ProcessTerminate" => &["Executable", "ExitStatus"],
            _ => return None,
        };
        Some(Rule::parse(specs).expect("built-in rules are valid"))
    }

    /// The identity of an item: per field, `None` when its condition does not apply, else the
    /// field's value (`Some(None)` when absent). Read once per event; comparisons use it.
    fn key<'a>(&self, item: &'a Map<String, Value>) -> Vec<Option<Option<&'a Value>>> {
        self.identity
            .iter()
            .map(|f| f.applies(item).then(|| f.value(item)))
            .collect()
    }
    /// The payload item the merged event shows: identity fields as they are, other fields
    /// neutralised, ExtraDetails reduced to its identity keys.
    fn neutralise(&self, item: &Map<String, Value>) -> Map<String, Value> {
        let in_identity = |name: &str, extra: bool| {
            self.identity
                .iter()
                .any(|f| f.extra == extra && f.field == name && f.applies(item))
        };
        let mut out = Map::with_capacity(item.len());
        for (k, v) in item {
            if k == "ExtraDetails" {
                if let Value::Object(details) = v {
                    let kept: Map<String, Value> = details
                        .iter()
                        .filter(|(dk, _)| in_identity(dk, true))
                        .map(|(a, b)| (a.clone(), b.clone()))
                        .collect();
                    if !kept.is_empty() {
                        out.insert(k.clone(), Value::Object(kept));
                    }
                }
                continue;
            }
            let v = if in_identity(k, false) {
                v.clone()
            } else {
                match v {
                    Value::Number(_) => Value::from(0),
                    Value::String(_) => Value::from("*"),
                    other => other.clone(),
                }
            };
            out.insert(k.clone(), v);
        }
        out
    }
}

fn hash_key(key: &[Option<Option<&Value>>]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    for slot in key {
        match slot {
            None => 0xffu8.hash(&mut h),
            Some(v) => hash_value(*v, &mut h),
        }
    }
    h.finish()
}

fn hash_value(v: Option<&Value>, h: &mut impl Hasher) {
    match v {
        None => 0u8.hash(h),
        Some(Value::Null) => 1u8.hash(h),
        Some(Value::Bool(b)) => (2u8, *b).hash(h),
        Some(Value::Number(n)) => {
            (3u8, n.as_i64(), n.as_u64(), n.as_f64().map(f64::to_bits)).hash(h);
        }
        Some(Value::String(s)) => (4u8, s.as_str()).hash(h),
        // Arrays and objects are rare in identities: hash their text.
        Some(other) => (5u8, other.to_string()).hash(h),
    }
}

/// What aggregates, for one event name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KindSettings {
    /// The identity.
    pub rule: Rule,
    /// The window.
    pub interval: Duration,
}

/// How much the open windows may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Distinct events one window may hold before it closes early.
    pub entries: usize,
    /// Bytes all windows together may hold (events as serialized): the share of the cache
    /// their events take once the windows close.
    pub bytes: usize,
}

/// A journal past this many times [`Bounds::bytes`] is rewritten to the open windows; one
/// larger than twice that (written under other bounds) is replayed only that far.
const JOURNAL_GROWTH: usize = 4;

/// One merged event being counted.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Entry {
    id: uuid::Uuid,
    /// The first hit as it came while it is the only one (a window with a single hit gives the
    /// event back unchanged, process id and all); from the second hit on, the merged item.
    item: Map<String, Value>,
    #[serde(default)]
    merged: bool,
    event_type: EventType,
    family: Family,
    count: u64,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
    /// What the entry counts against [`Bounds::bytes`]: its journal line's length.
    #[serde(skip)]
    bytes: usize,
    #[serde(skip)]
    dirty: bool,
}

struct Window {
    settings: KindSettings,
    opened: Option<DateTime<Utc>>,
    entries: Vec<Entry>,
    /// The entries' bytes.
    bytes: usize,
    by_hash: HashMap<u64, Vec<usize>>,
}

/// A journal line: a new entry (whole), or the counts of entries touched by one batch.
#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum JournalLine {
    New {
        kind: String,
        opened: DateTime<Utc>,
        entry: Entry,
    },
    Hits(Vec<(uuid::Uuid, u64, DateTime<Utc>)>),
}

/// [`JournalLine`] as written, borrowing.
#[derive(Serialize)]
#[serde(rename_all = "lowercase")]
enum JournalLineRef<'a> {
    New {
        kind: &'a str,
        opened: DateTime<Utc>,
        entry: &'a Entry,
    },
    Hits(&'a [(uuid::Uuid, u64, DateTime<Utc>)]),
}

/// Every open window, within its [`Bounds`].
pub struct Aggregator {
    windows: HashMap<String, Window>,
    bounds: Bounds,
    /// Windows closed before their interval because they reached a bound, since the last ask.
    closed_early: u64,
    journal: Option<Journal>,
}

struct Journal {
    path: PathBuf,
    file: std::fs::File,
    /// Bytes in the file.
    bytes: usize,
}

impl Aggregator {
    /// An aggregator without a journal (benchmarks, tests of the rules).
    pub fn in_memory(kinds: HashMap<String, KindSettings>, bounds: Bounds) -> Aggregator {
        let windows = kinds
            .into_iter()
            .map(|(name, settings)| (name, Window::new(settings)))
            .collect();
        Aggregator {
            windows,
            bounds: Bounds {
                entries: bounds.entries.max(1),
                bytes: bounds.bytes,
            },
            closed_early: 0,
            journal: None,
        }
    }

    /// Opens (and replays) the journal at `path`. Entries of kinds no longer aggregated, and
    /// of windows that no longer fit the bounds, come back as events: queue them, then
    /// [`Aggregator::compact`].
    pub fn open(
        path: &Path,
        kinds: HashMap<String, KindSettings>,
        bounds: Bounds,
    ) -> std::io::Result<(Aggregator, Vec<SecurityEvent>)> {
        use std::io::Read;
        let mut agg = Aggregator::in_memory(kinds, bounds);
        let mut orphans: HashMap<String, Window> = HashMap::new();
        let mut closed = Vec::new();
        if let Ok(file) = std::fs::File::open(path) {
            // Never more than any bound let the journal grow to: a journal written without
            // bounds (or under larger ones) must not take the memory of every restart.
            let cap = agg.journal_limit().saturating_mul(2) as u64;
            let size = file.metadata().map_or(0, |m| m.len());
            if size > cap {
                tracing::warn!(
                    journal = %path.display(),
                    bytes = size,
                    replayed = cap,
                    "the aggregation journal is larger than its bound: only its beginning is replayed"
                );
            }
            let mut index: HashMap<uuid::Uuid, (String, usize)> = HashMap::new();
            for line in std::io::BufReader::new(file.take(cap)).lines() {
                // A line cut by a crash is the last one; whatever it held was not acknowledged.
                let Ok(line) = line else { break };
                let Ok(parsed) = serde_json::from_str::<JournalLine>(&line) else {
                    break;
                };
                let len = line.len() + 1;
                match parsed {
                    JournalLine::New {
                        kind,
                        opened,
                        mut entry,
                    } => {
                        entry.bytes = len;
                        // Past the bound (it was larger when the journal was written), the
                        // window so far closes: its events are queued, not lost.
                        if agg.bytes() + len > bounds.bytes
                            && let Some(w) = agg.windows.get_mut(&kind)
                            && !w.entries.is_empty()
                        {
                            for e in &w.entries {
                                index.remove(&e.id);
                            }
                            closed.extend(w.drain(&kind, Utc::now()));
                        }
                        let window = match agg.windows.get_mut(&kind) {
                            Some(w) => w,
                            None => orphans.entry(kind.clone()).or_insert_with(|| {
                                Window::new(KindSettings {
                                    rule: Rule { identity: vec![] },
                                    interval: Duration::ZERO,
                                })
                            }),
                        };
                        window.opened.get_or_insert(opened);
                        index.insert(entry.id, (kind, window.entries.len()));
                        window.insert(entry);
                    }
                    JournalLine::Hits(hits) => {
                        for (id, count, last) in hits {
                            if let Some((kind, i)) = index.get(&id) {
                                let window = agg
                                    .windows
                                    .get_mut(kind)
                                    .or_else(|| orphans.get_mut(kind))
                                    .expect("indexed");
                                let e = &mut window.entries[*i];
                                e.count = count;
                                e.last = last;
                                // A kind no longer aggregated has no rule to merge by: its
                                // built-in one, else the first hit as it came.
                                if let Some(rule) = Some(&window.settings.rule)
                                    .filter(|r| !r.identity.is_empty())
                                    .cloned()
                                    .or_else(|| Rule::builtin(kind))
                                {
                                    e.merge(&rule);
                                }
                            }
                        }
                    }
                }
            }
        }
        let now = Utc::now();
        closed.extend(
            orphans
                .into_iter()
                .flat_map(|(name, mut w)| w.drain(&name, now)),
        );
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let bytes = file.metadata().map_or(0, |m| m.len()) as usize;
        agg.journal = Some(Journal {
            path: path.to_owned(),
            file,
            bytes,
        });
        // Returned events are compacted away by the caller once queued; with none, a journal
        // over its bound is rewritten now.
        if closed.is_empty() && bytes > agg.journal_limit() {
            agg.compact()?;
        }
        Ok((agg, closed))
    }

    /// The kinds aggregated and their settings; a kind removed, or given a new identity, closes
    /// its window, and so do the largest windows while the new bounds are passed: their events
    /// are returned (queue them, then [`Aggregator::compact`]).
    pub fn reconfigure(
        &mut self,
        kinds: HashMap<String, KindSettings>,
        bounds: Bounds,
        now: DateTime<Utc>,
    ) -> Vec<SecurityEvent> {
        self.bounds = Bounds {
            entries: bounds.entries.max(1),
            bytes: bounds.bytes,
        };
        let mut closed = Vec::new();
        self.windows.retain(|name, w| match kinds.get(name) {
            Some(s) if w.settings.rule == s.rule => {
                w.settings.interval = s.interval;
                true
            }
            // A new identity changes what "identical" means: close the window under the old one.
            _ => {
                closed.extend(w.drain(name, now));
                false
            }
        });
        for (name, settings) in kinds {
            self.windows
                .entry(name)
                .or_insert_with(|| Window::new(settings));
        }
        closed.extend(self.close_largest_while_over(now));
        for (name, w) in &mut self.windows {
            if w.entries.len() >= self.bounds.entries {
                closed.extend(w.drain(name, now));
                self.closed_early += 1;
            }
        }
        closed
    }

    /// Counts the events of a batch that aggregate; returns the others, untouched, and the
    /// events of windows that filled up (queue them, then [`Aggregator::compact`]). Journals the
    /// batch in one append.
    pub fn add(
        &mut self,
        events: Vec<SecurityEvent>,
    ) -> std::io::Result<(Vec<SecurityEvent>, Vec<SecurityEvent>)> {
        let mut passed = Vec::new();
        let mut full = Vec::new();
        let mut journal_buf: Vec<u8> = Vec::new();
        let mut touched: Vec<(String, usize)> = Vec::new();
        for mut event in events {
            let Some(window) = self.windows.get_mut(&event.name) else {
                passed.push(event);
                continue;
            };
            // Only single-item triggered events merge; a snapshot is not a repetition.
            if event.category != Category::Triggered
                || event.payload.len() != 1
                || !event.payload[0].is_object()
            {
                passed.push(event);
                continue;
            }
            let Some(Value::Object(item)) = event.payload.pop() else {
                unreachable!("checked above")
            };
            let rule = &window.settings.rule;
            let key = rule.key(&item);
            let hash = hash_key(&key);
            let found = window.by_hash.get(&hash).and_then(|c| {
                c.iter()
                    .copied()
                    // The identity is read again from the entry, not kept beside it: a copy of
                    // every command line of a burst of unique ones.
                    .find(|&i| rule.key(&window.entries[i].item) == key)
            });
            match found {
                Some(i) => {
                    let e = &mut window.entries[i];
                    e.count += 1;
                    e.merge(rule);
                    e.last = e.last.max(event.time);
                    if !e.dirty {
                        e.dirty = true;
                        touched.push((event.name, i));
                    }
                }
                None => {
                    let opened = *window.opened.get_or_insert(event.time);
                    let mut entry = Entry {
                        id: event.id,
                        item,
                        merged: false,
                        event_type: event.event_type,
                        family: event.family,
                        count: 1,
                        first: event.time,
                        last: event.time,
                        bytes: 0,
                        dirty: false,
                    };
                    // The journal line is the entry's measure, journal or not.
                    let start = journal_buf.len();
                    serde_json::to_writer(
                        &mut journal_buf,
                        &JournalLineRef::New {
                            kind: &event.name,
                            opened,
                            entry: &entry,
                        },
                    )
                    .map_err(std::io::Error::other)?;
                    journal_buf.push(b'\n');
                    entry.bytes = journal_buf.len() - start;
                    if self.journal.is_none() {
                        journal_buf.truncate(start);
                    }
                    window.insert(entry);
                    // Closed windows' journal lines stay until the caller has queued their
                    // events; replayed after a crash in between, they come back with the same
                    // Ids (a duplicate, recognisable, never a loss).
                    if window.entries.len() >= self.bounds.entries {
                        full.extend(window.drain(&event.name, Utc::now()));
                        touched.retain(|(k, _)| *k != event.name);
                        self.closed_early += 1;
                    }
                    if self.bytes() > self.bounds.bytes {
                        let closed = self.close_largest_while_over(Utc::now());
                        touched.retain(|(k, _)| closed.iter().all(|e| e.name != *k));
                        full.extend(closed);
                    }
                }
            }
        }
        let hits: Vec<_> = touched
            .into_iter()
            .filter_map(|(kind, i)| {
                let e = self.windows.get_mut(&kind)?.entries.get_mut(i)?;
                e.dirty = false;
                Some((e.id, e.count, e.last))
            })
            .collect();
        if !hits.is_empty() {
            serde_json::to_writer(&mut journal_buf, &JournalLineRef::Hits(&hits))
                .map_err(std::io::Error::other)?;
            journal_buf.push(b'\n');
        }
        // Windows that filled up are not compacted away here: the caller queues their events
        // first, then compacts; a crash in between replays them (same Ids) rather than losing them.
        if let Some(journal) = &mut self.journal
            && !journal_buf.is_empty()
        {
            journal.file.write_all(&journal_buf)?;
            journal.bytes += journal_buf.len();
            // Hits of a long window add up: rewritten to the windows as they are now.
            if full.is_empty() && journal.bytes > self.journal_limit() {
                self.compact()?;
            }
        }
        Ok((passed, full))
    }

    /// Closes the largest windows while all of them hold more than the bound.
    fn close_largest_while_over(&mut self, now: DateTime<Utc>) -> Vec<SecurityEvent> {
        let mut closed = Vec::new();
        while self.bytes() > self.bounds.bytes {
            let Some((name, largest)) = self.windows.iter_mut().max_by_key(|(_, w)| w.bytes) else {
                break;
            };
            closed.extend(largest.drain(name, now));
            self.closed_early += 1;
        }
        closed
    }

    /// Bytes the journal may grow to before it is rewritten.
    fn journal_limit(&self) -> usize {
        self.bounds
            .bytes
            .max(64 << 10)
            .saturating_mul(JOURNAL_GROWTH)
    }

    /// Bytes all windows hold, as journaled.
    pub fn bytes(&self) -> usize {
        self.windows.values().map(|w| w.bytes).sum()
    }

    /// Windows closed early since the last ask (a bound reached), and the count reset.
    pub fn take_closed_early(&mut self) -> u64 {
        std::mem::take(&mut self.closed_early)
    }

    /// Closes the windows whose interval has passed (all of them with `all`), returning the
    /// merged events. The caller queues them durably before calling [`Aggregator::compact`].
    pub fn due(&mut self, now: DateTime<Utc>, all: bool) -> Vec<SecurityEvent> {
        let mut out = Vec::new();
        for (name, w) in &mut self.windows {
            let expired = w.opened.is_some_and(|o| {
                now.signed_duration_since(o).to_std().unwrap_or_default() >= w.settings.interval
            });
            if all || expired {
                out.extend(w.drain(name, now));
            }
        }
        out
    }

    /// When the next window closes, if one is open.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.windows
            .values()
            .filter_map(|w| Some(w.opened? + chrono::Duration::from_std(w.settings.interval).ok()?))
            .min()
    }

    /// Rewrites the journal to hold just the open windows (after closed ones were queued).
    pub fn compact(&mut self) -> std::io::Result<()> {
        let Some(journal) = &mut self.journal else {
            return Ok(());
        };
        let mut buf = Vec::new();
        for (name, w) in &self.windows {
            for e in &w.entries {
                let line = JournalLineRef::New {
                    kind: name,
                    opened: w.opened.unwrap_or(e.first),
                    entry: e,
                };
                serde_json::to_writer(&mut buf, &line).map_err(std::io::Error::other)?;
                buf.push(b'\n');
            }
        }
        crate::files::write_atomic(&journal.path, &buf)?;
        journal.file = std::fs::OpenOptions::new()
            .append(true)
            .open(&journal.path)?;
        journal.bytes = buf.len();
        Ok(())
    }

    /// Distinct events being counted, across all windows.
    pub fn len(&self) -> usize {
        self.windows.values().map(|w| w.entries.len()).sum()
    }

    /// Whether no window holds anything.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Window {
    fn new(settings: KindSettings) -> Window {
        Window {
            settings,
            opened: None,
            entries: Vec::new(),
            bytes: 0,
            by_hash: HashMap::new(),
        }
    }

    fn insert(&mut self, entry: Entry) {
        self.bytes += entry.bytes;
        let hash = hash_key(&self.settings.rule.key(&entry.item));
        self.by_hash
            .entry(hash)
            .or_default()
            .push(self.entries.len());
        self.entries.push(entry);
    }

    fn drain(&mut self, name: &str, now: DateTime<Utc>) -> Vec<SecurityEvent> {
        self.opened = None;
        self.bytes = 0;
        self.by_hash.clear();
        self.entries
            .drain(..)
            .map(|e| e.into_event(name, now))
            .collect()
    }
}

impl Entry {
    /// From the second hit on, the item shows the identity only.
    fn merge(&mut self, rule: &Rule) {
        if !self.merged && self.count > 1 {
            self.item = rule.neutralise(&self.item);
            self.merged = true;
        }
    }

    /// The merged event. Its category stays Triggered: the agents send "Aggregated", which the
    /// official schema does not allow, and a message that fails the schema is dropped unseen.
    fn into_event(self, name: &str, now: DateTime<Utc>) -> SecurityEvent {
        if !self.merged {
            return SecurityEvent {
                id: self.id,
                name: name.to_owned(),
                category: Category::Triggered,
                event_type: self.event_type,
                time: self.first,
                payload: vec![Value::Object(self.item)],
                family: self.family,
            };
        }
        let stamp = |t: DateTime<Utc>| {
            (
                t.with_timezone(&Local)
                    .to_rfc3339_opts(SecondsFormat::Millis, true),
                t.to_rfc3339_opts(SecondsFormat::Millis, true),
            )
        };
        let (start_local, start_utc) = stamp(self.first);
        let (end_local, end_utc) = stamp(self.last);
        let mut item = self.item;
        let details = item
            .entry("ExtraDetails")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(d) = details {
            d.insert("HitCount".into(), self.count.to_string().into());
            d.insert("StartTimeLocal".into(), start_local.into());
            d.insert("StartTimeUtc".into(), start_utc.into());
            d.insert("EndTimeLocal".into(), end_local.into());
            d.insert("EndTimeUtc".into(), end_utc.into());
        }
        SecurityEvent {
            id: self.id,
            name: name.to_owned(),
            category: Category::Triggered,
            event_type: self.event_type,
            time: now,
            payload: vec![Value::Object(item)],
            family: self.family,
        }
    }
}
