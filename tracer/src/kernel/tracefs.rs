//! Classic tracepoint layouts from tracefs `format` files.
//!
//! A classic tracepoint program gets the raw record, whose layout moves between kernels
//! (`skb:kfree_skb` gained `rx_sk` in 6.11, shifting `reason` from 28 to 36), so the offsets the
//! kernel programs use are read here at startup.

use std::{
    ffi::CStr,
    io::ErrorKind,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use anyhow::{anyhow, bail, Context, Result};
use tracer_common::{TracepointOffsets, NO_FIELD};

/// Where tracefs lives: its own mount point since 4.1, under debugfs before (and still, as an
/// automount, on many distributions).
const CANDIDATES: &[&str] = &["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// Size of a pointer field in a tracepoint record; the daemon runs with the kernel's word size.
const PTR: u32 = std::mem::size_of::<usize>() as u32;

/// The tracefs root (with an `events/` directory), mounting tracefs on `/sys/kernel/tracing` if
/// no candidate has it (minimal systems, containers).
pub fn root() -> Result<&'static Path> {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    if let Some(root) = ROOT.get() {
        return Ok(root);
    }
    let found = match find_root() {
        Some(root) => root,
        None => {
            mount_tracefs()?;
            find_root().ok_or_else(|| {
                anyhow!(
                    "tracefs mounted on {} but it has no events/ directory",
                    CANDIDATES[0]
                )
            })?
        }
    };
    Ok(ROOT.get_or_init(|| found))
}

fn find_root() -> Option<PathBuf> {
    CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("events").is_dir())
}

fn mount_tracefs() -> Result<()> {
    const TARGET: &CStr = c"/sys/kernel/tracing";
    // SAFETY: every pointer is a NUL-terminated string that outlives the call; data may be null.
    let rc = unsafe {
        libc::mount(
            c"nodev".as_ptr(),
            TARGET.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        bail!(
            "tracefs not found at {} and `mount -t tracefs nodev /sys/kernel/tracing` failed: \
             {err} (needs root and CONFIG_TRACING)",
            CANDIDATES.join(" or ")
        );
    }
    Ok(())
}

/// One field of a tracepoint record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    /// Field name without array brackets (`saddr` for `__u8 saddr[4]`).
    pub name: String,
    pub offset: u32,
    pub size: u32,
    pub signed: bool,
    /// The declared C type, array suffix included (`__u8[4]`, `void *`).
    pub c_type: String,
}

/// A tracepoint's record layout: `events/<category>/<name>/format`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Format {
    pub fields: Vec<Field>,
}

impl Format {
    /// Parses the text of a `format` file. Errors on a malformed `field:` line or no fields.
    pub fn parse(text: &str) -> Result<Self> {
        let mut fields = Vec::new();
        for line in text.lines() {
            let Some(rest) = line.trim().strip_prefix("field:") else {
                continue;
            };
            fields.push(parse_field(rest).with_context(|| format!("bad format line {line:?}"))?);
        }
        if fields.is_empty() {
            bail!("tracepoint format has no fields");
        }
        Ok(Self { fields })
    }

    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Byte offset of `name` in the record.
    pub fn offset(&self, name: &str) -> Option<u32> {
        self.field(name).map(|f| f.offset)
    }
}

/// `unsigned short protocol;\toffset:32;\tsize:2;\tsigned:0;` (after `field:`).
fn parse_field(rest: &str) -> Result<Field> {
    let mut parts = rest.split(';').map(str::trim);
    let decl = parts.next().unwrap_or_default();
    let (mut offset, mut size, mut signed) = (None, None, false);
    for part in parts {
        let number =
            |v: &str| -> Result<u32> { v.parse().with_context(|| format!("bad number {v:?}")) };
        if let Some(v) = part.strip_prefix("offset:") {
            offset = Some(number(v)?);
        } else if let Some(v) = part.strip_prefix("size:") {
            size = Some(number(v)?);
        } else if let Some(v) = part.strip_prefix("signed:") {
            signed = number(v)? != 0;
        }
    }
    // The name is the last word; what precedes it, plus any array suffix, is the type.
    let split = decl
        .rfind(|c: char| c.is_whitespace() || c == '*')
        .ok_or_else(|| anyhow!("no type in declaration {decl:?}"))?;
    let (ty, word) = decl.split_at(split + 1);
    let (name, array) = match word.find('[') {
        Some(i) => word.split_at(i),
        None => (word, ""),
    };
    if name.is_empty() {
        bail!("no field name in declaration {decl:?}");
    }
    Ok(Field {
        name: name.to_string(),
        offset: offset.ok_or_else(|| anyhow!("no offset"))?,
        size: size.ok_or_else(|| anyhow!("no size"))?,
        signed,
        c_type: format!("{}{array}", ty.trim()),
    })
}

