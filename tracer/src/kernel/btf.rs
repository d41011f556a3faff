//! Struct field offsets and enum names from the running kernel's BTF.
//!
//! Rust eBPF cannot emit CO-RE relocations, so the kernel programs read struct fields at offsets
//! the daemon resolves here and passes in ([`tracer_common::KernelOffsets`]). Member lookup walks
//! anonymous structs/unions the way libbpf's CO-RE does, so `sk_buff.dev` is found although it
//! sits inside `union { struct { next; prev; union { dev; ... } } ... }`.
//!
//! The BTF is read by [`reader`], which keeps the raw bytes and decodes only the types asked
//! for: a full parse held ~30 MiB at start-up, the daemon's peak (issue 18).

mod reader;
#[cfg(test)]
mod reference;

use std::{borrow::Cow, collections::HashMap, io::ErrorKind, path::Path, sync::Arc};

use anyhow::{anyhow, bail, Context, Result};
pub use reader::Btf;
use reader::{Kind, Member, Type};
use tracer_common::{KernelOffsets, NO_FIELD};

/// Where the kernel exposes its own BTF (CONFIG_DEBUG_INFO_BTF).
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Bound on typedef/qualifier chains and anonymous-member nesting: real kernels need a handful,
/// so hitting it means the BTF loops (corrupt) and we must not recurse forever.
const MAX_DEPTH: usize = 32;

/// Reads the running kernel's BTF.
pub fn load_vmlinux() -> Result<Btf<'static>> {
    load_from(Path::new(VMLINUX_BTF))
}

fn load_from(path: &Path) -> Result<Btf<'static>> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => bail!(
            "kernel has no BTF ({} missing): CONFIG_DEBUG_INFO_BTF is required",
            path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot access {}", path.display())),
        Ok(_) => {}
    }
    Btf::from_file(path).with_context(|| format!("cannot parse kernel BTF {}", path.display()))
}

/// Follows typedefs and qualifiers (const, volatile, restrict, type tags) to the real type.
fn strip_modifiers<'a>(btf: &'a Btf, mut ty: Type<'a>) -> Result<Type<'a>> {
    for _ in 0..MAX_DEPTH {
        if !ty.kind.is_modifier() {
            return Ok(ty);
        }
        ty = btf
            .type_by_id(ty.referenced())
            .context("corrupt BTF: dangling typedef/qualifier")?;
    }
    bail!("corrupt BTF: typedef/qualifier chain longer than {MAX_DEPTH}")
}

/// The structs or unions called `name` (directly, or through a typedef such as `possible_net_t`).
fn composites_named<'a>(btf: &'a Btf, name: &str) -> Result<Vec<Type<'a>>> {
    let mut found = Vec::new();
    for id in btf.ids_named(name) {
        let ty = btf.type_by_id(id)?;
        // Forward declarations are another kind: only a full definition has members.
        let ty = strip_modifiers(btf, ty)?;
        if matches!(ty.kind, Kind::Struct | Kind::Union) {
            found.push(ty);
        }
    }
    Ok(found)
}

/// Finds member `name` in `composite`, descending into anonymous struct/union members in
/// declaration order (libbpf's rule). Returns its bit offset from the start of `composite`.
fn find_member(
    btf: &Btf,
    composite: &Type,
    name: &str,
    depth: usize,
) -> Result<Option<(u32, Member)>> {
    if depth > MAX_DEPTH {
        bail!("corrupt BTF: anonymous members nested deeper than {MAX_DEPTH}");
    }
    for member in composite.members() {
        let mname = btf
            .string(member.name_off)
            .context("corrupt BTF: member name")?;
        if mname == name {
            return Ok(Some((member.bit_offset, member)));
        }
        if !mname.is_empty() {
            continue;
        }
        let ty = btf
            .type_by_id(member.type_id)
            .context("corrupt BTF: member with dangling type")?;
        let inner = strip_modifiers(btf, ty)?;
        if matches!(inner.kind, Kind::Struct | Kind::Union) {
            if let Some((off, found)) = find_member(btf, &inner, name, depth + 1)? {
                let total = member
                    .bit_offset
                    .checked_add(off)
                    .ok_or_else(|| anyhow!("corrupt BTF: member offset overflows"))?;
                return Ok(Some((total, found)));
            }
        }
    }
    Ok(None)
}

/// Byte offset of `path` (dot-separated, e.g. `"ns.inum"`) inside struct `struct_name`.
///
/// Anonymous struct/union members are transparent; each named component but the last must be an
/// embedded struct or union (not a pointer). `Ok(None)` when the struct or a component does not
/// exist (or is not embedded) on this kernel; errors are for corrupt BTF, an empty path
/// component, or a path that ends on a bitfield (not supported).
pub fn field_offset(btf: &Btf, struct_name: &str, path: &str) -> Result<Option<u32>> {
    let components: Vec<&str> = path.split('.').collect();
    if components.iter().any(|c| c.is_empty()) {
        bail!("invalid field path {struct_name}.{path:?}: empty component");
    }
    // Duplicate definitions are possible in BTF; the first one that has the path wins.
    for composite in composites_named(btf, struct_name)? {
        if let Some(off) = walk_path(btf, composite, &components, struct_name, path)? {
            return Ok(Some(off));
        }
    }
    Ok(None)
}

