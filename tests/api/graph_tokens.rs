//! Tokens of one user: what one token is refused never reaches another.
