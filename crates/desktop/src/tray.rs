//! The tray icon: a [`Menu`] shown with `tray-icon` on an event loop of
//! `tao`, which owns the thread it runs on (the main thread: macOS requires
//! it, and GTK on Linux expects it).
//!
//! The program's work runs on other threads; it sends each new menu through a
//! [`TrayHandle`], and hears of each chosen action through the callback given
//! to [`run`].

use tao::event::{Event, StartCause};
use tao::event_loop::{ControlFlow, EventLoopBuilder, EventLoopProxy};
use tao::platform::run_return::EventLoopExtRunReturn as _;
use tray_icon::menu::{Menu as NativeMenu, MenuEvent, MenuItem, PredefinedMenuItem};
use tray_icon::{Icon, TrayIcon, TrayIconBuilder};

use crate::{IconState, Item, Menu};

/// What reaches the event loop from other threads.
enum Message {
    Show(Menu),
    Chosen(String),
    Close,
}

/// Updates the tray from any thread.
#[derive(Clone)]
pub struct TrayHandle(EventLoopProxy<Message>);

impl std::fmt::Debug for TrayHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TrayHandle")
    }
}

impl TrayHandle {
    /// Shows `menu` (icon, tooltip and items); `false` once the tray is gone.
    pub fn show(&self, menu: Menu) -> bool {
        self.0.send_event(Message::Show(menu)).is_ok()
    }

    /// Removes the icon and makes [`run`] return.
    pub fn close(&self) {
        let _ = self.0.send_event(Message::Close);
    }
}

/// Runs the tray on this thread until [`TrayHandle::close`].
///
/// `start` is called once, before the loop runs, with the handle: it starts
/// the program's work on other threads. `chosen` is called on this thread
/// with the action of each menu item the user picks. Fails only when no event
/// loop can be made (no display); an icon the desktop cannot show is logged
/// and the loop runs on, so the program keeps working.
pub fn run(
    initial: Menu,
    start: impl FnOnce(TrayHandle),
    mut chosen: impl FnMut(&str),
) -> Result<(), String> {
    let mut event_loop =
        std::panic::catch_unwind(|| EventLoopBuilder::<Message>::with_user_event().build())
            .map_err(|_| "cannot start the desktop's event loop (no display?)".to_owned())?;
    let proxy = event_loop.create_proxy();
    let forward = proxy.clone();
    MenuEvent::set_event_handler(Some(move |event: MenuEvent| {
        let _ = forward.send_event(Message::Chosen(event.id.0));
    }));
    start(TrayHandle(proxy));

    let mut pending = Some(initial);
    let mut tray: Option<TrayIcon> = None;
    // What the tray shows now: the same menu again is not rebuilt, since a rebuild
    // closes a menu the user has open (callers refresh on a timer).
    let mut shown: Option<Menu> = None;
    event_loop.run_return(|event, _, control_flow| {
        *control_flow = ControlFlow::Wait;
        match event {
            // The earliest moment an icon may be made (macOS).
            Event::NewEvents(StartCause::Init) => {
                if let Some(menu) = pending.take() {
                    tray = build(&menu);
                    shown = Some(menu);
                }
            }
            Event::UserEvent(Message::Show(menu)) => match &tray {
                Some(_) if shown.as_ref() == Some(&menu) => {}
                Some(icon) => {
                    update(icon, shown.as_ref(), &menu);
                    shown = Some(menu);
                }
                None => pending = Some(menu),
            },
            Event::UserEvent(Message::Chosen(action)) => chosen(&action),
            Event::UserEvent(Message::Close) => {
                tray = None;
                *control_flow = ControlFlow::Exit;
            }
            _ => {}
        }
    });
    MenuEvent::set_event_handler(None::<fn(MenuEvent)>);
    Ok(())
}

fn build(menu: &Menu) -> Option<TrayIcon> {
    let built = TrayIconBuilder::new()
        .with_id("llm-router")
        .with_menu(Box::new(native_menu(menu)))
        .with_tooltip(&menu.tooltip)
        .with_icon(icon(menu.icon))
        .build();
    match built {
        Ok(icon) => {
            tracing::info!("tray icon shown");
            Some(icon)
        }
        Err(error) => {
            tracing::warn!(%error, "the desktop did not take the tray icon; running without it");
            None
        }
    }
}

/// Changes what differs from `before`: the menu only when its items changed.
fn update(tray: &TrayIcon, before: Option<&Menu>, menu: &Menu) {
    if before.is_none_or(|b| b.items != menu.items) {
        tray.set_menu(Some(Box::new(native_menu(menu))));
    }
    if before.is_none_or(|b| b.icon != menu.icon)
        && let Err(error) = tray.set_icon(Some(icon(menu.icon)))
    {
        tracing::debug!(%error, "could not change the tray icon");
    }
    if before.is_none_or(|b| b.tooltip != menu.tooltip)
        && let Err(error) = tray.set_tooltip(Some(&menu.tooltip))
    {
        tracing::debug!(%error, "could not change the tray tooltip");
    }
}

fn native_menu(menu: &Menu) -> NativeMenu {
    let native = NativeMenu::new();
    for item in &menu.items {
        let appended = match item {
            Item::Label(text) => native.append(&MenuItem::new(text, false, None)),
            Item::Action {
                action,
                label,
                enabled,
            } => native.append(&MenuItem::with_id(*action, label, *enabled, None)),
            Item::Separator => native.append(&PredefinedMenuItem::separator()),
        };
        if let Err(error) = appended {
            tracing::debug!(%error, "could not add a tray menu item");
        }
    }
    native
}

/// The icon for `state`.
fn icon(state: IconState) -> Icon {
    Icon::from_rgba(state.pixels(), crate::ICON_SIZE, crate::ICON_SIZE)
        .expect("the icon has exactly size² RGBA pixels")
}
