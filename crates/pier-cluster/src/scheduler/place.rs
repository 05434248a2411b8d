//! Choosing a host: the filters (state up, constraints, resources, host ports, affinity
//! and anti-affinity), the scores (spread, binpack) and the "no host fits" explanation.
//!
//! Every filter is exact: a host is chosen only if it passes all of them on the view. The
//! speed comes from where the candidates are taken, never from sampling:
//! - `host.id==ID` pins the one host;
//! - with an affinity rule, the hosts running a matching instance (the smallest such set);
//! - else the view's open hosts ordered by free share (those labelled with the most
//!   selective `host.label.KEY==VALUE`, or all of them), walked from the best score on:
//!   spread from the top down, binpack up from the least share a host that fits can have
//!   ([`HostView::least_share`]; full hosts are below it and never visited). The first
//!   host that passes is the best; at worst the walk visits every open host (when nearly
//!   none passes).
//!
//! Scores, on a host's free share (what is free of its most used resource, CPU, memory
//! or disk, as a share of its capacity; see [`Host::free_share`]): spread takes the
//! highest (the least allocated host), binpack the lowest that fits (the most allocated).
//! Ties go to the host whose ID sorts first, so a placement on the same view is always
//! the same.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use super::model::{AffinityRule, Constraint, HostPort, HostState, InstanceRequest, Strategy};
use super::view::{Host, HostView, Slot, Tag, Tagged};

/// Why a host was passed over; the order is the order the filters run in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Reject {
    Down,
    Cordoned,
    Draining,
    Constraint(usize),
    Memory,
    Cpu,
    Disk,
    Port(HostPort),
    Affinity(usize),
    AntiAffinity(usize),
}

/// A request checked against one view.
pub(crate) struct Plan<'a> {
    req: &'a InstanceRequest,
    /// Per rule of `req.affinity`, the hosts running a matching instance.
    rules: Vec<Option<&'a Tagged>>,
    /// A host without its heartbeat is down (see [`HostView::require_heartbeats`]).
    require_heartbeat: bool,
}

impl<'a> Plan<'a> {
    pub(crate) fn new(view: &'a HostView, req: &'a InstanceRequest) -> Self {
        let rules = req
            .affinity
            .iter()
            .map(|r| view.tagged(&Tag::of(&req.project, &r.selector)))
            .collect();
        Plan {
            req,
            rules,
            require_heartbeat: view.requires_heartbeats(),
        }
    }

    /// Runs every filter on `host`; the first that fails says why.
    pub(crate) fn check(&self, host: &Host) -> Result<(), Reject> {
        let Some(record) = host.record() else {
            return Err(Reject::Down);
        };
        if self.require_heartbeat && !host.beating() {
            return Err(Reject::Down);
        }
        match record.state {
            HostState::Up => {}
            HostState::Down => return Err(Reject::Down),
            HostState::Cordoned => return Err(Reject::Cordoned),
            HostState::Draining => return Err(Reject::Draining),
        }
        for (i, c) in self.req.constraints.iter().enumerate() {
            if !c.admits(host.id(), &record.labels) {
                return Err(Reject::Constraint(i));
            }
        }
        let (need, free) = (&self.req.resources, host.free());
        if need.memory_bytes > free.memory_bytes {
            return Err(Reject::Memory);
        }
        if need.cpu_millis > free.cpu_millis {
            return Err(Reject::Cpu);
        }
        if need.disk_bytes > free.disk_bytes {
            return Err(Reject::Disk);
        }
        let in_use = &host.allocation().ports;
        if let Some(p) = self.req.ports.iter().find(|p| in_use.contains(p)) {
            return Err(Reject::Port(*p));
        }
        for (i, (rule, hosts)) in self.req.affinity.iter().zip(&self.rules).enumerate() {
            let present = hosts.is_some_and(|h| h.contains_key(host.id()));
            match (rule.anti, present) {
                (false, false) => return Err(Reject::Affinity(i)),
                (true, true) => return Err(Reject::AntiAffinity(i)),
                _ => {}
            }
        }
        Ok(())
    }

