//! Creating an installation.

use super::{Changes, Command, Doubt, Kind, Who};

pub(crate) static CREATE_INSTALLATION: Command = Command {
    name: "createInstallation",
    who: Who::Anyone,
    doubt: Doubt { what: "the new installation", done: "created", check: "your installations" },
    // Only the caller's list: nobody else sees the new installation.
    changes: Changes { own: &[Kind::Installations], ..Changes::NONE },
};
