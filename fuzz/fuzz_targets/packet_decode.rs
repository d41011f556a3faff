//! Packet headers as the kernel programs capture them: the first two bytes pick the decoder
//! (IPv4, IPv6, Ethernet), the rest is the packet.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, bytes)) = data.split_first() else {
        return;
    };
    match sel % 3 {
        0 => {
            let _ = tracer::packet::decode_ethernet(bytes);
        }
        n => {
            let ethertype = if n == 1 { 0x0800 } else { 0x86dd };
            let _ = tracer::packet::decode(ethertype, bytes);
            assert!(tracer::packet::headers_len(ethertype, bytes) <= bytes.len());
        }
    }
});
