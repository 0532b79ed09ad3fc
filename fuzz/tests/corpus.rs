//! The corpus replayed as ordinary tests: every committed seed (`fuzz/corpus/<target>/`) and
//! every input that once failed (`fuzz/regressions/<target>/`) goes through its target, and
//! so do freshly made structured seeds, and every prefix of the short ones of stream decoders.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use jumpstarter_fuzz::Target;
use jumpstarter_fuzz::seed::seeds;

/// Seeds at most this long are also replayed cut at every length...
const PREFIX_SWEEP_MAX: usize = 600;
/// ...by the decoders of streams, which see their input arrive in pieces.
const STREAM_DECODERS: [Target; 4] = [
    Target::SessionHeader,
    Target::RenewalRequest,
    Target::RenewalReply,
    Target::EndpointRewrite,
];

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn fuzz_dir(kind: &str, target: Target) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(kind)
        .join(target.name())
}

/// Runs `target` on every input; fails naming every input that failed.
fn replay(target: Target, inputs: impl IntoIterator<Item = (String, Vec<u8>)>) -> usize {
    let mut failed = Vec::new();
    let mut count = 0;
    for (name, bytes) in inputs {
        count += 1;
        if catch_unwind(AssertUnwindSafe(|| target.check(&bytes))).is_err() {
            failed.push(name);
        }
    }
    assert!(failed.is_empty(), "{target}: failed on {failed:?}");
    count
}

fn replay_files(target: Target) {
    let corpus = files(&fuzz_dir("corpus", target));
    assert!(
        corpus.len() >= 3,
        "{target}: the committed corpus has {} inputs",
        corpus.len()
    );
    let regressions = files(&fuzz_dir("regressions", target));
    let inputs = corpus.iter().chain(&regressions).map(|path| {
        let bytes = std::fs::read(path).expect("corpus file reads");
        (path.display().to_string(), bytes)
    });
    replay(target, inputs);
}

macro_rules! corpus_tests {
    ($($test:ident => $target:expr,)*) => {
        $(
            #[test]
            fn $test() {
                replay_files($target);
            }
        )*
        #[test]
        fn every_target_is_replayed() {
            let replayed = [$($target),*];
            for target in Target::ALL {
                assert!(replayed.contains(&target), "{target} has no replay test");
            }
        }
    };
}

corpus_tests! {
    session_header => Target::SessionHeader,
    renewal_request => Target::RenewalRequest,
    renewal_reply => Target::RenewalReply,
    selector => Target::Selector,
    go_duration => Target::GoDuration,
    internal_token => Target::InternalToken,
    router_token => Target::RouterToken,
    lease_csr => Target::LeaseCsr,
    identity_uri => Target::IdentityUri,
    tool_config => Target::ToolConfig,
    endpoint_rewrite => Target::EndpointRewrite,
    resource_name => Target::ResourceName,
}

#[test]
fn fresh_structured_seeds_and_their_prefixes_hold() {
    let seeds = seeds();
    for target in Target::ALL {
        let mine = seeds.iter().filter(|s| s.target == target);
        let mut inputs = Vec::new();
        for seed in mine {
            inputs.push((seed.name.clone(), seed.bytes.clone()));
            if STREAM_DECODERS.contains(&target) && seed.bytes.len() <= PREFIX_SWEEP_MAX {
                for cut in 0..seed.bytes.len() {
                    inputs.push((
                        format!("{}[..{cut}]", seed.name),
                        seed.bytes[..cut].to_vec(),
                    ));
                }
            }
        }
        assert!(
            replay(target, inputs) > 0,
            "{target} has no structured seed"
        );
    }
}
