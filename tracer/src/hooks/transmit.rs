//! User half of `tracer-ebpf/src/transmit.rs`: which devices to hook, attaching tc (TCX)
//! egress on them inside their namespaces, and naming oversized transmissions.
use aya::{
    programs::{
        links::{Link as _, LinkOrder},
        tc::{self, NlOptions, SchedClassifierLinkId, TcAttachOptions},
        SchedClassifier, TcAttachType,
    },
    Ebpf,
};
use tracer_common::{Event, MAX_TC_NETNS};

use super::{legacy_tc::LegacyTc, program, Attempt, HookedDevice, Outcome};
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

/// How tc programs attach on the running kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TcMethod {
    /// 6.6+: through a BPF link, so closing the tracer (even SIGKILL) detaches it.
    Tcx,
    /// Before 6.6: a netlink filter on a clsact qdisc, which outlives the process unless
    /// [`LegacyTc`] removes it.
    Netlink,
}

impl TcMethod {
    pub(super) fn of_running_kernel() -> TcMethod {
        let tcx = aya::util::KernelVersion::current()
            .is_ok_and(|v| v >= aya::util::KernelVersion::new(6, 6, 0));
        if tcx {
            TcMethod::Tcx
        } else {
            TcMethod::Netlink
        }
    }

    /// What aya's `attach` would pick on a kernel of this method, chosen here instead so that
    /// the tests can take the netlink path on a TCX kernel.
    fn options(self) -> TcAttachOptions {
        match self {
            TcMethod::Tcx => TcAttachOptions::TcxOrder(LinkOrder::default()),
            TcMethod::Netlink => TcAttachOptions::Netlink(NlOptions::default()),
        }
    }

    fn label(self) -> &'static str {
        match self {
            TcMethod::Tcx => "tcx",
            TcMethod::Netlink => "tc",
        }
    }
}

/// The concern a tc direction is reported as (`tx`, `rx`).
pub(super) fn tc_concern(attach_type: TcAttachType) -> &'static str {
    match attach_type {
        TcAttachType::Ingress => "rx",
        _ => "tx",
    }
}

/// The program namespace `slot` uses in this direction: `tx_tc_N` / `rx_tc_N`. Each slot has
/// its own copy, which stamps events with the namespace: tc programs only see an ifindex, and
/// namespaces reuse indexes.
pub(super) fn tc_program(attach_type: TcAttachType, slot: usize) -> String {
    format!("{}_tc_{slot}", tc_concern(attach_type))
}

/// A TCX link (program name, link), for the caller to detach when its device goes. Netlink
/// filters are not returned: [`LegacyTc`] owns them.
pub(super) type TcxLink = (String, SchedClassifierLinkId);

/// Detach a TCX link; a link the kernel already dropped with its device just closes.
pub(super) fn detach_tcx(ebpf: &mut Ebpf, (name, id): TcxLink) {
    if let Ok(p) = program(ebpf, &name).and_then(|p| Ok(<&mut SchedClassifier>::try_from(p)?)) {
        let _ = p.detach(id);
    }
}

/// Why [`attach_tc`] failed.
pub(super) struct TcAttachError {
    pub error: anyhow::Error,
    /// False when the device vanished meanwhile (pods churn): nothing worth reporting.
    pub device_exists: bool,
}

/// A watched namespace, as tc attaching needs it.
#[derive(Clone, Copy)]
pub(super) struct TcNamespace<'a> {
    /// Its index among the selections: which copy of the programs it uses.
    pub slot: usize,
    pub netns: &'a Netns,
    /// The tracer's own namespace needs no `setns` (so no CAP_SYS_ADMIN) to attach in.
    pub is_own: bool,
}

