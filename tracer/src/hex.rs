//! Kernel addresses as `{:#x}` text and back: the `skb` of every event and unnamed drop
//! locations. Shared by the decoders, the event log's writers and the analyzer, which keep the
//! address as a number and write its text only where a line is printed.

/// `{:#x}` of `v` in a stack buffer: the text is `buf[..len]`. No formatting machinery (every
/// event has an `skb`).
pub fn text(v: u64) -> ([u8; 18], usize) {
    let mut buf = [0u8; 18];
    buf[2..10].copy_from_slice(&digits((v >> 32) as u32));
    buf[10..].copy_from_slice(&digits(v as u32));
    let n = (16 - v.leading_zeros() as usize / 4).max(1);
    // The leading zeros dropped, then the prefix written just before the first digit.
    buf.copy_within(18 - n.., 2);
    buf[0] = b'0';
    buf[1] = b'x';
    (buf, n + 2)
}

/// Append `{:#x}` of `v` to `out`.
pub fn push(out: &mut String, v: u64) {
    let (buf, len) = text(v);
    // ASCII digits only: validated, never replaced.
    out.push_str(std::str::from_utf8(&buf[..len]).expect("ASCII"));
}

/// `{:#x}` of `v` as a string.
pub fn string(v: u64) -> String {
    let mut s = String::with_capacity(18);
    push(&mut s, v);
    s
}

/// The 8 lowercase hex digits of `v`, all at once: each nibble spread into a byte of its own,
/// then turned into its ASCII digit in every byte together (a loop per digit was half of
/// the hex formatting).
fn digits(v: u32) -> [u8; 8] {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let mut x = u64::from(v);
    x = (x | x << 16) & 0x0000_ffff_0000_ffff;
    x = (x | x << 8) & 0x00ff_00ff_00ff_00ff;
    x = (x | x << 4) & 0x0f0f_0f0f_0f0f_0f0f;
    // 1 in the bytes whose nibble is 10 or more: +6 carries them into bit 4.
    let letters = ((x + ONES * 6) >> 4) & ONES;
    (x + ONES * u64::from(b'0') + letters * u64::from(b'a' - b'0' - 10)).to_be_bytes()
}

/// An address read back (`0xffff888100b84a00`; a log's `skb`): the prefix stripped as
/// `trim_start_matches("0x")` strips it, without its substring searcher.
pub fn parse(mut s: &str) -> Option<u64> {
    while let Some(rest) = s.strip_prefix("0x") {
        s = rest;
    }
    u64::from_str_radix(s, 16).ok()
}

/// serde for `Record::skb`: the number written as its hex string, as logs always had it. Read
/// back, a string that is no hex address is no address (`null`): logs from before the number
/// was kept could only be matched by their parsed value either.
pub mod serde_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => {
                let (buf, len) = super::text(*v);
                s.serialize_str(std::str::from_utf8(&buf[..len]).expect("ASCII"))
            }
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        let text: Option<std::borrow::Cow<'de, str>> = Option::deserialize(d)?;
        Ok(text.as_deref().and_then(super::parse))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn addresses_are_written_as_format_would() {
        for v in [
            0,
            1,
            0xf,
            0x10,
            0xdead_beef,
            0xffff_8881_0000_0100,
            0x0123_4567_89ab_cdef,
            0xfedc_ba98_7654_3210,
            u64::MAX,
        ] {
            assert_eq!(super::string(v), format!("{v:#x}"));
        }
        // Every digit value at every place.
        for place in 0..16 {
            for d in 0..16u64 {
                let v = d << (place * 4);
                assert_eq!(super::string(v), format!("{v:#x}"));
                let v = !(0xf << (place * 4)) | v;
                assert_eq!(super::string(v), format!("{v:#x}"));
            }
        }
    }

    /// The prefix stripped as `trim_start_matches("0x")` strips it.
    #[test]
    fn addresses_parse_as_before() {
        for s in [
            "0xffff888100b84a00",
            "ffff1",
            "0x0xff",
            "0xFFFF8881",
            "0x+ff",
            "+",
            "0x",
            "",
            "0x-1",
            "0xffffffffffffffff",
            "0x10000000000000000",
            "0x00000000000000000001",
            "0xfg",
            "0x ff",
            "ünï",
        ] {
            let expected = u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
            assert_eq!(super::parse(s), expected, "{s:?}");
        }
    }

    /// A log's `skb` reads back as the number that writes the same text; what is no address
    /// reads as none, and an absent field too.
    #[test]
    fn skb_round_trips_through_serde() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct S {
            #[serde(default, with = "super::serde_opt")]
            skb: Option<u64>,
        }
        let s = S {
            skb: Some(0xffff_8881_7ad5_f4e0),
        };
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, r#"{"skb":"0xffff88817ad5f4e0"}"#);
        assert_eq!(serde_json::from_str::<S>(&json).unwrap(), s);
        let none = |j: &str| serde_json::from_str::<S>(j).unwrap().skb;
        assert_eq!(none(r#"{"skb":null}"#), None);
        assert_eq!(none(r#"{}"#), None);
        assert_eq!(none(r#"{"skb":"nope"}"#), None);
        assert_eq!(none(r#"{"skb":"ffff1"}"#), Some(0xffff1));
        assert_eq!(
            serde_json::to_string(&S { skb: None }).unwrap(),
            r#"{"skb":null}"#
        );
    }
}
