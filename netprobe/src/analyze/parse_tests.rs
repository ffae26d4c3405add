use std::{fs, io::Write};

use flate2::{write::GzEncoder, Compression};

use super::*;
use crate::analyze::test_log::{header, known_log, known_rows, temp_dir};

fn read_text(text: &str) -> Result<Log, AnalyzeError> {
    let mut log = Log::default();
    read_one(text.as_bytes(), Path::new("t.log"), false, &mut log)?;
    Ok(log)
}

fn gzip(text: &str) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(text.as_bytes()).unwrap();
    encoder.finish().unwrap()
}

#[test]
fn reads_the_monitors_rows() {
    let log = read_text(&known_log()).unwrap();
    assert_eq!(log.rows.len(), 100);
    assert_eq!(log.malformed.count, 0, "{:?}", log.malformed.first);
    let row = &log.rows[99];
    assert_eq!(row.timestamp(), "2026-02-03 19:04:00");
    assert_eq!(row.iteration, 100);
    assert_eq!(row.hour(), 19);
    assert_eq!(row.drops.get(Column::Softirq), 100);
    assert_eq!(row.drops.get(Column::UdpRcvbuf), 1);
    assert_eq!(row.drops.get(Column::TcpCollapsed), 7);
    assert_eq!(row.total(), 101);
    assert_eq!(row.severity, Severity::Crit);
    assert!(!row.total_disagrees);
    assert_eq!(row.biggest(), Some((Column::Softirq, 100)));
    // #50's note holds a comma (quoted by the monitor): still one row of 18 fields.
    assert_eq!(log.rows[49].iteration, 50);
    assert_eq!(log.rows[49].drops.get(Column::UdpRcvbuf), 1);
    assert_eq!(log.rows[0].biggest(), None);
}

#[test]
fn the_scripts_16_column_header_is_accepted() {
    let text =
        format!("{SCRIPT_HEADER}\n2026-02-03 11:23:50,1,eth0,45,0,0,0,0,40,0,0,0,3,5,0,WARN\n");
    let log = read_text(&text).unwrap();
    assert_eq!(log.rows.len(), 1);
    assert_eq!(log.rows[0].total(), 45);
    assert_eq!(log.rows[0].severity, Severity::Warn);
}

#[test]
fn malformed_rows_are_skipped_and_counted_with_their_lines() {
    let good = "2026-02-03 11:23:50,1,eth0,0,0,0,0,0,0,0,0,0,0,0,0,OK,5.000,\n";
    let text = header()
        + good // line 2
        + "2026-02-03 11:23,2,eth0,0,0,0,0,0,0,0,0,0,0,0,0,OK\n" // 3: timestamp
        + "2026-02-03 11:23:55,3,eth0,0,0\n" // 4: fields
        + good // 5
        + "2026-02-03 11:24:00,4,eth0,x,0,0,0,0,0,0,0,0,0,0,0,OK\n" // 6: total_drops
        + "2026-02-03 11:24:05,5,eth0,0,0,0,0,0,0,0,0,0,0,0,-1,OK\n" // 7: udp_sndbuf
        + "2026-02-03 11:24:10,6,eth0,0,0,0,0,0,0,0,0,0,0,0,0,BAD\n" // 8: severity
        + "2026-02-03 25:24:10,7,eth0,0,0,0,0,0,0,0,0,0,0,0,0,OK\n" // 9: hour 25
        + "2026-02-03 11:24:15,8,eth0,3,0,0,0,0,2,0,0,0,0,0,0,WARN\n"; // 10: total ≠ sum
    let log = read_text(&text).unwrap();
    assert_eq!(log.rows.len(), 3);
    assert_eq!(log.malformed.count, 6);
    let lines: Vec<u64> = log.malformed.first.iter().map(|m| m.line).collect();
    assert_eq!(lines, vec![3, 4, 6, 7, 8, 9]);
    let reasons: Vec<&str> = log
        .malformed
        .first
        .iter()
        .map(|m| m.reason.as_str())
        .collect();
    assert!(reasons[0].starts_with("timestamp:"), "{reasons:?}");
    assert!(reasons[1].starts_with("5 fields"), "{reasons:?}");
    assert!(reasons[2].starts_with("total_drops:"), "{reasons:?}");
    assert!(reasons[3].starts_with("udp_sndbuf:"), "{reasons:?}");
    assert!(reasons[4].starts_with("severity:"), "{reasons:?}");
    assert!(reasons[5].starts_with("timestamp:"), "{reasons:?}");
    assert!(log.rows[2].total_disagrees);
    assert!(!log.rows[0].total_disagrees);
    assert_eq!(log.files[0].rows, 3);
    assert_eq!(log.files[0].malformed, 6);
}

