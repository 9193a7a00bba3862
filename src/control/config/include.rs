//! Reading a configuration: the main file, the files its `include` names
//! (more `[[services]]`), and the cache that lets a reload parse only the
//! files whose text changed — a configuration of a thousand services kept
//! one file per service reloads one service's change in milliseconds.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::{Config, ConfigError, ServiceSection, Validated};

/// What an included file may hold.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct IncludedFile {
    #[serde(default)]
    services: Vec<ServiceSection>,
}

/// A file's text and what it parsed to.
type Entry<T> = Arc<(String, T)>;

/// The text of each file read last time and what it parsed to.
#[derive(Debug, Clone, Default)]
pub struct ConfigCache {
    main: HashMap<PathBuf, Entry<Config>>,
    included: HashMap<PathBuf, Entry<Vec<ServiceSection>>>,
    /// The main file's services, by their text (see [`split_services`]).
    chunks: HashMap<String, Arc<Vec<ServiceSection>>>,
    /// How many files the last load parsed (the others were unchanged).
    parsed: usize,
}

/// Where the services of the merged configuration came from: an included
/// file's services start at `first`.
struct Origin {
    file: String,
    first: usize,
}

fn read(path: &Path, file: &str, key: &str) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.to_owned(),
        key: key.to_owned(),
        reason: format!("cannot read {}: {e}", path.display()),
    })
}

/// Parses TOML text into `T`; `file` is used in error messages, whose line
/// numbers count from `first_line` (the text may be part of a file).
fn parse_toml<T: DeserializeOwned>(text: &str, file: &str, first_line: usize) -> Result<T, ConfigError> {
    let syntax = |e: toml::de::Error| (".".to_owned(), e);
    let de = toml::Deserializer::parse(text).map_err(syntax);
    let parsed = de.and_then(|de| {
        serde_path_to_error::deserialize::<_, T>(de).map_err(|e| (e.path().to_string(), e.into_inner()))
    });
    parsed.map_err(|(path, inner)| {
        let mut msg = inner.message().trim_end().to_owned();
        let line = inner.span().map(|s| first_line + text[..s.start.min(text.len())].matches('\n').count());
        let mut key = if path == "." { String::new() } else { path };
        // serde reports a missing key at its parent: name the key itself.
        if let Some(field) = msg.strip_prefix("missing field `").and_then(|m| m.strip_suffix('`')) {
            key = if key.is_empty() { field.to_owned() } else { format!("{key}.{field}") };
            msg = "required key is missing".to_owned();
        } else if let Some(rest) = msg.strip_prefix("unknown field `") {
            if let Some((field, expected)) = rest.split_once('`') {
                let field = field.to_owned();
                let known = expected.trim_start_matches(", expected ").to_owned();
                if !key.ends_with(&field) {
                    key = if key.is_empty() { field.clone() } else { format!("{key}.{field}") };
                }
                msg = format!("unknown key (known keys here: {known})");
            }
        }
        if key.is_empty() {
            key = "(syntax)".into();
        }
        if let Some(line) = line {
            msg = format!("{msg} (line {line})");
        }
        ConfigError { file: file.to_owned(), key, reason: msg }
    })
}

impl Config {
    /// Reads, parses and validates a file and the files it includes.
    pub fn load(path: &Path) -> Result<Validated, ConfigError> {
        Self::load_cached(path, &mut ConfigCache::default())
    }

    /// As [`Config::load`], parsing only files whose text differs from what
    /// `cache` holds; the cache then holds the files read now.
    pub fn load_cached(path: &Path, cache: &mut ConfigCache) -> Result<Validated, ConfigError> {
        let file = path.display().to_string();
        let text = read(path, &file, "(file)")?;
        let mut cfg = Config::parse_cached(&text, &file, cache)?;
        let mut seen = HashMap::new();
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut origins = Vec::new();
        for (i, inc) in cfg.include.clone().iter().enumerate() {
            let key = format!("include[{i}]");
            for p in included_files(&dir.join(inc), &file, &key)? {
                let name = p.display().to_string();
                if p.as_path() == path || seen.contains_key(&p) {
                    return Err(ConfigError {
                        file: file.clone(),
                        key,
                        reason: format!("{name} is read twice (this file, or named by two entries)"),
                    });
                }
                let text = read(&p, &file, &key)?;
                let entry = take(&mut cache.included, &mut cache.parsed, &p, text, |t| {
                    parse_toml::<IncludedFile>(t, &name, 1).map(|f| f.services)
                })?;
                origins.push(Origin { file: name, first: cfg.services.len() });
                cfg.services.extend(entry.1.iter().cloned());
                seen.insert(p, entry);
            }
        }
        cache.included = seen;
        cfg.validate(&file).map_err(|e| relocate(e, &origins))
    }

