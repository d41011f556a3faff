//! Kernel text symbols from `/proc/kallsyms`: names drop locations (`ip_do_fragment+0x1a3`) and
//! gives the address ranges of the functions that drop packets for being too big.

use std::fmt;

use anyhow::{bail, Context, Result};
use tracer_common::{TextRange, MAX_SIZE_DROP_SITES};

pub const KALLSYMS: &str = "/proc/kallsyms";

/// Functions that free packets because they are larger than an MTU, usually with reason
/// NOT_SPECIFIED, so the drop filter recognises them by location. Compiler clones
/// (`ip_fragment.constprop.0`) are matched too. `__ip_finish_output` and `ip_finish_output2` are
/// deliberately absent: they also free packets for unrelated reasons (no neighbour, no memory).
pub const SIZE_DROP_SITES: &[&str] = &[
    // IPv4 outer DF set and too big: ICMP frag-needed then drop.
    "ip_fragment",
    "ip_do_fragment",
    // IPIP/GRE: tnl_update_pmtu refuses, ip_tunnel_xmit frees.
    "ip_tunnel_xmit",
    "tnl_update_pmtu",
    // veth: is_skb_forwardable() false.
    "__dev_forward_skb",
    "__dev_forward_skb2",
    // Bridge port MTU exceeded.
    "br_dev_queue_push_xmit",
    "ip6_fragment",
    // GSO segments that do not fit the outer MTU.
    "ip_finish_output_gso",
];

/// A text address resolved to `function+offset`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Symbol {
    pub name: String,
    pub offset: u64,
    /// Loadable module the function lives in, `None` for vmlinux.
    pub module: Option<String>,
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}+{:#x}", self.name, self.offset)?;
        if let Some(module) = &self.module {
            write!(f, " [{module}]")?;
        }
        Ok(())
    }
}

/// One text symbol, 16 bytes: its name is a slice of [`Kallsyms::names`] and its module an
/// index into [`Kallsyms::modules`]. A String per symbol (~150,000 of them) cost ~15 MiB.
#[derive(Clone, Copy, Debug)]
struct Entry {
    addr: u64,
    name_at: u32,
    name_len: u16,
    /// Index into `modules` plus one; 0 for the kernel itself.
    module: u16,
}

/// The kernel's text symbols, sorted by address.
#[derive(Clone, Debug, Default)]
pub struct Kallsyms {
    entries: Vec<Entry>,
    names: String,
    modules: Vec<String>,
}

impl Kallsyms {
    /// Reads `/proc/kallsyms`. Fails when the addresses are hidden (all zero), since every
    /// location would then be unnamed and no size-drop site could be found.
    pub fn load() -> Result<Self> {
        use std::io::BufRead as _;
        // Line by line: the file is ~10 MiB of text, most of it data symbols we skip.
        let file = std::fs::File::open(KALLSYMS).with_context(|| format!("reading {KALLSYMS}"))?;
        let mut syms = Kallsyms::default();
        for line in std::io::BufReader::new(file).lines() {
            syms.add_line(&line.with_context(|| format!("reading {KALLSYMS}"))?);
        }
        syms.sort();
        if syms.entries.is_empty() {
            bail!("{KALLSYMS} lists no text symbols");
        }
        if syms.entries.iter().all(|e| e.addr == 0) {
            bail!(
                "kallsyms addresses hidden: reading them needs CAP_SYSLOG (or kernel.kptr_restrict=0 \
                 with kernel.perf_event_paranoid<=1); run as root"
            );
        }
        Ok(syms)
    }

    /// Parses kallsyms text (`addr type name [module]` per line), keeping text symbols (t, T, w,
    /// W). Malformed lines are skipped.
    pub fn parse(text: &str) -> Self {
        let mut syms = Kallsyms::default();
        for line in text.lines() {
            syms.add_line(line);
        }
        syms.sort();
        syms
    }

    fn add_line(&mut self, line: &str) {
        let Some((addr, name, module)) = parse_line(line) else {
            return;
        };
        let (Ok(name_at), Ok(name_len)) =
            (u32::try_from(self.names.len()), u16::try_from(name.len()))
        else {
            return;
        };
        let module = match module {
            None => 0,
            Some(m) => match self.modules.iter().rposition(|k| k == m) {
                Some(i) => i + 1,
                None => {
                    self.modules.push(m.to_string());
                    self.modules.len()
                }
            },
        };
        let Ok(module) = u16::try_from(module) else {
            return;
        };
        self.names.push_str(name);
        self.entries.push(Entry {
            addr,
            name_at,
            name_len,
            module,
        });
    }

    fn sort(&mut self) {
        // Stable: aliases at one address keep file order, so the first listed name wins.
        self.entries.sort_by_key(|e| e.addr);
        self.entries.shrink_to_fit();
        self.names.shrink_to_fit();
    }

    fn name(&self, e: &Entry) -> &str {
        &self.names[e.name_at as usize..e.name_at as usize + e.name_len as usize]
    }

    fn module(&self, e: &Entry) -> Option<&str> {
        (e.module > 0).then(|| self.modules[e.module as usize - 1].as_str())
    }

