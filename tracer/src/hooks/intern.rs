//! Names and locations shared between the records that carry them: a device name or a drop
//! location was a fresh `String` per event, an allocation, a copy and a free for a handful of
//! distinct values (issue 18). Decoding owns these caches ([`super::Names::interned`]).

use std::{cell::RefCell, sync::Arc};

use rustc_hash::FxHashMap;

/// Entries kept before a cache starts over: device names and drop sites are few, but nothing
/// the kernel hands us should grow memory without a bound.
const MAX_ENTRIES: usize = 4096;

/// Device names by their raw `char[IFNAMSIZ]` bytes, drop locations by address.
#[derive(Default)]
pub struct Interned {
    names: RefCell<FxHashMap<u128, Arc<str>>>,
    locations: RefCell<FxHashMap<u64, (Arc<str>, bool)>>,
}

impl Interned {
    /// A NUL-terminated kernel `char[IFNAMSIZ]`, as [`super::c_name`] reads it, shared.
    pub fn name(&self, raw: &[u8; 16]) -> Option<Arc<str>> {
        if raw[0] == 0 {
            return None;
        }
        let key = u128::from_ne_bytes(*raw);
        let mut names = self.names.borrow_mut();
        if let Some(name) = names.get(&key) {
            return Some(name.clone());
        }
        let name: Arc<str> = super::c_name(raw)?.into();
        if names.len() >= MAX_ENTRIES {
            names.clear();
        }
        names.insert(key, name.clone());
        Some(name)
    }

    /// A device name known as text (a hooked device's), shared like [`Self::name`]'s.
    pub fn name_of(&self, name: &str) -> Arc<str> {
        let mut raw = [0; 16];
        match raw.get_mut(..name.len()) {
            Some(r) if !name.is_empty() && name.len() < 16 && !name.contains('\0') => {
                r.copy_from_slice(name.as_bytes());
                self.name(&raw).unwrap_or_else(|| name.into())
            }
            _ => name.into(),
        }
    }

    /// The location text of a kernel address, and whatever `make` found out about it with
    /// it, made once per address.
    pub fn location(&self, addr: u64, make: impl FnOnce() -> (Arc<str>, bool)) -> (Arc<str>, bool) {
        let mut locations = self.locations.borrow_mut();
        if let Some(l) = locations.get(&addr) {
            return l.clone();
        }
        let l = make();
        if locations.len() >= MAX_ENTRIES {
            locations.clear();
        }
        locations.insert(addr, l.clone());
        l
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> [u8; 16] {
        let mut r = [0; 16];
        r[..s.len()].copy_from_slice(s.as_bytes());
        r
    }

    #[test]
    fn names_are_read_as_c_name_and_shared() {
        let i = Interned::default();
        assert_eq!(i.name(&[0; 16]), None);
        let a = i.name(&raw("eth0")).unwrap();
        let b = i.name(&raw("eth0")).unwrap();
        assert_eq!(&*a, "eth0");
        assert!(Arc::ptr_eq(&a, &b));
        let full = i.name(&raw("0123456789abcdef")).unwrap();
        assert_eq!(&*full, "0123456789abcdef");
        let mut odd = raw("ab");
        odd[1] = 0xff;
        assert_eq!(
            i.name(&odd).as_deref(),
            super::super::c_name(&odd).as_deref()
        );
        assert!(Arc::ptr_eq(&i.name_of("eth0"), &a));
        assert_eq!(
            &*i.name_of("a-name-longer-than-ifnamsiz"),
            "a-name-longer-than-ifnamsiz"
        );
    }

    #[test]
    fn caches_stay_bounded() {
        let i = Interned::default();
        for n in 0..(MAX_ENTRIES as u64 * 2 + 5) {
            let (l, _) = i.location(n, || (n.to_string().into(), false));
            assert_eq!(&*l, n.to_string());
            let name = raw(&format!("d{n}"));
            assert_eq!(i.name(&name).as_deref(), Some(format!("d{n}").as_str()));
        }
        assert!(i.locations.borrow().len() <= MAX_ENTRIES);
        assert!(i.names.borrow().len() <= MAX_ENTRIES);
    }
}
