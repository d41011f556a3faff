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
use crate::{
    ifaces::Iface,
    netlink::{
        link::{parse_link_changes, watch_links, Link, LinkChange},
        Socket,
    },
    netns::Netns,
};

/// Attach failures printed before the rest are only counted: churn must not flood stderr.
const MAX_ERROR_LINES: u32 = 10;
/// Device names listed in one report line before "and N more".
const MAX_NAMES_PER_LINE: usize = 8;

/// One watched namespace: its tc program slot and its notification socket.
struct Watched {
    slot: usize,
    netns: Netns,
    /// The tracer's own namespace needs no `setns` (so no CAP_SYS_ADMIN) to attach in.
    is_own: bool,
    socket: Option<Socket>,
    fd: Option<AsyncFd<Socket>>,
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
            let socket = in_netns(&sel.netns, is_own, || Ok(watch_links(1 << 20)?));
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
                    changes.extend(now.into_iter().map(|d| {
                        LinkChange::New(Link {
                            ifindex: d.ifindex,
                            name: d.name,
                            mtu: d.mtu,
                            link_type: d.link_type,
                            kind: d.driver,
                            ..Link::default()
                        })
                    }));
                }
                Err(e) => lines.push(format!("hooks: link watcher resync failed: {e:#}")),
            }
        }
        let mut attached = Vec::new();
        let mut forgotten = Vec::new();
        for change in changes {
            match change {
                LinkChange::New(link) => {
                    let iface = Iface::from(link);
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
