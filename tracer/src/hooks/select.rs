//! Which devices of which namespaces get the tc hooks: at start, the tunnels and uplinks of each
//! watched namespace (or what `--iface` named, `*` and `?` patterns included); later, for the
//! link watcher (`devices.rs`), which hooks a device created after start gets. Attaching them
//! is `tc.rs`'s part.
use aya::programs::TcAttachType;
use tracer_common::MAX_TC_NETNS;

use crate::{ifaces::Iface, netns::Netns};

/// The devices chosen in one namespace.
#[derive(Clone, Debug)]
pub struct Selection {
    pub netns: Netns,
    /// Egress hook: tunnels and uplinks (or what `--iface` named).
    pub egress: Vec<Iface>,
    /// Ingress hook: where ICMP from the underlay arrives (uplinks, or what `--iface` named).
    pub ingress: Vec<Iface>,
}

/// Pick the devices to hook in each namespace.
///
/// `--iface` names are looked up in every watched namespace and must match somewhere. Without
/// them: the tunnel devices and the default-route uplink(s); a namespace with neither (a lab
/// node without a default route) gets all its non-loopback devices.
pub fn select(
    namespaces: &[(Netns, Vec<Iface>, Vec<String>)],
    explicit: &[String],
) -> anyhow::Result<Vec<Selection>> {
    if namespaces.len() > MAX_TC_NETNS {
        anyhow::bail!(
            "at most {MAX_TC_NETNS} --netns can be watched at once (got {})",
            namespaces.len()
        );
    }
    let mut out = Vec::new();
    // A pattern (`cali*`) may match nothing yet: the link watcher hooks what appears later.
    for name in explicit.iter().filter(|n| !is_pattern(n)) {
        if !namespaces
            .iter()
            .any(|(_, ifaces, _)| ifaces.iter().any(|i| &i.name == name))
        {
            let searched: Vec<&str> = namespaces
                .iter()
                .map(|(n, _, _)| n.label.as_str())
                .collect();
            anyhow::bail!(
                "--iface {name}: no such interface (namespaces searched: {})",
                searched.join(", ")
            );
        }
    }
    for (netns, ifaces, default_devs) in namespaces {
        let (egress, ingress): (Vec<Iface>, Vec<Iface>) = if !explicit.is_empty() {
            let chosen: Vec<Iface> = ifaces
                .iter()
                .filter(|i| explicit.iter().any(|p| name_matches(p, &i.name)))
                .cloned()
                .collect();
            (chosen.clone(), chosen)
        } else {
            let mut uplinks: Vec<Iface> = ifaces
                .iter()
                .filter(|i| default_devs.contains(&i.name) && !i.is_loopback())
                .cloned()
                .collect();
            if uplinks.is_empty() {
                // No default route (a lab node, an isolated underlay): the uplinks are the
                // devices that are neither tunnels nor the host ends of pod veths.
                uplinks = ifaces
                    .iter()
                    .filter(|i| !i.is_loopback() && !i.is_tunnel() && !i.is_pod_side())
                    .cloned()
                    .collect();
            }
            let tunnels: Vec<Iface> = ifaces.iter().filter(|i| i.is_tunnel()).cloned().collect();
            if uplinks.is_empty() && tunnels.is_empty() {
                let all: Vec<Iface> = ifaces
                    .iter()
                    .filter(|i| !i.is_loopback())
                    .cloned()
                    .collect();
                let rx = all.iter().filter(|i| !i.is_tunnel()).cloned().collect();
                (all, rx)
            } else {
                let mut egress = tunnels;
                egress.extend(uplinks.iter().cloned());
                (egress, uplinks)
            }
        };
        out.push(Selection {
            netns: netns.clone(),
            egress,
            ingress,
        });
    }
    Ok(out)
}

impl Selection {
    /// The devices chosen for the `attach_type` direction.
    pub fn devices(&self, attach_type: TcAttachType) -> &[Iface] {
        match attach_type {
            TcAttachType::Ingress => &self.ingress,
            _ => &self.egress,
        }
    }
}

/// The hooks a device created after start gets: with `--iface` (`patterns`), both directions
/// on a matching device, as at start; without, egress on a new tunnel (a new uplink or pod
/// veth is not guessed at).
pub fn later_device(patterns: &[String], iface: &Iface) -> Vec<TcAttachType> {
    if iface.is_loopback() {
        return Vec::new();
    }
    if !patterns.is_empty() {
        if patterns.iter().any(|p| name_matches(p, &iface.name)) {
            return vec![TcAttachType::Egress, TcAttachType::Ingress];
        }
        return Vec::new();
    }
    if iface.is_tunnel() {
        return vec![TcAttachType::Egress];
    }
    Vec::new()
}

