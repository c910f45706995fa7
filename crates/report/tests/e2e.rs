//! End to end: the whole Makefile DAG on `pipelines/tiny.yaml` in a temporary folder. Checks every
//! table's schema and row count, that the report references every figure and each figure is a
//! valid PNG or SVG, that every heavy recipe went through `LAUNCH`, that a second `make all` does
//! nothing, and that touching one run's output reruns only what follows it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pizza_core::tables::{self, analysis, dataset, llc, train};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn make(data: &Path, args: &[&str]) -> Output {
    let log = data.join("launch.log");
    let out = Command::new("make")
        .current_dir(repo())
        .args(["PIPELINE=pipelines/tiny.yaml", &format!("DATA={}", data.display()), "LAUNCH=bash tests/launch-log.sh", "RELEASED_DIR="])
        .args(args)
        .env("LAUNCH_LOG", &log)
        .output()
        .expect("running make");
    out
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn rows(path: &Path, schema: &tables::Schema) -> usize {
    tables::read_parquet(path, schema).unwrap_or_else(|e| panic!("{e:#}")).height()
}

#[test]
fn the_whole_dag_on_a_tiny_experiment() {
    let data = std::env::temp_dir().join(format!("e2e-{}", std::process::id()));
    std::fs::create_dir_all(&data).unwrap();
    let first = make(&data, &["-j2", "all"]);
    assert!(first.status.success(), "make all failed:\n{}", text(&first));

    let exp = data.join("tiny-p11");
    assert_eq!(rows(&exp.join("dataset.parquet"), &dataset::DATASET), 121);
    let runs = ["alpha0", "alpha1"];
    for run in runs {
        let dir = exp.join("runs").join(run);
        // 40 steps: metrics at steps 0..=40 for both splits; checkpoints at 0, 20, 40.
        assert_eq!(rows(&dir.join("metrics.parquet"), &train::TRAIN_METRICS), 2 * 41, "{run}");
        assert_eq!(rows(&dir.join("scan.parquet"), &analysis::SCAN), 3, "{run}");
        assert_eq!(rows(&dir.join("symmetry.parquet"), &analysis::SYMMETRY), 3, "{run}");
        assert_eq!(rows(&dir.join("llc.parquet"), &llc::LLC_SUMMARY), 3, "{run}");
        assert!(rows(&dir.join("llc_trace.parquet"), &llc::LLC_TRACE) > 0, "{run}");
    }

    // The report references every figure it wrote, and each is a valid non-empty image.
    let report = exp.join("report");
    let html = std::fs::read_to_string(report.join("index.html")).unwrap();
    let mut figures = 0;
    for e in std::fs::read_dir(&report).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&p).unwrap();
        match p.extension().and_then(|x| x.to_str()) {
            Some("png") => {
                assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 100, "{name} is not a PNG");
                let (w, h) = (u32::from_be_bytes(bytes[16..20].try_into().unwrap()), u32::from_be_bytes(bytes[20..24].try_into().unwrap()));
                assert!(w > 0 && h > 0, "{name}: {w}x{h}");
            }
            Some("svg") => {
                let s = String::from_utf8(bytes).unwrap();
                assert!(s.contains("<svg") && s.trim_end().ends_with("</svg>"), "{name} is not an SVG");
            }
            _ => continue,
        }
        assert!(html.contains(&name), "index.html does not reference {name}");
        figures += 1;
    }
    assert!(figures >= 8, "only {figures} figure files");

    // Every heavy recipe went through LAUNCH.
    let log = std::fs::read_to_string(data.join("launch.log")).unwrap();
    for stage in ["gen-data", "train", "checkpoint-scan", "symmetry", "llc"] {
        let n = log.lines().filter(|l| l.contains(&format!("release/{stage} "))).count();
        let want = if stage == "gen-data" { 1 } else { runs.len() };
        assert!(n >= want, "{stage} ran {n} times through LAUNCH, expected {want}:\n{log}");
    }

    // A second make does nothing.
    let again = make(&data, &["-j2", "all"]);
    assert!(again.status.success());
    let q = make(&data, &["-q", "all"]);
    assert_eq!(q.status.code(), Some(0), "make -q all says something is out of date:\n{}", text(&again));

    // Touching one run's training output reruns only that run's analyses and the report.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let touched = exp.join("runs/alpha1/metrics.parquet");
    let f = std::fs::File::options().append(true).open(&touched).unwrap();
    f.set_modified(std::time::SystemTime::now()).unwrap();
    let dry = text(&make(&data, &["-n", "all"]));
    assert!(dry.contains("runs/alpha1/scan.parquet") && dry.contains("runs/alpha1/llc.parquet"), "{dry}");
    assert!(!dry.contains("runs/alpha0/"), "run alpha0 would rerun:\n{dry}");
    assert!(!dry.contains("release/train "), "training would rerun:\n{dry}");
    std::fs::remove_dir_all(&data).unwrap();
}
