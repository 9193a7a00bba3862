//! Turns a validated configuration into the workers' [`ForwardingState`].

use std::net::IpAddr;
use std::sync::Arc;

use super::config::{
    BackendSection, ForwardingMode, OverQuotaName, PortSection, Protocol, QuotaSection, SchedulerName,
    ServiceSection, Validated,
};
use crate::balancer::flowtable::Timeouts;
use crate::balancer::state::{
    Backend, BuildError, Forwarding, ForwardingState, OverQuota, PortIdentity, Quota, Scheduler, ServiceSpec,
    ServiceStats, VipPathTarget,
};
use crate::net::ethernet::Mac;

/// Facts about a port that come from the device, not the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortFacts {
    pub mac: Mac,
    pub mtu: u16,
}

/// Facts for running without devices (`l4lb simulate`): the configured MAC or
/// `02:00:00:00:00:NN` (NN = port index + 1), the configured MTU or 1500.
pub fn simulated_facts(cfg: &Validated) -> Vec<PortFacts> {
    cfg.config
        .ports
        .iter()
        .enumerate()
        .map(|(i, p)| PortFacts {
            mac: p.mac.unwrap_or([0x02, 0, 0, 0, 0, (i + 1) as u8]),
            mtu: p.mtu.unwrap_or(1500),
        })
        .collect()
}

fn on_link(port: &PortSection, ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => port.ipv4.is_some_and(|c| {
            let mask = if c.prefix_len == 0 { 0 } else { u32::MAX << (32 - c.prefix_len) };
            u32::from(a) & mask == u32::from(c.addr) & mask
        }),
        IpAddr::V6(a) => port.ipv6.is_some_and(|c| {
            let mask = if c.prefix_len == 0 { 0 } else { u128::MAX << (128 - c.prefix_len) };
            u128::from(a) & mask == u128::from(c.addr) & mask
        }),
    }
}

fn neighbour(port: &PortSection, ip: IpAddr) -> Option<Mac> {
    port.neighbours.iter().find(|n| n.ip == ip).map(|n| n.mac)
}

/// The address whose MAC a backend's packets are sent to: the backend itself
/// (L2 mode, or on-link when encapsulating), else the port's gateway.
fn hop_address(svc: &ServiceSection, port: &PortSection, addr: IpAddr) -> Option<IpAddr> {
    if svc.forwarding == ForwardingMode::L2 || on_link(port, addr) {
        return Some(addr);
    }
    match addr {
        IpAddr::V4(_) => port.gateway.map(IpAddr::V4),
        IpAddr::V6(_) => port.gateway6.map(IpAddr::V6),
    }
}

/// Dynamically resolved neighbours: (port index, address) -> MAC.
pub type Resolver<'a> = &'a dyn Fn(usize, IpAddr) -> Option<Mac>;

/// The MAC a backend's packets are sent to: the backend's configured `mac`
/// when it is the hop, else a static neighbour, else a resolved one.
pub fn next_hop(
    svc: &ServiceSection,
    port_index: usize,
    port: &PortSection,
    addr: IpAddr,
    mac: Option<Mac>,
    resolved: Resolver<'_>,
) -> Option<Mac> {
    let hop = hop_address(svc, port, addr)?;
    let configured = if hop == addr { mac } else { None };
    configured.or_else(|| neighbour(port, hop)).or_else(|| resolved(port_index, hop))
}

/// The (port, address) pairs whose MAC must be learnt by ARP / neighbour
/// discovery: next hops with neither a configured MAC nor a static neighbour.
pub fn needed_neighbours(cfg: &Validated) -> Vec<(usize, IpAddr)> {
    let c = &cfg.config;
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for s in &c.services {
        let egress = crate::control::config::egress_port(c, s);
        let port = &c.ports[egress];
        for b in &s.backends {
            let Some(hop) = hop_address(s, port, b.address) else { continue };
            let configured = hop == b.address && b.mac.is_some();
            if !configured && neighbour(port, hop).is_none() && seen.insert((egress, hop)) {
                out.push((egress, hop));
            }
        }
    }
    out
}

