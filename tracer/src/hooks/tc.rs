//! The one way the tracer attaches tc programs, whatever the kernel offers: TCX links (6.6+),
//! else netlink filters on a clsact qdisc. Both directions, at start (`transmit.rs`,
//! `ingress.rs`) and for devices the link watcher sees appear (`devices.rs`), go through
//! [`attach_tc`], which undoes a partial attach; [`LegacyTc`] removes the netlink filters and
//! the qdiscs the tracer added at exit, each in its namespace.
//!
//! Why netlink filters need [`LegacyTc`]: such a filter is not a file descriptor: it outlives
//! the process and holds its program loaded until someone deletes it. A netlink request acts
//! on the network namespace of the thread that sends it, and aya's links detach in whatever
//! namespace the dropping thread is in (the tracer's own), so the filters in watched
//! namespaces stayed. Each filter is kept with its namespace and deleted there, then the clsact
//! qdiscs the tracer added (only those: a qdisc that was already there belongs to someone
//! else). A SIGKILL still leaves both behind (docs/how-it-works.md, "Detaching"); they go with their devices.
use aya::{
    programs::{
        links::{Link as _, LinkOrder},
        tc::{self, NlOptions, SchedClassifierLink, SchedClassifierLinkId, TcAttachOptions},
        SchedClassifier, TcAttachType,
    },
    Ebpf,
};

use super::{program, select::Selection, Attempt, HookedDevice, Outcome};
use crate::{ifaces::Iface, netlink::tc::delete_clsact, netns::Netns};

/// Program `prog_name`, loaded (once: the link watcher asks again for what start-up loaded).
pub(super) fn load_classifier<'a>(
    ebpf: &'a mut Ebpf,
    prog_name: &str,
) -> anyhow::Result<&'a mut SchedClassifier> {
    let prog: &mut SchedClassifier = program(ebpf, prog_name)?.try_into()?;
    if prog.fd().is_err() {
        prog.load()?;
    }
    Ok(prog)
}

/// How a device is named in reports: `eth0` in the root namespace, else `eth0@label`.
pub(super) fn device_at(netns_label: &str, name: &str) -> String {
    if netns_label == "root" {
        name.to_string()
    } else {
        format!("{name}@{netns_label}")
    }
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
                    // A netlink filter must be deleted in its namespace (see LegacyTc).
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
        let ifaces = sel.devices(attach_type);
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
            let at = device_at(&sel.netns.label, &iface.name);
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

/// Filters and qdiscs attached through netlink, removed on drop.
#[derive(Default)]
pub struct LegacyTc {
    filters: Vec<(Netns, SchedClassifierLink)>,
    /// (namespace, ifindex, name) of clsact qdiscs this tracer created.
    qdiscs: Vec<(Netns, u32, String)>,
}

impl LegacyTc {
    /// A filter attached in `netns`, now owned here (taken from its program).
    pub fn filter(&mut self, netns: &Netns, link: SchedClassifierLink) {
        self.filters.push((netns.clone(), link));
    }

    /// A clsact qdisc this tracer added to `ifindex` in `netns`.
    pub fn created_qdisc(&mut self, netns: &Netns, ifindex: u32, name: &str) {
        if !self
            .qdiscs
            .iter()
            .any(|(n, i, _)| n.inode == netns.inode && *i == ifindex)
        {
            self.qdiscs.push((netns.clone(), ifindex, name.to_string()));
        }
    }

    /// Delete everything, each in its namespace. Failures are reported on stderr: the device
    /// may be gone already (its filters and qdisc went with it), which is not worth more.
    pub fn remove_all(&mut self) {
        for (netns, link) in self.filters.drain(..) {
            if let Err(e) = netns.enter(|| Ok(link.detach()?)) {
                log::warn!("removing a tc filter in {}: {e:#}", netns.label);
            }
        }
        for (netns, ifindex, name) in self.qdiscs.drain(..) {
            if let Err(e) = netns.enter(|| delete_clsact(ifindex)) {
                eprintln!(
                    "tracer: could not remove the clsact qdisc it added to {name} in {}: {e:#}",
                    netns.label
                );
            }
        }
    }
}

impl Drop for LegacyTc {
    fn drop(&mut self) {
        self.remove_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lab namespace (xtask::lab: deleted on drop, also when an assertion fails) holding a
    /// veth `eth0`: the lab, the namespace's name and eth0's ifindex.
    fn lab_with_eth0(tag: &str) -> (xtask::lab::Lab, String, u32) {
        let mut lab = xtask::lab::Lab::new(&xtask::lab::Lab::unique_prefix(tag)).unwrap();
        let ns = lab
            .add_netns("t")
            .expect("ip netns add (tests run as root)");
        lab.ip(
            &ns,
            &[
                "link", "add", "eth0", "type", "veth", "peer", "name", "peer0",
            ],
        )
        .unwrap();
        let out = lab
            .exec_ok(&ns, &["cat", "/sys/class/net/eth0/ifindex"])
            .unwrap();
        let ifindex = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        (lab, ns, ifindex)
    }

    #[test]
    fn the_clsact_qdisc_is_deleted_in_its_namespace() {
        let (lab, ns, ifindex) = lab_with_eth0("ltc");
        lab.exec_ok(&ns, &["tc", "qdisc", "add", "dev", "eth0", "clsact"])
            .unwrap();
        let qdiscs = || {
            let out = lab
                .exec_ok(&ns, &["tc", "qdisc", "show", "dev", "eth0"])
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        assert!(qdiscs().contains("clsact"), "{}", qdiscs());
        let netns = Netns::resolve(&ns).unwrap();
        // From the tracer's own namespace, the device is not found: the bug this module fixes.
        netns.enter(|| delete_clsact(ifindex)).unwrap();
        assert!(!qdiscs().contains("clsact"), "{}", qdiscs());
        // Nothing left to delete: the failure is reported, not swallowed.
        assert!(netns.enter(|| delete_clsact(ifindex)).is_err());
    }

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
        let (lab, ns, ifindex) = lab_with_eth0("tca");
        let eth0 = Iface {
            name: "eth0".into(),
            ifindex,
            mtu: 1500,
            driver: Some("veth".into()),
            link_type: 1,
        };
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
}
