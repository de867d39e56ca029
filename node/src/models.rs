//! Finding the model registry and the ONNX Runtime library (the node crate
//! is the one place that looks at files and environment variables).

use std::path::{Path, PathBuf};

use anyhow::Context;
use gpumesh_actors::{ModelKind, ModelSpec, parse_registry};

const REGISTRY_RELATIVE: &str = "models/models.toml";

/// Directories to search: the working directory, the executable's
/// directory, and their parents (so `target/release/gpumesh` finds the
/// repository's `models/` and `.venv/`).
fn search_roots() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    let starts = [
        std::env::current_dir().ok(),
        std::env::current_exe().ok().and_then(|exe| exe.parent().map(Path::to_path_buf)),
    ];
    for start in starts.into_iter().flatten() {
        for dir in start.ancestors() {
            if !roots.iter().any(|known: &PathBuf| known == dir) {
                roots.push(dir.to_path_buf());
            }
        }
    }
    roots
}

/// llama.cpp's `llama-server` of a project-local `.venv` and the tiny GGUF
/// of `models/`, when scripts/setup.sh has built them.
pub(crate) fn bundled_llama() -> Option<(PathBuf, PathBuf)> {
    search_roots().into_iter().find_map(|root| {
        let server = root.join(".venv/bin/llama-server");
        let model = root.join("models/tiny-llm.gguf");
        (server.is_file() && model.is_file()).then_some((server, model))
    })
}

/// The registry file: `--models` if given, else the bundled one.
pub(crate) fn registry_path(flag: Option<&Path>) -> Option<PathBuf> {
    match flag {
        Some(path) => Some(path.to_path_buf()),
        None => search_roots().into_iter().map(|root| root.join(REGISTRY_RELATIVE)).find(|path| path.is_file()),
    }
}

/// Reads and validates a registry, including that every model file exists.
pub(crate) fn load_registry(path: &Path) -> anyhow::Result<Vec<ModelSpec>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read model registry {}: check the path given to --models", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let specs = parse_registry(&text, base).with_context(|| format!("model registry {} is invalid", path.display()))?;
    for spec in &specs {
        if let ModelKind::Onnx { path: file } = &spec.kind
            && !file.is_file()
        {
            anyhow::bail!(
                "model {:?}: file {} not found; generate the bundled models with `.venv/bin/python models/generate.py` or fix path in {}",
                spec.name,
                file.display(),
                path.display()
            );
        }
    }
    Ok(specs)
}

fn libraries_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libonnxruntime.so")))
        .collect();
    found.sort();
    found
}

/// Where to look for libonnxruntime, in order: `ORT_DYLIB_PATH`, a
/// project-local `.venv` (python3.*/site-packages/onnxruntime/capi), then
/// next to the executable.
pub(crate) fn ort_library_candidates() -> Vec<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from).into_iter().collect();
    for root in search_roots() {
        let lib = root.join(".venv").join("lib");
        let Ok(pythons) = std::fs::read_dir(&lib) else { continue };
        let mut pythons: Vec<PathBuf> = pythons.filter_map(|e| e.ok().map(|e| e.path())).collect();
        pythons.sort();
        for python in pythons {
            candidates.extend(libraries_in(&python.join("site-packages").join("onnxruntime").join("capi")));
        }
    }
    if let Some(dir) = std::env::current_exe().ok().and_then(|exe| exe.parent().map(Path::to_path_buf)) {
        candidates.extend(libraries_in(&dir));
    }
    candidates.retain(|path| path.file_name().and_then(|n| n.to_str()).is_none_or(|n| !n.contains("providers")));
    candidates.dedup();
    candidates
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_model_file_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let registry = dir.path().join("models.toml");
        std::fs::write(&registry, "[[model]]\nname = \"gone\"\npath = \"gone.onnx\"\n").expect("write");
        let error = load_registry(&registry).expect_err("missing file").to_string();
        assert!(error.contains("gone.onnx") && error.contains("not found"), "{error}");
        std::fs::write(dir.path().join("gone.onnx"), b"x").expect("write");
        assert_eq!(load_registry(&registry).expect("present").len(), 1);
    }

    #[test]
    fn the_bundled_registry_is_found_and_valid() {
        let path = registry_path(None).expect("bundled registry found from the test's directories");
        let specs = load_registry(&path).expect("valid");
        assert!(specs.iter().any(|spec| spec.name == "tiny"));
    }
}