/// Builds generation `generation` of the forwarding state. Backend ids are
/// assigned in configuration order (service by service).
pub fn build_state(
    cfg: &Validated,
    generation: u64,
    facts: &[PortFacts],
) -> Result<ForwardingState, BuildError> {
    let mut next_id = 0u32;
    let workers = cfg.workers.len();
    build_state_with(
        cfg,
        generation,
        facts,
        &|_, _| None,
        &mut |_, b| {
            next_id += 1;
            Some(Adjust { id: next_id - 1, weight: b.weight, draining: false, rtt_us: 0 })
        },
        &|_| ServiceStats::new(workers),
        None,
    )
}

/// What the management side decides about one backend beyond the file:
/// its stable id, its weight now (slow start, `set-weight`), drain, last RTT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Adjust {
    pub id: u32,
    pub weight: u32,
    pub draining: bool,
    pub rtt_us: u32,
}

/// Builds a state where `adjust` decides, for each configured backend (in
/// order), whether it is in the state (`None`: down or removed) and how;
/// Maglev tables that would not change are taken from `previous`.
pub fn build_state_with(
    cfg: &Validated,
    generation: u64,
    facts: &[PortFacts],
    resolved: Resolver<'_>,
    adjust: &mut dyn FnMut(&ServiceSection, &BackendSection) -> Option<Adjust>,
    stats: &dyn Fn(&ServiceSection) -> Arc<ServiceStats>,
    previous: Option<&ForwardingState>,
) -> Result<ForwardingState, BuildError> {
    let c = &cfg.config;
    let ports: Vec<PortIdentity> = c
        .ports
        .iter()
        .zip(facts)
        .enumerate()
        .map(|(i, (p, f))| PortIdentity {
            mac: f.mac,
            ipv4: p.ipv4.map(|x| x.addr),
            ipv6: p.ipv6.map(|x| x.addr),
            mtu: f.mtu,
            kernel: crate::control::config::kernel_interface_name(c, i).is_some(),
            punt_unknown_vip_ports: p.kernel.punt_unknown_vip_ports
                && crate::control::config::kernel_interface_name(c, i).is_some(),
        })
        .collect();
    let mut specs = Vec::with_capacity(c.services.len());
    for (i, s) in c.services.iter().enumerate() {
        let egress = crate::control::config::egress_port(c, s);
        let port = &c.ports[egress];
        let backends = s
            .backends
            .iter()
            .filter_map(|b| {
                let a = adjust(s, b)?;
                Some(Backend {
                    id: a.id,
                    addr: b.address,
                    weight: a.weight,
                    draining: a.draining,
                    rtt_us: a.rtt_us,
                    next_hop: next_hop(s, egress, port, b.address, b.mac, resolved),
                    port: egress,
                })
            })
            .collect();
        let t = &s.timeouts;
        specs.push(ServiceSpec {
            name: s.name.clone(),
            vip: s.vip,
            proto: match s.protocol {
                Protocol::Tcp => crate::net::proto::TCP,
                Protocol::Udp => crate::net::proto::UDP,
            },
            port: s.port,
            forwarding: forwarding(s),
            scheduler: match s.scheduler {
                SchedulerName::Maglev => Scheduler::Maglev,
                SchedulerName::SourceIp => {
                    Scheduler::SourceIp { v4_prefix: s.source_prefix_v4, v6_prefix: s.source_prefix_v6 }
                }
                SchedulerName::RoundRobin => Scheduler::RoundRobin,
                SchedulerName::WeightedRoundRobin => Scheduler::WeightedRoundRobin,
                SchedulerName::LeastConnections => Scheduler::LeastConnections,
                SchedulerName::WeightedLeastConnections => Scheduler::WeightedLeastConnections,
                SchedulerName::LeastResponseTime => Scheduler::LeastResponseTime,
            },
            persistence_ms: s.persistence_s * 1000,
            timeouts: Timeouts {
                tcp_syn_ms: t.tcp_syn_s * 1000,
                tcp_established_ms: t.tcp_established_s * 1000,
                tcp_closing_ms: t.tcp_closing_s * 1000,
                udp_ms: t.udp_s * 1000,
                other_ms: t.other_s * 1000,
            },
            answer_arp: s.answer_arp,
            maglev_size: s.maglev_table_size,
            backends,
            access: cfg.access.get(i).cloned().flatten(),
            stats: stats(s),
            quota: s.quota.as_ref().map(quota),
        });
    }
    let mut st = ForwardingState::build_reusing(generation, ports, specs, previous)?;
    // Every configured backend, up or down: the box's health checks reach
    // them all, and their answers must get through a flood. So must the
    // BGP peers' packets, whatever port they use.
    let peers = c.bgp.iter().flat_map(|b| b.peers.iter().map(|p| crate::balancer::flow::ip16(p.address)));
    st.set_priority_sources(
        c.services
            .iter()
            .flat_map(|s| s.backends.iter().map(|b| crate::balancer::flow::ip16(b.address)))
            .chain(peers)
            .collect(),
    );
    Ok(st)
}

