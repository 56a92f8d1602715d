//! `componentize --wit DIR --out-dir DIR CORE.wasm...`
//!
//! Turns core Wasm modules built with `cairn-guest-sdk` into Cairn plugin
//! components, like `wasm-tools component new`, with two differences that
//! matter here:
//! - the world comes from the module's exports (`admit`, `validate` or
//!   `transform`) and from `wit/plugin.wit` itself, not from the
//!   `component-type` sections wit-bindgen leaves in the module: the SDK
//!   generates bindings for all three worlds, and their merged metadata would
//!   describe a plugin of every hook at once;
//! - the output name is the crate name with `-` for `_`
//!   (`json_schema.wasm` becomes `json-schema.wasm`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use wit_component::{ComponentEncoder, StringEncoding};
use wit_parser::Resolve;

/// Each hook's world in `wit/plugin.wit`, by the function it exports.
const WORLDS: [(&str, &str); 3] = [("admit", "admission"), ("validate", "validate"), ("transform", "watch")];

fn main() {
    if let Err(e) = run() {
        eprintln!("componentize: {e:#}");
        std::process::exit(1);
    }
}

struct Args {
    wit: PathBuf,
    out_dir: PathBuf,
    inputs: Vec<PathBuf>,
}

fn parse_args() -> Result<Args> {
    let mut wit = None;
    let mut out_dir = None;
    let mut inputs = Vec::new();
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--wit") => wit = args.next().map(PathBuf::from),
            Some("--out-dir") => out_dir = args.next().map(PathBuf::from),
            Some(flag) if flag.starts_with("--") => bail!("unknown option {flag}"),
            _ => inputs.push(PathBuf::from(arg)),
        }
    }
    let usage = "usage: componentize --wit DIR --out-dir DIR CORE.wasm...";
    Ok(Args {
        wit: wit.context(usage)?,
        out_dir: out_dir.context(usage)?,
        inputs: if inputs.is_empty() { bail!(usage) } else { inputs },
    })
}

fn run() -> Result<()> {
    let args = parse_args()?;
    let mut resolve = Resolve::default();
    let (package, _) = resolve
        .push_path(&args.wit)
        .with_context(|| format!("parsing {}", args.wit.display()))?;
    std::fs::create_dir_all(&args.out_dir).with_context(|| format!("creating {}", args.out_dir.display()))?;
    for input in &args.inputs {
        let core = std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
        let component = componentize(&resolve, package, &core).with_context(|| format!("componentizing {}", input.display()))?;
        let out = args.out_dir.join(output_name(input)?);
        std::fs::write(&out, &component).with_context(|| format!("writing {}", out.display()))?;
        println!("{} ({} bytes)", out.display(), component.len());
    }
    Ok(())
}

fn output_name(input: &Path) -> Result<String> {
    let stem = input
        .file_stem()
        .and_then(|s| s.to_str())
        .with_context(|| format!("{} has no usable file name", input.display()))?;
    Ok(format!("{}.wasm", stem.replace('_', "-")))
}

fn componentize(resolve: &Resolve, package: wit_parser::PackageId, core: &[u8]) -> Result<Vec<u8>> {
    let world_name = world_of(core)?;
    let world = resolve.select_world(&[package], Some(world_name))?;
    let mut module = strip_component_types(core)?;
    wit_component::embed_component_metadata(&mut module, resolve, world, StringEncoding::UTF8)?;
    ComponentEncoder::default()
        .module(&module)?
        .validate(true)
        .encode()
        .with_context(|| format!("as a component of world `{world_name}`"))
}

/// The world a module implements, from the one hook function it exports.
fn world_of(core: &[u8]) -> Result<&'static str> {
    let mut found = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(core) {
        if let wasmparser::Payload::ExportSection(exports) = payload? {
            for export in exports {
                let export = export?;
                if let Some((_, world)) = WORLDS.iter().find(|(f, _)| *f == export.name) {
                    found.push(*world);
                }
            }
        }
    }
    match found.as_slice() {
        [world] => Ok(world),
        [] => bail!("exports none of `admit`, `validate`, `transform`: use one export macro of cairn-guest-sdk"),
        _ => bail!("exports several hooks ({found:?}): a plugin implements exactly one"),
    }
}

