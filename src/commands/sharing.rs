//! Sharing an installation with an installer: invitations, acceptance, disabling, enabling and
//! removing. A membership change drops every cached entry of the installation for every caller,
//! so an installer the owner disabled or removed through witty-bff loses access at once.

use super::{Changes, Command, Doubt, Kind, Who};

const INVITATIONS: Changes = Changes { installation: &[Kind::Invitations], ..Changes::NONE };
/// Nobody keeps a cached view of the installation, and everyone's list of installations is read
/// again.
const MEMBERSHIP: Changes =
    Changes { installation: Kind::EVERY, everywhere: &[Kind::Installations], access: true, ..Changes::NONE };
const USERS: &str = "the installation's users";

pub(crate) static INVITE_INSTALLER: Command = Command {
    name: "inviteInstaller",
    who: Who::Owner { what: "invite installers" },
    doubt: Doubt { what: "the invitation", done: "sent", check: "the installation's invitations" },
    changes: INVITATIONS,
};
pub(crate) static CANCEL_INVITATION: Command = Command {
    name: "cancelInvitation",
    who: Who::Owner { what: "cancel invitations" },
    doubt: Doubt { what: "the cancellation of the invitation", done: "made", check: "the installation's invitations" },
    changes: INVITATIONS,
};
pub(crate) static ACCEPT_INVITATION: Command = Command {
    name: "acceptInvitation",
    who: Who::Anyone,
    doubt: Doubt { what: "the acceptance of the invitation", done: "made", check: "your installations" },
    // Which installation it was is not said: every cached list of users and installations goes.
    changes: Changes { everywhere: &[Kind::Installations, Kind::Users, Kind::Invitations], ..Changes::NONE },
};
pub(crate) static DISABLE_INSTALLER: Command = Command {
    name: "disableInstaller",
    who: Who::Owner { what: "disable installers" },
    doubt: Doubt { what: "disabling the installer", done: "done", check: USERS },
    changes: MEMBERSHIP,
};
pub(crate) static ENABLE_INSTALLER: Command = Command {
    name: "enableInstaller",
    who: Who::Owner { what: "enable installers" },
    doubt: Doubt { what: "enabling the installer", done: "done", check: USERS },
    changes: MEMBERSHIP,
};
pub(crate) static REMOVE_INSTALLATION_USER: Command = Command {
    name: "removeInstallationUser",
    who: Who::Owner { what: "remove users" },
    doubt: Doubt { what: "the removal of the user", done: "made", check: USERS },
    changes: MEMBERSHIP,
};
