//! A reader of raw BTF (the kernel's `Documentation/bpf/btf.rst`): the header, one walk over
//! the type section that records where each type starts, and the string section, all kept as
//! the file's bytes. Types are decoded only when asked for.
//!
//! Why not a full parse: the tracer asks for a few dozen struct members and three enums, and a
//! parse into one object per type (btf-rs) held ~30 MiB at the daemon's start for that (issue
//! 18). Here the cost is the file (~5.5 MiB for vmlinux) and 4 bytes per type.
//!
//! Native byte order only: the BTF under /sys/kernel/btf is the running kernel's.

use std::{ops::Range, path::Path};

use anyhow::{anyhow, bail, Context, Result};

const MAGIC: u16 = 0xeb9f;
const VERSION: u8 = 1;
/// `struct btf_header` up to `str_len`; newer kernels may append fields (`hdr_len` says).
const HEADER_LEN: usize = 24;
/// `struct btf_type`: name_off, info, size/type.
const TYPE_LEN: usize = 12;

/// The kinds of `BTF_KIND_*`, by their numbers in the format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Type id 0, not a record.
    Void,
    Int,
    Ptr,
    Array,
    Struct,
    Union,
    Enum,
    Fwd,
    Typedef,
    Volatile,
    Const,
    Restrict,
    Func,
    FuncProto,
    Var,
    Datasec,
    Float,
    DeclTag,
    TypeTag,
    Enum64,
}

impl Kind {
    fn from_raw(kind: u32) -> Option<Kind> {
        Some(match kind {
            1 => Kind::Int,
            2 => Kind::Ptr,
            3 => Kind::Array,
            4 => Kind::Struct,
            5 => Kind::Union,
            6 => Kind::Enum,
            7 => Kind::Fwd,
            8 => Kind::Typedef,
            9 => Kind::Volatile,
            10 => Kind::Const,
            11 => Kind::Restrict,
            12 => Kind::Func,
            13 => Kind::FuncProto,
            14 => Kind::Var,
            15 => Kind::Datasec,
            16 => Kind::Float,
            17 => Kind::DeclTag,
            18 => Kind::TypeTag,
            19 => Kind::Enum64,
            _ => return None,
        })
    }

    /// Bytes that follow the 12-byte `struct btf_type` for a record of this kind with `vlen`
    /// entries.
    fn extra_len(self, vlen: usize) -> usize {
        match self {
            Kind::Int | Kind::Var | Kind::DeclTag => 4,
            Kind::Array => 12,
            Kind::Struct | Kind::Union | Kind::Datasec | Kind::Enum64 => 12 * vlen,
            Kind::Enum | Kind::FuncProto => 8 * vlen,
            _ => 0,
        }
    }

    /// Typedefs and qualifiers: another name or attribute for the type they refer to.
    pub fn is_modifier(self) -> bool {
        matches!(
            self,
            Kind::Typedef | Kind::Volatile | Kind::Const | Kind::Restrict | Kind::TypeTag
        )
    }
}

/// One BTF, base (vmlinux) or split (a module's, whose ids and string offsets continue its
/// base's).
pub struct Btf<'base> {
    data: Vec<u8>,
    strings: Range<usize>,
    /// Where in `data` each type record starts; index `i` is type id `first_id + i`.
    records: Vec<u32>,
    first_id: u32,
    base: Option<&'base Btf<'static>>,
}

/// One type record, decoded on demand.
#[derive(Clone, Copy, Debug)]
pub struct Type<'a> {
    pub id: u32,
    pub kind: Kind,
    pub name_off: u32,
    kind_flag: bool,
    vlen: usize,
    /// `size` for structs, unions, enums, ints; the referenced type id for modifiers, pointers.
    size_or_type: u32,
    extra: &'a [u8],
}

/// A member of a struct or union.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub name_off: u32,
    pub type_id: u32,
    /// From the start of the struct.
    pub bit_offset: u32,
    /// 0 unless the member is a bitfield (and the struct says so with its kind flag).
    pub bitfield_size: u32,
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

impl<'a> Type<'a> {
    /// Bytes of a struct, union, enum or int.
    pub fn size(&self) -> u32 {
        self.size_or_type
    }

    /// The type a modifier or pointer refers to.
    pub fn referenced(&self) -> u32 {
        self.size_or_type
    }