    /// Number of text symbols.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The function containing `addr`: the nearest symbol at or below it.
    pub fn symbolize(&self, addr: u64) -> Option<Symbol> {
        let (name, offset, module) = self.symbolize_ref(addr)?;
        Some(Symbol {
            name: name.to_string(),
            offset,
            module: module.map(str::to_string),
        })
    }

    /// [`Kallsyms::symbolize`] borrowed: (function, offset, module), no allocation (every drop
    /// event is symbolized).
    pub fn symbolize_ref(&self, addr: u64) -> Option<(&str, u64, Option<&str>)> {
        let below = self.entries.partition_point(|e| e.addr <= addr);
        let sym_addr = self.entries.get(below.checked_sub(1)?)?.addr;
        if sym_addr == 0 {
            return None;
        }
        // First alias at that address.
        let first = self.entries.partition_point(|e| e.addr < sym_addr);
        let entry = &self.entries[first];
        Some((self.name(entry), addr - sym_addr, self.module(entry)))
    }

    /// `[start, next higher symbol)` of the first function called `name`. `None` if absent, or if
    /// it is the last symbol (no end known).
    pub fn function_range(&self, name: &str) -> Option<TextRange> {
        let entry = self.entries.iter().find(|e| self.name(e) == name)?;
        self.range_at(entry.addr)
    }

    fn range_at(&self, start: u64) -> Option<TextRange> {
        if start == 0 {
            return None;
        }
        let next = self.entries.partition_point(|e| e.addr <= start);
        let end = self.entries.get(next)?.addr;
        Some(TextRange { start, end })
    }

    /// The ranges of the functions called one of `names` or a compiler clone of one
    /// (`name.isra.0`), in the order of `names`, each range once.
    pub fn ranges_matching(&self, names: &[&str]) -> Vec<(String, TextRange)> {
        let mut ranges: Vec<(String, TextRange)> = Vec::new();
        for site in names {
            for entry in self.entries.iter().filter(|e| is_site(self.name(e), site)) {
                let Some(range) = self.range_at(entry.addr) else {
                    continue;
                };
                // Aliases share one range: list it once.
                if !ranges.iter().any(|(_, r)| *r == range) {
                    ranges.push((self.name(entry).to_string(), range));
                }
            }
        }
        ranges
    }

    /// The ranges of the [`SIZE_DROP_SITES`] present on this kernel (clones included), in the
    /// list's order, at most [`MAX_SIZE_DROP_SITES`] (the kernel-side table's size).
    pub fn size_drop_sites(&self) -> Vec<(String, TextRange)> {
        let mut sites = self.ranges_matching(SIZE_DROP_SITES);
        if sites.len() > MAX_SIZE_DROP_SITES {
            let dropped: Vec<&str> = sites[MAX_SIZE_DROP_SITES..]
                .iter()
                .map(|(n, _)| n.as_str())
                .collect();
            log::warn!("more than {MAX_SIZE_DROP_SITES} size-drop sites; ignoring {dropped:?}");
            sites.truncate(MAX_SIZE_DROP_SITES);
        }
        sites
    }
}

/// `name` is `site` itself or a compiler clone of it (`site.isra.0`, `site.constprop.0`).
fn is_site(name: &str, site: &str) -> bool {
    match name.strip_prefix(site) {
        Some(rest) => rest.is_empty() || rest.starts_with('.'),
        None => false,
    }
}