/// Attach the loaded tc programs of namespace `ns` to `iface`, one per direction in
/// `directions`, all or nothing: a failure undoes the directions already attached, netlink
/// filters included, so a retry cannot stack a second filter. Used at start-up and by the
/// link watcher (`devices.rs`).
pub(super) fn attach_tc(
    ebpf: &mut Ebpf,
    method: TcMethod,
    legacy: &mut LegacyTc,
    ns: TcNamespace,
    iface: &Iface,
    directions: &[TcAttachType],
) -> Result<Vec<TcxLink>, TcAttachError> {
    let TcNamespace {
        slot,
        netns,
        is_own,
    } = ns;
    let entered = in_netns(netns, is_own, || {
        // Kernels before 6.6 need a clsact qdisc: an existing one is used as it is and left
        // in place at exit; one added here is LegacyTc's to remove.
        if method == TcMethod::Netlink && tc::qdisc_add_clsact(&iface.name).is_ok() {
            legacy.created_qdisc(netns, iface.ifindex, &iface.name);
        }
        let mut links = Vec::new();
        let mut filters = Vec::new();
        let mut attach_all = || -> anyhow::Result<()> {
            for &attach_type in directions {
                let name = tc_program(attach_type, slot);
                let prog: &mut SchedClassifier = program(ebpf, &name)?.try_into()?;
                let id = prog.attach_with_options(&iface.name, attach_type, method.options())?;
                match method {
                    TcMethod::Tcx => links.push((name, id)),
                    // A netlink filter must be deleted in its namespace (see legacy_tc).
                    TcMethod::Netlink => filters.push(prog.take_link(id)?),
                }
            }
            Ok(())
        };
        match attach_all() {
            Ok(()) => {
                for filter in filters {
                    legacy.filter(netns, filter);
                }
                Ok(Ok(links))
            }
            Err(error) => {
                // Still inside the namespace: where the filters must be deleted.
                for filter in filters {
                    let _ = filter.detach();
                }
                for link in links {
                    detach_tcx(ebpf, link);
                }
                let device_exists = still_there(iface);
                Ok(Err(TcAttachError {
                    error,
                    device_exists,
                }))
            }
        }
    });
    entered.unwrap_or_else(|error| {
        Err(TcAttachError {
            error,
            device_exists: true,
        })
    })
}

/// Whether the device still exists under its index (called inside its namespace).
fn still_there(iface: &Iface) -> bool {
    let Ok(name) = std::ffi::CString::new(iface.name.as_str()) else {
        return false;
    };
    // SAFETY: a NUL-terminated name.
    unsafe { libc::if_nametoindex(name.as_ptr()) == iface.ifindex }
}

/// Run `f` inside `netns`, without a `setns` when that is the tracer's own.
pub(super) fn in_netns<T>(
    netns: &Netns,
    is_own: bool,
    f: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    if is_own {
        f()
    } else {
        netns.enter(f)
    }
}

/// Attach a tc program in direction `attach_type` to every chosen device, each inside its
/// namespace (namespace `slot` uses its own copy of the program, see [`tc_program`]).
pub(super) fn attach_selected(
    ebpf: &mut Ebpf,
    attach_type: TcAttachType,
    selections: &[Selection],
    devices: impl Fn(&Selection) -> &[Iface],
    hooked: &mut Vec<HookedDevice>,
    legacy: &mut LegacyTc,
) -> Vec<Attempt> {
    let concern = tc_concern(attach_type);
    let direction = match attach_type {
        TcAttachType::Ingress => "ingress",
        _ => "egress",
    };
    let method = TcMethod::of_running_kernel();
    let label = method.label();
    let own = Netns::current().map(|n| n.inode).unwrap_or(0);
    let mut report = Vec::new();
    for (slot, sel) in selections.iter().enumerate() {
        let ifaces = devices(sel);
        if ifaces.is_empty() {
            continue;
        }
        if let Err(e) = load_classifier(ebpf, &tc_program(attach_type, slot)) {
            report.push(Attempt::new(
                concern,
                format!("{label}/{direction} @{}", sel.netns.label),
                Outcome::Failed(format!("{e:#}")),
            ));
            continue;
        }
        let is_own = sel.netns.inode == own;
        for iface in ifaces {
            // TCX links stay with their program (in `ebpf`) until exit.
            let ns = TcNamespace {
                slot,
                netns: &sel.netns,
                is_own,
            };
            let r = attach_tc(ebpf, method, legacy, ns, iface, &[attach_type]);
            let at = if sel.netns.label == "root" {
                iface.name.clone()
            } else {
                format!("{}@{}", iface.name, sel.netns.label)
            };
            report.push(Attempt::new(
                concern,
                format!("{label}/{direction} {at}"),
                match r {
                    Ok(_) => {
                        hooked.push(HookedDevice {
                            netns: sel.netns.inode,
                            netns_label: sel.netns.label.clone(),
                            iface: iface.clone(),
                        });
                        Outcome::Attached
                    }
                    Err(e) => Outcome::Failed(format!("{:#}", e.error)),
                },
            ));
        }
    }
    if report.is_empty() {
        report.push(Attempt::new(
            concern,
            format!("{label}/{direction}"),
            Outcome::Skipped("no device selected".into()),
        ));
    }
    report
}

