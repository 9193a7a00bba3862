//! Access lists: which client addresses may open flows to a service.
//!
//! A service's lists and the global ones (`[access]`, `services.access`)
//! become one [`AccessList`] when the configuration is loaded: the permitted
//! addresses as sorted, disjoint ranges of 16-byte addresses (IPv4 in its
//! mapped form, as flow keys hold it), so a check is one binary search —
//! about a dozen comparisons for thousands of prefixes — and allocates
//! nothing. Only a flow being decided is checked (its first packet, or a
//! flow whose backend is gone): established flows pay nothing.
//!
//! The rule: a client is refused if any deny list (global or the service's)
//! holds it, or if an allow list (global or the service's) exists and does
//! not hold it. Deny wins.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use super::flow::ip16;

/// An address prefix, `198.18.0.0/15` or `2001:db8::/32` (a bare address is
/// the host's own prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

/// Why a prefix was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    #[error("{0:?} is not an address or address/length")]
    Syntax(String),
    #[error("/{len} is longer than an {family} address")]
    Length { len: u8, family: &'static str },
    #[error("{given} has bits set after the prefix length: did you mean {meant}?")]
    HostBits { given: String, meant: String },
}

impl Prefix {
    /// The first and last 16-byte address the prefix covers.
    pub fn range(&self) -> (u128, u128) {
        let base = u128::from_be_bytes(ip16(self.addr));
        let bits = if self.addr.is_ipv4() { 96 + self.len as u32 } else { self.len as u32 };
        let host = if bits >= 128 { 0 } else { u128::MAX >> bits };
        (base & !host, base | host)
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;

    fn from_str(s: &str) -> Result<Prefix, PrefixError> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().map_err(|_| PrefixError::Syntax(s.to_owned()))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match l {
            Some(l) => l.trim().parse::<u8>().map_err(|_| PrefixError::Syntax(s.to_owned()))?,
            None => max,
        };
        if len > max {
            let family = if addr.is_ipv4() { "IPv4" } else { "IPv6" };
            return Err(PrefixError::Length { len, family });
        }
        let p = Prefix { addr, len };
        let (lo, _) = p.range();
        if lo != u128::from_be_bytes(ip16(addr)) {
            let meant = Prefix { addr: from16(lo, addr.is_ipv4()), len };
            return Err(PrefixError::HostBits { given: s.to_owned(), meant: meant.to_string() });
        }
        Ok(p)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

fn from16(x: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4((x as u32).into())
    } else {
        IpAddr::V6(x.into())
    }
}

/// One list as the configuration gives it: prefixes allowed, or denied.
/// `allow: None` is no allow list (everyone not denied).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lists {
    pub allow: Option<Vec<Prefix>>,
    pub deny: Vec<Prefix>,
}

/// The addresses permitted to open flows: sorted, disjoint, inclusive ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessList {
    permitted: Box<[(u128, u128)]>,
    /// The prefixes it was made from (for `ctl services` and the metrics).
    pub prefixes: usize,
}

