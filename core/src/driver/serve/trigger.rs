//! Shutdown triggers: one-shot futures and repeating signal factories.

use alloc::boxed::Box;
use core::task::Context;

use super::BoxFuture;

pub(super) enum Trigger {
    Once(Option<BoxFuture<()>>),
    Repeat {
        make: Box<dyn FnMut() -> BoxFuture<()> + Send>,
        armed: Option<BoxFuture<()>>,
    },
}

impl Trigger {
    /// Signals delivered by this trigger in this poll (at most 2: the second one stops).
    pub(super) fn poll(&mut self, cx: &mut Context<'_>) -> u32 {
        match self {
            Trigger::Once(slot) => {
                let fired = match slot {
                    Some(fut) => fut.as_mut().poll(cx).is_ready(),
                    None => false,
                };
                if fired {
                    *slot = None;
                }
                u32::from(fired)
            }
            Trigger::Repeat { make, armed } => {
                let mut fired = 0;
                while fired < 2 {
                    let fut = armed.get_or_insert_with(&mut *make);
                    if fut.as_mut().poll(cx).is_pending() {
                        break;
                    }
                    *armed = None;
                    fired += 1;
                }
                fired
            }
        }
    }
}
