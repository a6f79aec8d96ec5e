//! `appwall bench`: a fraction of a second of real measuring through the
//! built binary, checking the report is well-formed and its counts add up.

use crate::support::run;

cases![
    bench_json_is_well_formed_and_counts_add_up,
    bench_table_and_bad_options,
];

fn num(v: &serde_json::Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("{key} missing in {v}"))
}

fn bench_json_is_well_formed_and_counts_add_up() {
    let (code, out, err) = run(&[
        "bench",
        "--json",
        "--rounds",
        "2",
        "--seconds",
        "0.02",
        "--threads",
        "2",
        "--no-depth",
        "--mix",
        "mixed",
        "--connections",
        "32",
    ]);
    assert_eq!(code, 0, "stderr: {err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    let packets = num(&v, "packets");
    assert!(packets > 0.0 && num(&v, "connections") >= 32.0, "{v}");
    for key in ["verdicts_first_pass", "verdicts_steady"] {
        let c = &v[key];
        assert_eq!(num(c, "packets"), packets, "{key}: one pass judges every packet");
        assert_eq!(num(c, "accept") + num(c, "drop"), packets, "{key}: {c}");
        let reasons: f64 = [
            "port",
            "signature",
            "evasion",
            "inspecting",
            "clean",
            "not_listed",
            "ports_only",
            "unparsable",
        ]
        .iter()
        .map(|k| num(c, k))
        .sum();
        assert_eq!(reasons, packets, "{key}: every verdict has one reason: {c}");
    }
    // The mix holds MSN: some packets are dropped.
    assert!(num(&v["verdicts_first_pass"], "drop") > 0.0, "{v}");
    let rows = v["rows"].as_array().expect("rows");
    // 1 and 2 threads x (baseline, first pass, steady, no depth).
    assert_eq!(rows.len(), 8, "{v}");
    for r in rows {
        let p = &r["packets_per_s"];
        assert!(
            num(p, "min") > 0.0 && num(p, "min") <= num(p, "median") && num(p, "median") <= num(p, "max"),
            "{r}"
        );
        let c = &r["counts"];
        assert!(
            num(c, "packets") >= 2.0 * packets,
            "two rounds replay everything at least twice: {r}"
        );
        assert_eq!(num(c, "packets"), num(r, "replays") * packets, "{r}");
        if r["stage"] == "engine" {
            assert_eq!(num(c, "accept") + num(c, "drop"), num(c, "packets"), "{r}");
        }
        assert!(num(r, "cost_vs_baseline") > 0.0, "{r}");
    }
}

fn bench_table_and_bad_options() {
    let (code, out, err) = run(&["bench", "--rounds", "1", "--seconds", "0.01", "--threads", "1"]);
    assert_eq!(code, 0, "stderr: {err}");
    assert_out!(out.contains("baseline: parse + connection lookup"), out);
    assert_out!(out.contains("engine, first pass"), out);
    assert_out!(out.contains("verdicts of one first pass:"), out);
    let (code, _, err) = run(&["bench", "--seconds", "0"]);
    assert_ne!(code, 0);
    assert!(err.contains("--seconds"), "{err}");
    let (code, _, err) = run(&["bench", "/nonexistent/capture.pcap"]);
    assert_eq!(code, 2, "{err}");
}
