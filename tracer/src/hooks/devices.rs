//! The link watcher: devices that appear in a watched namespace after start (a new pod's veth,
//! a tunnel brought up late) get the tc hooks within moments, and devices that go away are
//! forgotten. One rtnetlink socket per watched namespace, subscribed to `RTNLGRP_LINK`.
//!
//! Which new devices are hooked is `select.rs`'s rule ([`later_device`]); attaching is
//! `tc.rs`'s.
//!
//! The watcher owns the loaded programs: dropping it detaches everything.
use std::{collections::HashMap, future::poll_fn, task::Poll};

use aya::{programs::TcAttachType, Ebpf};
use tokio::io::unix::AsyncFd;

use super::{
    select::{later_device, Selection},
    tc::{
        attach_tc, detach_tcx, device_at, in_netns, load_classifier, tc_concern, tc_program,
        LegacyTc, TcMethod, TcNamespace, TcxLink,
    },
    HookedDevice,
};
use crate::{ifaces::Iface, netlink, netns::Netns};

const RTMGRP_LINK: u32 = 1;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
/// Attach failures printed before the rest are only counted: churn must not flood stderr.
const MAX_ERROR_LINES: u32 = 10;
/// Device names listed in one report line before "and N more".
const MAX_NAMES_PER_LINE: usize = 8;

/// A link notification, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkChange {
    New(Iface),
    Gone(u32),
}

/// Decode the link notifications of one rtnetlink datagram; anything malformed is skipped.
pub fn parse_link_changes(datagram: &[u8]) -> Vec<LinkChange> {
    let Ok(messages) = netlink::messages(datagram) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for m in messages {
        if m.kind != RTM_NEWLINK && m.kind != RTM_DELLINK {
            continue;
        }
        // struct ifinfomsg: family u8, pad u8, type u16, index i32, flags u32, change u32.
        let Some(head) = m.payload.get(..16) else {
            continue;
        };
        let link_type = u16::from_ne_bytes([head[2], head[3]]);
        let ifindex = u32::from_ne_bytes([head[4], head[5], head[6], head[7]]);
        if ifindex == 0 {
            continue;
        }
        if m.kind == RTM_DELLINK {
            out.push(LinkChange::Gone(ifindex));
            continue;
        }
        let mut iface = Iface {
            name: String::new(),
            ifindex,
            mtu: 0,
            driver: None,
            link_type,
        };
        for (ty, value) in netlink::attrs(&m.payload[16..]) {
            match ty {
                IFLA_IFNAME => iface.name = c_string(value),
                IFLA_MTU => iface.mtu = netlink::attr_u32(value).unwrap_or(0),
                IFLA_LINKINFO => {
                    for (ty, value) in netlink::attrs(value) {
                        if ty == IFLA_INFO_KIND {
                            iface.driver = Some(c_string(value)).filter(|k| !k.is_empty());
                        }
                    }
                }
                _ => {}
            }
        }
        if !iface.name.is_empty() {
            out.push(LinkChange::New(iface));
        }
    }
    out
}

fn c_string(v: &[u8]) -> String {
    let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}

/// One watched namespace: its tc program slot and its notification socket.
struct Watched {
    slot: usize,
    netns: Netns,
    /// The tracer's own namespace needs no `setns` (so no CAP_SYS_ADMIN) to attach in.
    is_own: bool,
    socket: Option<netlink::Socket>,
    fd: Option<AsyncFd<netlink::Socket>>,
}

/// The links the watcher made for one device, to detach when it goes.
struct WatcherLinks {
    links: Vec<TcxLink>,
}

pub struct DeviceWatcher {
    /// Before `ebpf`, so dropped first: netlink tc filters go before their programs.
    legacy: LegacyTc,
    ebpf: Ebpf,
    watched: Vec<Watched>,
    patterns: Vec<String>,
    method: TcMethod,
    links: HashMap<(u32, u32), WatcherLinks>,
    errors: u32,
    buf: Vec<u8>,
}

impl DeviceWatcher {
    /// Subscribe to link changes in every selected namespace and load the tc programs the
    /// watcher may attach later (loading needs CAP_BPF, which goes after start). Problems are
    /// returned as start-up lines; the watcher then covers what it can.
    pub fn start(
        mut ebpf: Ebpf,
        legacy: LegacyTc,
        selections: &[Selection],
        patterns: &[String],
    ) -> (DeviceWatcher, Vec<String>) {
        let mut notes = Vec::new();
        let own = Netns::current().map(|n| n.inode).unwrap_or(0);
        let mut watched = Vec::new();
        for (slot, sel) in selections.iter().enumerate() {
            for attach_type in [TcAttachType::Egress, TcAttachType::Ingress] {
                let name = tc_program(attach_type, slot);
                let loaded = load_classifier(&mut ebpf, &name);
                if let Err(e) = loaded {
                    notes.push(format!("link watcher: {name} not loaded: {e:#}"));
                }
            }
            let is_own = sel.netns.inode == own;
            let socket = in_netns(&sel.netns, is_own, || {
                let s = netlink::Socket::open(libc::NETLINK_ROUTE)?;
                s.subscribe(RTMGRP_LINK, 1 << 20)?;
                Ok(s)
            });
            match socket {
                Ok(s) => watched.push(Watched {
                    slot,
                    netns: sel.netns.clone(),
                    is_own,
                    socket: Some(s),
                    fd: None,
                }),
                Err(e) => notes.push(format!(
                    "link watcher: {} not watched: {e:#}",
                    sel.netns.label
                )),
            }
        }
        let w = DeviceWatcher {
            legacy,
            ebpf,
            watched,
            patterns: patterns.to_vec(),
            method: TcMethod::of_running_kernel(),
            links: HashMap::new(),
            errors: 0,
            buf: vec![0u8; 64 * 1024],
        };
        (w, notes)
    }