/// Whether `name` matches `pattern`, where `*` stands for any run of characters and `?` for
/// one (an `--iface` value without either is a plain name).
pub fn name_matches(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

pub fn is_pattern(arg: &str) -> bool {
    arg.contains(['*', '?'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_names() {
        assert!(name_matches("cali*", "cali12ab"));
        assert!(name_matches("cali*", "cali"));
        assert!(!name_matches("cali*", "eth0"));
        assert!(name_matches("veth?", "veth1"));
        assert!(!name_matches("veth?", "veth12"));
        assert!(name_matches("*.calico", "vxlan.calico"));
        assert!(name_matches("eth0", "eth0"));
        assert!(!name_matches("eth0", "eth01"));
        assert!(name_matches("a*b*c", "axxbyyc"));
        assert!(!name_matches("a*b*c", "axxbyy"));
    }

    fn iface(name: &str, ifindex: u32, driver: Option<&str>, link_type: u16) -> Iface {
        Iface {
            name: name.into(),
            ifindex,
            mtu: 1500,
            driver: driver.map(str::to_string),
            link_type,
        }
    }

    fn node() -> (Netns, Vec<Iface>, Vec<String>) {
        let ifaces = vec![
            iface("lo", 1, None, 772),
            iface("eth0", 2, Some("virtio_net"), 1),
            iface("tunl0", 3, Some("ipip"), 768),
            iface("cali12ab", 4, Some("veth"), 1),
            iface("vxlan.calico", 5, Some("vxlan"), 1),
        ];
        (Netns::current().unwrap(), ifaces, vec!["eth0".to_string()])
    }

    fn names(ifaces: &[Iface]) -> Vec<&str> {
        ifaces.iter().map(|i| i.name.as_str()).collect()
    }

    #[test]
    fn default_selection_is_tunnels_and_the_uplink() {
        let sel = select(&[node()], &[]).unwrap();
        assert_eq!(names(&sel[0].egress), ["tunl0", "vxlan.calico", "eth0"]);
        assert_eq!(names(&sel[0].ingress), ["eth0"]);
    }

    #[test]
    fn without_a_default_route_the_non_pod_devices_are_uplinks() {
        let (ns, ifaces, _) = node();
        let sel = select(&[(ns, ifaces, vec![])], &[]).unwrap();
        assert_eq!(names(&sel[0].egress), ["tunl0", "vxlan.calico", "eth0"]);
        assert_eq!(names(&sel[0].ingress), ["eth0"]);
    }

    #[test]
    fn explicit_interfaces_must_exist() {
        let err = select(&[node()], &["eth9".to_string()]).unwrap_err();
        assert!(
            err.to_string().contains("--iface eth9: no such interface"),
            "{err}"
        );
        let sel = select(&[node()], &["cali12ab".to_string()]).unwrap();
        assert_eq!(sel[0].egress.len(), 1);
        assert_eq!(sel[0].egress[0].name, "cali12ab");
    }

    #[test]
    fn a_namespace_without_uplink_or_tunnel_hooks_all_its_devices() {
        let (ns, _, _) = node();
        let ifaces = vec![
            iface("lo", 1, None, 772),
            iface("veth-a", 7, Some("veth"), 1),
        ];
        let sel = select(&[(ns, ifaces, vec![])], &[]).unwrap();
        assert_eq!(sel[0].egress.len(), 1);
        assert_eq!(sel[0].egress[0].name, "veth-a");
    }

    #[test]
    fn later_devices_get_hooks_by_pattern_or_as_tunnels() {
        let (_, ifaces, _) = node();
        let named = |n: &str| ifaces.iter().find(|i| i.name == n).unwrap().clone();
        let (tx, both) = (
            vec![TcAttachType::Egress],
            vec![TcAttachType::Egress, TcAttachType::Ingress],
        );
        // Without --iface: tunnels, egress only; a pod veth or an uplink is not guessed at.
        assert_eq!(later_device(&[], &named("tunl0")), tx);
        assert!(later_device(&[], &named("cali12ab")).is_empty());
        assert!(later_device(&[], &named("eth0")).is_empty());
        // With --iface: what matches, both directions; then a tunnel must match too.
        let patterns = vec!["cali*".to_string()];
        assert_eq!(later_device(&patterns, &named("cali12ab")), both);
        assert!(later_device(&patterns, &named("tunl0")).is_empty());
        assert!(later_device(&["*".to_string()], &named("lo")).is_empty());
    }
}