    /// [`Config::parse`] of the main file's text, taking what `cache` holds
    /// for the parts whose text is unchanged (see [`split_services`]): the
    /// same result as parsing the text whole.
    pub fn parse_cached(text: &str, file: &str, cache: &mut ConfigCache) -> Result<Config, ConfigError> {
        cache.parsed = 0;
        let (prelude, chunks) = split_services(text).unwrap_or((text, Vec::new()));
        let main = take(&mut cache.main, &mut cache.parsed, Path::new(file), prelude.to_owned(), |t| {
            Config::parse(t, file)
        })?;
        let mut cfg = main.1.clone();
        if !chunks.is_empty() && !cfg.services.is_empty() {
            // Services before the first `[[services]]` too: TOML's own error.
            cfg = Config::parse(text, file)?;
        }
        let mut kept = HashMap::new();
        let mut changed = false;
        for (line, chunk) in chunks {
            let n = cfg.services.len();
            let services = match cache.chunks.remove(chunk).or_else(|| kept.get(chunk).cloned()) {
                Some(s) => s,
                None => {
                    changed = true;
                    let f = parse_toml::<IncludedFile>(chunk, file, line).map_err(|mut e| {
                        if let Some(rest) = e.key.strip_prefix("services[0]") {
                            e.key = format!("services[{n}]{rest}");
                        }
                        e
                    })?;
                    Arc::new(f.services)
                }
            };
            cfg.services.extend(services.iter().cloned());
            kept.insert(chunk.to_owned(), services);
        }
        // The main file counts once as parsed when any part of it was.
        if changed && cache.parsed == 0 {
            cache.parsed = 1;
        }
        cache.chunks = kept;
        cache.main = HashMap::from([(PathBuf::from(file), main)]);
        Ok(cfg)
    }

    /// Parses TOML text; `file` is used in error messages.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        parse_toml(text, file, 1)
    }
}

/// The cached entry for `path` if its text is `text`, else `parse(text)`.
fn take<T>(
    files: &mut HashMap<PathBuf, Entry<T>>,
    parsed: &mut usize,
    path: &Path,
    text: String,
    parse: impl FnOnce(&str) -> Result<T, ConfigError>,
) -> Result<Entry<T>, ConfigError> {
    match files.remove(path) {
        Some(e) if e.0 == text => Ok(e),
        _ => {
            *parsed += 1;
            let value = parse(&text)?;
            Ok(Arc::new((text, value)))
        }
    }
}

impl ConfigCache {
    /// How many files the last load parsed; the others it read were as
    /// before.
    pub fn parsed(&self) -> usize {
        self.parsed
    }

    /// How many files it holds.
    pub fn len(&self) -> usize {
        self.main.len() + self.included.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The main file split at its top-level `[[services]]` headers: the text
/// before the first, and each service's text with the line it starts on,
/// so that a reload parses only the services whose text changed (and a big
/// file parses faster in pieces). `None` where a split could be wrong: a
/// multi-line string, a quoted table name, or a table after the services
/// that is not one of theirs — the file is then parsed whole.
pub(super) fn split_services(text: &str) -> Option<(&str, Vec<(usize, &str)>)> {
    if text.contains("\"\"\"") || text.contains("'''") {
        return None;
    }
    let mut starts: Vec<(usize, usize)> = Vec::new();
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let t = line.trim_start();
        // A key `services` (`services = []` before the tables) would clash
        // with the tables in the whole text, not in pieces.
        if t.strip_prefix("services").is_some_and(|r| r.trim_start().starts_with(['=', '.'])) {
            return None;
        }
        if t.starts_with('[') {
            let head = t.split('#').next().unwrap_or_default();
            if head.contains(['"', '\'']) {
                return None;
            }
            let name: String = head.chars().filter(|c| !c.is_whitespace()).collect();
            if name == "[[services]]" {
                starts.push((offset, i + 1));
            } else if !starts.is_empty()
                && !name.starts_with("[services.")
                && !name.starts_with("[[services.")
            {
                return None;
            }
        }
        offset += line.len();
    }
    let first = starts.first().map_or(text.len(), |s| s.0);
    let ends = starts.iter().skip(1).map(|s| s.0).chain([text.len()]);
    let chunks = starts.iter().zip(ends).map(|(&(from, line), to)| (line, &text[from..to])).collect();
    Some((&text[..first], chunks))
}

/// A file, or every `*.toml` file in a directory by name.
fn included_files(path: &Path, file: &str, key: &str) -> Result<Vec<PathBuf>, ConfigError> {
    let err = |e: std::io::Error| ConfigError {
        file: file.to_owned(),
        key: key.to_owned(),
        reason: format!("cannot read {}: {e}", path.display()),
    };
    if !path.metadata().map_err(err)?.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(err)? {
        let p = entry.map_err(err)?.path();
        if p.extension().is_some_and(|x| x == "toml") && p.is_file() {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

/// A validation error about `services[N]` of an included file names that
/// file and the service's place in it.
fn relocate(mut e: ConfigError, origins: &[Origin]) -> ConfigError {
    let Some(rest) = e.key.strip_prefix("services[") else { return e };
    let Some((n, tail)) = rest.split_once(']') else { return e };
    let Ok(n) = n.parse::<usize>() else { return e };
    if let Some(o) = origins.iter().rev().find(|o| o.first <= n) {
        e.key = format!("services[{}]{tail}", n - o.first);
        e.file = o.file.clone();
    }
    e
}