/// Rejects names that would escape `events/` (the path is built from them).
fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        bail!("invalid tracepoint {what} {name:?}");
    }
    Ok(())
}

fn event_dir(category: &str, name: &str) -> Result<PathBuf> {
    check_name("category", category)?;
    check_name("name", name)?;
    Ok(root()?.join("events").join(category).join(name))
}

/// The layout of tracepoint `category:name`, `None` if this kernel does not have it.
pub fn read_format(category: &str, name: &str) -> Result<Option<Format>> {
    let path = event_dir(category, name)?.join("format");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    Format::parse(&text)
        .with_context(|| format!("parsing {}", path.display()))
        .map(Some)
}

/// Whether this kernel has tracepoint `category:name` (false also when tracefs is unusable).
pub fn exists(category: &str, name: &str) -> bool {
    event_dir(category, name).is_ok_and(|dir| dir.join("format").is_file())
}

/// Offsets of the tracepoint fields the kernel programs read, plus a note for each tracepoint or
/// field this kernel lacks (its offset is then [`NO_FIELD`]).
pub fn tracepoint_offsets() -> Result<(TracepointOffsets, Vec<String>)> {
    let kfree = read_format("skb", "kfree_skb")?;
    let icmp = read_format("icmp", "icmp_send")?;
    let tcp = read_format("tcp", "tcp_retransmit_skb")?;
    Ok(offsets_from(kfree.as_ref(), icmp.as_ref(), tcp.as_ref()))
}

struct Tracepoint<'a> {
    id: &'static str,
    format: Option<&'a Format>,
}

impl Tracepoint<'_> {
    /// The offset of `field` if it exists with the size the kernel programs read.
    fn get(&self, field: &str, size: u32, notes: &mut Vec<String>) -> u32 {
        let Some(format) = self.format else {
            return NO_FIELD;
        };
        match format.field(field) {
            None if self.id == "skb:kfree_skb" && field == "reason" => {
                notes.push("skb:kfree_skb has no reason field (kernel < 5.17)".into());
                NO_FIELD
            }
            None => {
                notes.push(format!("{} has no field {field}", self.id));
                NO_FIELD
            }
            Some(f) if f.size != size => {
                notes.push(format!(
                    "{} field {field} is {} bytes, expected {size}: not read",
                    self.id, f.size
                ));
                NO_FIELD
            }
            Some(f) => f.offset,
        }
    }
}