    /// What the start-up block says about the watcher.
    pub fn describe(&self) -> String {
        let rule = if self.patterns.is_empty() {
            "new tunnel devices (egress)".to_string()
        } else {
            format!("new devices matching {}", self.patterns.join(", "))
        };
        let names: Vec<&str> = self
            .watched
            .iter()
            .map(|w| w.netns.label.as_str())
            .collect();
        format!("link watcher: {rule} in {}", names.join(", "))
    }

    /// Whether any watched namespace is not the tracer's own (attaching there needs setns).
    pub fn enters_other_namespaces(&self) -> bool {
        self.watched.iter().any(|w| !w.is_own)
    }

    /// Hand the sockets to the runtime's reactor (needs a running tokio runtime).
    pub fn register(&mut self) -> std::io::Result<()> {
        for w in &mut self.watched {
            if let Some(s) = w.socket.take() {
                // SAFETY: the socket owns its descriptor and keeps it open until the AsyncFd
                // drops it.
                let fd =
                    unsafe { AsyncFd::register_with_interest(s, tokio::io::Interest::READABLE) }
                        .map_err(|e| e.into_parts().1)?;
                w.fd = Some(fd);
            }
        }
        Ok(())
    }

    /// Wait until some namespace has link notifications queued; its index.
    pub async fn ready(&self) -> usize {
        poll_fn(|cx| {
            for (i, w) in self.watched.iter().enumerate() {
                let Some(fd) = &w.fd else { continue };
                match fd.poll_read_ready(cx) {
                    Poll::Ready(Ok(mut guard)) => {
                        // Everything queued is read right after; a later datagram makes the
                        // socket ready again.
                        guard.clear_ready();
                        return Poll::Ready(i);
                    }
                    Poll::Ready(Err(_)) => return Poll::Ready(i),
                    Poll::Pending => {}
                }
            }
            Poll::Pending
        })
        .await
    }

    /// Read what namespace `i` queued and act on it: hook new matching devices, forget the
    /// ones gone (from `devices`, the naming table, too). Returns the lines to print.
    pub fn handle(
        &mut self,
        i: usize,
        devices: &mut HashMap<(u32, u32), HookedDevice>,
    ) -> Vec<String> {
        let mut changes = Vec::new();
        let mut resync = false;
        let mut lines = Vec::new();
        while let Some(fd) = &self.watched[i].fd {
            match fd.get_ref().recv_nonblocking(&mut self.buf) {
                Ok(Some(0)) | Ok(None) => break,
                Ok(Some(n)) => changes.extend(parse_link_changes(&self.buf[..n])),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => resync = true,
                Err(e) => {
                    lines.push(format!(
                        "hooks: link watcher of {} stopped: {e}",
                        self.watched[i].netns.label
                    ));
                    self.watched[i].fd = None;
                    break;
                }
            }
        }
        if resync {
            // Notifications were lost: compare with the devices as they are now.
            let w = &self.watched[i];
            match in_netns(&w.netns, w.is_own, crate::ifaces::list) {
                Ok(now) => {
                    let inode = w.netns.inode;
                    for (ns, idx) in devices.keys().copied().collect::<Vec<_>>() {
                        if ns == inode && !now.iter().any(|d| d.ifindex == idx) {
                            changes.push(LinkChange::Gone(idx));
                        }
                    }
                    changes.extend(now.into_iter().map(LinkChange::New));
                }
                Err(e) => lines.push(format!("hooks: link watcher resync failed: {e:#}")),
            }
        }
        let mut attached = Vec::new();
        let mut forgotten = Vec::new();
        for change in changes {
            match change {
                LinkChange::New(iface) => {
                    let key = (self.watched[i].netns.inode, iface.ifindex);
                    if let Some(known) = devices.get_mut(&key) {
                        // Already hooked: keep its name and MTU current.
                        known.iface.mtu = iface.mtu;
                        known.iface.name = iface.name;
                        continue;
                    }
                    let dirs = later_device(&self.patterns, &iface);
                    if dirs.is_empty() {
                        continue;
                    }
                    match self.attach(i, &iface, &dirs) {
                        Ok(Some(links)) => {
                            let kinds: Vec<&str> = dirs.iter().map(|&d| tc_concern(d)).collect();
                            attached.push(format!(
                                "{} ({})",
                                self.at(i, &iface.name),
                                kinds.join("+")
                            ));
                            self.links.insert(key, WatcherLinks { links });
                            devices.insert(
                                key,
                                HookedDevice {
                                    netns: key.0,
                                    netns_label: self.watched[i].netns.label.clone(),
                                    iface,
                                },
                            );
                        }
                        // Gone before it could be hooked: nothing to say.
                        Ok(None) => {}
                        Err(e) => {
                            self.errors += 1;
                            if self.errors <= MAX_ERROR_LINES {
                                lines.push(format!(
                                    "hooks: could not attach to {}: {e:#}{}",
                                    self.at(i, &iface.name),
                                    if self.errors == MAX_ERROR_LINES {
                                        " (further attach failures are not printed)"
                                    } else {
                                        ""
                                    }
                                ));
                            }
                        }
                    }
                }
                LinkChange::Gone(idx) => {
                    let key = (self.watched[i].netns.inode, idx);
                    if let Some(links) = self.links.remove(&key) {
                        for link in links.links {
                            // The kernel already detached it with the device; this closes
                            // the link's descriptor.
                            detach_tcx(&mut self.ebpf, link);
                        }
                    }
                    if let Some(dev) = devices.remove(&key) {
                        forgotten.push(self.at(i, &dev.iface.name));
                    }
                }
            }
        }
        if !attached.is_empty() {
            lines.push(format!("hooks: attached to {}", list(&attached)));
        }
        if !forgotten.is_empty() {
            lines.push(format!("hooks: forgot {} (gone)", list(&forgotten)));
        }
        lines
    }

