//! `netprobe analyze` end to end: the built binary on a generated monitor log, rotated with
//! its oldest part gzip-compressed, checked through its JSON; and bad input (a missing file,
//! another header, a chart in another format) as one line and a non-zero exit. Userspace only: no root, no
//! lock needed.

use std::{fs, io::Write, path::PathBuf, process::Command};

use flate2::{write::GzEncoder, Compression};
use netprobe_integration::netprobe_bin;
use serde_json::Value;

const HEADER: &str = "timestamp,iteration,interface,total_drops,nic_rx,nic_tx,nic_missed,qdisc,softirq,syn_queue,accept_queue,tcp_pruned,tcp_collapsed,udp_rcvbuf,udp_sndbuf,severity,interval_s,notes";

/// Intervals `first..=last` of the known log: 5 per hour from 00:00, `softirq = i` on
/// multiples of 4, `udp_rcvbuf = 1` on multiples of 10, `tcp_collapsed = 7` (not a loss) on
/// multiples of 5.
fn rows(first: u64, last: u64) -> String {
    let mut text = format!("{HEADER}\n");
    for i in first..=last {
        let softirq = if i % 4 == 0 { i } else { 0 };
        let udp = u64::from(i % 10 == 0);
        let collapsed = if i % 5 == 0 { 7 } else { 0 };
        let total = softirq + udp;
        let severity = match total {
            0 => "OK",
            1..=99 => "WARN",
            _ => "CRIT",
        };
        let (hour, minute) = ((i - 1) / 5, (i - 1) % 5);
        text += &format!(
            "2026-02-03 {hour:02}:{minute:02}:00,{i},eth0,{total},0,0,0,0,{softirq},0,0,0,{collapsed},{udp},0,{severity},5.000,\n"
        );
    }
    text
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "netprobe-e2e-analyze-{}-{name}",
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn analyze(args: &[&str]) -> std::process::Output {
    Command::new(netprobe_bin())
        .arg("analyze")
        .args(args)
        .output()
        .expect("running netprobe analyze")
}

#[test]
fn analyze_reads_a_rotated_gzip_log_and_reports_every_section() {
    let dir = temp_dir("rotated");
    let oldest = dir.join("network_drops.log.2.gz");
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(rows(1, 40).as_bytes()).unwrap();
    fs::write(&oldest, gz.finish().unwrap()).unwrap();
    let older = dir.join("network_drops.log.1");
    // A torn line, as a crash leaves: line 32 of this file (header, rows 41–70, torn line).
    fs::write(&older, rows(41, 70) + "2026-02-03 13:5\n").unwrap();
    let current = dir.join("network_drops.log");
    fs::write(&current, rows(71, 100)).unwrap();
    let chart = dir.join("drops.svg");
    let paths: Vec<String> = [&oldest, &older, &current]
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let mut args: Vec<&str> = paths.iter().map(String::as_str).collect();
    let chart_arg = chart.display().to_string();
    args.extend(["--json", "--chart", &chart_arg]);
    let out = analyze(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}: {stderr}", out.status);
    let json: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");

    assert_eq!(json["kind"], "monitor_analysis");
    let files: Vec<(bool, u64)> = json["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["gzip"].as_bool().unwrap(), f["rows"].as_u64().unwrap()))
        .collect();
    assert_eq!(files, vec![(true, 40), (false, 30), (false, 30)]);
    assert_eq!(json["intervals"], 100);
    assert_eq!(json["intervals_with_drops"], 30);
    assert_eq!(json["intervals_with_drops_percent"], 30.0);
    assert_eq!(json["total_drops"], 1310);
    assert_eq!(json["drops_by_category"]["softirq"], 1300);
    assert_eq!(json["drops_by_category"]["udp_rcvbuf"], 10);
    assert_eq!(json["drops_by_category"]["tcp_collapsed"], 140);
    assert_eq!(json["drops_by_category"]["qdisc"], 0);
    assert_eq!(json["severity"]["OK"], 70);
    assert_eq!(json["severity"]["WARN"], 29);
    assert_eq!(json["severity"]["CRIT"], 1);
    let worst = json["worst_intervals"].as_array().unwrap();
    let worst: Vec<(u64, u64)> = worst
        .iter()
        .map(|w| {
            (
                w["iteration"].as_u64().unwrap(),
                w["total_drops"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        worst,
        [
            (100, 101),
            (96, 96),
            (92, 92),
            (88, 88),
            (84, 84),
            (80, 81),
            (76, 76),
            (72, 72),
            (68, 68),
            (64, 64)
        ]
    );
    assert_eq!(json["worst_intervals"][0]["severity"], "CRIT");
    assert_eq!(json["worst_intervals"][0]["biggest_category"], "softirq");
    assert_eq!(
        json["worst_intervals"][0]["timestamp"],
        "2026-02-03 19:04:00"
    );
    let hours = json["by_hour"].as_array().unwrap();
    assert_eq!(hours.len(), 24);
    assert_eq!(hours[19]["drops"], 197);
    assert_eq!(hours[19]["intervals_with_drops"], 2);
    assert_eq!(hours[0]["drops"], 4);
    assert_eq!(hours[23]["intervals"], 0);
    let last: Vec<u64> = json["last_intervals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["iteration"].as_u64().unwrap())
        .collect();
    assert_eq!(last, (81..=100).collect::<Vec<_>>());
    assert_eq!(json["malformed"]["count"], 1);
    assert_eq!(json["malformed"]["first"][0]["line"], 32);
    assert_eq!(json["malformed"]["first"][0]["file"], paths[1].as_str());

    let svg = fs::read_to_string(&chart).expect("the chart was written");
    assert!(svg.starts_with("<?xml") && svg.ends_with("</svg>\n"));
    assert_eq!(
        svg.matches("<path ").count(),
        10,
        "one path per loss column"
    );
    assert!(svg.contains("class=\"threshold\"") && svg.contains("CRIT ≥ 100"));
    let _ = fs::remove_dir_all(dir);
}

/// One line on stderr naming the problem, exit status 1, nothing on stdout.
fn assert_one_line_error(args: &[&str], expected: &str) {
    let out = analyze(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    assert!(stderr.starts_with("netprobe: error: "), "{stderr}");
    assert!(
        stderr.contains(expected),
        "{args:?}: {stderr} lacks {expected:?}"
    );
    assert!(out.stdout.is_empty(), "{args:?} printed a report anyway");
}

#[test]
fn analyze_bad_input_is_one_line_and_a_non_zero_exit() {
    let dir = temp_dir("bad");
    let good = dir.join("good.log");
    fs::write(&good, rows(1, 10)).unwrap();
    let good = good.display().to_string();
    let missing = dir.join("missing.log").display().to_string();
    assert_one_line_error(&[&good, &missing], "missing.log");
    let other = dir.join("other.csv");
    fs::write(&other, "time,host,drops\n2026-02-03 10:00:00,a,5\n").unwrap();
    let other = other.display().to_string();
    assert_one_line_error(&[&good, &other], "another header");
    let gif = dir.join("chart.gif").display().to_string();
    assert_one_line_error(&[&good, "--chart", &gif], "give a .svg or a .png file name");
    assert!(!dir.join("chart.gif").exists());
    // And the good log alone is fine: the failures above were the bad input's.
    assert!(analyze(&[&good]).status.success());
    let _ = fs::remove_dir_all(dir);
}

/// An RGBA image decoded by the `png` crate, not by what wrote it.
struct Image {
    width: u32,
    height: u32,
    rgba: Vec<u8>,
}

impl Image {
    fn decode(path: &std::path::Path) -> Image {
        let file = std::io::BufReader::new(fs::File::open(path).expect("the PNG was written"));
        let mut reader = png::Decoder::new(file).read_info().expect("a PNG header");
        let mut rgba = vec![0; reader.output_buffer_size().expect("a sane size")];
        let info = reader.next_frame(&mut rgba).expect("PNG image data");
        assert_eq!(
            (info.color_type, info.bit_depth),
            (png::ColorType::Rgba, png::BitDepth::Eight)
        );
        rgba.truncate(info.buffer_size());
        Image {
            width: info.width,
            height: info.height,
            rgba,
        }
    }

    /// Pixels within 3 of `rgb` in every channel, inside the rectangle [x0, x1) × [y0, y1).
    fn count(&self, rgb: [u8; 3], xs: (u32, u32), ys: (u32, u32)) -> usize {
        self.matching(xs, ys, |got| {
            rgb.iter()
                .zip(got)
                .all(|(want, got)| want.abs_diff(got) <= 3)
        })
    }

    /// Pixels whose RGB passes `test`, inside the rectangle [x0, x1) × [y0, y1).
    fn matching(
        &self,
        (x0, x1): (u32, u32),
        (y0, y1): (u32, u32),
        test: impl Fn([u8; 3]) -> bool,
    ) -> usize {
        (y0..y1)
            .flat_map(|y| (x0..x1).map(move |x| (x, y)))
            .filter(|(x, y)| {
                let at = ((y * self.width + x) * 4) as usize;
                test([self.rgba[at], self.rgba[at + 1], self.rgba[at + 2]])
            })
            .count()
    }
}

/// A chart colour as drawn over white at the areas' opacity (0.85).
fn area_colour(rgb: [u8; 3]) -> [u8; 3] {
    rgb.map(|c| (f64::from(c) * 0.85 + 255.0 * 0.15).round() as u8)
}

/// `--chart FILE.png`: the SVG's drawing rasterised, a PNG that decodes at the SVG's size
/// (1200 × 520), white, with the area of the category that had drops (softirq) in its colour
/// and none of a category that had none (nic_rx), every category's legend swatch, the red
/// CRIT line, and the labels' text where the system has a font (else it says so).
#[test]
fn analyze_draws_a_png_chart() {
    let dir = temp_dir("png");
    let log = dir.join("network_drops.log");
    fs::write(&log, rows(1, 100)).unwrap();
    let chart = dir.join("drops.png");
    let (log_arg, chart_arg) = (log.display().to_string(), chart.display().to_string());
    let out = analyze(&[&log_arg, "--chart", &chart_arg]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let image = Image::decode(&chart);
    assert_eq!((image.width, image.height), (1200, 520));
    // Inside the axes (x 80–980, y 40–460), where the areas and the CRIT line are.
    let plot = ((81, 980), (41, 460));
    assert!(
        image.count([255, 255, 255], plot.0, plot.1) > 200_000,
        "a white background"
    );
    let softirq = image.count(area_colour([0x94, 0x67, 0xbd]), plot.0, plot.1);
    assert!(softirq > 2_000, "softirq's area: {softirq} pixels");
    let nic_rx = image.count(area_colour([0x1f, 0x77, 0xb4]), plot.0, plot.1);
    assert_eq!(nic_rx, 0, "nic_rx had no drops");
    for swatch in [
        [0x1f, 0x77, 0xb4],
        [0xff, 0x7f, 0x0e],
        [0x2c, 0xa0, 0x2c],
        [0xd6, 0x27, 0x28],
        [0x94, 0x67, 0xbd],
        [0x8c, 0x56, 0x4b],
        [0xe3, 0x77, 0xc2],
        [0x7f, 0x7f, 0x7f],
        [0xbc, 0xbd, 0x22],
        [0x17, 0xbe, 0xcf],
    ] {
        let pixels = image.count(swatch, (1050, 1062), (40, 260));
        assert!(pixels >= 100, "legend {swatch:?}: {pixels} pixels");
    }
    // The dashed 1.5 px line: red over white, more or less covered (green and blue equal).
    let crit = image.matching(plot.0, plot.1, |[r, g, b]| {
        r >= 240 && g <= 160 && g.abs_diff(b) <= 3
    });
    assert!(crit > 400, "the CRIT line: {crit} pixels");
    // The title's text, black on white, above the plot.
    let title_ink = image.count([0, 0, 0], (80, 800), (8, 30));
    if stderr.contains("no font on this system") {
        assert_eq!(title_ink, 0, "{stderr}");
    } else {
        assert!(
            title_ink > 300,
            "the title drawn: {title_ink} black pixels; {stderr}"
        );
    }
    let _ = fs::remove_dir_all(dir);
}
