use super::*;
use crate::analyze::{parse::read_one, test_log, Log};

fn rows_of(text: &str) -> Vec<Row> {
    let mut log = Log::default();
    read_one(text.as_bytes(), std::path::Path::new("t"), false, &mut log).unwrap();
    log.rows
}

/// The element names in document order are balanced: every opened tag closed in order, every
/// other one self-closed (a small well-formedness check, enough for what svg() writes).
fn assert_balanced(svg: &str) {
    let mut open: Vec<&str> = Vec::new();
    for tag in svg.split('<').skip(1) {
        let end = tag.find('>').expect("a tag without its >");
        let inner = &tag[..end];
        if inner.starts_with('?') {
            continue;
        }
        if let Some(name) = inner.strip_prefix('/') {
            assert_eq!(open.pop(), Some(name.trim()), "closing {name} out of order");
        } else if !inner.ends_with('/') {
            open.push(inner.split_whitespace().next().unwrap());
        }
        assert!(!inner.contains('<'), "a < inside a tag: {inner}");
    }
    assert!(open.is_empty(), "never closed: {open:?}");
}

#[test]
fn the_svg_is_well_formed_with_one_path_per_category_and_the_threshold() {
    let rows = rows_of(&test_log::known_log());
    let svg = svg(&rows, 100);
    assert!(svg.starts_with("<?xml version=\"1.0\""));
    assert!(svg.ends_with("</svg>\n"));
    assert_balanced(&svg);
    let paths: Vec<&str> = svg
        .match_indices("data-category=\"")
        .map(|(i, m)| {
            let rest = &svg[i + m.len()..];
            &rest[..rest.find('"').unwrap()]
        })
        .collect();
    let losses: Vec<&str> = Column::ALL
        .iter()
        .filter(|c| c.is_loss())
        .map(|c| c.name())
        .collect();
    // Legend entries do not carry data-category: these are the paths.
    assert_eq!(paths, losses);
    assert_eq!(svg.matches("<path ").count(), losses.len());
    // The y axis goes to 1.1 × the peak (101) and the threshold line is at 100 on it.
    let frame = Frame {
        points: 100,
        y_max: 101.0 * 1.1,
    };
    let y = format!("y1=\"{:.1}\"", frame.y(100.0));
    let line = svg
        .lines()
        .find(|l| l.contains("class=\"threshold\""))
        .expect("no threshold line");
    assert!(line.contains(&y), "{line} is not at {y}");
    assert!(svg.contains("CRIT ≥ 100"));
    assert!(svg.contains("2026-02-03 00:00:00") && svg.contains("2026-02-03 19:04:00"));
}

#[test]
fn buckets_keep_the_worst_interval_of_each() {
    let mut text = test_log::header();
    for i in 1..=2500u64 {
        let mut drops = crate::monitor::columns::Drops::default();
        drops.add(Column::Qdisc, if i == 1234 { 5000 } else { i % 3 });
        text.push_str(&test_log::monitor_row("2026-02-03 10:00:00", i, drops, &[]));
    }
    let rows = rows_of(&text);
    let points = buckets(&rows, MAX_POINTS);
    assert_eq!(points.len(), MAX_POINTS);
    // The spike survives bucketing, and the first of equals represents a bucket.
    assert!(points
        .iter()
        .any(|r| r.iteration == 1234 && r.total() == 5000));
    assert_eq!(points[0].iteration, 2); // bucket 0 is rows 1–2: 1 % 3 = 1 < 2 % 3 = 2
                                        // Fewer rows than points: one point each.
    assert_eq!(buckets(&rows[..10], MAX_POINTS).len(), 10);
    assert!(buckets(&[], MAX_POINTS).is_empty());
}

#[test]
fn an_empty_log_still_draws_a_valid_chart() {
    let svg = svg(&[], 100);
    assert_balanced(&svg);
    assert!(svg.contains("class=\"threshold\""));
}
