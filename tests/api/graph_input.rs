//! Input checks of arguments before anything is sent upstream.
