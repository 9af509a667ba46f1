//! Where a Windows desktop start's output goes.
//!
//! Windows builds of the agent and the coordinator are *windows*-subsystem
//! programs (`windows_subsystem = "windows"` in their `main.rs`), so that a
//! double-click in Explorer or a start at login opens no console window: the
//! loader gives such a program no console at all. Started from a terminal,
//! it should still log there. [`attach`] does that, first thing in `main`:
//!
//! - handles the launcher gave (a service manager, a pipe, `> file`) are
//!   kept as they are: [`Console::Inherited`];
//! - else the program takes over the console of the process that started it
//!   (`AttachConsole`), and its stdout and stderr that were empty now write
//!   there: [`Console::Attached`];
//! - else (Explorer, the login items) there is nowhere to write:
//!   [`Console::None`], and the binary logs to a file instead
//!   ([`log_file`]).
//!
//! A terminal does not wait for a windows-subsystem program to end, so the
//! prompt comes back at once and the logs follow it; `start /wait` in
//! `cmd.exe` waits. On every other system [`attach`] is
//! [`Console::Inherited`] and does nothing.
//!
//! This is the workspace's one use of `unsafe`: two calls into `kernel32`
//! that have no safe wrapper in the standard library.

use std::path::{Path, PathBuf};

/// What this process writes its output to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Console {
    /// The standard handles it was started with (any Unix start, a Windows
    /// console, a service manager, a redirect).
    Inherited,
    /// The console of the terminal that started it, taken over.
    Attached,
    /// None: started from Explorer or at login.
    None,
}

/// Connects this process's stdout and stderr to something when they are
/// connected to nothing (see the module doc). Call it before anything is
/// printed or logged.
pub fn attach() -> Console {
    imp::attach()
}

/// The file to log to, `name` in `data_dir`, when there is no console to log
/// to; `None` when there is one (or no data folder to put a file in).
pub fn log_file(console: Console, data_dir: Option<&Path>, name: &str) -> Option<PathBuf> {
    match console {
        Console::None => data_dir.map(|dir| dir.join(name)),
        Console::Inherited | Console::Attached => None,
    }
}

#[cfg(not(windows))]
mod imp {
    pub(super) fn attach() -> super::Console {
        super::Console::Inherited
    }
}

#[cfg(windows)]
#[allow(unsafe_code)]
mod imp {
    use std::fs::{File, OpenOptions};
    use std::os::windows::io::{AsRawHandle as _, IntoRawHandle as _, RawHandle};

    use windows_sys::Win32::System::Console::{
        ATTACH_PARENT_PROCESS, AttachConsole, STD_ERROR_HANDLE, STD_HANDLE, STD_OUTPUT_HANDLE,
        SetStdHandle,
    };

    use super::Console;

    pub(super) fn attach() -> Console {
        let out = std::io::stdout().as_raw_handle();
        let err = std::io::stderr().as_raw_handle();
        if present(out) || present(err) {
            return Console::Inherited;
        }
        // SAFETY: `AttachConsole` takes a process id (here the "parent"
        // constant) and reads or writes none of this process's memory.
        if unsafe { AttachConsole(ATTACH_PARENT_PROCESS) } == 0 {
            return Console::None;
        }
        for which in [STD_OUTPUT_HANDLE, STD_ERROR_HANDLE] {
            if let Ok(console) = OpenOptions::new().read(true).write(true).open("CONOUT$") {
                set_std_handle(which, console);
            }
        }
        Console::Attached
    }

    /// A standard handle that leads somewhere (the standard library answers
    /// null for a missing one; Windows may say `INVALID_HANDLE_VALUE`).
    fn present(handle: RawHandle) -> bool {
        !handle.is_null() && handle as isize != -1
    }

    fn set_std_handle(which: STD_HANDLE, file: File) {
        let handle = file.into_raw_handle();
        // SAFETY: `handle` is an open console handle that nothing else owns
        // (`into_raw_handle` gave ownership up); it stays open for the
        // process's lifetime as its standard handle, which the standard
        // library looks up on every write.
        unsafe {
            SetStdHandle(which, handle);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_start_with_no_console_logs_to_a_file() {
        let dir = Path::new("/data");
        assert_eq!(
            log_file(Console::None, Some(dir), "agent.log"),
            Some(dir.join("agent.log"))
        );
        assert_eq!(log_file(Console::None, None, "agent.log"), None);
        assert_eq!(log_file(Console::Attached, Some(dir), "agent.log"), None);
        assert_eq!(log_file(Console::Inherited, Some(dir), "agent.log"), None);
    }

    #[cfg(not(windows))]
    #[test]
    fn outside_windows_the_inherited_handles_are_kept() {
        assert_eq!(attach(), Console::Inherited);
    }
}
