//! The demo coordination round (filled in by the demo issue).
