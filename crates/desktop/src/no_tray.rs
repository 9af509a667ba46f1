//! A build without the tray (Linux without the cargo feature `tray`): the
//! same interface, and [`run`] says why there is no icon.

use crate::Menu;

/// Would update the tray; there is none in this build.
#[derive(Debug, Clone)]
pub struct TrayHandle;

impl TrayHandle {
    /// There is no tray to show `menu` in.
    pub fn show(&self, _menu: Menu) -> bool {
        false
    }

    pub fn close(&self) {}
}

/// Fails at once: this build has no tray.
pub fn run(
    _initial: Menu,
    _start: impl FnOnce(TrayHandle),
    _chosen: impl FnMut(&str),
) -> Result<(), String> {
    Err("this build has no tray (cargo feature `tray`)".to_owned())
}