fn walk_path<'a>(
    btf: &'a Btf,
    mut current: Type<'a>,
    components: &[&str],
    struct_name: &str,
    path: &str,
) -> Result<Option<u32>> {
    let mut bits: u32 = 0;
    for (i, component) in components.iter().enumerate() {
        let Some((off, member)) = find_member(btf, &current, component, 0)? else {
            return Ok(None);
        };
        if member.bitfield_size != 0 || off % 8 != 0 {
            bail!("{struct_name}.{path}: {component} is a bitfield, which is not supported");
        }
        bits = bits
            .checked_add(off)
            .ok_or_else(|| anyhow!("corrupt BTF: offset of {struct_name}.{path} overflows"))?;
        if i + 1 < components.len() {
            let ty = btf
                .type_by_id(member.type_id)
                .context("corrupt BTF: member with dangling type")?;
            let ty = strip_modifiers(btf, ty)?;
            match ty.kind {
                Kind::Struct | Kind::Union => current = ty,
                // A pointer (or scalar) cannot be descended into without a second read.
                _ => return Ok(None),
            }
        }
    }
    Ok(Some(bits / 8))
}

/// Where bitfield `field` (a direct member of `struct_name`, anonymous members transparent)
/// lives: the byte offset of the aligned 32-bit word holding it, its shift inside that word
/// (little-endian bit order) and its width. `None` when absent or not inside one such word.
pub fn bitfield_u32(btf: &Btf, struct_name: &str, field: &str) -> Result<Option<(u32, u32, u32)>> {
    for composite in composites_named(btf, struct_name)? {
        let Some((bit, member)) = find_member(btf, &composite, field, 0)? else {
            continue;
        };
        let width = member.bitfield_size;
        if width == 0 {
            return Ok(None);
        }
        let shift = bit % 32;
        if shift + width > 32 {
            return Ok(None);
        }
        return Ok(Some(((bit / 32) * 4, shift, width)));
    }
    Ok(None)
}

/// `sizeof(struct name)` (or of a union, or of a typedef of either); `None` if absent.
pub fn struct_size(btf: &Btf, name: &str) -> Result<Option<u32>> {
    let composites = composites_named(btf, name)?;
    // Prefer a definition with members over an empty one, as field_offset effectively does.
    let best = composites
        .iter()
        .find(|s| s.vlen() != 0)
        .or(composites.first());
    Ok(best.map(|s| s.size()))
}

/// Resolves every offset the kernel programs need.
///
/// The fields every event depends on (the skb's length, device and data pointers; the device's
/// name, index and MTU) must exist, else this fails naming the field. The others become
/// [`NO_FIELD`] and the kernel programs skip them.
pub fn kernel_offsets(btf: &Btf) -> Result<KernelOffsets> {
    let required = |s: &str, p: &str| -> Result<u32> {
        field_offset(btf, s, p)?.ok_or_else(|| {
            anyhow!("kernel BTF has no field {s}.{p}: this kernel's layout is not supported")
        })
    };
    let optional = |s: &str, p: &str| -> Result<u32> {
        Ok(match field_offset(btf, s, p)? {
            Some(off) => off,
            None => {
                log::debug!("kernel BTF has no field {s}.{p}; it will not be read");
                NO_FIELD
            }
        })
    };
    Ok(KernelOffsets {
        skb_len: required("sk_buff", "len")?,
        skb_dev: required("sk_buff", "dev")?,
        skb_head: required("sk_buff", "head")?,
        skb_data: required("sk_buff", "data")?,
        skb_end: optional("sk_buff", "end")?,
        skb_network_header: required("sk_buff", "network_header")?,
        skb_protocol: required("sk_buff", "protocol")?,
        skb_refdst: optional("sk_buff", "_skb_refdst")?,
        shinfo_gso_size: optional("skb_shared_info", "gso_size")?,
        shinfo_gso_segs: optional("skb_shared_info", "gso_segs")?,
        dst_dev: optional("dst_entry", "dev")?,
        dev_name: required("net_device", "name")?,
        dev_ifindex: required("net_device", "ifindex")?,
        dev_mtu: required("net_device", "mtu")?,
        // possible_net_t wraps the `struct net *`; it is empty without CONFIG_NET_NS, so resolve
        // the pointer itself rather than assume it sits at offset 0.
        dev_nd_net: optional("net_device", "nd_net.net")?,
        net_inum: optional("net", "ns.inum")?,
        sk_net: optional("sock", "__sk_common.skc_net.net")?,
        // TCP keeps a segment's sequence numbers in the skb's control buffer while it owns it.
        skb_tcp_seq: match (optional("sk_buff", "cb")?, optional("tcp_skb_cb", "seq")?) {
            (NO_FIELD, _) | (_, NO_FIELD) => NO_FIELD,
            (cb, seq) => cb + seq,
        },
    })
}

