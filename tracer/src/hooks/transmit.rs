//! User half of `tracer-ebpf/src/transmit.rs`: which devices to hook, attaching tc (TCX)
//! egress on them inside their namespaces, and naming oversized transmissions.
use aya::{
    programs::{tc, SchedClassifier, TcAttachType},
    Ebpf,
};
use tracer_common::{Event, MAX_TC_NETNS};

use super::{drops::program, legacy_tc::LegacyTc, Attempt, HookedDevice, Outcome};
use crate::{event::Record, ifaces::Iface, netns::Netns};

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
    for name in explicit.iter().filter(|n| !super::devices::is_pattern(n)) {
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
                .filter(|i| {
                    explicit
                        .iter()
                        .any(|p| super::devices::name_matches(p, &i.name))
                })
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

fn load_classifier<'a>(
    ebpf: &'a mut Ebpf,
    prog_name: &str,
) -> anyhow::Result<&'a mut SchedClassifier> {
    let prog: &mut SchedClassifier = program(ebpf, prog_name)?.try_into()?;
    prog.load()?;
    Ok(prog)
}

/// Attach a tc program to every chosen device, each inside its namespace. Namespace `slot`
/// uses its own copy of the program (`{prefix}_{slot}`), which stamps events with the
/// namespace: tc programs only see an ifindex, and namespaces reuse indexes.
pub(super) fn attach_tc(
    ebpf: &mut Ebpf,
    attach_type: TcAttachType,
    selections: &[Selection],
    devices: impl Fn(&Selection) -> &[Iface],
    hooked: &mut Vec<HookedDevice>,
    legacy: &mut LegacyTc,
) -> Vec<Attempt> {
    // Programs `rx_tc_N` / `tx_tc_N` (one per namespace slot), reported as concern rx / tx.
    let (direction, prefix, concern) = match attach_type {
        TcAttachType::Ingress => ("ingress", "rx_tc", "rx"),
        _ => ("egress", "tx_tc", "tx"),
    };
    // TCX (6.6+) attaches through a BPF link: closing the tracer (even SIGKILL) detaches it.
    let tcx = aya::util::KernelVersion::current()
        .is_ok_and(|v| v >= aya::util::KernelVersion::new(6, 6, 0));
    let method = if tcx { "tcx" } else { "tc" };
    let mut report = Vec::new();
    for (slot, sel) in selections.iter().enumerate() {
        let ifaces = devices(sel);
        if ifaces.is_empty() {
            continue;
        }
        let prog = match load_classifier(ebpf, &format!("{prefix}_{slot}")) {
            Ok(p) => p,
            Err(e) => {
                report.push(Attempt {
                    concern,
                    method: format!("{method}/{direction} @{}", sel.netns.label),
                    outcome: Outcome::Failed(format!("{e:#}")),
                });
                continue;
            }
        };
        for iface in ifaces {
            let r = sel.netns.enter(|| {
                // Kernels before 6.6 attach through netlink and need a clsact qdisc (an
                // existing one is used as it is, and left in place at exit).
                if !tcx && tc::qdisc_add_clsact(&iface.name).is_ok() {
                    legacy.created_qdisc(&sel.netns, iface.ifindex, &iface.name);
                }
                let link = prog.attach(&iface.name, attach_type)?;
                if !tcx {
                    // A netlink filter must be deleted in its namespace (see legacy_tc).
                    legacy.filter(&sel.netns, prog.take_link(link)?);
                }
                Ok(())
            });
            let at = if sel.netns.label == "root" {
                iface.name.clone()
            } else {
                format!("{}@{}", iface.name, sel.netns.label)
            };
            report.push(Attempt {
                concern,
                method: format!("{method}/{direction} {at}"),
                outcome: match r {
                    Ok(()) => {
                        hooked.push(HookedDevice {
                            netns: sel.netns.inode,
                            netns_label: sel.netns.label.clone(),
                            iface: iface.clone(),
                        });
                        Outcome::Attached
                    }
                    Err(e) => Outcome::Failed(format!("{e:#}")),
                },
            });
        }
    }
    if report.is_empty() {
        report.push(Attempt {
            concern,
            method: format!("{method}/{direction}"),
            outcome: Outcome::Skipped("no device selected".into()),
        });
    }
    report
}

pub fn attach(
    ebpf: &mut Ebpf,
    selections: &[Selection],
    hooked: &mut Vec<HookedDevice>,
    legacy: &mut LegacyTc,
) -> Vec<Attempt> {
    attach_tc(
        ebpf,
        TcAttachType::Egress,
        selections,
        |s| &s.egress,
        hooked,
        legacy,
    )
}

pub(super) fn decode(rec: &mut Record, _ev: &Event) {
    rec.mtu_source = rec.mtu.map(|_| "device");
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn default_selection_is_tunnels_and_the_uplink() {
        let sel = select(&[node()], &[]).unwrap();
        let egress: Vec<&str> = sel[0].egress.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(egress, vec!["tunl0", "vxlan.calico", "eth0"]);
        let ingress: Vec<&str> = sel[0].ingress.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(ingress, vec!["eth0"]);
    }

    #[test]
    fn without_a_default_route_the_non_pod_devices_are_uplinks() {
        let (ns, ifaces, _) = node();
        let sel = select(&[(ns, ifaces, vec![])], &[]).unwrap();
        let egress: Vec<&str> = sel[0].egress.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(egress, vec!["tunl0", "vxlan.calico", "eth0"]);
        let ingress: Vec<&str> = sel[0].ingress.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(ingress, vec!["eth0"]);
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
}