#[test]
fn a_row_torn_inside_its_quoted_notes_swallows_no_later_row() {
    // A full disk cut row 2 inside its quoted note, row 4 inside its counts; the monitor went
    // on at the next line each time. Row 2's 16 columns are whole: it counts. Read as one CSV
    // stream, the open quote would have swallowed rows 3 and 4 into row 2's note.
    let text = header()
        + &known_rows(1, 1)
        + "2026-02-03 00:01:00,2,eth0,0,0,0,0,0,0,0,0,0,0,0,0,OK,5.000,\"late by 1.3 s, on\n"
        + &known_rows(3, 3)
        + "2026-02-03 00:03:00,4,eth0,0,0,0\n"
        + &known_rows(5, 5);
    let log = read_text(&text).unwrap();
    let iterations: Vec<u64> = log.rows.iter().map(|r| r.iteration).collect();
    assert_eq!(iterations, vec![1, 2, 3, 5]);
    assert_eq!(log.malformed.count, 1);
    assert_eq!(log.malformed.first[0].line, 5);
}

#[test]
fn crlf_line_ends_are_read_too() {
    let text = known_log().replace('\n', "\r\n");
    let log = read_text(&text).unwrap();
    assert_eq!((log.rows.len(), log.malformed.count), (100, 0));
}

#[test]
fn only_the_first_20_malformed_lines_are_listed_all_are_counted() {
    let text = header() + &"not,a,row\n".repeat(25);
    let log = read_text(&text).unwrap();
    assert_eq!(log.malformed.count, 25);
    assert_eq!(log.malformed.first.len(), MALFORMED_LISTED);
    assert_eq!(log.malformed.first[19].line, 21);
}

#[test]
fn another_header_is_an_error() {
    let err = read_text("time,drops\n2026-02-03 11:23:50,5\n").unwrap_err();
    assert!(matches!(err, AnalyzeError::Header { .. }), "{err}");
    assert!(err.to_string().contains("another header"), "{err}");
    // The right names in another order are another header too.
    let swapped = SCRIPT_HEADER.replace("nic_rx,nic_tx", "nic_tx,nic_rx");
    assert!(matches!(
        read_text(&swapped).unwrap_err(),
        AnalyzeError::Header { .. }
    ));
}

#[test]
fn an_empty_file_has_no_rows_and_no_error() {
    let log = read_text("").unwrap();
    assert!(log.rows.is_empty());
    assert_eq!(log.files.len(), 1);
}

#[test]
fn rotated_files_gzip_or_not_are_read_in_the_order_given() {
    let dir = temp_dir("rotated");
    let oldest = dir.join("network_drops.log.2.gz");
    let older = dir.join("network_drops.log.1");
    let current = dir.join("network_drops.log");
    fs::write(&oldest, gzip(&(header() + &known_rows(1, 40)))).unwrap();
    fs::write(&older, header() + &known_rows(41, 70)).unwrap();
    // A gzip'd file without .gz in its name: told by its bytes.
    fs::write(&current, gzip(&(header() + &known_rows(71, 100)))).unwrap();
    let log = read_logs(&[oldest.clone(), older.clone(), current.clone()]).unwrap();
    let iterations: Vec<u64> = log.rows.iter().map(|r| r.iteration).collect();
    assert_eq!(iterations, (1..=100).collect::<Vec<_>>());
    let files: Vec<_> = log.files.iter().map(|f| (f.gzip, f.rows)).collect();
    assert_eq!(files, vec![(true, 40), (false, 30), (true, 30)]);
    assert_eq!(log.files[0].path, oldest);
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn a_missing_file_is_an_error_naming_it() {
    let dir = temp_dir("missing");
    let path = dir.join("nope.log");
    let err = read_logs(std::slice::from_ref(&path)).unwrap_err();
    let _ = fs::remove_dir_all(&dir);
    assert!(matches!(err, AnalyzeError::Open { .. }), "{err}");
    assert!(err.to_string().contains("nope.log"), "{err}");
}

#[test]
fn a_broken_gzip_stream_is_an_error() {
    let dir = temp_dir("broken-gz");
    let path = dir.join("log.gz");
    let mut bytes = gzip(&known_log());
    bytes.truncate(bytes.len() / 2);
    fs::write(&path, bytes).unwrap();
    let err = read_logs(&[path]).unwrap_err();
    assert!(matches!(err, AnalyzeError::Read { .. }), "{err}");
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn counts_parse_strictly() {
    assert_eq!(parse_u64(b"0"), Some(0));
    assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
    assert_eq!(parse_u64(b"18446744073709551616"), None);
    assert_eq!(parse_u64(b""), None);
    assert_eq!(parse_u64(b"1 "), None);
    assert_eq!(parse_u64(b"+1"), None);
}
