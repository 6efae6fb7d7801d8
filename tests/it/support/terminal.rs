//! A command line run on a pseudo-terminal, as a person types it: through `script`, under
//! bash. The exit status is the one bash saw and printed as the session's last line:
//! `script -e` relays it only when it reaps the command before the terminal closes, and a
//! command that closes the terminal on its way out can lose that race (util-linux 2.38 then
//! reports 0 or worse), which made terminal tests fail now and then for no fault of erpsync.

use std::process::Command;

/// What bash prints once the command ended: this, then the exit status.
const EXIT_MARK: &str = "[terminal session: exit ";

/// `script` running `line` on a pseudo-terminal under bash (`-f`: flushed as it is written),
/// with its screen on the command's standard output. The caller sets the folder, the
/// environment and standard input (a pipe there is what the person types).
pub fn command(line: &str) -> Command {
    let line = format!("{line}; printf '\\n{EXIT_MARK}%s]\\n' \"$?\"");
    let mut c = Command::new("script");
    c.args(["-qfc", &line, "/dev/null"])
        .env("SHELL", "/bin/bash");
    c
}

/// Runs `c` (made by `command`) to its end with nothing typed: its screen, once the command
/// exited 0 (else the test fails, showing the screen).
pub fn screen_of_success(mut c: Command) -> String {
    let out = c.stdin(std::process::Stdio::null()).output().unwrap();
    let screen = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(exit_status(&screen), Some(0), "{screen}");
    screen
}

/// The exit status of the command whose screen is `screen`, or `None` when the session
/// ended before the command did.
pub fn exit_status(screen: &str) -> Option<i32> {
    let at = screen.rfind(EXIT_MARK)?;
    let rest = &screen[at + EXIT_MARK.len()..];
    rest[..rest.find(']')?].trim().parse().ok()
}

/// `line` run to success on a pseudo-terminal of `cols` columns (`configure` sets its
/// folder and environment), failing unless everything it drew fits in `cols` columns
/// (`assert_drawn_fits`): its screen, and the rows the terminal leaves on it, each as what
/// follows its last carriage return, without the line clears and cursor moves of a progress
/// line drawn and taken away around them, and without the session's own lines.
pub fn rows_at_width(
    cols: usize,
    line: &str,
    configure: impl FnOnce(&mut Command),
) -> (String, Vec<String>) {
    let mut c = command(&format!("stty cols {cols} rows 24; {line}"));
    c.env("NO_COLOR", "1");
    configure(&mut c);
    let screen = screen_of_success(c);
    assert_drawn_fits(&screen, cols);
    let rows = screen
        .split('\n')
        .map(|row| {
            let row = row.trim_end_matches('\r');
            row.rsplit('\r')
                .next()
                .unwrap_or(row)
                .replace("\x1b[2K", "")
                .replace("\x1b[1A", "")
                .replace("\x1b[1B", "")
        })
        .filter(|r| !r.contains("stty cols") && !r.contains(EXIT_MARK))
        .collect();
    (screen, rows)
}

/// Fails unless everything drawn on `screen` fits in `cols` columns: each stretch between
/// line breaks and carriage returns (a progress line redrawn in place included, and every
/// row the terminal is left with), without its escape sequences.
fn assert_drawn_fits(screen: &str, cols: usize) {
    for stretch in screen.split(['\n', '\r']) {
        let mut shown = String::new();
        let mut chars = stretch.chars();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                // A CSI sequence: `ESC [`, parameters, then a final letter.
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                shown.push(c);
            }
        }
        assert!(
            shown.chars().count() <= cols,
            "drawn wider than the terminal's {cols} columns: {shown:?}\n{screen}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_bash_saw_is_read_back_from_the_screen() {
        for (line, want) in [("true", Some(0)), ("exit 3", None), ("false", Some(1))] {
            let out = command(line).output().unwrap();
            let screen = String::from_utf8_lossy(&out.stdout);
            assert_eq!(exit_status(&screen), want, "{line}: {screen:?}");
        }
    }
}