    /// Members of a struct or union (none for other kinds).
    pub fn members(&self) -> impl Iterator<Item = Member> + 'a {
        let count = match self.kind {
            Kind::Struct | Kind::Union => self.vlen,
            _ => 0,
        };
        let (extra, flag) = (self.extra, self.kind_flag);
        (0..count).map(move |i| {
            let at = i * 12;
            let raw = u32_at(extra, at + 8);
            // With the kind flag, the offset word carries the bitfield's width in its top byte.
            let (bit_offset, bitfield_size) = if flag {
                (raw & 0x00ff_ffff, raw >> 24)
            } else {
                (raw, 0)
            };
            Member {
                name_off: u32_at(extra, at),
                type_id: u32_at(extra, at + 4),
                bit_offset,
                bitfield_size,
            }
        })
    }

    /// Members of an enum or 64-bit enum as (name offset, value); signedness from the kind flag.
    /// Values of a 64-bit enum above `i64::MAX` wrap (no kernel enum the tracer reads has one).
    pub fn enumerators(&self) -> impl Iterator<Item = (u32, i64)> + 'a {
        let (kind, extra, signed) = (self.kind, self.extra, self.kind_flag);
        let count = match kind {
            Kind::Enum | Kind::Enum64 => self.vlen,
            _ => 0,
        };
        (0..count).map(move |i| {
            if kind == Kind::Enum {
                let raw = u32_at(extra, i * 8 + 4);
                let value = if signed {
                    i64::from(raw as i32)
                } else {
                    i64::from(raw)
                };
                (u32_at(extra, i * 8), value)
            } else {
                let lo = u64::from(u32_at(extra, i * 12 + 4));
                let hi = u64::from(u32_at(extra, i * 12 + 8));
                (u32_at(extra, i * 12), ((hi << 32) | lo) as i64)
            }
        })
    }

    /// Number of members, enumerators or parameters.
    pub fn vlen(&self) -> usize {
        self.vlen
    }
}

impl Btf<'static> {
    /// Reads and indexes a base BTF file such as /sys/kernel/btf/vmlinux.
    pub fn from_file(path: &Path) -> Result<Btf<'static>> {
        let data =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        Btf::parse(data).with_context(|| format!("corrupt BTF in {}", path.display()))
    }

    /// Indexes base BTF bytes.
    pub fn parse(data: Vec<u8>) -> Result<Btf<'static>> {
        Btf::index(data, None)
    }
}

