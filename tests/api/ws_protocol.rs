//! WebSocket protocol edges: oversized messages, the other protocol's message types, closes.
