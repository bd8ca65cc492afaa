//! The manager's built-in registered call `close` (PROTOCOL.md §15.2): the seed's way to stop
//! a manager from a client. It is served by the manager itself, under the rules of a remote
//! shutdown, whenever no object of that name is declared (a declared one takes its place).

use super::Manager;
use crate::wire::{Action, ErrorCode, Handle, ObjectInfo, ObjectKind, QueueMode, QueueSpec, Reply};

/// What opening `close` gives: a call that runs one at a time, with a request and response
/// of one small value.
pub(super) const INFO: ObjectInfo = ObjectInfo {
    handle: Handle::CLOSE,
    kind: ObjectKind::Call,
    spec: QueueSpec {
        capacity: 1,
        max_item: 16,
        mode: QueueMode::Value,
    },
};

/// The response of a granted `close`: the value model's `null`.
const NULL: [u8; 1] = [0xF6];

impl Manager<'_> {
    /// `action` on the built-in `close` by connection `i`: a call stops the manager when a
    /// remote shutdown is allowed and the key may shut it down; the reply is sent first.
    pub(super) fn close_call(
        &mut self,
        i: usize,
        id: u32,
        action: Action,
    ) -> Option<Reply<'static>> {
        let Action::Call { request, .. } = action else {
            return Some(Reply::Error(ErrorCode::WrongKind));
        };
        if request.len() > INFO.spec.max_item as usize {
            return Some(Reply::Error(ErrorCode::TooLarge));
        }
        if let Err(code) = self.remote_stop_allowed(i) {
            return Some(Reply::Error(code));
        }
        self.reply(i, id, &Reply::Value(&NULL));
        debug!("connection {}: close called", i);
        self.shutdown(self.now);
        None
    }

    /// Whether connection `i` may stop the manager: remote shutdown is allowed and its key
    /// has the admin right everywhere (the rules of `Shutdown`).
    pub(super) fn remote_stop_allowed(&self, i: usize) -> Result<(), ErrorCode> {
        self.permit(i, &crate::wire::Op::Shutdown)?;
        if self.config.allow_remote_shutdown {
            Ok(())
        } else {
            Err(ErrorCode::NotAllowed)
        }
    }
}