    /// How many devices the watcher itself hooked and still holds links for.
    pub fn watched_links(&self) -> usize {
        self.links.len()
    }

    fn at(&self, i: usize, name: &str) -> String {
        device_at(&self.watched[i].netns.label, name)
    }

    /// Attach every direction to `iface` in namespace `i`. `Ok(None)` when the device vanished
    /// meanwhile (pods churn); a partial attach is undone.
    fn attach(
        &mut self,
        i: usize,
        iface: &Iface,
        dirs: &[TcAttachType],
    ) -> anyhow::Result<Option<Vec<TcxLink>>> {
        let w = &self.watched[i];
        let ns = TcNamespace {
            slot: w.slot,
            netns: &w.netns,
            is_own: w.is_own,
        };
        match attach_tc(
            &mut self.ebpf,
            self.method,
            &mut self.legacy,
            ns,
            iface,
            dirs,
        ) {
            Ok(links) => Ok(Some(links)),
            Err(e) if e.device_exists => Err(e.error),
            Err(_) => Ok(None),
        }
    }
}

fn list(items: &[String]) -> String {
    if items.len() <= MAX_NAMES_PER_LINE {
        return items.join(", ");
    }
    format!(
        "{} and {} more",
        items[..MAX_NAMES_PER_LINE].join(", "),
        items.len() - MAX_NAMES_PER_LINE
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn newlink(kind: u16, index: u32, attrs: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut payload = vec![0u8; 16];
        payload[2..4].copy_from_slice(&1u16.to_ne_bytes());
        payload[4..8].copy_from_slice(&index.to_ne_bytes());
        for (ty, v) in attrs {
            let len = 4 + v.len();
            payload.extend_from_slice(&(len as u16).to_ne_bytes());
            payload.extend_from_slice(&ty.to_ne_bytes());
            payload.extend_from_slice(v);
            payload.resize(netlink::align4(payload.len()), 0);
        }
        let mut msg = Vec::new();
        msg.extend_from_slice(&((16 + payload.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&[0u8; 10]);
        msg.extend_from_slice(&payload);
        msg
    }

    #[test]
    fn link_notifications_are_decoded() {
        let mut kind = Vec::new();
        let v = b"veth\0";
        kind.extend_from_slice(&((4 + v.len()) as u16).to_ne_bytes());
        kind.extend_from_slice(&IFLA_INFO_KIND.to_ne_bytes());
        kind.extend_from_slice(v);
        let mut dgram = newlink(
            RTM_NEWLINK,
            7,
            &[
                (IFLA_IFNAME, b"cali7\0".to_vec()),
                (IFLA_MTU, 1440u32.to_ne_bytes().to_vec()),
                (IFLA_LINKINFO, kind),
            ],
        );
        dgram.extend(newlink(RTM_DELLINK, 5, &[]));
        let changes = parse_link_changes(&dgram);
        assert_eq!(
            changes,
            vec![
                LinkChange::New(Iface {
                    name: "cali7".into(),
                    ifindex: 7,
                    mtu: 1440,
                    driver: Some("veth".into()),
                    link_type: 1,
                }),
                LinkChange::Gone(5),
            ]
        );
    }

    #[test]
    fn truncated_notifications_are_skipped_not_a_panic() {
        let dgram = newlink(RTM_NEWLINK, 7, &[(IFLA_IFNAME, b"cali7\0".to_vec())]);
        for cut in 0..dgram.len() {
            let _ = parse_link_changes(&dgram[..cut]);
        }
    }
}