    fn fits(&self, view: &HostView, id: &str) -> bool {
        view.host(id).is_some_and(|h| self.check(h).is_ok())
    }

    /// The best host that passes every filter, or None.
    pub(crate) fn choose(&self, view: &HostView) -> Option<Arc<str>> {
        let pinned = self.req.constraints.iter().find_map(|c| match c {
            Constraint::HostId { id, equal: true } => Some(id),
            _ => None,
        });
        if let Some(id) = pinned {
            let host = view.host(id)?;
            return self.check(host).is_ok().then(|| host.id_arc().clone());
        }
        let affine = self
            .req
            .affinity
            .iter()
            .zip(&self.rules)
            .filter(|(r, _)| !r.anti)
            .map(|(_, hosts)| *hosts)
            .min_by_key(|hosts| hosts.map_or(0, |h| h.len()));
        if let Some(hosts) = affine {
            return self.best_of(view, hosts?.keys());
        }
        let mut set = view.up();
        for c in &self.req.constraints {
            if let Constraint::Label {
                key,
                value,
                equal: true,
            } = c
            {
                let labelled = view.labelled(key, value)?;
                if labelled.len() < set.len() {
                    set = labelled;
                }
            }
        }
        let ok = |(_, id): &&Slot| self.fits(view, id);
        match self.req.strategy {
            Strategy::Spread => {
                let (free, last) = set.iter().rev().find(ok)?;
                // Among hosts as free as the one found, the first ID wins.
                let from: Slot = (*free, Arc::from(""));
                let to: Slot = (*free, last.clone());
                set.range(from..=to).find(ok).map(|(_, id)| id.clone())
            }
            Strategy::Binpack => {
                let from: Slot = (view.least_share(&self.req.resources), Arc::from(""));
                set.range(from..).find(ok).map(|(_, id)| id.clone())
            }
        }
    }

    /// The best of `ids` by the request's strategy.
    fn best_of<'h>(
        &self,
        view: &HostView,
        ids: impl Iterator<Item = &'h Arc<str>>,
    ) -> Option<Arc<str>> {
        let mut best: Option<(u64, &Arc<str>)> = None;
        for id in ids {
            let Some(host) = view.host(id).filter(|h| self.check(h).is_ok()) else {
                continue;
            };
            let free = host.free_share();
            let better = match best {
                None => true,
                Some((f, b)) => {
                    let by_free = match self.req.strategy {
                        Strategy::Spread => free.cmp(&f).reverse(),
                        Strategy::Binpack => free.cmp(&f),
                    };
                    by_free.then_with(|| id.cmp(b)).is_lt()
                }
            };
            if better {
                best = Some((free, id));
            }
        }
        best.map(|(_, id)| id.clone())
    }

    /// Why no host fits: every known host's first failing filter, counted.
    pub(crate) fn diagnose(&self, view: &HostView) -> NoFit {
        let mut counts: BTreeMap<Reject, usize> = BTreeMap::new();
        let (mut hosts, mut fitting) = (0, 0);
        for host in view.hosts().filter(|h| h.record().is_some()) {
            hosts += 1;
            match self.check(host) {
                Ok(()) => fitting += 1,
                Err(r) => *counts.entry(r).or_default() += 1,
            }
        }
        let mut counts: Vec<_> = counts.into_iter().collect();
        // Most common first; the filter order breaks ties.
        counts.sort_by(|(ra, a), (rb, b)| b.cmp(a).then(ra.cmp(rb)));
        let reasons = counts
            .into_iter()
            .map(|(r, n)| (n, self.describe(r, n)))
            .collect();
        NoFit {
            instance: self.req.instance(),
            hosts,
            fitting,
            reasons,
        }
    }

    fn describe(&self, r: Reject, n: usize) -> String {
        let (one, many) = match r {
            Reject::Down => ("is down".to_string(), "are down".to_string()),
            Reject::Cordoned => ("is cordoned".into(), "are cordoned".into()),
            Reject::Draining => ("is draining".into(), "are draining".into()),
            Reject::Constraint(i) => {
                let c = &self.req.constraints[i];
                (format!("does not match {c}"), format!("do not match {c}"))
            }
            Reject::Memory => {
                let need = bytes(self.req.resources.memory_bytes);
                (
                    format!("lacks memory (need {need})"),
                    format!("lack memory (need {need})"),
                )
            }
            Reject::Cpu => {
                let need = Cpus(self.req.resources.cpu_millis);
                (
                    format!("lacks CPU (need {need})"),
                    format!("lack CPU (need {need})"),
                )
            }
            Reject::Disk => {
                let need = bytes(self.req.resources.disk_bytes);
                (
                    format!("lacks disk (need {need})"),
                    format!("lack disk (need {need})"),
                )
            }
            Reject::Port(p) => (
                format!("has host port {p} in use"),
                format!("have host port {p} in use"),
            ),
            Reject::Affinity(i) => {
                let sel = &self.req.affinity[i].selector;
                (
                    format!("runs no instance matching {sel} (affinity)"),
                    format!("run no instance matching {sel} (affinity)"),
                )
            }
            Reject::AntiAffinity(i) => {
                let AffinityRule { selector, .. } = &self.req.affinity[i];
                (
                    format!("runs an instance matching {selector} (anti-affinity)"),
                    format!("run an instance matching {selector} (anti-affinity)"),
                )
            }
        };
        let verb = if n == 1 { one } else { many };
        format!("{n} {verb}")
    }
}

