//! Wall-clock timestamps for the rows, in local time as the script wrote them
//! (`%Y-%m-%d %H:%M:%S`, what Telegraf's csv parser is configured for). The schedule itself
//! runs on the monotonic clock (schedule.rs); this is only the label.

/// The local time now, `2026-02-03 11:23:50`. Falls back to UTC if the local zone cannot be
/// worked out, rather than printing no time at all.
pub fn local_timestamp() -> String {
    // SAFETY: time(NULL) only returns the time; localtime_r/gmtime_r write into `tm`, which
    // is ours and fully initialised (zeroed) beforehand.
    let tm = unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&now, &mut tm).is_null() {
            libc::gmtime_r(&now, &mut tm);
        }
        tm
    };
    format_tm(&tm)
}

fn format_tm(tm: &libc::tm) -> String {
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_s_format() {
        // SAFETY: all-zero is a valid tm.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        (tm.tm_year, tm.tm_mon, tm.tm_mday) = (126, 1, 3);
        (tm.tm_hour, tm.tm_min, tm.tm_sec) = (11, 23, 5);
        assert_eq!(format_tm(&tm), "2026-02-03 11:23:05");
        let now = local_timestamp();
        assert_eq!(now.len(), 19, "{now}");
        assert_eq!((&now[4..5], &now[10..11], &now[13..14]), ("-", " ", ":"));
    }
}