/// The members of enum `enum_name` (plain or 64-bit) with their values, in declaration order.
/// Empty when the kernel has no such enum.
pub fn enum_values(btf: &Btf, enum_name: &str) -> Result<Vec<(String, i64)>> {
    for id in btf.ids_named(enum_name) {
        let ty = btf.type_by_id(id)?;
        // An enum with no members is a forward declaration: keep looking.
        if !matches!(ty.kind, Kind::Enum | Kind::Enum64) || ty.vlen() == 0 {
            continue;
        }
        return ty
            .enumerators()
            .map(|(name_off, value)| Ok((btf.string(name_off)?.to_string(), value)))
            .collect::<Result<Vec<_>>>()
            .with_context(|| format!("corrupt BTF: enum {enum_name} member names"));
    }
    Ok(Vec::new())
}

const REASON_PREFIX: &str = "SKB_DROP_REASON_";
/// `SKB_NOT_DROPPED_YET` and `SKB_CONSUMED` carry only this prefix.
const SKB_PREFIX: &str = "SKB_";
const SUBSYS_PREFIX: &str = "SKB_DROP_REASON_SUBSYS_";
/// Since 6.4 the high 16 bits of a reason select a subsystem (`SKB_DROP_REASON_SUBSYS_MASK`).
const SUBSYS_SHIFT: u32 = 16;

/// Enums naming the reasons of a drop-reason subsystem, by subsystem (the
/// `SKB_DROP_REASON_SUBSYS_<name>` suffix). Their values already carry the subsystem bits. They
/// usually live in module BTF (mac80211, openvswitch), so on most kernels only the generic
/// `SUBSYS_<n>_<v>` label is available for them.
const SUBSYS_ENUMS: &[(&str, &str)] = &[
    ("MAC80211_UNUSABLE", "mac80211_drop_reason"),
    ("MAC80211_MONITOR", "mac80211_drop_reason"),
    ("OPENVSWITCH", "ovs_drop_reason"),
];

fn strip_reason_prefix(name: &str) -> &str {
    name.strip_prefix(REASON_PREFIX)
        .or_else(|| name.strip_prefix(SKB_PREFIX))
        .unwrap_or(name)
}

/// Names of the running kernel's `enum skb_drop_reason` values (numbers change between kernels:
/// PKT_TOO_BIG is 64 on 6.1, 80 on 6.12, 93 on 6.18).
#[derive(Clone, Debug, Default)]
pub struct DropReasons {
    /// Shared: every drop event's record carries its reason's name.
    by_value: HashMap<u32, Arc<str>>,
    by_name: HashMap<String, u32>,
    available: bool,
}

impl DropReasons {
    /// Reads `enum skb_drop_reason` (and subsystem enums present in `btf`). A kernel without the
    /// enum (before 5.17) gives an empty table with [`available`](Self::available) false.
    pub fn from_btf(btf: &Btf) -> Result<Self> {
        let core = enum_values(btf, "skb_drop_reason")?;
        let mut subsystems = Vec::new();
        for (name, n) in enum_values(btf, "skb_drop_reason_subsys")? {
            let Some(sub) = name.strip_prefix(SUBSYS_PREFIX) else {
                continue;
            };
            let Ok(n) = u32::try_from(n) else { continue };
            for &(_, enum_name) in SUBSYS_ENUMS.iter().filter(|(s, _)| *s == sub) {
                subsystems.push((n, enum_values(btf, enum_name)?));
            }
        }
        Ok(Self::build(core, subsystems))
    }

    /// Builds the table from the core enum's members and, per subsystem number, the members of
    /// that subsystem's enum.
    fn build(core: Vec<(String, i64)>, subsystems: Vec<(u32, Vec<(String, i64)>)>) -> Self {
        let mut table = Self {
            available: !core.is_empty(),
            ..Self::default()
        };
        for (name, value) in core {
            let short = strip_reason_prefix(&name);
            // The mask is a constant of the encoding, not a reason.
            if short == "SUBSYS_MASK" {
                continue;
            }
            if let Ok(value) = u32::try_from(value) {
                table.insert(short, value);
            }
        }
        for (n, members) in subsystems {
            // n == 0 is the core subsystem, already covered.
            if n == 0 {
                continue;
            }
            for (name, value) in members {
                match u32::try_from(value) {
                    // Only the members that carry this subsystem's bits are drop reasons
                    // (mac80211's enum also holds RX_CONTINUE/RX_QUEUED).
                    Ok(value) if value >> SUBSYS_SHIFT == n => table.insert(&name, value),
                    _ => {}
                }
            }
        }
        table
    }

    fn insert(&mut self, name: &str, value: u32) {
        // On duplicate values the first declared name is the canonical one.
        self.by_value
            .entry(value)
            .or_insert_with(|| Arc::from(name));
        self.by_name.insert(name.to_string(), value);
    }

    /// Whether the kernel has drop reasons at all.
    pub fn available(&self) -> bool {
        self.available
    }

    /// Number of named reasons.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The name of `value` without its `SKB_DROP_REASON_`/`SKB_` prefix (`"PKT_TOO_BIG"`,
    /// `"CONSUMED"`).
    pub fn name(&self, value: u32) -> Option<&str> {
        self.by_value.get(&value).map(AsRef::as_ref)
    }

