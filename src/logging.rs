//! l4lb's log: the `log` facade, written by `env_logger` to stderr as one
//! plain line per event (a message of several lines joined) — `2026-12-06T04:10:00.123Z INFO  backend web/198.18.0.12 is down`
//! — with no colour codes. Under systemd (`JOURNAL_STREAM` set) each line
//! starts with its syslog priority instead (`<4>backend ... is down`), which
//! journald reads as the level and strips; it adds its own timestamp.
//!
//! Only the management core and start-up log: the packet path never does.

use std::fmt::Display;
use std::io::Write;

/// Installs the logger at `level`; call once, before anything logs.
pub fn init(level: log::LevelFilter) {
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let mut b = env_logger::Builder::new();
    b.filter_level(level).write_style(env_logger::WriteStyle::Never);
    b.format(move |f, r| {
        let ts = f.timestamp_millis();
        writeln!(f, "{}", line(journald, &ts, r.level(), r.args()))
    });
    // A second call (tests) keeps the first logger.
    let _ = b.try_init();
}

/// One log line (without its newline): a message of several lines (a
/// daemon's output, say) is joined with ` | `, so one event stays one line.
pub fn line(journald: bool, timestamp: &dyn Display, level: log::Level, msg: &dyn Display) -> String {
    let text = msg.to_string();
    let msg: &dyn Display = &if text.contains(['\n', '\r']) {
        text.split(['\n', '\r']).filter(|l| !l.trim().is_empty()).collect::<Vec<_>>().join(" | ")
    } else {
        text
    };
    if journald {
        format!("<{}>{msg}", priority(level))
    } else {
        format!("{timestamp} {level:<5} {msg}")
    }
}

/// The syslog priority of a level (sd-daemon(3)).
pub fn priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_carry_time_and_level_or_a_journald_priority() {
        let ts = "2026-12-06T04:10:00.123Z";
        assert_eq!(
            line(false, &ts, log::Level::Warn, &"backend web/198.18.0.12 is down"),
            "2026-12-06T04:10:00.123Z WARN  backend web/198.18.0.12 is down"
        );
        assert_eq!(line(false, &ts, log::Level::Info, &"x"), "2026-12-06T04:10:00.123Z INFO  x");
        assert_eq!(line(true, &ts, log::Level::Warn, &"backend down"), "<4>backend down");
        assert_eq!(line(true, &ts, log::Level::Error, &"e"), "<3>e");
        assert_eq!(line(true, &ts, log::Level::Info, &"i"), "<6>i");
        // One event, one line.
        assert_eq!(
            line(true, &ts, log::Level::Warn, &"bird: refused\nline 3: x\r\n"),
            "<4>bird: refused | line 3: x"
        );
        assert_eq!(line(false, &ts, log::Level::Info, &"a\n\nb"), "2026-12-06T04:10:00.123Z INFO  a | b");
    }
}