/// The module without its `component-type*` custom sections.
fn strip_component_types(core: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(core.len());
    out.extend_from_slice(core.get(..8).context("not a Wasm module")?);
    for payload in wasmparser::Parser::new(0).parse_all(core) {
        let payload = payload?;
        if let wasmparser::Payload::CustomSection(c) = &payload {
            if c.name().starts_with("component-type") {
                continue;
            }
        }
        // Sections are copied byte for byte, header included.
        if let Some((id, range)) = payload.as_section() {
            out.push(id);
            leb128_u32(&mut out, u32::try_from(range.len())?);
            out.extend_from_slice(&core[range]);
        }
    }
    Ok(out)
}

fn leb128_u32(out: &mut Vec<u8>, mut value: u32) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use wasm_encoder::{
        CodeSection, CustomSection, ExportKind, ExportSection, Function, FunctionSection, Instruction, Module, TypeSection,
    };

    use super::*;

    /// A module exporting a `() -> ()` function under each of `exports`,
    /// with the given custom sections after the code.
    fn module(exports: &[&str], customs: &[(&str, &[u8])]) -> Vec<u8> {
        let mut module = Module::new();
        let mut types = TypeSection::new();
        types.ty().function([], []);
        module.section(&types);
        let mut functions = FunctionSection::new();
        functions.function(0);
        module.section(&functions);
        let mut export_section = ExportSection::new();
        for name in exports {
            export_section.export(name, ExportKind::Func, 0);
        }
        module.section(&export_section);
        let mut code = CodeSection::new();
        let mut body = Function::new([]);
        body.instruction(&Instruction::End);
        code.function(&body);
        module.section(&code);
        for (name, data) in customs {
            module.section(&CustomSection {
                name: Cow::Borrowed(name),
                data: Cow::Borrowed(data),
            });
        }
        module.finish()
    }

    #[test]
    fn the_world_follows_the_exported_hook() {
        assert_eq!(world_of(&module(&["admit"], &[])).unwrap(), "admission");
        assert_eq!(world_of(&module(&["validate", "cabi_realloc"], &[])).unwrap(), "validate");
        assert_eq!(world_of(&module(&["transform"], &[])).unwrap(), "watch");
        let none = world_of(&module(&["run"], &[])).unwrap_err().to_string();
        assert!(none.contains("exports none of"), "{none}");
        let both = world_of(&module(&["admit", "transform"], &[])).unwrap_err().to_string();
        assert!(both.contains("several hooks"), "{both}");
    }

    #[test]
    fn only_component_type_sections_are_stripped() {
        let with = module(
            &["admit"],
            &[
                ("component-type:wit-bindgen:x", b"meta"),
                ("producers", b"keep"),
                ("component-type", b"m"),
            ],
        );
        let without = module(&["admit"], &[("producers", b"keep")]);
        assert_eq!(strip_component_types(&with).unwrap(), without);
        assert_eq!(strip_component_types(&without).unwrap(), without);
    }

    #[test]
    fn leb128_matches_the_spec_examples() {
        for (value, bytes) in [
            (0u32, &[0x00][..]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (624485, &[0xe5, 0x8e, 0x26]),
        ] {
            let mut out = Vec::new();
            leb128_u32(&mut out, value);
            assert_eq!(out, bytes);
        }
    }

    #[test]
    fn output_names_use_dashes() {
        assert_eq!(output_name(Path::new("/t/json_schema.wasm")).unwrap(), "json-schema.wasm");
    }

    #[test]
    fn a_module_without_the_canonical_abi_is_refused() {
        let mut resolve = Resolve::default();
        // The checkout's WIT, found at run time: a test binary built from
        // another checkout into a shared target dir must not read that one's.
        let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into());
        let (package, _) = resolve.push_path(Path::new(&manifest).join("../../wit")).unwrap();
        let err = componentize(&resolve, package, &module(&["admit"], &[])).unwrap_err();
        assert!(format!("{err:#}").contains("admission"), "{err:#}");
    }
}