    /// The value of a reason, named with or without its prefix (`SKB_DROP_REASON_`, or `SKB_` for
    /// `SKB_CONSUMED`).
    pub fn value(&self, name: &str) -> Option<u32> {
        // Exact first: SKB_CSUM is itself a short name (SKB_DROP_REASON_SKB_CSUM).
        self.by_name
            .get(name)
            .or_else(|| self.by_name.get(strip_reason_prefix(name)))
            .copied()
    }

    /// A name for any value: its name, `SUBSYS_<n>_<v>` for an unnamed subsystem reason, or
    /// `UNKNOWN_<v>`.
    pub fn label(&self, value: u32) -> Cow<'_, str> {
        if let Some(name) = self.name(value) {
            return Cow::Borrowed(name);
        }
        Cow::Owned(self.unnamed_label(value))
    }

    /// [`label`](Self::label) as a shared string: a named reason's costs no copy.
    pub fn shared_label(&self, value: u32) -> Arc<str> {
        match self.by_value.get(&value) {
            Some(name) => Arc::clone(name),
            None => self.unnamed_label(value).into(),
        }
    }

    fn unnamed_label(&self, value: u32) -> String {
        let subsystem = value >> SUBSYS_SHIFT;
        if subsystem != 0 {
            format!("SUBSYS_{subsystem}_{}", value & 0xffff)
        } else {
            format!("UNKNOWN_{value}")
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, process::Command, sync::OnceLock};

    use super::*;

    fn vmlinux() -> &'static Btf<'static> {
        static BTF: OnceLock<Btf<'static>> = OnceLock::new();
        BTF.get_or_init(|| load_vmlinux().expect("this machine's kernel has BTF"))
    }

    fn btf_rs_vmlinux() -> &'static btf_rs::Btf {
        static BTF: OnceLock<btf_rs::Btf> = OnceLock::new();
        BTF.get_or_init(|| reference::load(VMLINUX_BTF).unwrap())
    }

    /// Every struct member the daemon reads (`kernel_offsets`, `run::attach::veth_offsets`,
    /// `hooks::pmtu::offsets`, `hooks::pmtu6::offsets`), as (struct, path).
    const FIELDS_USED: &[(&str, &str)] = &[
        ("sk_buff", "len"),
        ("sk_buff", "dev"),
        ("sk_buff", "head"),
        ("sk_buff", "data"),
        ("sk_buff", "end"),
        ("sk_buff", "network_header"),
        ("sk_buff", "protocol"),
        ("sk_buff", "_skb_refdst"),
        ("sk_buff", "cb"),
        ("tcp_skb_cb", "seq"),
        ("skb_shared_info", "gso_size"),
        ("skb_shared_info", "gso_segs"),
        ("dst_entry", "dev"),
        ("dst_entry", "_metrics"),
        ("sock", "__sk_common.skc_v6_daddr"),
        ("sock", "__sk_common.skc_v6_rcv_saddr"),
        ("sock", "sk_protocol"),
        ("net_device", "name"),
        ("net_device", "ifindex"),
        ("net_device", "mtu"),
        ("net_device", "nd_net.net"),
        ("net", "ns.inum"),
        ("sock", "__sk_common.skc_net.net"),
        ("net_device", "netdev_ops"),
        ("net_device_ops", "ndo_start_xmit"),
        ("veth_priv", "peer"),
        ("rtable", "dst.dev"),
        ("rtable", "rt_pmtu"),
        ("flowi4", "saddr"),
        ("flowi4", "daddr"),
        ("flowi4", "uli.ports"),
        ("flowi4", "__fl_common.flowic_proto"),
    ];

    #[test]
    fn every_offset_the_tracer_reads_matches_btf_rs() {
        let (ours, theirs) = (vmlinux(), btf_rs_vmlinux());
        let mut resolved = 0;
        for &(s, p) in FIELDS_USED {
            // rt_pmtu is a bitfield: an error from both (field_offset), a place from both
            // (bitfield_u32).
            let a = field_offset(ours, s, p).map_err(|e| e.to_string());
            let b = reference::field_offset(theirs, s, p).map_err(|e| e.to_string());
            assert_eq!(a, b, "{s}.{p}");
            resolved += a.is_ok_and(|o| o.is_some()) as usize;
            assert_eq!(
                bitfield_u32(ours, s, p).unwrap(),
                reference::bitfield_u32(theirs, s, p).unwrap(),
                "{s}.{p} as a bitfield"
            );
        }
        // veth_priv lives in the veth module's BTF where veth is a module; all others are here.
        assert!(resolved >= FIELDS_USED.len() - 2, "{resolved}");
        assert!(bitfield_u32(ours, "rtable", "rt_pmtu").unwrap().is_some());
        for name in [
            "net_device",
            "sk_buff",
            "possible_net_t",
            "no_such_struct_xyz",
        ] {
            assert_eq!(
                struct_size(ours, name).unwrap(),
                reference::struct_size(theirs, name).unwrap(),
                "{name}"
            );
        }
    }

    #[test]
    fn every_enum_the_tracer_reads_matches_btf_rs() {
        let (ours, theirs) = (vmlinux(), btf_rs_vmlinux());
        for name in [
            "skb_drop_reason",
            "skb_drop_reason_subsys",
            "mac80211_drop_reason",
            "ovs_drop_reason",
            "no_such_enum_xyz",
        ] {
            assert_eq!(
                enum_values(ours, name).unwrap(),
                reference::enum_values(theirs, name).unwrap(),
                "{name}"
            );
        }
        assert!(enum_values(ours, "skb_drop_reason").unwrap().len() > 100);
    }

    /// The whole kernel BTF, type by type: kind, name, size or referenced type, every member and
    /// every enumerator, as btf-rs reads them.
    #[test]
    fn every_type_of_this_kernel_matches_btf_rs() {
        use btf_rs::{BtfType, Type as T};
        let (ours, theirs) = (vmlinux(), btf_rs_vmlinux());
        let name = |off: Option<u32>| ours.string(off.unwrap_or(0)).unwrap().to_string();
        let mut structs = 0;
        for id in 1..ours.type_count() {
            let a = ours.type_by_id(id).unwrap();
            let b = theirs.resolve_type_by_id(id).unwrap();
            let kind = match &b {
                T::Int(_) => Kind::Int,
                T::Ptr(_) => Kind::Ptr,
                T::Array(_) => Kind::Array,
                T::Struct(_) => Kind::Struct,
                T::Union(_) => Kind::Union,
                T::Enum(_) => Kind::Enum,
                T::Fwd(_) => Kind::Fwd,
                T::Typedef(_) => Kind::Typedef,
                T::Volatile(_) => Kind::Volatile,
                T::Const(_) => Kind::Const,
                T::Restrict(_) => Kind::Restrict,
                T::Func(_) => Kind::Func,
                T::FuncProto(_) => Kind::FuncProto,
                T::Var(_) => Kind::Var,
                T::Datasec(_) => Kind::Datasec,
                T::Float(_) => Kind::Float,
                T::DeclTag(_) => Kind::DeclTag,
                T::TypeTag(_) => Kind::TypeTag,
                T::Enum64(_) => Kind::Enum64,
                T::Void => Kind::Void,
                other => panic!("type {id}: a kind the reader does not know: {other:?}"),
            };
            assert_eq!(a.kind, kind, "type {id}");
            // btf-rs gives no name accessor for function prototypes (anonymous in vmlinux).
            let Some(bt) = b.as_btf_type() else {
                assert_eq!(a.kind, Kind::FuncProto, "type {id}");
                assert_eq!(ours.string(a.name_off).unwrap(), "", "type {id}");
                continue;
            };
            assert_eq!(
                ours.string(a.name_off).unwrap(),
                name(bt.get_name_offset()),
                "type {id}"
            );
            match &b {
                T::Struct(s) | T::Union(s) => {
                    structs += 1;
                    assert_eq!(a.size() as usize, s.size(), "type {id}");
                    let members: Vec<_> = a.members().collect();
                    assert_eq!(members.len(), s.members.len(), "type {id}");
                    for (m, n) in members.iter().zip(&s.members) {
                        assert_eq!(ours.string(m.name_off).unwrap(), name(n.get_name_offset()));
                        assert_eq!(Some(m.type_id), n.get_type_id(), "type {id}");
                        assert_eq!(m.bit_offset, n.bit_offset(), "type {id}");
                        assert_eq!(m.bitfield_size, n.bitfield_size().unwrap_or(0));
                    }
                }
                T::Enum(e) => {
                    let values: Vec<_> = a.enumerators().collect();
                    assert_eq!(values.len(), e.members.len(), "type {id}");
                    for ((off, v), m) in values.iter().zip(&e.members) {
                        assert_eq!(ours.string(*off).unwrap(), name(m.get_name_offset()));
                        let expect = if e.is_signed() {
                            i64::from(m.val() as i32)
                        } else {
                            i64::from(m.val())
                        };
                        assert_eq!(*v, expect, "type {id}");
                    }
                }
                T::Enum64(e) => {
                    let values: Vec<_> = a.enumerators().collect();
                    let expect: Vec<_> = e.members.iter().map(|m| m.val() as i64).collect();
                    assert_eq!(values.iter().map(|v| v.1).collect::<Vec<_>>(), expect);
                }
                T::Ptr(_)
                | T::Typedef(_)
                | T::Volatile(_)
                | T::Const(_)
                | T::Restrict(_)
                | T::TypeTag(_) => {
                    assert_eq!(Some(a.referenced()), bt.get_type_id(), "type {id}");
                }
                _ => {}
            }
        }
        assert!(structs > 1000, "{structs}");
        // And no type past the last.
        assert!(theirs.resolve_type_by_id(ours.type_count()).is_err());
    }

    /// Queries over hand-built BTF: a split module BTF, anonymous members, loops.
    #[test]
    fn queries_over_split_and_corrupt_btf() {
        use reader::tests::Builder;
        let mut b = Builder::new();
        b.int("int", 4); // 1
        b.raw(0, 2, false, 0, 3); // 2: struct net_device *
        b.composite(4, "net_device", 64, &[("mtu", 1, 64, 0)]); // 3
        let base: &'static Btf = Box::leak(Box::new(Btf::parse(b.bytes()).unwrap()));
        let strings = {
            let bytes = b.bytes();
            u32::from_ne_bytes(bytes[20..24].try_into().unwrap())
        };
        let mut m = Builder::split(strings);
        // 4: an anonymous union holding `peer` at 8 bytes in; 5: veth_priv { int; union }.
        m.composite(5, "", 8, &[("peer", 2, 0, 0), ("other", 1, 0, 0)]);
        m.composite(4, "veth_priv", 16, &[("stats", 1, 0, 0), ("", 4, 64, 0)]);
        let module = Btf::parse_split(m.bytes(), base).unwrap();
        assert_eq!(field_offset(&module, "veth_priv", "peer").unwrap(), Some(8));
        assert_eq!(field_offset(&module, "net_device", "mtu").unwrap(), Some(8));
        assert_eq!(field_offset(base, "veth_priv", "peer").unwrap(), None);
        assert_eq!(struct_size(&module, "veth_priv").unwrap(), Some(16));

        // A typedef that names itself, and a struct whose anonymous member is itself.
        let mut b = Builder::new();
        b.typedef("loop_t", 1); // 1
        b.composite(4, "knot", 4, &[("", 2, 0, 0)]); // 2
        b.composite(4, "dangling", 4, &[("", 99, 0, 0)]); // 3
        let btf = Btf::parse(b.bytes()).unwrap();
        let e = field_offset(&btf, "loop_t", "x").unwrap_err().to_string();
        assert!(e.contains("typedef/qualifier chain"), "{e}");
        let e = field_offset(&btf, "knot", "x").unwrap_err().to_string();
        assert!(e.contains("nested deeper"), "{e}");
        let e = format!("{:#}", field_offset(&btf, "dangling", "x").unwrap_err());
        assert!(e.contains("dangling type"), "{e}");
    }

    fn off(s: &str, p: &str) -> u32 {
        field_offset(vmlinux(), s, p)
            .unwrap()
            .unwrap_or_else(|| panic!("{s}.{p} missing"))
    }

    fn size_of(name: &str) -> u32 {
        struct_size(vmlinux(), name)
            .unwrap()
            .unwrap_or_else(|| panic!("no struct {name}"))
    }

    /// A member as bpftool prints it: (name, type id, bit offset).
    type RawMember = (String, u32, u32);
    /// A type as bpftool prints it: (kind, name, referenced type id, members).
    type RawType = (String, String, u32, Vec<RawMember>);

    /// An independent reading of the same BTF: `bpftool btf dump format raw`, walked by hand.
    struct RawDump {
        types: HashMap<u32, RawType>,
        by_name: HashMap<(String, String), u32>,
    }

    impl RawDump {
        fn load() -> Self {
            let out = Command::new("bpftool")
                .args(["btf", "dump", "file", VMLINUX_BTF, "format", "raw"])
                .output()
                .expect("bpftool is needed for this cross-check: apt-get install -y bpftool");
            assert!(out.status.success(), "bpftool failed");
            let text = String::from_utf8(out.stdout).unwrap();
            let mut types = HashMap::new();
            let mut by_name = HashMap::new();
            let mut current = None;
            for line in text.lines() {
                if let Some(rest) = line.strip_prefix('[') {
                    // [873] STRUCT 'sk_buff' size=224 vlen=28
                    let (id, rest) = rest.split_once("] ").unwrap();
                    let id: u32 = id.parse().unwrap();
                    let (kind, rest) = rest.split_once(' ').unwrap();
                    let name = rest.split('\'').nth(1).unwrap_or("").to_string();
                    let type_id = rest
                        .split_whitespace()
                        .find_map(|w| w.strip_prefix("type_id="))
                        .map_or(0, |v| v.trim_end_matches(',').parse().unwrap());
                    by_name
                        .entry((kind.to_string(), name.clone()))
                        .or_insert(id);
                    types.insert(id, (kind.to_string(), name, type_id, Vec::new()));
                    current = Some(id);
                } else if let (Some(id), Some(rest)) = (current, line.strip_prefix("\t'")) {
                    // \t'len' type_id=35 bits_offset=896
                    let (name, rest) = rest.split_once('\'').unwrap();
                    let mut type_id = 0;
                    let mut bits = u32::MAX;
                    for w in rest.split_whitespace() {
                        if let Some(v) = w.strip_prefix("type_id=") {
                            type_id = v.parse().unwrap();
                        } else if let Some(v) = w.strip_prefix("bits_offset=") {
                            bits = v.parse().unwrap();
                        }
                    }
                    if bits != u32::MAX {
                        let entry = types.get_mut(&id).unwrap();
                        entry.3.push((name.to_string(), type_id, bits));
                    }
                }
            }
            Self { types, by_name }
        }

        fn strip(&self, mut id: u32) -> u32 {
            while let Some((kind, _, next, _)) = self.types.get(&id) {
                match kind.as_str() {
                    "TYPEDEF" | "CONST" | "VOLATILE" | "RESTRICT" | "TYPE_TAG" => id = *next,
                    _ => break,
                }
            }
            id
        }

        fn find(&self, id: u32, name: &str) -> Option<(u32, u32)> {
            let (_, _, _, members) = self.types.get(&id)?;
            for (mname, tid, bits) in members {
                if mname == name {
                    return Some((*bits, *tid));
                }
                if mname == "(anon)" {
                    if let Some((b, t)) = self.find(self.strip(*tid), name) {
                        return Some((bits + b, t));
                    }
                }
            }
            None
        }

        fn offset(&self, s: &str, path: &str) -> u32 {
            let mut id = self.by_name[&("STRUCT".to_string(), s.to_string())];
            let mut bits = 0;
            for c in path.split('.') {
                let (b, t) = self.find(id, c).unwrap();
                bits += b;
                id = self.strip(t);
            }
            bits / 8
        }
    }

    #[test]
    fn missing_or_garbage_btf_is_an_error() {
        let Err(err) = load_from(Path::new("/nonexistent/btf/vmlinux")) else {
            panic!("a missing file must be an error");
        };
        assert_eq!(
            err.to_string(),
            "kernel has no BTF (/nonexistent/btf/vmlinux missing): CONFIG_DEBUG_INFO_BTF is required"
        );
        let garbage =
            std::env::temp_dir().join(format!("tracer-btf-garbage-{}", std::process::id()));
        std::fs::write(&garbage, b"this is not BTF at all, just some bytes").unwrap();
        let result = load_from(&garbage);
        std::fs::remove_file(&garbage).unwrap();
        assert!(result.is_err());
    }

    #[test]
    fn offsets_match_bpftool() {
        let raw = RawDump::load();
        let fields = [
            ("sk_buff", "len"),
            ("sk_buff", "dev"),
            ("sk_buff", "head"),
            ("sk_buff", "data"),
            ("sk_buff", "end"),
            ("sk_buff", "network_header"),
            ("sk_buff", "protocol"),
            ("sk_buff", "_skb_refdst"),
            ("skb_shared_info", "gso_size"),
            ("skb_shared_info", "gso_segs"),
            ("dst_entry", "dev"),
            ("net_device", "name"),
            ("net_device", "ifindex"),
            ("net_device", "mtu"),
            ("net_device", "nd_net"),
            ("net", "ns.inum"),
            ("sock", "__sk_common.skc_net"),
        ];
        for (s, p) in fields {
            assert_eq!(off(s, p), raw.offset(s, p), "{s}.{p}");
        }
    }

    #[test]
    fn structural_facts_on_this_kernel() {
        // Exact offsets are checked against bpftool (offsets_match_bpftool), so these hold on
        // any kernel: dev sits two pointers into sk_buff (after next/prev).
        assert_eq!(off("sk_buff", "dev"), 16);
        let skb = size_of("sk_buff");
        assert!(skb > off("sk_buff", "dev"));
        assert_eq!(size_of("possible_net_t"), 8);
        assert_eq!(struct_size(vmlinux(), "no_such_struct_xyz").unwrap(), None);
        for p in ["len", "head", "data", "end", "network_header", "protocol"] {
            assert!(off("sk_buff", p) < skb, "sk_buff.{p}");
        }
        assert_ne!(off("sk_buff", "len"), off("sk_buff", "dev"));
        assert!(off("sk_buff", "head") < off("sk_buff", "data"));
        // Nested path = sum of its parts.
        let ns = off("net", "ns");
        assert_eq!(off("net", "ns.inum"), ns + off("ns_common", "inum"));
    }

    #[test]
    fn missing_fields_are_none_and_bad_paths_errors() {
        let btf = vmlinux();
        assert_eq!(field_offset(btf, "sk_buff", "no_such_field").unwrap(), None);
        assert_eq!(
            field_offset(btf, "no_such_struct_xyz", "len").unwrap(),
            None
        );
        // `dev` is a pointer: there is nothing embedded to descend into.
        assert_eq!(field_offset(btf, "sk_buff", "dev.mtu").unwrap(), None);
        assert!(field_offset(btf, "sk_buff", "").is_err());
        assert!(field_offset(btf, "net", "ns..inum").is_err());
        // `cloned` is a 1-bit bitfield.
        let err = field_offset(btf, "sk_buff", "cloned").unwrap_err();
        assert!(err.to_string().contains("bitfield"), "{err}");
    }

    #[test]
    fn typedef_struct_possible_net_t() {
        // A typedef of an anonymous struct holding only `struct net *net`.
        assert_eq!(
            field_offset(vmlinux(), "possible_net_t", "net").unwrap(),
            Some(0)
        );
        assert_eq!(off("net_device", "nd_net.net"), off("net_device", "nd_net"));
    }

    #[test]
    fn kernel_offsets_are_all_resolved_here() {
        let k = kernel_offsets(vmlinux()).unwrap();
        assert_eq!(k.dev_mtu, off("net_device", "mtu"));
        assert_eq!(k.skb_dev, off("sk_buff", "dev"));
        assert_eq!(k.dev_nd_net, off("net_device", "nd_net"));
        assert_eq!(k.sk_net, off("sock_common", "skc_net"));
        assert_eq!(k.net_inum, off("net", "ns.inum"));
        assert_eq!(
            k.skb_tcp_seq,
            off("sk_buff", "cb") + off("tcp_skb_cb", "seq")
        );
        let all = [
            k.skb_len,
            k.skb_dev,
            k.skb_head,
            k.skb_data,
            k.skb_end,
            k.skb_network_header,
            k.skb_protocol,
            k.skb_refdst,
            k.shinfo_gso_size,
            k.shinfo_gso_segs,
            k.dst_dev,
            k.dev_name,
            k.dev_ifindex,
            k.dev_mtu,
            k.dev_nd_net,
            k.net_inum,
            k.sk_net,
            k.skb_tcp_seq,
        ];
        assert!(all.iter().all(|&v| v != NO_FIELD), "{k:?}");
    }

    #[test]
    fn enum_values_reads_plain_enums() {
        let subsys = enum_values(vmlinux(), "skb_drop_reason_subsys").unwrap();
        assert_eq!(subsys[0], ("SKB_DROP_REASON_SUBSYS_CORE".to_string(), 0));
        assert!(enum_values(vmlinux(), "no_such_enum_xyz")
            .unwrap()
            .is_empty());
    }

    /// `{ 2, "NOT_SPECIFIED" }, ...` from the kfree_skb tracepoint's print fmt.
    fn tracefs_reason_table() -> Vec<(u32, String)> {
        let format = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
            .iter()
            .find_map(|root| {
                std::fs::read_to_string(format!("{root}/events/skb/kfree_skb/format")).ok()
            })
            .expect("kfree_skb format readable");
        let start = format.find("__print_symbolic(REC->reason,").unwrap();
        let mut table = Vec::new();
        let mut rest = &format[start..];
        while let Some(open) = rest.find("{ ") {
            rest = &rest[open + 2..];
            let close = rest.find(" }").unwrap();
            let (num, name) = rest[..close].split_once(", ").unwrap();
            table.push((num.parse().unwrap(), name.trim_matches('"').to_string()));
            rest = &rest[close..];
        }
        table
    }

    #[test]
    fn drop_reasons_match_this_kernel_and_tracefs() {
        let reasons = DropReasons::from_btf(vmlinux()).unwrap();
        assert!(reasons.available());
        // Numbers move between kernels (PKT_TOO_BIG is 64 on 6.1, 93 on 6.18): compare with
        // the kernel's own tracefs table rather than pinning them.
        let table = tracefs_reason_table();
        let too_big = table
            .iter()
            .find(|(_, n)| n == "PKT_TOO_BIG")
            .map(|(v, _)| *v);
        assert!(too_big.is_some());
        assert_eq!(reasons.value("PKT_TOO_BIG"), too_big);
        assert_eq!(reasons.value("SKB_DROP_REASON_PKT_TOO_BIG"), too_big);
        assert_eq!(reasons.name(too_big.unwrap()), Some("PKT_TOO_BIG"));
        assert_eq!(reasons.name(0), Some("NOT_DROPPED_YET"));
        assert_eq!(reasons.name(1), Some("CONSUMED"));
        assert_eq!(reasons.value("SKB_CONSUMED"), Some(1));
        assert_eq!(reasons.value("SUBSYS_MASK"), None);
        assert!(table.len() > 100, "{}", table.len());
        for (value, name) in &table {
            assert_eq!(reasons.name(*value), Some(name.as_str()), "value {value}");
            assert_eq!(reasons.value(name), Some(*value), "{name}");
        }
        // The tracefs table omits NOT_DROPPED_YET and CONSUMED (0, 1) only.
        assert_eq!(reasons.len(), table.len() + 2);
    }

    #[test]
    fn drop_reason_labels_and_subsystems() {
        let core = vec![
            ("SKB_DROP_REASON_NOT_SPECIFIED".to_string(), 2),
            ("SKB_DROP_REASON_PKT_TOO_BIG".to_string(), 93),
            ("SKB_DROP_REASON_SUBSYS_MASK".to_string(), 0xffff_0000),
        ];
        let ovs = vec![
            ("__OVS_DROP_REASON".to_string(), 2 << 16),
            ("OVS_DROP_LAST_ACTION".to_string(), (2 << 16) + 1),
            // Not in subsystem 2: ignored.
            ("RX_CONTINUE".to_string(), 1),
        ];
        let reasons = DropReasons::build(core, vec![(2, ovs)]);
        assert!(reasons.available());
        assert_eq!(reasons.len(), 4);
        assert_eq!(reasons.label(93), "PKT_TOO_BIG");
        assert_eq!(reasons.label((2 << 16) + 1), "OVS_DROP_LAST_ACTION");
        assert_eq!(reasons.label((1 << 16) + 7), "SUBSYS_1_7");
        assert_eq!(reasons.label(500), "UNKNOWN_500");
        assert_eq!(reasons.name(1), None);
        assert_eq!(reasons.value("RX_CONTINUE"), None);

        let none = DropReasons::build(Vec::new(), Vec::new());
        assert!(!none.available());
        assert!(none.is_empty());
        assert_eq!(none.label(2), "UNKNOWN_2");
    }
}
