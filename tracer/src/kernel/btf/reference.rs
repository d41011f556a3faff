//! The tracer's BTF queries as they were written over btf-rs's full parse (before issue 18):
//! kept, for tests only, as a second reading of the same kernel to compare the raw reader's
//! answers with.

use anyhow::{anyhow, bail, Context, Result};
use btf_rs::{Btf, Member, Struct, Type};

const MAX_DEPTH: usize = 32;

pub fn load(path: &str) -> Result<Btf> {
    Btf::from_file(path).with_context(|| format!("btf-rs cannot parse {path}"))
}

/// Follows typedefs and qualifiers (const, volatile, restrict, type tags) to the real type.
fn strip_modifiers(btf: &Btf, mut ty: Type) -> Result<Type> {
    for _ in 0..MAX_DEPTH {
        let next = match &ty {
            Type::Typedef(t) => btf.resolve_chained_type(t),
            Type::Const(t) | Type::Volatile(t) | Type::Restrict(t) => btf.resolve_chained_type(t),
            Type::TypeTag(t) => btf.resolve_chained_type(t),
            _ => return Ok(ty),
        };
        ty = next.context("corrupt BTF: dangling typedef/qualifier")?;
    }
    bail!("corrupt BTF: typedef/qualifier chain longer than {MAX_DEPTH}")
}

/// The structs or unions called `name` (directly, or through a typedef such as `possible_net_t`).
fn composites_named(btf: &Btf, name: &str) -> Result<Vec<Struct>> {
    let mut found = Vec::new();
    let types = btf
        .resolve_types_by_name(name)
        .with_context(|| format!("corrupt BTF: cannot resolve type {name}"))?;
    for ty in types {
        // Forward declarations are not listed: only a full definition has members.
        match strip_modifiers(btf, ty)? {
            Type::Struct(s) | Type::Union(s) => found.push(s),
            _ => {}
        }
    }
    Ok(found)
}

fn member_name(btf: &Btf, member: &Member) -> Result<String> {
    btf.resolve_name(member)
        .context("corrupt BTF: member name not in string table")
}

/// Finds member `name` in `composite`, descending into anonymous struct/union members in
/// declaration order (libbpf's rule). Returns its bit offset from the start of `composite`.
fn find_member(
    btf: &Btf,
    composite: &Struct,
    name: &str,
    depth: usize,
) -> Result<Option<(u32, Member)>> {
    if depth > MAX_DEPTH {
        bail!("corrupt BTF: anonymous members nested deeper than {MAX_DEPTH}");
    }
    for member in &composite.members {
        let mname = member_name(btf, member)?;
        if mname == name {
            return Ok(Some((member.bit_offset(), member.clone())));
        }
        if !mname.is_empty() {
            continue;
        }
        let ty = btf
            .resolve_chained_type(member)
            .context("corrupt BTF: member with dangling type")?;
        if let Type::Struct(inner) | Type::Union(inner) = strip_modifiers(btf, ty)? {
            if let Some((off, found)) = find_member(btf, &inner, name, depth + 1)? {
                let total = member
                    .bit_offset()
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

fn walk_path(
    btf: &Btf,
    mut current: Struct,
    components: &[&str],
    struct_name: &str,
    path: &str,
) -> Result<Option<u32>> {
    let mut bits: u32 = 0;
    for (i, component) in components.iter().enumerate() {
        let Some((off, member)) = find_member(btf, &current, component, 0)? else {
            return Ok(None);
        };
        if member.bitfield_size().is_some_and(|size| size != 0) || off % 8 != 0 {
            bail!("{struct_name}.{path}: {component} is a bitfield, which is not supported");
        }
        bits = bits
            .checked_add(off)
            .ok_or_else(|| anyhow!("corrupt BTF: offset of {struct_name}.{path} overflows"))?;
        if i + 1 < components.len() {
            let ty = btf
                .resolve_chained_type(&member)
                .context("corrupt BTF: member with dangling type")?;
            match strip_modifiers(btf, ty)? {
                Type::Struct(s) | Type::Union(s) => current = s,
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
        let width = match member.bitfield_size() {
            Some(w) if w != 0 => w,
            _ => return Ok(None),
        };
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
        .find(|s| !s.members.is_empty())
        .or(composites.first());
    Ok(best.map(|s| s.size() as u32))
}

/// The members of enum `enum_name` (plain or 64-bit) with their values, in declaration order.
/// Empty when the kernel has no such enum.
pub fn enum_values(btf: &Btf, enum_name: &str) -> Result<Vec<(String, i64)>> {
    let types = btf
        .resolve_types_by_name(enum_name)
        .with_context(|| format!("corrupt BTF: cannot resolve enum {enum_name}"))?;
    for ty in types {
        let values = match ty {
            Type::Enum(e) if !e.members.is_empty() => {
                let signed = e.is_signed();
                e.members
                    .iter()
                    .map(|m| {
                        let v = if signed {
                            i64::from(m.val() as i32)
                        } else {
                            i64::from(m.val())
                        };
                        Ok((btf.resolve_name(m)?, v))
                    })
                    .collect::<btf_rs::Result<Vec<_>>>()
            }
            // Values above i64::MAX wrap: no kernel enum we read uses them.
            Type::Enum64(e) if !e.members.is_empty() => e
                .members
                .iter()
                .map(|m| Ok((btf.resolve_name(m)?, m.val() as i64)))
                .collect::<btf_rs::Result<Vec<_>>>(),
            // An enum with no members is a forward declaration: keep looking.
            _ => continue,
        };
        return values.with_context(|| format!("corrupt BTF: enum {enum_name} member names"));
    }
    Ok(Vec::new())
}
