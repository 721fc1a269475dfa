//! Link scenario files live in `qkdnet-network`; the commands reach them through here.

pub use qkdnet_network::scenario::*;

impl From<qkdnet_network::InputError> for crate::CliError {
    fn from(e: qkdnet_network::InputError) -> Self {
        crate::CliError::input(e.0)
    }
}
