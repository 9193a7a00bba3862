//! Parsing of EAL's `--lcores` map, so `l4lb check` can validate it without
//! starting DPDK: `LCORES[@CPUS][,LCORES[@CPUS]...]` where a set is `N`,
//! `A-B` or `(N,A-B,...)`.

use std::collections::BTreeSet;

/// One parsed map: each lcore id with the CPUs it may run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LcoreMap {
    pub entries: Vec<(u32, BTreeSet<u32>)>,
}

impl LcoreMap {
    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.entries.iter().map(|(id, _)| *id)
    }
}

pub const MAX_LCORE: u32 = 128;

pub fn parse(s: &str) -> Result<LcoreMap, String> {
    let mut entries: Vec<(u32, BTreeSet<u32>)> = Vec::new();
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err("empty lcore map".into());
    }
    while !rest.is_empty() {
        let grouped = rest.starts_with('(');
        let (lcores, r) = parse_set(rest)?;
        rest = r;
        // Without `@`, `0-2` is lcore N on CPU N; a group `(0-2)` floats on
        // the group's CPUs (EAL's --lcores).
        let cpus = if let Some(r) = rest.strip_prefix('@') {
            let (cpus, r) = parse_set(r)?;
            rest = r;
            Some(cpus)
        } else if grouped {
            Some(lcores.clone())
        } else {
            None
        };
        for id in lcores {
            let cpus = cpus.clone().unwrap_or_else(|| BTreeSet::from([id]));
            if id >= MAX_LCORE {
                return Err(format!("lcore {id} is over DPDK's limit of {}", MAX_LCORE - 1));
            }
            if entries.iter().any(|(e, _)| *e == id) {
                return Err(format!("lcore {id} appears twice"));
            }
            entries.push((id, cpus));
        }
        match rest.strip_prefix(',') {
            Some(r) if !r.is_empty() => rest = r,
            Some(_) => return Err("trailing comma".into()),
            None if rest.is_empty() => {}
            None => return Err(format!("unexpected `{rest}`")),
        }
    }
    entries.sort_by_key(|(id, _)| *id);
    Ok(LcoreMap { entries })
}

/// A single number, a range `A-B`, or a parenthesised list of those.
fn parse_set(s: &str) -> Result<(BTreeSet<u32>, &str), String> {
    if let Some(inner) = s.strip_prefix('(') {
        let end = inner.find(')').ok_or("missing `)`")?;
        let mut set = BTreeSet::new();
        for part in inner[..end].split(',') {
            set.extend(parse_range(part.trim())?);
        }
        if set.is_empty() {
            return Err("empty `()` set".into());
        }
        Ok((set, &inner[end + 1..]))
    } else {
        let end = s.find(|c: char| !(c.is_ascii_digit() || c == '-')).unwrap_or(s.len());
        Ok((parse_range(&s[..end])?.collect(), &s[end..]))
    }
}

fn parse_range(s: &str) -> Result<impl Iterator<Item = u32>, String> {
    let num = |t: &str| t.parse::<u32>().map_err(|_| format!("`{t}` is not a number"));
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => (num(s)?, num(s)?),
    };
    if a > b {
        return Err(format!("range `{s}` runs backwards"));
    }
    if b - a > 1024 {
        return Err(format!("range `{s}` is too large"));
    }
    Ok(a..=b)
}

/// The CPUs this process may run on (`Cpus_allowed_list` of
/// `/proc/self/status`: the machine's CPUs less any affinity mask it was
/// started under); none when that cannot be read.
pub fn allowed_cpus() -> Option<BTreeSet<u32>> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let list = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?;
    cpu_list(list.trim())
}

/// Parses a kernel CPU list such as `0-3,8,10-11`.
pub fn cpu_list(s: &str) -> Option<BTreeSet<u32>> {
    let mut set = BTreeSet::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        set.extend(parse_range(part.trim()).ok()?);
    }
    Some(set)
}

/// The first lcore pinned to a CPU outside `allowed`, and that CPU, with
/// a sentence that names the key, for `check` (a warning: the file may be
/// for another machine) and `run` (an error before EAL starts).
pub fn missing_cpu(map: &LcoreMap, allowed: &BTreeSet<u32>) -> Option<String> {
    let (lcore, cpu) = map
        .entries
        .iter()
        .find_map(|(id, cpus)| cpus.iter().find(|c| !allowed.contains(c)).map(|c| (*id, *c)))?;
    let have: Vec<String> = allowed.iter().map(u32::to_string).collect();
    Some(format!(
        "dpdk.lcores: lcore {lcore} is pinned to CPU {cpu}, which this machine does not offer (CPUs here: {}); \
         pin every lcore to one of those",
        have.join(",")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lcores_on_cpus_the_machine_lacks_are_named() {
        let allowed = cpu_list("0-1").unwrap();
        assert_eq!(missing_cpu(&parse("0@0,1@1").unwrap(), &allowed), None);
        assert_eq!(missing_cpu(&parse("0@0,1@(0-1)").unwrap(), &allowed), None);
        let e = missing_cpu(&parse("0@0,1@1,2@2,3@3").unwrap(), &allowed).unwrap();
        assert!(e.starts_with("dpdk.lcores: lcore 2 is pinned to CPU 2"), "{e}");
        assert!(e.contains("CPUs here: 0,1"), "{e}");
        // Without `@`, lcore N runs on CPU N.
        assert!(missing_cpu(&parse("0-2").unwrap(), &allowed).unwrap().contains("lcore 2"));
        assert_eq!(cpu_list("0-3,8,10-11").unwrap(), BTreeSet::from([0, 1, 2, 3, 8, 10, 11]));
        assert!(allowed_cpus().is_some_and(|c| !c.is_empty()), "this machine's CPUs");
    }

    #[test]
    fn forms() {
        let m = parse("0@0,1@1").unwrap();
        assert_eq!(m.ids().collect::<Vec<_>>(), vec![0, 1]);
        let m = parse("(0-2)@(0,1),4").unwrap();
        assert_eq!(m.ids().collect::<Vec<_>>(), vec![0, 1, 2, 4]);
        assert_eq!(m.entries[0].1, BTreeSet::from([0, 1]));
        assert_eq!(m.entries[3].1, BTreeSet::from([4]));
        let m = parse("0-3").unwrap();
        assert_eq!(m.ids().count(), 4);
        assert_eq!(m.entries[2].1, BTreeSet::from([2]), "lcore N on CPU N");
        let m = parse("(0-1)").unwrap();
        assert_eq!(m.entries[1].1, BTreeSet::from([0, 1]), "a group floats on its CPUs");
    }

    #[test]
    fn errors() {
        for bad in ["", "a", "0,", "0,0", "3-1", "(0", "0@", "200", "0@(", "()"] {
            assert!(parse(bad).is_err(), "{bad:?} should fail");
        }
    }
}