fn offsets_from(
    kfree: Option<&Format>,
    icmp: Option<&Format>,
    tcp: Option<&Format>,
) -> (TracepointOffsets, Vec<String>) {
    let mut notes = Vec::new();
    let absent = [
        (kfree, "skb:kfree_skb tracepoint absent"),
        (icmp, "icmp:icmp_send tracepoint absent (kernel < 6.10)"),
        (
            tcp,
            "tcp:tcp_retransmit_skb tracepoint absent (kernel < 4.15)",
        ),
    ];
    for (format, note) in absent {
        if format.is_none() {
            notes.push(note.to_string());
        }
    }
    let kfree = Tracepoint {
        id: "skb:kfree_skb",
        format: kfree,
    };
    let icmp = Tracepoint {
        id: "icmp:icmp_send",
        format: icmp,
    };
    let tcp = Tracepoint {
        id: "tcp:tcp_retransmit_skb",
        format: tcp,
    };
    let n = &mut notes;
    let offsets = TracepointOffsets {
        kfree_skb_skbaddr: kfree.get("skbaddr", PTR, n),
        kfree_skb_location: kfree.get("location", PTR, n),
        kfree_skb_reason: kfree.get("reason", 4, n),
        icmp_send_skbaddr: icmp.get("skbaddr", PTR, n),
        icmp_send_type: icmp.get("type", 4, n),
        icmp_send_code: icmp.get("code", 4, n),
        icmp_send_saddr: icmp.get("saddr", 4, n),
        icmp_send_daddr: icmp.get("daddr", 4, n),
        icmp_send_sport: icmp.get("sport", 2, n),
        icmp_send_dport: icmp.get("dport", 2, n),
        tcp_rtx_skaddr: tcp.get("skaddr", PTR, n),
        tcp_rtx_skbaddr: tcp.get("skbaddr", PTR, n),
        tcp_rtx_state: tcp.get("state", 4, n),
        tcp_rtx_sport: tcp.get("sport", 2, n),
        tcp_rtx_dport: tcp.get("dport", 2, n),
        tcp_rtx_family: tcp.get("family", 2, n),
        tcp_rtx_saddr: tcp.get("saddr", 4, n),
        tcp_rtx_daddr: tcp.get("daddr", 4, n),
        tcp_rtx_saddr_v6: tcp.get("saddr_v6", 16, n),
        tcp_rtx_daddr_v6: tcp.get("daddr_v6", 16, n),
    };
    (offsets, notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// skb:kfree_skb as 5.17–6.10 kernels print it: no rx_sk, reason at 28.
    const KFREE_SKB_OLD: &str = "name: kfree_skb
ID: 1450
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:void * location;\toffset:16;\tsize:8;\tsigned:0;
\tfield:unsigned short protocol;\toffset:24;\tsize:2;\tsigned:0;
\tfield:enum skb_drop_reason reason;\toffset:28;\tsize:4;\tsigned:0;

print fmt: \"skbaddr=%p protocol=%u location=%pS reason: %s\", REC->skbaddr, REC->protocol
";

    /// Before 5.17: no reason at all.
    const KFREE_SKB_ANCIENT: &str = "name: kfree_skb
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:void * location;\toffset:16;\tsize:8;\tsigned:0;
\tfield:unsigned short protocol;\toffset:24;\tsize:2;\tsigned:0;
";

    #[test]
    fn parses_old_kfree_skb_layout() {
        let f = Format::parse(KFREE_SKB_OLD).unwrap();
        assert_eq!(f.fields.len(), 8);
        assert_eq!(f.offset("reason"), Some(28));
        assert_eq!(f.offset("protocol"), Some(24));
        assert_eq!(f.offset("rx_sk"), None);
        let common_pid = f.field("common_pid").unwrap();
        assert!(common_pid.signed);
        assert_eq!(common_pid.c_type, "int");
        let skbaddr = f.field("skbaddr").unwrap();
        assert_eq!(
            skbaddr,
            &Field {
                name: "skbaddr".into(),
                offset: 8,
                size: 8,
                signed: false,
                c_type: "void *".into(),
            }
        );
        assert_eq!(f.field("reason").unwrap().c_type, "enum skb_drop_reason");
    }

    #[test]
    fn parses_arrays_and_data_loc() {
        let f = Format::parse(
            "\tfield:__u8 saddr[4];\toffset:24;\tsize:4;\tsigned:0;\n\
             \tfield:__data_loc char[] name;\toffset:8;\tsize:4;\tsigned:1;\n\
             \tfield:const void *skbaddr;\toffset:16;\tsize:8;\tsigned:0;\n",
        )
        .unwrap();
        let saddr = f.field("saddr").unwrap();
        assert_eq!(
            (saddr.offset, saddr.size, saddr.c_type.as_str()),
            (24, 4, "__u8[4]")
        );
        assert_eq!(f.field("name").unwrap().c_type, "__data_loc char[]");
        assert_eq!(f.field("skbaddr").unwrap().c_type, "const void *");
        assert_eq!(f.offset("skbaddr"), Some(16));
    }

    #[test]
    fn malformed_formats_are_errors() {
        assert!(Format::parse("").is_err());
        assert!(Format::parse("name: x\nformat:\n").is_err());
        assert!(Format::parse("\tfield:int x;\toffset:abc;\tsize:4;\tsigned:1;").is_err());
        assert!(Format::parse("\tfield:int x;\tsize:4;\tsigned:1;").is_err());
        assert!(Format::parse("\tfield:x;\toffset:0;\tsize:4;").is_err());
        assert!(Format::parse("\tfield:int ;\toffset:0;\tsize:4;").is_err());
        assert!(Format::parse("\tfield:").is_err());
    }

    #[test]
    fn offsets_from_older_kernels_carry_notes() {
        let old = Format::parse(KFREE_SKB_OLD).unwrap();
        let (t, notes) = offsets_from(Some(&old), None, None);
        assert_eq!(t.kfree_skb_reason, 28);
        assert_eq!(t.kfree_skb_location, 16);
        assert_eq!(t.icmp_send_type, NO_FIELD);
        assert_eq!(t.tcp_rtx_daddr_v6, NO_FIELD);
        assert!(notes.contains(&"icmp:icmp_send tracepoint absent (kernel < 6.10)".to_string()));
        assert_eq!(notes.len(), 2, "{notes:?}");

        let ancient = Format::parse(KFREE_SKB_ANCIENT).unwrap();
        let (t, notes) = offsets_from(Some(&ancient), None, None);
        assert_eq!(t.kfree_skb_skbaddr, 8);
        assert_eq!(t.kfree_skb_reason, NO_FIELD);
        assert!(
            notes.iter().any(|n| n.contains("no reason field")),
            "{notes:?}"
        );

        // A field whose size changed is not read at the wrong width.
        let odd = Format::parse("\tfield:int state;\toffset:24;\tsize:8;\tsigned:1;").unwrap();
        let (t, notes) = offsets_from(None, None, Some(&odd));
        assert_eq!(t.tcp_rtx_state, NO_FIELD);
        assert!(
            notes.iter().any(|n| n.contains("state is 8 bytes")),
            "{notes:?}"
        );
        assert!(notes
            .iter()
            .any(|n| n == "tcp:tcp_retransmit_skb has no field sport"));
    }

    #[test]
    fn real_kfree_skb_layout() {
        // 6.11+ put rx_sk (a pointer) before protocol and reason, pushing reason from 28 to 36:
        // the parsed layout must follow whichever this kernel has.
        let f = read_format("skb", "kfree_skb").unwrap().unwrap();
        let expected_reason = match f.offset("rx_sk") {
            Some(rx_sk) => {
                assert_eq!(rx_sk, 24);
                36
            }
            None => 28,
        };
        assert_eq!(f.offset("reason"), Some(expected_reason));
        assert_eq!(f.field("reason").unwrap().size, 4);
    }

    #[test]
    fn real_lookup_of_absent_and_invalid_tracepoints() {
        assert!(exists("skb", "kfree_skb"));
        assert!(!exists("skb", "no_such_tracepoint"));
        assert!(!exists("..", "skb"));
        assert_eq!(read_format("skb", "no_such_tracepoint").unwrap(), None);
        assert!(read_format("../..", "x").is_err());
        assert!(read_format("skb", "kfree_skb/../../x").is_err());
        assert!(read_format("", "kfree_skb").is_err());
        assert!(root().unwrap().join("events").is_dir());
    }

    /// The offset of `field` read straight from the format text, independently of `Format`.
    fn raw_offset(category: &str, event: &str, field: &str) -> u32 {
        let Ok(text) = std::fs::read_to_string(
            root()
                .unwrap()
                .join(format!("events/{category}/{event}/format")),
        ) else {
            return NO_FIELD;
        };
        text.lines()
            .filter(|l| l.contains(&format!(" {field};")) || l.contains(&format!(" {field}[")))
            .find_map(|l| l.split("offset:").nth(1)?.split(';').next()?.parse().ok())
            .unwrap_or(NO_FIELD)
    }

    #[test]
    fn real_tracepoint_offsets() {
        let (t, notes) = tracepoint_offsets().unwrap();
        // Whatever this kernel's layouts are, the offsets must be the ones its format files say.
        let cases = [
            (t.kfree_skb_skbaddr, "skb", "kfree_skb", "skbaddr"),
            (t.kfree_skb_location, "skb", "kfree_skb", "location"),
            (t.kfree_skb_reason, "skb", "kfree_skb", "reason"),
            (t.icmp_send_skbaddr, "icmp", "icmp_send", "skbaddr"),
            (t.icmp_send_type, "icmp", "icmp_send", "type"),
            (t.icmp_send_code, "icmp", "icmp_send", "code"),
            (t.icmp_send_saddr, "icmp", "icmp_send", "saddr"),
            (t.icmp_send_daddr, "icmp", "icmp_send", "daddr"),
            (t.icmp_send_sport, "icmp", "icmp_send", "sport"),
            (t.icmp_send_dport, "icmp", "icmp_send", "dport"),
            (t.tcp_rtx_skbaddr, "tcp", "tcp_retransmit_skb", "skbaddr"),
            (t.tcp_rtx_skaddr, "tcp", "tcp_retransmit_skb", "skaddr"),
            (t.tcp_rtx_state, "tcp", "tcp_retransmit_skb", "state"),
            (t.tcp_rtx_family, "tcp", "tcp_retransmit_skb", "family"),
            (t.tcp_rtx_sport, "tcp", "tcp_retransmit_skb", "sport"),
            (t.tcp_rtx_dport, "tcp", "tcp_retransmit_skb", "dport"),
            (t.tcp_rtx_saddr, "tcp", "tcp_retransmit_skb", "saddr"),
            (t.tcp_rtx_daddr, "tcp", "tcp_retransmit_skb", "daddr"),
            (t.tcp_rtx_saddr_v6, "tcp", "tcp_retransmit_skb", "saddr_v6"),
            (t.tcp_rtx_daddr_v6, "tcp", "tcp_retransmit_skb", "daddr_v6"),
        ];
        for (got, category, event, field) in cases {
            assert_eq!(
                got,
                raw_offset(category, event, field),
                "{category}:{event}.{field}"
            );
        }
        // The essentials exist on every kernel the tracer supports; a missing optional
        // tracepoint is explained in a note.
        assert_ne!(t.kfree_skb_skbaddr, NO_FIELD);
        assert_ne!(t.tcp_rtx_skaddr, NO_FIELD);
        assert_eq!(
            exists("icmp", "icmp_send"),
            t.icmp_send_type != NO_FIELD,
            "{notes:?}"
        );
        assert_eq!(
            notes.is_empty(),
            exists("icmp", "icmp_send") && t.kfree_skb_reason != NO_FIELD
        );
    }
}
