//! The kernel matrix's scenario set, run on the kernel under test (see
//! `netprobe_integration::matrix`): writes its measurements as JSON to the file given as the
//! only argument (the guest's `$RESULTS/matrix.json`), for the host to judge.

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: np-matrix RESULTS.json");
    let results = netprobe_integration::matrix::scenarios::run_all();
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&results).expect("serialize"),
    )
    .unwrap_or_else(|e| panic!("writing {path}: {e}"));
}
