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
