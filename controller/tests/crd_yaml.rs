//! The CRD manifests committed under `helm/crds` are exactly what `crd::render_all()` produces.

use std::path::PathBuf;

use jumpstarter_controller::crd;

#[test]
fn committed_crds_are_up_to_date() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = root.join("helm/crds");
    let mut stale = Vec::new();
    for (file, text) in crd::render_all() {
        let path = dir.join(&file);
        match std::fs::read_to_string(&path) {
            Ok(committed) if committed == text => {}
            Ok(_) => stale.push(format!("helm/crds/{file} differs from the generated CRD")),
            Err(err) => stale.push(format!("helm/crds/{file} cannot be read: {err}")),
        }
    }
    assert!(
        stale.is_empty(),
        "{}\nregenerate from the repository root with: {}",
        stale.join("\n"),
        crd::REGENERATE_COMMAND
    );
}

#[test]
fn helm_crds_holds_only_generated_files() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../helm/crds");
    let expected: Vec<String> = crd::render_all()
        .into_iter()
        .map(|(file, _)| file)
        .collect();
    let mut present: Vec<String> = std::fs::read_dir(&dir)
        .expect("helm/crds exists")
        .map(|entry| {
            entry
                .expect("directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.starts_with(crd::GROUP))
        .collect();
    present.sort();
    assert_eq!(
        present, expected,
        "stale or unknown jumpstarter.dev CRD files in helm/crds"
    );
}
