//! [`SessionView`]: what a console handler knows about the signed-in user. Its own file, so the
//! page helpers (`html.rs`) and the session handling (`session.rs`, which renders pages) each use
//! it without using each other in a circle.

use crate::auth::Caller;

/// What a handler knows about the signed-in user.
#[derive(Debug, Clone)]
pub struct SessionView {
    pub caller: Caller,
    pub csrf: String,
    /// The user's API token, for the console's calls to `/v1`; never rendered.
    pub token: String,
    /// The console page the request came from (its `Referer`, when it is a page of this
    /// console on this host and not the request's own URL): where error pages link back to.
    pub back: Option<String>,
}

impl SessionView {
    /// True when the user may change things (operator or admin): write controls are rendered.
    pub fn can_operate(&self) -> bool {
        self.caller.scope.can_operate()
    }
}