impl<'base> Btf<'base> {
    /// Reads and indexes a module's split BTF (/sys/kernel/btf/<module>) over `base`.
    pub fn from_split_file(path: &Path, base: &'base Btf<'static>) -> Result<Btf<'base>> {
        let data =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        Btf::parse_split(data, base).with_context(|| format!("corrupt BTF in {}", path.display()))
    }

    /// Indexes split BTF bytes over `base`.
    pub fn parse_split(data: Vec<u8>, base: &'base Btf<'static>) -> Result<Btf<'base>> {
        Btf::index(data, Some(base))
    }

    fn index(data: Vec<u8>, base: Option<&'base Btf<'static>>) -> Result<Btf<'base>> {
        if data.len() < HEADER_LEN {
            bail!("{} bytes: shorter than a BTF header", data.len());
        }
        // Record positions are kept as u32 (vmlinux's BTF is a few MiB).
        if data.len() > u32::MAX as usize {
            bail!("{} bytes: larger than BTF can be", data.len());
        }
        let magic = u16::from_ne_bytes([data[0], data[1]]);
        if magic == MAGIC.swap_bytes() {
            bail!("BTF of the other byte order: only this machine's own is read");
        }
        if magic != MAGIC {
            bail!("not BTF (magic {magic:#06x}, expected {MAGIC:#06x})");
        }
        if data[2] != VERSION {
            bail!("BTF version {} (only {VERSION} is known)", data[2]);
        }
        let hdr_len = u32_at(&data, 4) as usize;
        if hdr_len < HEADER_LEN || hdr_len > data.len() {
            bail!("header length {hdr_len} out of bounds");
        }
        let section = |off_at: usize, what: &str| -> Result<Range<usize>> {
            let (off, len) = (
                u32_at(&data, off_at) as usize,
                u32_at(&data, off_at + 4) as usize,
            );
            let start = hdr_len.checked_add(off);
            match start.and_then(|s| Some(s..s.checked_add(len)?)) {
                Some(r) if r.end <= data.len() => Ok(r),
                _ => bail!("{what} section ({len} bytes at {off}) runs past the end"),
            }
        };
        let types = section(8, "type")?;
        let strings = section(16, "string")?;
        if types.start % 4 != 0 {
            bail!("type section not 4-byte aligned");
        }
        if strings.end > strings.start && data[strings.end - 1] != 0 {
            bail!("string section does not end with a NUL");
        }
        // Base BTF strings start with the empty name at offset 0 (anonymous types use it).
        if base.is_none() && data.get(strings.start) != Some(&0) {
            bail!("string section does not start with the empty string");
        }
        let first_id = base.map_or(1, |b| b.type_count());
        let mut records = Vec::new();
        let mut at = types.start;
        while at < types.end {
            let id = first_id as usize + records.len();
            if types.end - at < TYPE_LEN {
                bail!("type {id} truncated");
            }
            let info = u32_at(&data, at + 4);
            let raw_kind = (info >> 24) & 0x1f;
            let kind = Kind::from_raw(raw_kind)
                .ok_or_else(|| anyhow!("type {id} has unknown kind {raw_kind}"))?;
            let len = TYPE_LEN + kind.extra_len((info & 0xffff) as usize);
            if types.end - at < len {
                bail!("type {id} ({kind:?}) truncated");
            }
            records.push(at as u32);
            at += len;
        }
        if first_id as usize + records.len() > u32::MAX as usize {
            bail!("more types than ids");
        }
        records.shrink_to_fit();
        Ok(Btf {
            data,
            strings,
            records,
            first_id,
            base,
        })
    }

    /// Ids in use, void included: the first id a split BTF over this one takes.
    pub fn type_count(&self) -> u32 {
        self.first_id + self.records.len() as u32
    }

    /// The type with id `id` (this BTF's or its base's); id 0 is void.
    pub fn type_by_id(&self, id: u32) -> Result<Type<'_>> {
        if id == 0 {
            return Ok(Type {
                id,
                kind: Kind::Void,
                name_off: 0,
                kind_flag: false,
                vlen: 0,
                size_or_type: 0,
                extra: &[],
            });
        }
        if id < self.first_id {
            return match self.base {
                Some(base) => base.type_by_id(id),
                None => bail!("type id {id} out of range"),
            };
        }
        let at = *self
            .records
            .get((id - self.first_id) as usize)
            .ok_or_else(|| {
                anyhow!(
                    "type id {id} out of range (last is {})",
                    self.type_count() - 1
                )
            })? as usize;
        let info = u32_at(&self.data, at + 4);
        // Both checked when indexing.
        let kind = Kind::from_raw((info >> 24) & 0x1f).expect("kind checked when indexed");
        let vlen = (info & 0xffff) as usize;
        let extra_start = at + TYPE_LEN;
        Ok(Type {
            id,
            kind,
            name_off: u32_at(&self.data, at),
            kind_flag: info >> 31 == 1,
            vlen,
            size_or_type: u32_at(&self.data, at + 8),
            extra: &self.data[extra_start..extra_start + kind.extra_len(vlen)],
        })
    }

    /// The string at `off` (a split BTF's offsets past its base's strings are its own).
    pub fn string(&self, off: u32) -> Result<&str> {
        let bytes = self
            .string_bytes(off)
            .ok_or_else(|| anyhow!("string offset {off} out of range"))?;
        std::str::from_utf8(bytes).map_err(|_| anyhow!("string at {off} is not UTF-8"))
    }

    /// The bytes of the string at `off`, without its NUL.
    fn string_bytes(&self, off: u32) -> Option<&[u8]> {
        let off = off as usize;
        let base_len = self.base.map_or(0, |b| b.strings.len());
        if off < base_len {
            return self.base?.string_bytes(off as u32);
        }
        let own = &self.data[self.strings.clone()];
        let rest = own.get(off - base_len..)?;
        // The section ends with a NUL (checked when indexed), so every string has one.
        let nul = rest.iter().position(|&b| b == 0)?;
        Some(&rest[..nul])
    }

    /// Ids of the types named `name`, in id order (the base's first).
    pub fn ids_named(&self, name: &str) -> Vec<u32> {
        let mut found = self.base.map_or_else(Vec::new, |b| b.ids_named(name));
        if name.is_empty() {
            return found;
        }
        for (i, &at) in self.records.iter().enumerate() {
            let name_off = u32_at(&self.data, at as usize);
            if name_off != 0 && self.string_bytes(name_off) == Some(name.as_bytes()) {
                found.push(self.first_id + i as u32);
            }
        }
        found
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds BTF bytes by hand, for cases the running kernel cannot show (split BTF, corrupt
    /// input).
    #[derive(Default)]
    pub struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
        /// The string offsets of a split BTF continue its base's.
        string_base: u32,
    }

    impl Builder {
        pub fn new() -> Self {
            Self {
                strings: vec![0],
                ..Self::default()
            }
        }

        pub fn split(base_strings_len: u32) -> Self {
            Self {
                strings: vec![0],
                string_base: base_strings_len,
                ..Self::default()
            }
        }

        pub fn name(&mut self, s: &str) -> u32 {
            let off = self.string_base + self.strings.len() as u32;
            self.strings.extend_from_slice(s.as_bytes());
            self.strings.push(0);
            off
        }

        pub fn raw(&mut self, name_off: u32, kind: u32, flag: bool, vlen: u32, size_or_type: u32) {
            let info = (u32::from(flag) << 31) | (kind << 24) | vlen;
            for w in [name_off, info, size_or_type] {
                self.types.extend_from_slice(&w.to_ne_bytes());
            }
        }

        pub fn words(&mut self, words: &[u32]) {
            for w in words {
                self.types.extend_from_slice(&w.to_ne_bytes());
            }
        }

        pub fn int(&mut self, name: &str, size: u32) {
            let n = self.name(name);
            self.raw(n, 1, false, 0, size);
            self.words(&[size * 8]);
        }

        /// Members as (name, type id, bit offset, bitfield width).
        pub fn composite(
            &mut self,
            kind: u32,
            name: &str,
            size: u32,
            members: &[(&str, u32, u32, u32)],
        ) {
            let n = if name.is_empty() { 0 } else { self.name(name) };
            let flag = members.iter().any(|m| m.3 != 0);
            self.raw(n, kind, flag, members.len() as u32, size);
            for &(mname, ty, bits, width) in members {
                let mn = if mname.is_empty() {
                    0
                } else {
                    self.name(mname)
                };
                let off = if flag { (width << 24) | bits } else { bits };
                self.words(&[mn, ty, off]);
            }
        }

        pub fn typedef(&mut self, name: &str, to: u32) {
            let n = self.name(name);
            self.raw(n, 8, false, 0, to);
        }

        pub fn enumeration(&mut self, name: &str, signed: bool, values: &[(&str, i32)]) {
            let n = self.name(name);
            self.raw(n, 6, signed, values.len() as u32, 4);
            for &(vn, v) in values {
                let vn = self.name(vn);
                self.words(&[vn, v as u32]);
            }
        }

        pub fn enum64(&mut self, name: &str, values: &[(&str, u64)]) {
            let n = self.name(name);
            self.raw(n, 19, false, values.len() as u32, 8);
            for &(vn, v) in values {
                let vn = self.name(vn);
                self.words(&[vn, v as u32, (v >> 32) as u32]);
            }
        }

        pub fn bytes(&self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&MAGIC.to_ne_bytes());
            out.extend_from_slice(&[VERSION, 0]);
            let words = [
                HEADER_LEN as u32,
                0,
                self.types.len() as u32,
                self.types.len() as u32,
                self.strings.len() as u32,
            ];
            for w in words {
                out.extend_from_slice(&w.to_ne_bytes());
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    fn err(data: Vec<u8>) -> String {
        match Btf::parse(data) {
            Ok(_) => panic!("expected an error"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn bad_headers_are_errors() {
        let good = {
            let mut b = Builder::new();
            b.int("int", 4);
            b.bytes()
        };
        assert!(Btf::parse(good.clone()).is_ok());
        assert!(err(good[..10].to_vec()).contains("shorter than a BTF header"));
        let mut swapped = good.clone();
        swapped.swap(0, 1);
        assert!(err(swapped).contains("other byte order"));
        assert!(err(b"this is not BTF at all, just bytes".to_vec()).contains("not BTF"));
        let mut version = good.clone();
        version[2] = 2;
        assert!(err(version).contains("BTF version 2"));
        let mut hdr = good.clone();
        hdr[4..8].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(err(hdr).contains("header length 1000"));
        // The string section claims more bytes than there are.
        let mut strings = good.clone();
        strings[20..24].copy_from_slice(&4000u32.to_ne_bytes());
        assert!(err(strings).contains("string section"));
        // Offsets near u32::MAX must not wrap.
        let mut wrap = good.clone();
        wrap[16..20].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(err(wrap).contains("string section"));
        let mut nul = good.clone();
        *nul.last_mut().unwrap() = b'x';
        assert!(err(nul).contains("does not end with a NUL"));
    }

    #[test]
    fn bad_type_records_are_errors() {
        let mut b = Builder::new();
        b.raw(0, 31, false, 0, 0);
        assert!(err(b.bytes()).contains("type 1 has unknown kind 31"));

        // A struct announcing 3 members with bytes for one.
        let mut b = Builder::new();
        b.int("int", 4);
        b.raw(0, 4, false, 3, 8);
        b.words(&[0, 1, 0]);
        assert!(err(b.bytes()).contains("type 2 (Struct) truncated"));

        let mut b = Builder::new();
        b.words(&[0, 0]);
        assert!(err(b.bytes()).contains("type 1 truncated"));
    }

    #[test]
    fn types_strings_and_ids() {
        let mut b = Builder::new();
        b.int("int", 4); // 1
        b.composite(4, "pair", 8, &[("a", 1, 0, 0), ("b", 1, 32, 0)]); // 2
        b.typedef("pair_t", 2); // 3
        b.enumeration("color", true, &[("RED", -1), ("BLUE", 7)]); // 4
        b.enum64("wide", &[("BIG", 1 << 40)]); // 5
        b.composite(4, "pair", 0, &[]); // 6: a second, empty "pair"
        let btf = Btf::parse(b.bytes()).unwrap();
        assert_eq!(btf.type_count(), 7);
        assert_eq!(btf.ids_named("pair"), vec![2, 6]);
        assert_eq!(btf.ids_named("pai"), Vec::<u32>::new());
        assert_eq!(btf.ids_named(""), Vec::<u32>::new());
        let pair = btf.type_by_id(2).unwrap();
        assert_eq!((pair.kind, pair.size(), pair.vlen()), (Kind::Struct, 8, 2));
        assert_eq!(btf.string(pair.name_off).unwrap(), "pair");
        let members: Vec<_> = pair.members().collect();
        assert_eq!(members[1].bit_offset, 32);
        assert_eq!(btf.string(members[1].name_off).unwrap(), "b");
        assert_eq!(btf.type_by_id(3).unwrap().referenced(), 2);
        let color = btf.type_by_id(4).unwrap();
        let values: Vec<_> = color
            .enumerators()
            .map(|(n, v)| (btf.string(n).unwrap().to_string(), v))
            .collect();
        assert_eq!(values, [("RED".to_string(), -1), ("BLUE".to_string(), 7)]);
        let wide: Vec<_> = btf.type_by_id(5).unwrap().enumerators().collect();
        assert_eq!(wide[0].1, 1 << 40);
        assert_eq!(btf.type_by_id(0).unwrap().kind, Kind::Void);
        assert!(btf.type_by_id(7).is_err());
        assert!(btf.string(10_000).is_err());
    }

    #[test]
    fn split_btf_continues_its_base() {
        let mut b = Builder::new();
        b.int("int", 4); // 1
        b.composite(4, "net_device", 64, &[("mtu", 1, 64, 0)]); // 2
        let base_bytes = b.bytes();
        let base = Box::leak(Box::new(Btf::parse(base_bytes).unwrap()));
        let base_strings = base.strings.len() as u32;

        let mut m = Builder::split(base_strings);
        // A pointer to the base's net_device, then a struct naming it by a base string.
        m.raw(0, 2, false, 0, 2); // 3
        m.composite(4, "veth_priv", 16, &[("peer", 3, 64, 0)]); // 4
        let split = Btf::parse_split(m.bytes(), base).unwrap();
        assert_eq!(split.type_count(), 5);
        assert_eq!(split.ids_named("veth_priv"), vec![4]);
        assert_eq!(split.ids_named("net_device"), vec![2]);
        let peer = split.type_by_id(4).unwrap().members().next().unwrap();
        assert_eq!(split.string(peer.name_off).unwrap(), "peer");
        assert_eq!(split.type_by_id(peer.type_id).unwrap().kind, Kind::Ptr);
        // Base ids and base strings through the split BTF.
        let dev = split.type_by_id(2).unwrap();
        assert_eq!(split.string(dev.name_off).unwrap(), "net_device");
        assert!(split.type_by_id(5).is_err());
    }

    #[test]
    fn any_single_corrupt_byte_is_an_error_or_a_value_never_a_panic() {
        let mut b = Builder::new();
        b.int("int", 4);
        b.composite(4, "s", 8, &[("a", 1, 0, 0), ("bits", 1, 33, 3)]);
        b.typedef("s_t", 2);
        b.enumeration("e", false, &[("X", 3)]);
        let good = b.bytes();
        for at in 0..good.len() {
            for value in [0u8, 1, 0x7f, 0x80, 0xff] {
                let mut bytes = good.clone();
                bytes[at] = value;
                let Ok(btf) = Btf::parse(bytes) else { continue };
                for id in 0..btf.type_count() + 2 {
                    let Ok(ty) = btf.type_by_id(id) else { continue };
                    let _ = btf.string(ty.name_off);
                    for m in ty.members() {
                        let _ = btf.string(m.name_off);
                        let _ = btf.type_by_id(m.type_id);
                    }
                    for (n, _) in ty.enumerators() {
                        let _ = btf.string(n);
                    }
                }
                let _ = btf.ids_named("s");
            }
        }
    }
}