fn parse_line(line: &str) -> Option<(u64, &str, Option<&str>)> {
    let mut fields = line.split_whitespace();
    let addr = u64::from_str_radix(fields.next()?, 16).ok()?;
    let kind = fields.next()?;
    if !matches!(kind, "t" | "T" | "w" | "W") {
        return None;
    }
    let name = fields.next()?;
    let module = fields
        .next()
        .and_then(|m| m.strip_prefix('[')?.strip_suffix(']'));
    Some((addr, name, module))
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use super::*;

    const SAMPLE: &str = "\
ffffffff81000000 T _stext
ffffffff81000000 T _text
ffffffff81001000 t helper
ffffffff81002000 D some_data
ffffffff81ffa9a0 T ip_do_fragment
ffffffff81ffaeb0 t ip_fragment.constprop.0
ffffffff81ffb200 T ip_finish_output2
ffffffff81ffb300 T ip_fragmentation_stats
this line is garbage
zzzz T not_hex
ffffffff81ffb400 r rodata_thing
ffffffffc0201000 t ip_tunnel_xmit\t[ip_tunnel]
ffffffffc0201800 t tunnel_other\t[ip_tunnel]
ffffffffc0300000 W weak_last
";

    fn real() -> &'static Kallsyms {
        static K: OnceLock<Kallsyms> = OnceLock::new();
        K.get_or_init(|| Kallsyms::load().expect("kallsyms readable as root"))
    }

    /// The address of `name` as a plain grep of /proc/kallsyms sees it.
    fn grep_addr(name: &str) -> u64 {
        let text = std::fs::read_to_string(KALLSYMS).unwrap();
        let line = text
            .lines()
            .find(|l| l.split_whitespace().nth(2) == Some(name))
            .unwrap_or_else(|| panic!("{name} not in kallsyms"));
        u64::from_str_radix(line.split_whitespace().next().unwrap(), 16).unwrap()
    }

    #[test]
    fn parses_sample() {
        let k = Kallsyms::parse(SAMPLE);
        // Data/rodata and malformed lines dropped.
        assert_eq!(k.len(), 10);
        let s = k.symbolize(0xffffffff81ffaeb0 + 0x1a3).unwrap();
        assert_eq!(s.to_string(), "ip_fragment.constprop.0+0x1a3");
        // First alias wins.
        assert_eq!(
            k.symbolize(0xffffffff81000010).unwrap().to_string(),
            "_stext+0x10"
        );
        let m = k.symbolize(0xffffffffc0201010).unwrap();
        assert_eq!(m.module.as_deref(), Some("ip_tunnel"));
        assert_eq!(m.to_string(), "ip_tunnel_xmit+0x10 [ip_tunnel]");
        assert_eq!(k.symbolize(0x1000), None);
        // Data symbols are not range boundaries: helper runs to ip_do_fragment.
        assert_eq!(
            k.function_range("helper"),
            Some(TextRange {
                start: 0xffffffff81001000,
                end: 0xffffffff81ffa9a0
            })
        );
        // Aliases: the range ends at the next distinct address.
        assert_eq!(k.function_range("_text").unwrap().end, 0xffffffff81001000);
        assert_eq!(k.function_range("weak_last"), None);
        assert_eq!(k.function_range("absent"), None);
    }

    #[test]
    fn sample_size_drop_sites() {
        let k = Kallsyms::parse(SAMPLE);
        let sites = k.size_drop_sites();
        let names: Vec<&str> = sites.iter().map(|(n, _)| n.as_str()).collect();
        // Clone matched; ip_fragmentation_stats (no '.') and ip_finish_output2 not.
        assert_eq!(
            names,
            [
                "ip_fragment.constprop.0",
                "ip_do_fragment",
                "ip_tunnel_xmit"
            ]
        );
        assert_eq!(
            sites[2].1,
            TextRange {
                start: 0xffffffffc0201000,
                end: 0xffffffffc0201800
            }
        );
    }

    #[test]
    fn site_cap_is_enforced() {
        let text: String = (0..40)
            .map(|i| {
                format!(
                    "{:x} t ip_fragment.part.{i}\n",
                    0xffffffff81000000u64 + i * 0x100
                )
            })
            .collect();
        let k = Kallsyms::parse(&format!("{text}ffffffff82000000 T end_marker\n"));
        assert_eq!(k.ranges_matching(&["ip_fragment"]).len(), 40);
        let sites = k.size_drop_sites();
        assert_eq!(sites.len(), MAX_SIZE_DROP_SITES);
        assert_eq!(sites[0].0, "ip_fragment.part.0");
    }

    #[test]
    fn hidden_or_empty_input_never_panics() {
        let hidden = Kallsyms::parse("0000000000000000 T ip_forward\n0000000000000000 t x\n");
        assert_eq!(hidden.len(), 2);
        assert_eq!(hidden.symbolize(0x10), None);
        assert_eq!(hidden.function_range("ip_forward"), None);
        let empty = Kallsyms::parse("");
        assert!(empty.is_empty());
        assert_eq!(empty.symbolize(u64::MAX), None);
        assert!(empty.size_drop_sites().is_empty());
    }

    #[test]
    fn real_kallsyms_symbolizes() {
        let k = real();
        assert!(k.len() > 10_000, "{}", k.len());
        let ip_forward = grep_addr("ip_forward");
        let s = k.symbolize(ip_forward + 0x10).unwrap();
        assert_eq!(s.to_string(), "ip_forward+0x10");
        assert_eq!(s.module, None);
        let range = k.function_range("ip_forward").unwrap();
        assert_eq!(range.start, ip_forward);
        assert!(
            range.end > range.start && range.end - range.start < 0x10000,
            "{range:?}"
        );
        // The end is a function start; anything just before it is still ip_forward.
        assert_ne!(k.symbolize(range.end).unwrap().name, "ip_forward");
        assert_eq!(k.symbolize(range.end - 1).unwrap().name, "ip_forward");
    }

    #[test]
    fn real_size_drop_sites() {
        let sites = real().size_drop_sites();
        let names: Vec<&str> = sites.iter().map(|(n, _)| n.as_str()).collect();
        for expected in [
            "ip_do_fragment",
            "__dev_forward_skb2",
            "__dev_forward_skb",
            "ip6_fragment",
        ] {
            assert!(names.contains(&expected), "{expected} not in {names:?}");
        }
        assert!(
            names.iter().any(|n| n.starts_with("ip_fragment")),
            "{names:?}"
        );
        assert!(!names.contains(&"ip_finish_output2"));
        assert!(!names.contains(&"__ip_finish_output"));
        let (_, range) = sites.iter().find(|(n, _)| n == "ip_do_fragment").unwrap();
        assert_eq!(range.start, grep_addr("ip_do_fragment"));
        for (name, range) in &sites {
            assert!(range.start < range.end, "{name}");
        }
    }
}