pub fn attach(
    ebpf: &mut Ebpf,
    selections: &[Selection],
    hooked: &mut Vec<HookedDevice>,
    legacy: &mut LegacyTc,
) -> Vec<Attempt> {
    attach_selected(
        ebpf,
        TcAttachType::Egress,
        selections,
        |s| &s.egress,
        hooked,
        legacy,
    )
}

pub(super) fn decode(rec: &mut Record, _ev: &Event) {
    rec.size.mtu_source = rec.size.mtu.map(|_| crate::event::MtuSource::Device);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel programs, as the binary embeds them.
    static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer"));

    /// The programs attached to `dev` in `ns` by `method` (tc filters, or TCX programs).
    fn attached(lab: &xtask::lab::Lab, ns: &str, netns: &Netns, method: TcMethod) -> usize {
        match method {
            TcMethod::Netlink => ["egress", "ingress"]
                .iter()
                .map(|dir| {
                    let out = lab
                        .exec_ok(ns, &["tc", "filter", "show", "dev", "eth0", dir])
                        .unwrap();
                    String::from_utf8_lossy(&out.stdout)
                        .lines()
                        // One header line per priority, then one line per filter.
                        .filter(|l| l.contains(" bpf ") && l.contains(" handle "))
                        .count()
                })
                .sum(),
            TcMethod::Tcx => [TcAttachType::Egress, TcAttachType::Ingress]
                .into_iter()
                .map(|t| {
                    netns
                        .enter(|| Ok(SchedClassifier::query_tcx("eth0", t)?.1.len()))
                        .unwrap()
                })
                .sum(),
        }
    }

    #[test]
    fn a_partial_attach_is_undone_by_either_method() {
        let (lab, ns, ifindex) = crate::hooks::legacy_tc::tests::lab_with_eth0("tca");
        let eth0 = iface("eth0", ifindex, Some("veth"), 1);
        let netns = Netns::resolve(&ns).unwrap();
        let btf = aya::Btf::from_sys_fs().unwrap();
        let mut ebpf = aya::EbpfLoader::new().btf(Some(&btf)).load(OBJECT).unwrap();
        // Egress can attach; ingress cannot (its program is never loaded): a partial attach.
        load_classifier(&mut ebpf, &tc_program(TcAttachType::Egress, 0)).unwrap();
        let ns_ref = TcNamespace {
            slot: 0,
            netns: &netns,
            is_own: false,
        };
        for method in [TcMethod::Tcx, TcMethod::Netlink] {
            let mut legacy = LegacyTc::default();
            let both = [TcAttachType::Egress, TcAttachType::Ingress];
            let err = attach_tc(&mut ebpf, method, &mut legacy, ns_ref, &eth0, &both)
                .expect_err("ingress cannot attach");
            assert!(err.device_exists, "{method:?}: {:#}", err.error);
            assert_eq!(attached(&lab, &ns, &netns, method), 0, "{method:?}");
            // The check sees an attachment when there is one.
            let egress = [TcAttachType::Egress];
            let links = attach_tc(&mut ebpf, method, &mut legacy, ns_ref, &eth0, &egress)
                .unwrap_or_else(|e| panic!("{method:?}: {:#}", e.error));
            assert_eq!(attached(&lab, &ns, &netns, method), 1, "{method:?}");
            for link in links {
                detach_tcx(&mut ebpf, link);
            }
            // Netlink filters are LegacyTc's to delete.
            drop(legacy);
            assert_eq!(attached(&lab, &ns, &netns, method), 0, "{method:?}");
        }
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