/// A service's forwarding mode as workers apply it.
fn forwarding(s: &ServiceSection) -> Forwarding {
    match s.forwarding {
        ForwardingMode::L2 => Forwarding::L2,
        ForwardingMode::Ipip => Forwarding::IpIp,
        ForwardingMode::Gue => Forwarding::Gue { port: s.gue_port },
    }
}

/// Every configured backend checked through its VIP's path, up or down
/// (`config::checked_via_vip`), with the stable id `id_of` gives it.
pub fn vip_path_targets(
    cfg: &Validated,
    resolved: Resolver<'_>,
    id_of: &dyn Fn(&ServiceSection, IpAddr) -> Option<u32>,
) -> Vec<VipPathTarget> {
    let c = &cfg.config;
    let mut out = Vec::new();
    for s in &c.services {
        let egress = crate::control::config::egress_port(c, s);
        let port = &c.ports[egress];
        for b in s.backends.iter().filter(|b| crate::control::config::checked_via_vip(c, s, b)) {
            let Some(id) = id_of(s, b.address) else { continue };
            out.push(VipPathTarget {
                vip: s.vip,
                forwarding: forwarding(s),
                backend: Backend {
                    id,
                    addr: b.address,
                    weight: 0,
                    draining: false,
                    rtt_us: 0,
                    next_hop: next_hop(s, egress, port, b.address, b.mac, resolved),
                    port: egress,
                },
            });
        }
    }
    out
}

/// A service's quota as workers enforce it.
fn quota(q: &QuotaSection) -> Quota {
    let rate = q.new_flows_per_s.unwrap_or(0);
    Quota {
        new_flows_per_s: rate,
        new_flows_burst: q.new_flows_burst.unwrap_or((rate / 10).max(1)),
        table_share_milli: q
            .flow_table_share
            .map_or(1000, |f| (f * 1000.0).round().clamp(1.0, 1000.0) as u32),
        over: match q.over_quota {
            OverQuotaName::Drop => OverQuota::Drop,
            OverQuotaName::Stateless => OverQuota::Stateless,
        },
    }
}

/// The pipeline's worker sizes from `[workers]`.
pub fn worker_config(cfg: &Validated) -> crate::dataplane::pipeline::WorkerConfig {
    let w = &cfg.config.workers;
    crate::dataplane::pipeline::WorkerConfig {
        flow_capacity: w.flow_table_capacity,
        persist_capacity: w.persistence_capacity,
        icmp_rate_per_s: w.icmp_rate_per_s,
        icmp_burst: w.icmp_burst,
        ..Default::default()
    }
}