/// Why no host fits a request; see its `Display`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoFit {
    /// `project/instance-id`.
    pub instance: String,
    /// The hosts of the pool.
    pub hosts: usize,
    /// How many of them fit (0, unless the pool changed between choosing and explaining).
    pub fitting: usize,
    /// Per filter that turned hosts away, how many and why, most common first.
    pub reasons: Vec<(usize, String)>,
}

impl fmt::Display for NoFit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no host fits instance {}: ", self.instance)?;
        if self.hosts == 0 {
            return f.write_str("the pool has no hosts; add one");
        }
        let noun = if self.hosts == 1 { "host" } else { "hosts" };
        write!(f, "{} of {} {noun} fit", self.fitting, self.hosts)?;
        for (i, (_, why)) in self.reasons.iter().enumerate() {
            f.write_str(if i == 0 { ": " } else { ", " })?;
            f.write_str(why)?;
        }
        Ok(())
    }
}

/// Bytes in binary units: `2 GiB`, `1.5 MiB`, `512 B`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut unit = 0;
    let mut size = 1024u64;
    while unit + 1 < UNITS.len() && n >= size * 1024 {
        size *= 1024;
        unit += 1;
    }
    if n.is_multiple_of(size) {
        format!("{} {}", n / size, UNITS[unit])
    } else {
        format!("{:.1} {}", n as f64 / size as f64, UNITS[unit])
    }
}

/// Millicores as CPUs: `2 CPUs`, `0.5 CPU`.
struct Cpus(u64);

impl fmt::Display for Cpus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / 1000;
        let frac = self.0 % 1000;
        if frac == 0 {
            let s = if whole == 1 { "CPU" } else { "CPUs" };
            return write!(f, "{whole} {s}");
        }
        let frac = format!("{frac:03}");
        write!(f, "{whole}.{} CPU", frac.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_sizes_and_cpus() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(2 << 30), "2 GiB");
        assert_eq!(bytes(3 << 19), "1.5 MiB");
        assert_eq!(bytes(1 << 50), "1 PiB");
        assert_eq!(Cpus(2000).to_string(), "2 CPUs");
        assert_eq!(Cpus(1000).to_string(), "1 CPU");
        assert_eq!(Cpus(1500).to_string(), "1.5 CPU");
        assert_eq!(Cpus(250).to_string(), "0.25 CPU");
    }
}