/// Sorted, merged (disjoint, non-adjacent) ranges of `prefixes`.
fn union(prefixes: &[Prefix]) -> Vec<(u128, u128)> {
    let mut r: Vec<(u128, u128)> = prefixes.iter().map(Prefix::range).collect();
    r.sort_unstable();
    let mut out: Vec<(u128, u128)> = Vec::with_capacity(r.len());
    for (lo, hi) in r {
        match out.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

/// The parts of sorted disjoint `a` inside sorted disjoint `b`.
fn intersect(a: &[(u128, u128)], b: &[(u128, u128)]) -> Vec<(u128, u128)> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        let (lo, hi) = (a[i].0.max(b[j].0), a[i].1.min(b[j].1));
        if lo <= hi {
            out.push((lo, hi));
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// The parts of sorted disjoint `a` outside sorted disjoint `b`.
fn subtract(a: &[(u128, u128)], b: &[(u128, u128)]) -> Vec<(u128, u128)> {
    let mut out = Vec::new();
    let mut j = 0;
    for &(lo, hi) in a {
        let mut from = lo;
        while j < b.len() && b[j].1 < from {
            j += 1;
        }
        let mut k = j;
        let mut whole = true;
        while k < b.len() && b[k].0 <= hi {
            if b[k].0 > from {
                out.push((from, b[k].0 - 1));
            }
            if b[k].1 >= hi {
                whole = false;
                break;
            }
            from = b[k].1 + 1;
            k += 1;
        }
        if whole {
            out.push((from, hi));
        }
    }
    out
}

impl AccessList {
    /// The one list of a service: `global` and the service's own. `None`:
    /// no list says anything, everyone is permitted (and nothing is checked).
    pub fn build(global: &Lists, service: &Lists) -> Option<AccessList> {
        let prefixes = global.allow.as_ref().map_or(0, Vec::len)
            + service.allow.as_ref().map_or(0, Vec::len)
            + global.deny.len()
            + service.deny.len();
        if global.allow.is_none() && service.allow.is_none() && prefixes == 0 {
            return None;
        }
        let mut permitted = vec![(0u128, u128::MAX)];
        for allow in [&global.allow, &service.allow].into_iter().flatten() {
            permitted = intersect(&permitted, &union(allow));
        }
        let mut deny = global.deny.clone();
        deny.extend_from_slice(&service.deny);
        permitted = subtract(&permitted, &union(&deny));
        Some(AccessList { permitted: permitted.into_boxed_slice(), prefixes })
    }

    /// Whether `src` (a flow key's 16-byte source) may open a flow.
    #[inline]
    pub fn permits(&self, src: &[u8; 16]) -> bool {
        let x = u128::from_be_bytes(*src);
        let i = self.permitted.partition_point(|r| r.1 < x);
        self.permitted.get(i).is_some_and(|r| r.0 <= x)
    }

    /// Ranges after merging (what a check searches).
    pub fn ranges(&self) -> usize {
        self.permitted.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    fn src(s: &str) -> [u8; 16] {
        ip16(s.parse().unwrap())
    }

    #[test]
    fn prefixes_parse_and_refuse_what_is_wrong() {
        assert_eq!(p("198.18.0.0/15").range().1 - p("198.18.0.0/15").range().0, (1 << 17) - 1);
        assert_eq!(p("198.18.0.7"), Prefix { addr: "198.18.0.7".parse().unwrap(), len: 32 });
        assert_eq!(p("2001:db8::/32").to_string(), "2001:db8::/32");
        assert_eq!(p("0.0.0.0/0").range(), (0xffff_0000_0000, 0xffff_ffff_ffff));
        assert_eq!(p("::/0").range(), (0, u128::MAX));
        assert!(
            matches!("198.18.0.1/15".parse::<Prefix>(), Err(PrefixError::HostBits { meant, .. }) if meant == "198.18.0.0/15")
        );
        assert!(matches!("198.18.0.0/33".parse::<Prefix>(), Err(PrefixError::Length { len: 33, .. })));
        assert!(matches!("2001:db8::/129".parse::<Prefix>(), Err(PrefixError::Length { .. })));
        assert!(matches!("nonsense".parse::<Prefix>(), Err(PrefixError::Syntax(_))));
        assert!(matches!("198.18.0.0/x".parse::<Prefix>(), Err(PrefixError::Syntax(_))));
    }

    #[test]
    fn deny_wins_and_allow_lists_narrow() {
        let none = Lists::default();
        assert_eq!(AccessList::build(&none, &none), None, "no lists: nothing to check");
        let g = Lists { allow: None, deny: vec![p("198.18.66.0/24")] };
        let s = Lists {
            allow: Some(vec![p("198.18.0.0/16"), p("2001:db8:1::/48")]),
            deny: vec![p("198.18.9.9")],
        };
        let a = AccessList::build(&g, &s).unwrap();
        assert!(a.permits(&src("198.18.1.1")));
        assert!(!a.permits(&src("198.18.66.1")), "global deny");
        assert!(!a.permits(&src("198.18.9.9")), "service deny");
        assert!(a.permits(&src("198.18.9.8")));
        assert!(!a.permits(&src("198.19.0.1")), "outside the allow list");
        assert!(a.permits(&src("2001:db8:1::5")));
        assert!(!a.permits(&src("2001:db8:2::5")));
        // An IPv4 prefix never covers an IPv6 address and back.
        let v4all =
            AccessList::build(&Lists { allow: Some(vec![p("0.0.0.0/0")]), deny: vec![] }, &none).unwrap();
        assert!(v4all.permits(&src("203.0.113.1")));
        assert!(!v4all.permits(&src("2001:db8::1")));
        // Both allow lists must hold a client.
        let g2 = Lists { allow: Some(vec![p("198.18.0.0/24")]), deny: vec![] };
        let s2 = Lists { allow: Some(vec![p("198.18.0.128/25"), p("198.18.1.0/24")]), deny: vec![] };
        let b = AccessList::build(&g2, &s2).unwrap();
        assert!(b.permits(&src("198.18.0.200")));
        assert!(!b.permits(&src("198.18.0.1")));
        assert!(!b.permits(&src("198.18.1.1")));
        assert_eq!(b.ranges(), 1);
    }

    fn arb_prefix() -> impl Strategy<Value = Prefix> {
        // Few distinct top bits so that prefixes overlap, nest and touch.
        prop_oneof![
            (0u32..16, 0u8..=32).prop_map(|(x, len)| {
                let a = (0xc612_0000u32 | (x << 12)) & (u32::MAX.checked_shl(32 - len as u32).unwrap_or(0));
                Prefix { addr: IpAddr::V4(a.into()), len }
            }),
            (0u128..16, 0u8..=128).prop_map(|(x, len)| {
                let a = ((0x2001_0db8u128 << 96) | (x << 90))
                    & (u128::MAX.checked_shl(128 - len as u32).unwrap_or(0));
                Prefix { addr: IpAddr::V6(a.into()), len }
            }),
        ]
    }

    fn arb_lists() -> impl Strategy<Value = Lists> {
        (
            proptest::option::of(proptest::collection::vec(arb_prefix(), 0..6)),
            proptest::collection::vec(arb_prefix(), 0..6),
        )
            .prop_map(|(allow, deny)| Lists { allow, deny })
    }

    fn naive(g: &Lists, s: &Lists, x: u128) -> bool {
        let within = |ps: &[Prefix]| ps.iter().any(|p| (p.range().0..=p.range().1).contains(&x));
        !within(&g.deny)
            && !within(&s.deny)
            && g.allow.as_deref().is_none_or(within)
            && s.allow.as_deref().is_none_or(within)
    }

    proptest! {
        #[test]
        fn the_ranges_answer_as_the_rule_says(g in arb_lists(), s in arb_lists(), probes in proptest::collection::vec(arb_prefix(), 1..20)) {
            let list = AccessList::build(&g, &s);
            for pr in probes {
                // Each probe's first and last address, and its neighbours.
                let (lo, hi) = pr.range();
                for x in [lo, hi, lo.wrapping_sub(1), hi.wrapping_add(1)] {
                    let want = naive(&g, &s, x);
                    let got = list.as_ref().is_none_or(|l| l.permits(&x.to_be_bytes()));
                    prop_assert_eq!(got, want, "address {:x}", x);
                }
            }
        }
    }
}
